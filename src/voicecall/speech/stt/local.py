"""Offline streaming STT: pocketsphinx with its shipped model, or a model the user supplies.

Nothing here touches the network. A session takes the call's 20 ms mu-law
frames, finds utterances with the WebRTC VAD (speech-start on onset, endpoint
after ``silenceMs`` of non-speech, 600 ms by default), upsamples them 8 -> 16
kHz with a stateful soxr resampler and decodes each utterance off the event
loop, emitting one ``final`` per utterance (no partials).

Accuracy on telephone audio. pocketsphinx's acoustic model is a 16 kHz model
(its filterbank reaches 6.8 kHz), and on 8 kHz telephone audio its general
language model does poorly (``bench/stt_local_wer.py`` measures it). What
raises it is *hints*: phrases the conversation expects (``hints``, or per
call ``STT.open(call_id, hints=...)``) become a small trigram language model
(``build_hint_lm``: hint n-grams with a fixed discount, so hint words also
recombine into unseen sequences) that is searched first. The hint model also
holds a phone loop, one "garbage" word per phone with most of the unigram
mass, so speech outside the hints is absorbed by garbage instead of being
forced onto hint words. An utterance whose best hint path contains garbage is
decoded again with the general model (``hintsMode: "prefer"``, the default);
``hintsMode: "only"`` keeps the hint words and drops the garbage (menus,
yes/no). Hint words are normalised (lower case, digits read one by one);
words the dictionary lacks are skipped with a warning unless ``words`` gives
their ARPAbet phones. ``bandFill`` (off by default) adds -70 dBFS noise to
the empty 4-8 kHz band before decoding: it helped one flite voice and hurt
two others in the benchmark, so it is only an option.

The pocketsphinx binding does not release the GIL: a decode in
``asyncio.to_thread`` still froze the event loop (a 7 s decode left it
unable to run for 5.9 s). So pocketsphinx runs in worker
processes by default (``worker: "process"``, ``workers``: 1, shared by all
sessions of the provider; each worker holds ~90 MB): plain subprocesses
speaking length-prefixed pickles over stdin/stdout, restarted when one dies.
``worker: "thread"`` (``asyncio.to_thread``, one engine behind a lock) is the
default for faster-whisper, whose CTranslate2 core releases the GIL.

``modelPath`` selects a user model: a pocketsphinx model directory (an
acoustic model dir holding ``mdef``, plus optional ``*.lm.bin``/``*.lm``/
``*.arpa`` and ``*.dict``), or a faster-whisper / CTranslate2 Whisper model
directory (``model.bin`` + ``config.json``), used only when the optional
package ``faster_whisper`` is importable; it is not a dependency of
voicecall (hints become its ``initial_prompt``/``hotwords``). An 8 kHz
pocketsphinx model (filterbank up to <= 4 kHz in its ``feat.params``) gets
the audio at 8 kHz.

Capabilities, honestly: finals only (no partials); speech-start comes from
our own VAD (``server_vad``); no confidence; English with the shipped model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import pickle
import re
import struct
import sys
import tempfile
import threading
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import numpy as np
import numpy.typing as npt

from voicecall.audio.g711 import FRAME_BYTES, SAMPLE_RATE, mulaw_to_pcm16
from voicecall.audio.pcm import Framer
from voicecall.audio.resample import StreamResampler
from voicecall.audio.vad import EnergyVad, WebrtcVad
from voicecall.errors import ConfigError, ProviderError
from voicecall.speech.stt.base import SttCapabilities, SttEvent

__all__ = [
    "DEFAULT_SILENCE_MS",
    "STT",
    "EngineSpec",
    "LocalSttSession",
    "PocketsphinxEngine",
    "Transcript",
    "WhisperEngine",
    "build_hint_lm",
    "create",
    "normalize_words",
]

log = logging.getLogger("voicecall.stt.local")

PROVIDER_ID = "local"
DEFAULT_SILENCE_MS = 600
DEFAULT_PRE_ROLL_MS = 300
DEFAULT_MAX_UTTERANCE_MS = 20_000
DEFAULT_VAD_AGGRESSIVENESS = 2
DEFAULT_READY_TIMEOUT_S = 60.0
MAX_QUEUED_BYTES = 2 * 1024 * 1024          # mu-law queued before ready (~4.4 min)
BAND_FILL_LEVEL = 10.0                       # RMS, in 16-bit units (~ -70 dBFS)
HINT_DISCOUNT = 0.3                          # n-gram mass left for recombining hint words
HINT_GARBAGE_MASS = 0.95                     # unigram mass of the phone-loop garbage words
MAX_HINT_SETS = 8                            # hint models cached per decoder
FRAME_MS = 20

# CI phones of the CMU US English model (garbage words are one phone each).
_PHONES = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S "
           "SH T TH UH UW V W Y Z ZH").split()
_GARBAGE = {f"gbg_{p.lower()}": p for p in _PHONES}

Source = Literal["hints", "general", "whisper", "none"]
HintsMode = Literal["prefer", "only"]


# --------------------------------------------------------------------------- text + hint LM

_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TOKEN = re.compile(r"[a-z0-9']+(?:\.[a-z]\.?)*")


def normalize_words(text: str) -> list[str]:
    """Lower-case words as the CMU dictionary spells them; digits are read one by one.

    ``"Table for 2 at 7pm!"`` -> ``table for two at seven pm``.
    """
    out: list[str] = []
    for tok in _TOKEN.findall(text.lower().replace("-", " ")):
        for part in re.findall(r"\d|[^\d]+", tok):
            if part.isdigit():
                out.append(_DIGITS[int(part)])
            else:
                part = part.strip("'")
                if part:
                    out.append(part)
    return out


def _hint_sentences(phrases: Iterable[str], known: Callable[[str], bool]) -> list[list[str]]:
    """Normalised hint phrases, split at words the dictionary cannot pronounce."""
    sentences: list[list[str]] = []
    unknown: set[str] = set()
    for phrase in phrases:
        run: list[str] = []
        for word in normalize_words(phrase):
            if known(word):
                run.append(word)
            else:
                unknown.add(word)
                if run:
                    sentences.append(run)
                run = []
        if run:
            sentences.append(run)
    if unknown:
        log.warning("local STT: hint words without a pronunciation are ignored: %s "
                    "(add them under 'words' as ARPAbet phones)", ", ".join(sorted(unknown)))
    return sentences


def build_hint_lm(phrases: Iterable[str], *, known: Callable[[str], bool] = lambda w: True,
                  discount: float = HINT_DISCOUNT, garbage: Iterable[str] = (),
                  garbage_mass: float = HINT_GARBAGE_MASS) -> str:
    """An ARPA trigram model of the hint phrases (text).

    Seen n-grams keep ``1 - discount`` of their history's mass (maximum
    likelihood scaled down), the rest backs off, so hint words recombine
    ("a table for four" from "a table for two" and "four"). Unigrams are
    add-one smoothed over the hint vocabulary and share ``1 - garbage_mass``
    with the ``garbage`` words, which split ``garbage_mass`` evenly. Raises
    ValueError when no hint word is usable.
    """
    if not 0.0 < discount < 1.0:
        raise ValueError("discount must be in (0, 1)")
    garbage = list(garbage)
    g_mass = garbage_mass if garbage else 0.0
    if not 0.0 <= g_mass < 1.0:
        raise ValueError("garbage_mass must be in [0, 1)")
    sents = [["<s>", *s, "</s>"] for s in _hint_sentences(phrases, known)]
    if not sents:
        raise ValueError("no usable hint phrase")
    c1: dict[str, int] = defaultdict(int)
    c2: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    c3: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for s in sents:
        for i, w in enumerate(s):
            c1[w] += 1
            if i >= 1:
                c2[s[i - 1]][w] += 1
            if i >= 2:
                c3[(s[i - 2], s[i - 1])][w] += 1
    vocab = [w for w in c1 if w != "<s>"]
    total = sum(c1[w] for w in vocab) + len(vocab)
    p1 = {w: (1.0 - g_mass) * (c1[w] + 1) / total for w in vocab}
    for g in garbage:
        p1[g] = g_mass / len(garbage)
    p2: dict[tuple[str, str], float] = {}
    bo1: dict[str, float] = {}
    for h, nxt in c2.items():
        n = sum(nxt.values())
        for w, c in nxt.items():
            p2[(h, w)] = (1.0 - discount) * c / n
        bo1[h] = discount / (1.0 - sum(p1[w] for w in nxt))
    p3: dict[tuple[str, str, str], float] = {}
    bo2: dict[tuple[str, str], float] = {}
    for (a, b), nxt in c3.items():
        n = sum(nxt.values())
        for w, c in nxt.items():
            p3[(a, b, w)] = (1.0 - discount) * c / n
        bo2[(a, b)] = discount / (1.0 - sum(p2[(b, w)] for w in nxt))

    def lg(p: float) -> str:
        return f"{math.log10(p):.5f}"

    lines = ["\\data\\", f"ngram 1={len(p1) + 1}", f"ngram 2={len(p2)}", f"ngram 3={len(p3)}",
             "", "\\1-grams:", f"-99.00000 <s> {lg(bo1['<s>'])}"]
    lines += [f"{lg(p)} {w}" + (f" {lg(bo1[w])}" if w in bo1 else "") for w, p in p1.items()]
    lines += ["", "\\2-grams:"]
    lines += [f"{lg(p)} {h} {w}" + (f" {lg(bo2[(h, w)])}" if (h, w) in bo2 else "")
              for (h, w), p in p2.items()]
    lines += ["", "\\3-grams:"]
    lines += [f"{lg(p)} {a} {b} {w}" for (a, b, w), p in p3.items()]
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- engines


@dataclass(frozen=True)
class Transcript:
    text: str
    source: Source
    hint_text: str = ""          # what the hint pass heard (garbage as "_"), for diagnostics
    seconds: float = 0.0         # decode time


@dataclass(frozen=True)
class EngineSpec:
    """Everything a worker needs to build its engine (picklable)."""

    kind: Literal["pocketsphinx", "whisper"] = "pocketsphinx"
    model_dir: str | None = None          # whisper model dir
    hmm: str | None = None                # pocketsphinx acoustic model (None: shipped)
    lm: str | None = None
    dictionary: str | None = None
    sample_rate: int = 16000              # rate the engine wants
    hints: tuple[str, ...] = ()
    hints_mode: HintsMode = "prefer"
    words: tuple[tuple[str, str], ...] = ()
    band_fill: bool = False
    language: str | None = "en"
    compute_type: str = "int8"


class Engine(Protocol):
    spec: EngineSpec

    def transcribe(self, pcm: bytes, hints: tuple[str, ...] | None = None) -> Transcript: ...


def _band_fill_noise(n: int) -> npt.NDArray[np.float64]:
    """Deterministic noise with nothing below 4 kHz (at 16 kHz), RMS ``BAND_FILL_LEVEL``."""
    import soxr

    rng = np.random.default_rng(20241124)
    white = rng.standard_normal(n + 512)
    low = soxr.resample(soxr.resample(white, 16000, 8000, quality="VHQ"), 8000, 16000,
                        quality="VHQ")[: white.size]
    high = (white - np.pad(low, (0, white.size - low.size)))[256:256 + n]
    scaled: npt.NDArray[np.float64] = high * (BAND_FILL_LEVEL / max(float(np.std(high)), 1e-9))
    return scaled


class PocketsphinxEngine:
    """One pocketsphinx decoder with a general search and cached hint searches.

    Not thread-safe: one engine per worker (process or thread).
    """

    def __init__(self, spec: EngineSpec) -> None:
        import pocketsphinx  # type: ignore[import-untyped,unused-ignore]

        self.spec = spec
        model = pocketsphinx.get_model_path()
        hmm = spec.hmm or os.path.join(model, "en-us", "en-us")
        lm = spec.lm or (None if spec.hmm else os.path.join(model, "en-us", "en-us.lm.bin"))
        dictionary = spec.dictionary or os.path.join(model, "en-us", "cmudict-en-us.dict")
        # No LM at construction: words added now stay out of the general LM
        # (pocketsphinx adds new words to the *active* LM as unigrams).
        self._ps = pocketsphinx.Decoder(hmm=hmm, dict=dictionary, lm=None,
                                        samprate=spec.sample_rate, loglevel="FATAL")
        for word, phones in _GARBAGE.items():
            self._ps.add_word(word, phones, False)
        self._general = lm is not None
        if lm is not None:
            self._ps.add_lm_file("general", lm)
            self._ps.activate_search("general")
        for word, phones in spec.words:          # user words: also reachable in the general LM
            if self._ps.lookup_word(word) is None:
                self._ps.add_word(word, phones, True)
        # Hint searches live in a second decoder whose dictionary holds only the words
        # they use: adding an LM search costs time in proportion to the dictionary
        # (~5-9 s per hint set against the 134k-word CMUdict, ~0 s here).
        self._hints_ps = pocketsphinx.Decoder(hmm=hmm, dict=os.devnull, lm=None,
                                              samprate=spec.sample_rate, loglevel="FATAL")
        for word, phones in _GARBAGE.items():
            self._hints_ps.add_word(word, phones, False)
        self._hint_searches: OrderedDict[tuple[str, ...], str] = OrderedDict()
        self._names = 0
        self._noise = _band_fill_noise(16000 * 4) if self._band_fill else None
        if spec.hints:
            self._hint_search(spec.hints)
        if not self._general and not spec.hints:
            raise ValueError("the model has no language model and no hints were given")

    @property
    def _band_fill(self) -> bool:
        return self.spec.band_fill and self.spec.sample_rate == 16000

    def _known(self, word: str) -> bool:
        return self._ps.lookup_word(word) is not None

    def _hint_search(self, hints: tuple[str, ...]) -> str:
        name = self._hint_searches.get(hints)
        if name is not None:
            self._hint_searches.move_to_end(hints)
            return name
        text = build_hint_lm(hints, known=self._known, garbage=_GARBAGE)
        for sentence in _hint_sentences(hints, self._known):
            for word in sentence:
                if self._hints_ps.lookup_word(word) is None:
                    self._hints_ps.add_word(word, self._ps.lookup_word(word), False)
        self._names += 1
        name = f"hints{self._names}"
        fd, path = tempfile.mkstemp(prefix="voicecall-hints-", suffix=".arpa")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            self._hints_ps.add_lm_file(name, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._hint_searches[hints] = name
        while len(self._hint_searches) > MAX_HINT_SETS:
            _, old = self._hint_searches.popitem(last=False)
            with contextlib.suppress(Exception):
                self._hints_ps.remove_search(old)
        return name

    def _prepare(self, pcm: bytes) -> bytes:
        if not self._band_fill or self._noise is None:
            return pcm
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        reps = -(-x.size // self._noise.size)
        x += np.tile(self._noise, reps)[: x.size]
        return bytes(np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes())

    def _decode(self, search: str, audio: bytes, *, hints: bool = False) -> str:
        ps = self._hints_ps if hints else self._ps
        ps.activate_search(search)
        ps.start_utt()
        ps.process_raw(audio, full_utt=True)
        ps.end_utt()
        hyp = ps.hyp()
        return str(hyp.hypstr) if hyp is not None else ""

    def transcribe(self, pcm: bytes, hints: tuple[str, ...] | None = None) -> Transcript:
        """Decode one utterance of 16-bit PCM at ``spec.sample_rate``."""
        t0 = time.perf_counter()
        audio = self._prepare(pcm)
        hints = self.spec.hints if hints is None else hints
        hint_text = ""
        if hints:
            words = self._decode(self._hint_search(hints), audio, hints=True).split()
            hint_text = " ".join("_" if w in _GARBAGE else w for w in words)
            clean = [w for w in words if w not in _GARBAGE]
            # Accept the hint path when it is all hint words; nothing at all (not
            # even garbage) means no speech, so the general model is not asked to
            # guess either. Any garbage: speech outside the hints -> fall back.
            if self.spec.hints_mode == "only" or not self._general or \
                    len(clean) == len(words):
                return Transcript(" ".join(clean), "hints" if clean else "none", hint_text,
                                  time.perf_counter() - t0)
        if not self._general:                     # a user model without an LM, no hints
            return Transcript("", "none", hint_text, time.perf_counter() - t0)
        text = self._decode("general", audio)
        return Transcript(text, "general" if text else "none", hint_text,
                          time.perf_counter() - t0)


class WhisperEngine:
    """faster-whisper (CTranslate2) on a user-supplied model directory; hints become a prompt."""

    def __init__(self, spec: EngineSpec) -> None:
        from faster_whisper import WhisperModel  # type: ignore[import-not-found,unused-ignore]

        self.spec = spec
        self._model = WhisperModel(spec.model_dir, device="cpu", compute_type=spec.compute_type)

    def transcribe(self, pcm: bytes, hints: tuple[str, ...] | None = None) -> Transcript:
        t0 = time.perf_counter()
        hints = self.spec.hints if hints is None else hints
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        kwargs: dict[str, Any] = {"language": self.spec.language, "beam_size": 5,
                                  "condition_on_previous_text": False, "vad_filter": False}
        if hints:
            kwargs["initial_prompt"] = ", ".join(hints)
            kwargs["hotwords"] = " ".join(hints)
        try:
            segments, _info = self._model.transcribe(audio, **kwargs)
        except TypeError:                     # older faster-whisper: no hotwords
            kwargs.pop("hotwords", None)
            segments, _info = self._model.transcribe(audio, **kwargs)
        text = " ".join(s.text.strip() for s in segments).strip()
        return Transcript(text, "whisper" if text else "none", "", time.perf_counter() - t0)


def build_engine(spec: EngineSpec) -> Engine:
    if spec.kind == "whisper":
        return WhisperEngine(spec)
    return PocketsphinxEngine(spec)


# --------------------------------------------------------------------------- workers
#
# A worker is ``python -c "...; _worker_main()"`` speaking length-prefixed
# pickles over its stdin/stdout (parent and child are the same program, so
# pickle is safe here). A plain subprocess, rather than multiprocessing,
# never re-imports the parent's ``__main__`` and never forks a process that
# runs threads and an event loop.

_LEN = struct.Struct(">I")
_WORKER_CMD = "from voicecall.speech.stt.local import _worker_main; _worker_main()"
_WORKER_STOP_S = 2.0
_SRC_DIR = str(Path(__file__).resolve().parents[3])      # the directory holding voicecall/


def _read_msg(stream: BinaryIO) -> Any:
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError
    size = _LEN.unpack(head)[0]
    body = stream.read(size)
    if len(body) < size:
        raise EOFError
    return pickle.loads(body)


def _write_msg(stream: BinaryIO, msg: Any) -> None:
    body = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LEN.pack(len(body)) + body)
    stream.flush()


def _worker_main() -> None:
    """Entry point of a worker process: one engine, requests served in order until EOF."""
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                       # stray C-level prints must not corrupt the channel
    proto_in = sys.stdin.buffer
    engine: Engine | None = None
    while True:
        try:
            msg = _read_msg(proto_in)
        except EOFError:
            return
        try:
            if msg[0] == "init":
                engine = build_engine(msg[1])
                reply: tuple[str, Any] = ("ok", None)
            elif msg[0] == "transcribe":
                if engine is None:
                    raise RuntimeError("engine not initialised")
                reply = ("ok", engine.transcribe(msg[1], msg[2]))
            else:
                raise RuntimeError(f"unknown request {msg[0]!r}")
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        _write_msg(proto_out, reply)


class _Worker:
    """The parent's handle on one worker process (one request at a time)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.alive = True

    @classmethod
    async def spawn(cls, spec: EngineSpec) -> _Worker:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC_DIR, env.get("PYTHONPATH")) if p)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WORKER_CMD, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env)
        worker = cls(proc)
        try:
            await worker.call(("init", spec))
        except BaseException:
            await worker.stop()
            raise
        return worker

    async def call(self, msg: tuple[Any, ...]) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        body = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.proc.stdin.write(_LEN.pack(len(body)) + body)
            await self.proc.stdin.drain()
            head = await self.proc.stdout.readexactly(_LEN.size)
            reply = pickle.loads(await self.proc.stdout.readexactly(_LEN.unpack(head)[0]))
        except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError) as exc:
            self.alive = False
            code = self.proc.returncode
            raise ProviderError(f"local STT worker died (exit code {code})",
                                retryable=True) from exc
        if reply[0] != "ok":
            raise ProviderError(f"local STT: {reply[1]}")
        return reply[1]

    async def stop(self) -> None:
        self.alive = False
        if self.proc.returncode is not None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), _WORKER_STOP_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()

    def kill(self) -> None:
        self.alive = False
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


