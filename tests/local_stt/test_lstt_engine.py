"""The pocketsphinx engine on telephone audio: hint model first, general model as fallback."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import PHRASES, utterance_pcm16k

from voicecall.speech.stt.local import MAX_HINT_SETS, EngineSpec, PocketsphinxEngine

OTHER_HINTS = ("yes", "no", "my name is john smith", "please call me back")


@pytest.fixture(scope="module")
def engine() -> PocketsphinxEngine:
    return PocketsphinxEngine(EngineSpec())


@pytest.mark.parametrize("phrase", PHRASES)
def test_expected_phrases_are_transcribed_exactly(engine: PocketsphinxEngine,
                                                  phrase: str) -> None:
    result = engine.transcribe(utterance_pcm16k(phrase), PHRASES)
    assert result.text == phrase
    assert result.source == "hints"


def test_speech_outside_the_hints_falls_back_to_the_general_model(
        engine: PocketsphinxEngine) -> None:
    result = engine.transcribe(utterance_pcm16k("what are your opening hours"), OTHER_HINTS)
    assert result.source == "general"
    assert "_" in result.hint_text.split()          # the garbage loop absorbed unknown speech
    assert result.text                              # (plain accuracy is what it is)


def test_hints_only_mode_never_falls_back() -> None:
    engine = PocketsphinxEngine(EngineSpec(hints=OTHER_HINTS, hints_mode="only"))
    result = engine.transcribe(utterance_pcm16k("yes that works for me"))
    assert result.source == "hints"
    vocab = {w for h in OTHER_HINTS for w in h.split()}
    assert result.text and set(result.text.split()) <= vocab
    assert result.text.split()[0] == "yes"


def test_no_speech_gives_no_text_and_no_general_guess(engine: PocketsphinxEngine) -> None:
    line = np.random.default_rng(1).standard_normal(16000) * 30      # a quiet line, -60 dBFS
    result = engine.transcribe(line.astype("<i2").tobytes(), PHRASES)
    assert result.text == "" and result.source == "none" and result.hint_text == ""


def test_hint_models_are_cached_per_hint_set(engine: PocketsphinxEngine) -> None:
    pcm = utterance_pcm16k("yes that works for me")[: 16000 * 2]
    for k in range(MAX_HINT_SETS + 3):
        engine.transcribe(pcm, (f"yes number {k}",) if k < 10 else ("yes",))
    assert len(engine._hint_searches) == MAX_HINT_SETS


def test_user_words_and_unknown_hint_words(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="voicecall.stt.local"):
        engine = PocketsphinxEngine(EngineSpec(hints=("ask for zork", "talk to blorptron"),
                                               words=(("zork", "Z AO R K"),)))
    assert engine._ps.lookup_word("zork") == "Z AO R K"
    assert "blorptron" in caplog.text and "zork" not in caplog.text
