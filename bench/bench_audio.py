"""Audio-core throughput: 20 ms frames per second on one core, against a peer measured in the same run.

Every operation runs the way the gateway runs it, one 20 ms frame per call
(160 mu-law bytes in, or 20 ms of PCM at the source rate), so Python call
overhead counts. ``calls/core`` is frames-per-second / 50, the number of
simultaneous one-way streams one core could keep up with. Peers:

- G.711: the stdlib ``audioop`` (deprecated, removed in Python 3.13; present
  on 3.11/3.12), C code, so a ratio near 1 is the goal;
- resampling: ``audioop.ratecv`` (stateful linear interpolation, no
  anti-alias filter) and a naive numpy ``np.interp`` resampler; ours is a
  band-limited polyphase FIR (more work per sample), chosen over
  ``soxr.ResampleStream`` because that releases audio in 60-110 ms blocks
  (the "lag" section prints both);
- VAD: ``WebrtcVad`` against our ``EnergyVad``.

Figures depend on the machine and its load; nothing here asserts a time.
Run: ``.venv/bin/python bench/bench_audio.py [--seconds 0.3]``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import soxr

from voicecall.audio.g711 import (
    alaw_to_pcm16,
    mulaw_to_alaw,
    mulaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_mulaw,
)
from voicecall.audio.pcm import Framer
from voicecall.audio.resample import StreamResampler
from voicecall.audio.vad import EnergyVad, WebrtcVad

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop as _audioop
        audioop: ModuleType | None = _audioop
    except ImportError:  # Python >= 3.13
        audioop = None

FRAME = 160  # samples in 20 ms at 8 kHz


def fps(fn: Callable[[int], Any], frames: int, seconds: float) -> float:
    """Best frames/second over a few rounds; ``fn(i)`` processes frame ``i``."""
    for i in range(min(frames, 50)):          # warm-up
        fn(i)
    best = 0.0
    for _ in range(5):
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds / 5
        while True:
            for i in range(200):
                fn((n + i) % frames)
            n += 200
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - t0))
    return best


def speechlike(rate: int, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 25))
    x = x * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    x = x / np.max(np.abs(x)) * 0.4
    return (x * 32767).astype(np.int16)


def row(name: str, ours: float, peer_name: str | None = None, peer: float | None = None) -> None:
    ratio = f"{ours / peer:7.2f}x vs {peer_name} ({peer:,.0f} fps)" if peer else ""
    print(f"  {name:<38} {ours:>12,.0f} fps {ours / 50:>9,.0f} calls/core   {ratio}")


def bench_resample(src: int, dst: int, sec: float) -> None:
    x = speechlike(src)
    n_in = src // 50
    frs = [x[i * n_in:(i + 1) * n_in] for i in range(x.size // n_in)]
    frb = [f.astype("<i2").tobytes() for f in frs]
    rs = StreamResampler(src, dst)
    ours = fps(lambda i: rs.feed(frs[i]), len(frs), sec)
    peer_fps: float | None = None
    if audioop is not None:
        au = audioop
        state: list[Any] = [None]

        def ratecv(i: int) -> None:
            _out, state[0] = au.ratecv(frb[i], 2, 1, src, dst, state[0])

        peer_fps = fps(ratecv, len(frs), sec)
    grid_in = np.arange(n_in)
    grid_out = np.linspace(0, n_in - 1, dst // 50)
    naive = fps(lambda i: np.interp(grid_out, grid_in, frs[i]).astype(np.int16), len(frs), sec)
    label = f"{src // 1000}k -> {dst // 1000}k (polyphase FIR)"
    row(label, ours, "audioop.ratecv" if peer_fps else "np.interp", peer_fps or naive)
    if peer_fps:
        print(f"  {'':<38} {'':>12} {'':>20}   {ours / naive:7.2f}x vs np.interp "
              f"({naive:,.0f} fps)")


def held_back_ms(src: int, dst: int, feed: Any) -> float:
    """Worst lag of output behind input over 1 s of 20 ms frames (block release)."""
    x = speechlike(src)[:src]
    out = lag = 0
    for i in range(0, src, src // 50):
        out += feed(x[i:i + src // 50]).size
        lag = max(lag, (i + src // 50) * dst // src - out)
    return lag * 1000 / dst


def bench_chains(sec: float) -> None:
    """Inbound: mu-law -> PCM -> 16 kHz (STT) + VAD; outbound: 24 kHz TTS PCM -> 8 kHz mu-law."""
    pcm8 = speechlike(8000)
    mu = [pcm16_to_mulaw(pcm8[i:i + FRAME]) for i in range(0, pcm8.size - FRAME + 1, FRAME)]
    pcm24 = speechlike(24000)
    out24 = [pcm24[i:i + 480] for i in range(0, pcm24.size - 479, 480)]
    out24b = [f.astype("<i2").tobytes() for f in out24]
    up = StreamResampler(8000, 16000)
    down = StreamResampler(24000, 8000)
    energy = EnergyVad()

    def inbound(i: int) -> None:
        up.feed(mulaw_to_pcm16(mu[i]))
        energy.feed(mu[i])

    def outbound(i: int) -> None:
        pcm16_to_mulaw(down.feed(out24[i]))

    peer_in = peer_out = None
    if audioop is not None:
        au = audioop
        st: list[Any] = [None, None]

        def inbound_peer(i: int) -> None:
            lin = au.ulaw2lin(mu[i], 2)
            _o, st[0] = au.ratecv(lin, 2, 1, 8000, 16000, st[0])
            au.rms(lin, 2)

        def outbound_peer(i: int) -> None:
            o, st[1] = au.ratecv(out24b[i], 2, 1, 24000, 8000, st[1])
            au.lin2ulaw(o, 2)

        peer_in = fps(inbound_peer, len(mu), sec)
        peer_out = fps(outbound_peer, len(out24), sec)
    row("inbound: decode + 8k->16k + EnergyVad", fps(inbound, len(mu), sec), "audioop",
        peer_in)
    row("outbound: 24k->8k + mu-law encode", fps(outbound, len(out24), sec), "audioop",
        peer_out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    args = ap.parse_args(argv)
    sec = args.seconds
    print(f"Python {platform.python_version()} on {platform.machine()}, numpy {np.__version__}; "
          f"one core, one 20 ms frame per call\n")

    pcm8 = speechlike(8000)
    nfr = pcm8.size // FRAME
    pcm_frames = [pcm8[i * FRAME:(i + 1) * FRAME] for i in range(nfr)]
    pcm_bytes = [f.astype("<i2").tobytes() for f in pcm_frames]
    mu_frames = [pcm16_to_mulaw(f) for f in pcm_frames]
    a_frames = [pcm16_to_alaw(f) for f in pcm_frames]

    print("G.711 (160 samples per frame)")
    peers: dict[str, float | None] = {}
    if audioop is not None:
        au = audioop
        peers["mu-dec"] = fps(lambda i: au.ulaw2lin(mu_frames[i], 2), nfr, sec)
        peers["mu-enc"] = fps(lambda i: au.lin2ulaw(pcm_bytes[i], 2), nfr, sec)
        peers["a-dec"] = fps(lambda i: au.alaw2lin(a_frames[i], 2), nfr, sec)
        peers["a-enc"] = fps(lambda i: au.lin2alaw(pcm_bytes[i], 2), nfr, sec)
    peer = "audioop" if audioop is not None else None
    row("mu-law decode", fps(lambda i: mulaw_to_pcm16(mu_frames[i]), nfr, sec), peer,
        peers.get("mu-dec"))
    row("mu-law encode", fps(lambda i: pcm16_to_mulaw(pcm_frames[i]), nfr, sec), peer,
        peers.get("mu-enc"))
    row("A-law decode", fps(lambda i: alaw_to_pcm16(a_frames[i]), nfr, sec), peer,
        peers.get("a-dec"))
    row("A-law encode", fps(lambda i: pcm16_to_alaw(pcm_frames[i]), nfr, sec), peer,
        peers.get("a-enc"))

    if audioop is not None:
        au = audioop
        row("mu-law -> A-law transcode", fps(lambda i: mulaw_to_alaw(mu_frames[i]), nfr, sec),
            "audioop chain", fps(lambda i: au.lin2alaw(au.ulaw2lin(mu_frames[i], 2), 2),
                                 nfr, sec))

    print("\nResampling (stateful, per 20 ms frame)")
    for src, dst in ((8000, 16000), (24000, 8000), (16000, 8000), (48000, 8000)):
        bench_resample(src, dst, sec)

    print("\nLive resampling lag (output behind input, worst 20 ms frame, + filter delay)")
    for src, dst in ((8000, 16000), (24000, 8000)):
        ours = StreamResampler(src, dst)
        lag = held_back_ms(src, dst, ours.feed) + ours.delay_ms
        peer = soxr.ResampleStream(src, dst, 1, dtype="int16", quality="HQ")
        soxr_lag = held_back_ms(src, dst, peer.resample_chunk)
        print(f"  {src // 1000}k -> {dst // 1000}k: ours {lag:.1f} ms, "
              f"soxr.ResampleStream HQ {soxr_lag:.1f} ms ({soxr_lag - lag:.1f} ms less)")

    print("\nVAD (mu-law frames)")
    speech_mu = [pcm16_to_mulaw(f) for f in pcm_frames]
    energy = EnergyVad()
    e_fps = fps(lambda i: energy.feed(speech_mu[i]), nfr, sec)
    try:
        webrtc = WebrtcVad()
        row("WebrtcVad (aggressiveness 2)", fps(lambda i: webrtc.feed(speech_mu[i]), nfr, sec),
            "EnergyVad", e_fps)
    except ImportError:
        print("  WebrtcVad: webrtcvad-wheels not installed")
    row("EnergyVad", e_fps)

    print("\nChains (what one call costs per 20 ms frame)")
    bench_chains(sec)

    print("\nFraming (Framer, 1000-byte chunks -> 160-byte frames; fps = frames out)")
    chunk = bytes(1000)
    framer = Framer(160)
    per_chunk = fps(lambda i: framer.feed(chunk), 1, sec)
    pending = [b""]

    def naive_frames(i: int) -> None:
        buf = pending[0] + chunk
        out = []
        while len(buf) >= 160:
            out.append(buf[:160])
            buf = buf[160:]
        pending[0] = buf

    row("Framer.feed", per_chunk * 1000 / 160, "bytes slicing loop",
        fps(naive_frames, 1, sec) * 1000 / 160)
    if audioop is None:
        print("\n(audioop is not available on this Python; G.711 ran without a peer)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
