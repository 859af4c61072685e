"""Hint text normalisation and the ARPA trigram built from hint phrases."""

from __future__ import annotations

import math
import re

import pytest

from voicecall.speech.stt.local import build_hint_lm, normalize_words


def parse_arpa(text: str) -> dict[int, dict[tuple[str, ...], tuple[float, float]]]:
    grams: dict[int, dict[tuple[str, ...], tuple[float, float]]] = {1: {}, 2: {}, 3: {}}
    order = 0
    header: dict[int, int] = {}
    for line in text.splitlines():
        if m := re.fullmatch(r"ngram (\d)=(\d+)", line):
            header[int(m[1])] = int(m[2])
        elif m := re.fullmatch(r"\\(\d)-grams:", line):
            order = int(m[1])
        elif order and line and not line.startswith("\\"):
            parts = line.split()
            words = tuple(parts[1:1 + order])
            bo = float(parts[1 + order]) if len(parts) > 1 + order else 0.0
            grams[order][words] = (float(parts[0]), bo)
    assert {n: len(g) for n, g in grams.items()} == header
    assert text.rstrip().endswith("\\end\\")
    return grams


def prob(grams: dict[int, dict[tuple[str, ...], tuple[float, float]]],
         history: tuple[str, ...], word: str) -> float:
    """Back-off probability, as a decoder computes it."""
    key = (*history, word)
    if key in grams[len(key)]:
        return 10 ** grams[len(key)][key][0]
    bo = grams[len(history)].get(history, (0.0, 0.0))[1] if history else 0.0
    return 10 ** bo * prob(grams, history[1:], word)


def test_normalize_words() -> None:
    assert normalize_words("Table for 2 at 7pm!") == ["table", "for", "two", "at", "seven", "pm"]
    assert normalize_words("It's 555-1234.") == ["it's", "five", "five", "five", "one", "two",
                                                 "three", "four"]
    assert normalize_words("  Yes,  NO ") == ["yes", "no"]


def test_every_history_is_a_proper_distribution() -> None:
    phrases = ["book a table for two", "a table for four please", "yes", "no thanks"]
    garbage = {"gbg_aa": "AA", "gbg_b": "B"}
    grams = parse_arpa(build_hint_lm(phrases, garbage=garbage, garbage_mass=0.5))
    vocab = [w for (w,) in grams[1] if w != "<s>"]
    histories = [(), ("<s>",), ("table",), ("a", "table"), ("<s>", "book"), ("for",),
                 ("table", "for"), ("gbg_aa",)]
    for h in histories:
        total = sum(prob(grams, h, w) for w in vocab)
        assert total == pytest.approx(1.0, abs=2e-4), h
    # garbage gets its share of the unigram mass, split evenly
    assert 10 ** grams[1][("gbg_aa",)][0] == pytest.approx(0.25, rel=1e-3)
    # a seen continuation dominates, an unseen one is still possible (recombination)
    assert prob(grams, ("a", "table"), "for") > 0.5
    assert 0 < prob(grams, ("for",), "please") < prob(grams, ("for",), "two")


def test_unknown_words_split_the_phrase() -> None:
    grams = parse_arpa(build_hint_lm(["call zork now"], known=lambda w: w != "zork"))
    assert ("zork",) not in grams[1]
    assert ("call", "now") not in grams[2]           # not glued across the gap
    assert ("<s>", "call") in grams[2] and ("call", "</s>") in grams[2]
    assert ("<s>", "now") in grams[2]


def test_rejects_empty_or_bad_settings() -> None:
    with pytest.raises(ValueError):
        build_hint_lm([])
    with pytest.raises(ValueError):
        build_hint_lm(["!!!"])
    with pytest.raises(ValueError):
        build_hint_lm(["yes"], discount=1.0)
    assert math.isfinite(parse_arpa(build_hint_lm(["yes"]))[1][("yes",)][0])