class _Runner:
    """Runs an engine off the event loop: worker processes, or one engine in a thread."""

    def __init__(self, spec: EngineSpec, worker: Literal["process", "thread"],
                 workers: int) -> None:
        self.spec = spec
        self.worker = worker
        self.workers = workers
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._ready: asyncio.Task[None] | None = None
        self._all: list[_Worker] = []
        self._idle: asyncio.Queue[_Worker] | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._closing = False

    def start(self) -> asyncio.Task[None]:
        """The (shared) start-up task; a failed start is retried by the next caller."""
        if self._ready is not None and self._ready.done() and (
                self._ready.cancelled() or self._ready.exception() is not None):
            self._ready = None
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_task(self._start())
        return self._ready

    async def _start(self) -> None:
        if self.worker == "thread":
            try:
                self._engine = await asyncio.to_thread(build_engine, self.spec)
            except Exception as exc:
                raise ProviderError(f"local STT: cannot load the model: "
                                    f"{type(exc).__name__}: {exc}") from exc
            return
        self._idle = asyncio.Queue()
        results = await asyncio.gather(*(_Worker.spawn(self.spec) for _ in range(self.workers)),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, _Worker):
                self._all.append(r)
                self._idle.put_nowait(r)
        if not self._all:
            err = next(r for r in results if isinstance(r, BaseException))
            raise err if isinstance(err, ProviderError) else \
                ProviderError(f"local STT: worker failed to start: {err}")

    def _transcribe_locked(self, pcm: bytes, hints: tuple[str, ...] | None) -> Transcript:
        assert self._engine is not None
        with self._lock:
            return self._engine.transcribe(pcm, hints)

    async def transcribe(self, pcm: bytes, hints: tuple[str, ...] | None) -> Transcript:
        await self.start()
        if self.worker == "thread":
            return await asyncio.to_thread(self._transcribe_locked, pcm, hints)
        # The request runs to completion even if our caller is cancelled, so a
        # late reply can never be read by the next request on that worker.
        task = asyncio.get_running_loop().create_task(self._dispatch(pcm, hints))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        result: Transcript = await asyncio.shield(task)
        return result

    async def _dispatch(self, pcm: bytes, hints: tuple[str, ...] | None) -> Transcript:
        assert self._idle is not None
        worker = await self._idle.get()
        try:
            result: Transcript = await worker.call(("transcribe", pcm, hints))
            return result
        finally:
            if worker.alive:
                self._idle.put_nowait(worker)
            elif not self._closing:                 # replace a dead worker in the background
                self._all.remove(worker)
                task = asyncio.get_running_loop().create_task(self._respawn())
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _respawn(self) -> None:
        try:
            worker = await _Worker.spawn(self.spec)
        except Exception as exc:
            log.error("local STT: could not restart a worker: %s", exc)
            return
        self._all.append(worker)
        if self._idle is not None:
            self._idle.put_nowait(worker)

    async def aclose(self) -> None:
        self._closing = True
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._ready
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*(w.stop() for w in self._all), return_exceptions=True)
        self._all.clear()
        self._idle = None
        self._engine = None
        self._ready = None
        self._closing = False

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._all]


