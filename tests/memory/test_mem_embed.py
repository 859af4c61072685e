"""The numpy MiniLM encoder against known all-MiniLM-L6-v2 outputs (no torch here)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from voicecall.errors import ProviderError
from voicecall.memory import EmbeddingUnavailableError, MiniLMEmbedder, default_model_dir
from voicecall.memory.embed import MAX_TOKENS, _erf


@pytest.fixture(scope="module")
def enc() -> MiniLMEmbedder:
    e = MiniLMEmbedder()
    e.warm()
    return e


def cos(enc: MiniLMEmbedder, a: str, b: str) -> float:
    v = enc.embed([a, b])
    return float(v[0] @ v[1])


def test_matches_the_sentence_transformers_reference_matrix(enc: MiniLMEmbedder) -> None:
    # The similarity matrix printed in the sentence-transformers README for this model.
    v = enc.embed(["The weather is lovely today.", "It's so sunny outside!",
                   "He drove to the stadium."])
    sim = v @ v.T
    assert sim[0, 1] == pytest.approx(0.6660, abs=2e-3)
    assert sim[0, 2] == pytest.approx(0.1046, abs=2e-3)
    assert sim[1, 2] == pytest.approx(0.1411, abs=2e-3)


def test_reference_sentence_pairs(enc: MiniLMEmbedder) -> None:
    food = "A man is eating food."
    assert 0.75 <= cos(enc, food, "A man is eating a piece of bread.") <= 0.80
    assert 0.10 <= cos(enc, food, "A man is riding a horse.") <= 0.25


@pytest.mark.parametrize(("query", "paraphrase", "unrelated"), [
    ("When is my dentist appointment?", "The tooth doctor visit is booked for Tuesday at 3 pm",
     "I ordered a pizza with mushrooms"),
    ("How do I reach my sister?", "Anna's mobile number is 555 0199, she prefers texts",
     "The quarterly report is due next Friday"),
    ("What is the wifi password?", "Network key for the home router: bluefish42",
     "My flight lands in Denver at noon"),
    ("Where did I park the car?", "The vehicle is on level 3 of the airport garage, spot B12",
     "She loves reading mystery novels"),
    ("Is the package delivered yet?",
     "The courier dropped off the parcel at the front door this morning",
     "The cat is sleeping on the sofa"),
])
def test_paraphrase_beats_unrelated(enc: MiniLMEmbedder, query: str, paraphrase: str,
                                    unrelated: str) -> None:
    near, far = cos(enc, query, paraphrase), cos(enc, query, unrelated)
    assert near >= 0.33
    assert far <= 0.2
    assert near - far >= 0.25


def test_unit_norm_deterministic_and_batch_equals_single(enc: MiniLMEmbedder) -> None:
    texts = ["short", "a somewhat longer sentence about calling the plumber tomorrow",
             "Caller: hi\nAgent: hello, how can I help?", "x " * 100]
    batch = enc.embed(texts)
    assert batch.shape == (4, 384) and batch.dtype == np.float32
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    single = np.stack([enc.embed([t])[0] for t in texts])
    assert np.allclose(batch, single, atol=1e-5)   # padding is masked out
    assert np.array_equal(batch, enc.embed(texts))
    assert enc.embed([]).shape == (0, 384)


def test_long_texts_are_truncated_to_the_model_window(enc: MiniLMEmbedder) -> None:
    head = " ".join(f"word{i % 50}" for i in range(400))
    a, b = enc.embed([head + " apples", head + " a completely different ending"])
    assert np.allclose(a, b, atol=1e-6)   # only the first MAX_TOKENS pieces count
    assert MAX_TOKENS == 256


def test_erf_approximation() -> None:
    xs = np.linspace(-5, 5, 2001, dtype=np.float32)
    err = max(abs(float(y) - math.erf(float(x))) for x, y in zip(xs, _erf(xs), strict=True))
    assert err < 1e-6


def test_explicit_model_dir_and_model_id(enc: MiniLMEmbedder) -> None:
    model_dir = default_model_dir()
    assert model_dir is not None and (model_dir / "model.safetensors").is_file()
    other = MiniLMEmbedder(model_dir)
    assert other.model_id == enc.model_id and other.dim == 384
    assert enc.model_id.startswith("bert:")


def test_missing_model_raises_a_provider_error_once(tmp_path: Path) -> None:
    e = MiniLMEmbedder(tmp_path / "nope")
    with pytest.raises(EmbeddingUnavailableError) as first:
        e.embed(["hello"])
    assert isinstance(first.value, ProviderError)
    assert "nope" in str(first.value)
    (tmp_path / "nope").mkdir()   # not retried: the failure is remembered
    with pytest.raises(EmbeddingUnavailableError) as second:
        e.warm()
    assert second.value is first.value
