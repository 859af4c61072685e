"""Word error rate of the offline (``local``) recogniser on telephone audio.

Synthesises call phrases with flite (voice ``slt`` by default), passes them
through a telephone channel (16 kHz -> 8 kHz -> G.711 mu-law -> decoded),
decodes them and prints WER and word recall per condition:

- ``16k plain``     reference: the 16 kHz synthesis, general model (no phone line)
- ``tel plain``     telephone audio, general model (the default settings)
- ``tel band-fill`` the same with ``bandFill`` (opt-in: low-level noise in the empty
                    4-8 kHz band; helps some voices, hurts others)
- ``tel hints``     hints = all the phrases (the conversation expected them)
- ``tel hints-loo`` hints = every *other* phrase (leave-one-out: the caller says
                    something the hints do not cover, so the fallback must work)
- ``session hints`` the real session path: 20 ms mu-law frames -> VAD -> 8->16 kHz
                    resampler -> worker process, hints = all phrases

Run: ``.venv/bin/python bench/stt_local_wer.py`` (needs ``apt-get install flite``
and ``pip install pocketsphinx webrtcvad-wheels``); ``-v`` prints every
hypothesis, ``--voices slt,rms,awb`` adds flite voices.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import subprocess
import sys
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from voicecall.audio.g711 import FRAME_BYTES, MULAW_SILENCE, mulaw_to_pcm16, pcm16_to_mulaw
from voicecall.audio.resample import resample_pcm16
from voicecall.speech.stt.local import STT, EngineSpec, PocketsphinxEngine, Transcript

# The five phrases of shared/reference/offline-speech.md, then ten more typical call phrases.
PHRASES = (
    "i would like to book a table for two at seven pm",
    "what are your opening hours",
    "my number is five five five one two three four",
    "please call me back tomorrow morning",
    "yes that works for me",
    "hello is this the front desk",
    "can i speak to a manager please",
    "i want to cancel my appointment",
    "what time do you close today",
    "no thank you goodbye",
    "can you repeat that please",
    "i need to change my reservation to friday",
    "my name is john smith",
    "is there parking near the restaurant",
    "i am calling about my order",
)
LEAD_MS = 300     # line silence before the phrase (the session's pre-roll)
TRAIL_MS = 600    # and after it (the endpointing silence)


def synth(text: str, voice: str) -> tuple[np.ndarray, int]:
    out = subprocess.run(["flite", "-voice", voice, "-t", text, "-o", "/dev/stdout"],
                         capture_output=True, check=True, timeout=60).stdout
    with wave.open(io.BytesIO(out)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16), \
            w.getframerate()


def telephone(pcm: np.ndarray, rate: int, noise_db: float | None, seed: int) -> bytes:
    """Down to 8 kHz, line silence around the phrase, a line noise floor, G.711 mu-law."""
    narrow = resample_pcm16(pcm, rate, 8000).astype(np.float64)
    x = np.concatenate([np.zeros(8 * LEAD_MS), narrow, np.zeros(8 * TRAIL_MS)])
    if noise_db is not None:   # real lines are never digitally silent
        x += np.random.default_rng(seed).standard_normal(x.size) * 32768 * 10 ** (noise_db / 20)
    return pcm16_to_mulaw(np.clip(np.rint(x), -32768, 32767).astype(np.int16))


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def recalled(ref: Sequence[str], hyp: Sequence[str]) -> int:
    pool = list(hyp)
    n = 0
    for w in ref:
        if w in pool:
            pool.remove(w)
            n += 1
    return n


@dataclass
class Score:
    name: str
    errors: int = 0
    words: int = 0
    hits: int = 0
    exact: int = 0
    n: int = 0
    via_hints: int = 0
    audio_s: float = 0.0
    decode_s: float = 0.0
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, ref: str, hyp: str, source: str, audio_s: float, decode_s: float) -> None:
        r, h = ref.split(), hyp.split()
        self.errors += edit_distance(r, h)
        self.words += len(r)
        self.hits += recalled(r, h)
        self.exact += r == h
        self.n += 1
        self.via_hints += source == "hints"
        self.audio_s += audio_s
        self.decode_s += decode_s
        self.rows.append((ref, hyp, source))

    def line(self) -> str:
        known = any(source != "session" for _, _, source in self.rows)
        hints = f"{self.via_hints:4d}/{self.n:<3d}" if known else f"{'n/a':>8}"
        return (f"{self.name:<22} {self.errors / self.words:6.3f} {self.hits / self.words:7.3f} "
                f"{self.exact:3d}/{self.n:<3d} {hints} "
                f"{self.decode_s / max(self.audio_s, 1e-9):6.2f}")


def engine_condition(name: str, engine: PocketsphinxEngine,
                     utterances: Sequence[tuple[str, bytes]],
                     hints_for: Callable[[int], tuple[str, ...]]) -> Score:
    score = Score(name)
    for i, (ref, pcm) in enumerate(utterances):
        t0 = time.perf_counter()
        result: Transcript = engine.transcribe(pcm, hints_for(i))
        score.add(ref, result.text, result.source, len(pcm) / 2 / engine.spec.sample_rate,
                  time.perf_counter() - t0)
    return score


async def session_condition(name: str, calls: Sequence[tuple[str, bytes]],
                            hints: tuple[str, ...]) -> Score:
    """Through ``STT.open`` -> ``send_audio`` (20 ms frames) -> ``events()``, one call each."""
    score = Score(name)
    stt = STT(EngineSpec(hints=hints))
    try:
        for i, (ref, mulaw) in enumerate(calls):
            session = await stt.open(f"bench-{i}")
            await session.wait_ready()
            t0 = time.perf_counter()
            for k in range(0, len(mulaw), FRAME_BYTES):
                await session.send_audio(mulaw[k:k + FRAME_BYTES])
            await session.send_audio(bytes([MULAW_SILENCE]) * 8 * 400)  # let the VAD end it
            finals: list[str] = []
            try:
                async with asyncio.timeout(60):
                    async for ev in session.events():
                        if ev.type == "final":
                            finals.append(ev.text)
                            break
            except TimeoutError:
                pass
            await session.aclose()
            score.add(ref, " ".join(finals), "session", len(mulaw) / 8000,
                      time.perf_counter() - t0)
    finally:
        await stt.aclose()
    return score


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--voices", default="slt", help="comma-separated flite voices (slt)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every hypothesis")
    ap.add_argument("--no-session", action="store_true", help="skip the session condition")
    ap.add_argument("--line-noise-db", type=float, default=-60.0,
                    help="line noise floor in dBFS (default -60); 'nan' for a silent line")
    args = ap.parse_args(argv)
    if shutil.which("flite") is None:
        print("flite is not installed: apt-get install -y flite", file=sys.stderr)
        return 2
    phrases = list(PHRASES)
    print(f"{len(phrases)} phrases, {sum(len(p.split()) for p in phrases)} words, "
          f"flite voice(s) {args.voices}, telephone channel 16k -> 8 kHz mu-law -> 16k, "
          f"line noise {args.line_noise_db:g} dBFS\n")
    print(f"{'condition':<22} {'WER':>6} {'recall':>7} {'exact':>7} {'hints':>8} {'xRT':>6}")
    for voice in args.voices.split(","):
        clean, tel_pcm, tel_mulaw = [], [], []
        for p in phrases:
            pcm, rate = synth(p, voice)
            pcm16k = resample_pcm16(pcm, rate, 16000)
            pad = lambda ms: np.zeros(16 * ms, dtype=np.int16)  # noqa: E731
            clean.append((p, np.concatenate([pad(LEAD_MS), pcm16k, pad(TRAIL_MS)])
                          .astype("<i2").tobytes()))
            noise = None if np.isnan(args.line_noise_db) else args.line_noise_db
            mu = telephone(pcm, rate, noise, seed=len(tel_mulaw))
            tel_mulaw.append((p, mu))
            tel_pcm.append((p, resample_pcm16(mulaw_to_pcm16(mu), 8000, 16000)
                            .astype("<i2").tobytes()))
        plain = PocketsphinxEngine(EngineSpec())
        filled = PocketsphinxEngine(EngineSpec(band_fill=True))
        everything = tuple(phrases)
        scores = [
            engine_condition("16k plain", plain, clean, lambda i: ()),
            engine_condition("tel plain", plain, tel_pcm, lambda i: ()),
            engine_condition("tel band-fill (opt-in)", filled, tel_pcm, lambda i: ()),
            engine_condition("tel hints", plain, tel_pcm, lambda i, e=everything: e),
            engine_condition("tel hints-loo", plain, tel_pcm,
                             lambda i, e=everything: e[:i] + e[i + 1:]),
        ]
        if not args.no_session:
            scores.append(asyncio.run(session_condition("session hints", tel_mulaw,
                                                        everything)))
        print(f"-- voice {voice}")
        for s in scores:
            print(s.line())
            if args.verbose:
                for ref, hyp, source in s.rows:
                    mark = "=" if ref == hyp else "x"
                    print(f"     {mark} [{source:7}] {hyp!r}" + ("" if ref == hyp else
                                                               f"   (said {ref!r})"))
    print("\nWER = (substitutions + deletions + insertions) / reference words; recall = share "
          "of reference words found in the hypothesis; exact = utterances without error; "
          "hints = utterances answered by the hint model (the rest fell back to the general "
          "model; n/a through the session API, which does not say); xRT = decode time / audio time "
          "(wall time from the last frame sent to the final for the session row).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