# --------------------------------------------------------------------------- session


@dataclass
class _Settings:
    silence_ms: int = DEFAULT_SILENCE_MS
    pre_roll_ms: int = DEFAULT_PRE_ROLL_MS
    max_utterance_ms: int = DEFAULT_MAX_UTTERANCE_MS
    vad_aggressiveness: int = DEFAULT_VAD_AGGRESSIVENESS
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
    vad: Literal["webrtc", "energy"] = "webrtc"


class LocalSttSession:
    """One call: VAD endpointing on the event loop, decoding on the runner."""

    def __init__(self, runner: _Runner, settings: _Settings, call_id: str,
                 hints: tuple[str, ...] | None = None,
                 on_close: Callable[[LocalSttSession], None] | None = None) -> None:
        self.call_id = call_id
        self._on_close = on_close
        self._runner = runner
        self._settings = settings
        self._hints = hints
        self._rate = runner.spec.sample_rate
        self._events: asyncio.Queue[SttEvent] = asyncio.Queue()
        self._audio: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._queued_bytes = 0
        self.dropped_bytes = 0
        self._ready = asyncio.get_running_loop().create_future()
        self._closed = False
        self._framer = Framer(FRAME_BYTES)
        self._resampler = StreamResampler(SAMPLE_RATE, self._rate)
        release = max(1, settings.silence_ms // FRAME_MS)
        self._vad: WebrtcVad | EnergyVad = WebrtcVad(
            aggressiveness=settings.vad_aggressiveness, trigger_frames=3,
            release_frames=release) if settings.vad == "webrtc" else \
            EnergyVad(trigger_frames=3, release_frames=release)
        pre_frames = max(1, settings.pre_roll_ms // FRAME_MS)
        self._pre_roll: deque[npt.NDArray[np.int16]] = deque(maxlen=pre_frames)
        self._utterance: list[npt.NDArray[np.int16]] | None = None
        self._utt_frames = 0
        self._utterances: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._tasks = [asyncio.get_running_loop().create_task(self._run()),
                       asyncio.get_running_loop().create_task(self._decode_loop())]

    # -- SttSession API

    async def wait_ready(self) -> None:
        await asyncio.shield(self._ready)

    async def send_audio(self, mulaw: bytes) -> None:
        if self._closed or not mulaw or (self._ready.done() and self._ready.exception()):
            return                                # closed or failed: nobody will listen
        self._audio.put_nowait(bytes(mulaw))
        if not self._ready.done():
            self._queued_bytes += len(mulaw)
            if self._queued_bytes > MAX_QUEUED_BYTES:   # bounded: oldest audio goes first
                dropped = self._audio.get_nowait()
                if dropped:
                    self._queued_bytes -= len(dropped)
                    if not self.dropped_bytes:
                        log.warning("local STT %s: model not ready, dropping the oldest audio",
                                    self.call_id)
                    self.dropped_bytes += len(dropped)

    async def events(self) -> AsyncIterator[SttEvent]:
        while True:
            event = await self._events.get()
            yield event
            if event.type == "closed":
                return

    async def aclose(self) -> None:
        """Stop now: audio of an unfinished utterance is dropped, pending decodes abandoned."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if not self._ready.done():
            self._ready.set_exception(ProviderError("local STT session closed"))
            self._ready.exception()
        self._emit(SttEvent("closed"))
        if self._on_close is not None:
            self._on_close(self)

    # -- internals

    def _emit(self, event: SttEvent) -> None:
        self._events.put_nowait(event)

    async def _run(self) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._runner.start()),
                                   self._settings.ready_timeout_s)
        except Exception as exc:
            err = exc if isinstance(exc, ProviderError) else ProviderError(
                f"local STT: model not ready after {self._settings.ready_timeout_s:g} s"
                if isinstance(exc, TimeoutError) else f"local STT: {exc}")
            self._ready.set_exception(err)
            self._ready.exception()           # retrieved here; wait_ready re-raises it
            self._emit(SttEvent("error", text=str(err)))
            return
        self._ready.set_result(None)
        self._queued_bytes = 0
        self._emit(SttEvent("ready"))
        while True:
            chunk = await self._audio.get()
            if chunk is None:
                return
            for frame in self._framer.feed(chunk):
                self._on_frame(frame)

    def _on_frame(self, frame: bytes) -> None:
        pcm = self._resampler.feed(mulaw_to_pcm16(frame))
        try:
            event = self._vad.feed(frame)
        except ValueError:                        # cannot happen with 160-byte frames
            event = None
        if self._utterance is None:
            self._pre_roll.append(pcm)
            if event == "start":
                self._utterance = list(self._pre_roll)
                self._utt_frames = len(self._pre_roll)
                self._pre_roll.clear()
                self._emit(SttEvent("speech-start"))
            return
        self._utterance.append(pcm)
        self._utt_frames += 1
        if event == "end":
            self._finish_utterance()
        elif self._utt_frames * FRAME_MS >= self._settings.max_utterance_ms:
            self._finish_utterance()
            if self._vad.speaking:                # still talking: keep collecting
                self._utterance, self._utt_frames = [], 0

    def _finish_utterance(self) -> None:
        if self._utterance:
            audio = np.concatenate(self._utterance).astype("<i2").tobytes()
            self._utterances.put_nowait(audio)
        self._utterance = None
        self._utt_frames = 0

    async def _decode_loop(self) -> None:
        while True:
            audio = await self._utterances.get()
            if audio is None:
                return
            try:
                result = await self._runner.transcribe(audio, self._hints)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("local STT %s: decode failed: %s", self.call_id, exc)
                self._emit(SttEvent("error", text=f"local STT decode failed: {exc}"))
                continue
            log.debug("local STT %s: %r via %s in %.2f s (hint pass %r)", self.call_id,
                      result.text, result.source, result.seconds, result.hint_text)
            if result.text:
                self._emit(SttEvent("final", text=result.text))


# --------------------------------------------------------------------------- provider


class STT:
    """The ``local`` provider: offline, one model (and worker pool) shared by all sessions."""

    name = PROVIDER_ID

    def __init__(self, spec: EngineSpec | None = None, *,
                 worker: Literal["process", "thread"] | None = None, workers: int = 1,
                 silence_ms: int = DEFAULT_SILENCE_MS, pre_roll_ms: int = DEFAULT_PRE_ROLL_MS,
                 max_utterance_ms: int = DEFAULT_MAX_UTTERANCE_MS,
                 vad_aggressiveness: int = DEFAULT_VAD_AGGRESSIVENESS,
                 ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
                 vad: Literal["webrtc", "energy"] | None = None) -> None:
        self.spec = spec or EngineSpec()
        self.worker: Literal["process", "thread"] = worker or (
            "thread" if self.spec.kind == "whisper" else "process")
        # Endpointing is ours (VAD), there are no partial hypotheses.
        self.capabilities = SttCapabilities(interim_results=False, server_vad=True)
        if vad is None:
            vad = "webrtc" if _module_available("webrtcvad") else "energy"
            if vad == "energy":
                log.warning("local STT: webrtcvad-wheels is not installed; endpointing with "
                            "the energy VAD (pip install webrtcvad-wheels)")
        self._settings = _Settings(silence_ms, pre_roll_ms, max_utterance_ms,
                                   vad_aggressiveness, ready_timeout_s, vad)
        self._runner = _Runner(self.spec, self.worker, max(1, workers))
        self._sessions: set[LocalSttSession] = set()

    async def open(self, call_id: str, *, hints: Sequence[str] | None = None) -> LocalSttSession:
        """A session for one call; ``hints`` (optional) replace the configured ones for it."""
        self._runner.start()
        session = LocalSttSession(self._runner, self._settings, call_id,
                                  tuple(hints) if hints is not None else None,
                                  on_close=self._sessions.discard)
        self._sessions.add(session)
        return session

    async def transcribe(self, pcm: bytes, hints: Sequence[str] | None = None) -> Transcript:
        """Decode one utterance of PCM16 at ``spec.sample_rate`` (outside any session)."""
        return await self._runner.transcribe(pcm, tuple(hints) if hints is not None else None)

    async def aclose(self) -> None:
        """Close every session and stop the worker pool."""
        for session in list(self._sessions):
            await session.aclose()
        self._sessions.clear()
        await self._runner.aclose()


def _has_mdef(path: Path) -> bool:
    return (path / "mdef").is_file()


def _feat_upperf(hmm: Path) -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in (hmm / "feat.params").read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "-upperf":
                return float(parts[1])
    return None


def _pocketsphinx_spec(root: Path) -> dict[str, Any]:
    candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    hmm = next((p for p in candidates if _has_mdef(p)), None)
    if hmm is None:
        raise ValueError("no acoustic model (a directory with 'mdef') in it")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    lm = next((p for p in files if p.name.endswith((".lm.bin", ".lm", ".arpa", ".lm.dmp"))
               and "phone" not in p.name), None)
    dic = next((p for p in files if p.suffix == ".dict" and p.name != "noisedict"), None)
    upperf = _feat_upperf(hmm)
    rate = 8000 if upperf is not None and upperf <= 4000 else 16000
    return {"kind": "pocketsphinx", "hmm": str(hmm), "lm": str(lm) if lm else None,
            "dictionary": str(dic) if dic else None, "sample_rate": rate}


def _model_spec(model_path: str, path_key: str) -> dict[str, Any]:
    root = Path(model_path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"model directory not found: {root}", path=path_key)
    if (root / "model.bin").is_file() and (root / "config.json").is_file():
        if not _module_available("faster_whisper"):
            raise ConfigError("this is a faster-whisper (CTranslate2) model, but the optional "
                              "package faster_whisper is not installed "
                              "(pip install faster-whisper)", path=path_key)
        return {"kind": "whisper", "model_dir": str(root), "sample_rate": 16000}
    try:
        return _pocketsphinx_spec(root)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"not a pocketsphinx or faster-whisper model directory ({exc})",
                          path=path_key) from None


def create(cfg: Mapping[str, Any]) -> STT:
    """Build the provider from ``streaming.providers.local``.

    Keys: ``hints`` (list of phrases), ``hintsMode`` ("prefer" | "only"),
    ``words`` ({word: "ARPAbet phones"}), ``silenceMs`` (600), ``preRollMs``
    (300), ``maxUtteranceMs`` (20000), ``vadAggressiveness`` (0-3, 2),
    ``modelPath``, ``language`` (whisper, "en"), ``bandFill`` (true),
    ``worker`` ("process" | "thread"), ``workers`` (1), ``readyTimeoutS`` (60),
    ``vad`` ("webrtc", or "energy" when webrtcvad-wheels is missing).
    """
    from voicecall.speech.stt._ws import ProviderConfig

    pc = ProviderConfig(cfg, PROVIDER_ID)
    model_path = pc.get_str("modelPath")
    spec_args: dict[str, Any] = _model_spec(model_path, pc.path("modelPath")) if model_path \
        else {"kind": "pocketsphinx", "sample_rate": 16000}
    if spec_args["kind"] == "pocketsphinx" and not _module_available("pocketsphinx"):
        raise ConfigError("the local STT needs the package pocketsphinx "
                              "(pip install pocketsphinx)", path=pc.path("modelPath"))
    vad = pc.get_choice("vad", "webrtc" if _module_available("webrtcvad") else "energy",
                        ("webrtc", "energy"))
    if vad == "webrtc" and not _module_available("webrtcvad"):
        raise ConfigError("needs the package webrtcvad-wheels (pip install webrtcvad-wheels)",
                          path=pc.path("vad"))
    words_raw = pc.raw("words") or {}
    if not isinstance(words_raw, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in words_raw.items()):
        raise ConfigError("must be an object of word: \"PHONES\"", path=pc.path("words"))
    words = tuple((k.strip().lower(), " ".join(v.upper().split()))
                  for k, v in words_raw.items() if k.strip() and v.strip())
    spec = EngineSpec(
        **spec_args,
        hints=tuple(pc.get_str_list("hints")),
        hints_mode=pc.get_choice("hintsMode", "prefer", ("prefer", "only")),  # type: ignore[arg-type]
        words=words,
        band_fill=pc.get_bool("bandFill", False),
        language=pc.get_str("language", "en"),
    )
    worker = pc.get_choice("worker", "thread" if spec.kind == "whisper" else "process",
                           ("process", "thread"))
    return STT(spec, worker=worker,  # type: ignore[arg-type]
               workers=pc.get_int("workers", 1, minimum=1, maximum=64),
               silence_ms=pc.get_int("silenceMs", DEFAULT_SILENCE_MS, minimum=100,
                                     maximum=10_000),
               pre_roll_ms=pc.get_int("preRollMs", DEFAULT_PRE_ROLL_MS, minimum=0,
                                      maximum=2000),
               max_utterance_ms=pc.get_int("maxUtteranceMs", DEFAULT_MAX_UTTERANCE_MS,
                                           minimum=1000, maximum=120_000),
               vad_aggressiveness=pc.get_int("vadAggressiveness", DEFAULT_VAD_AGGRESSIVENESS,
                                             minimum=0, maximum=3),
               ready_timeout_s=pc.get_number("readyTimeoutS", DEFAULT_READY_TIMEOUT_S,
                                             minimum=1),
               vad=vad)  # type: ignore[arg-type]


def _module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
