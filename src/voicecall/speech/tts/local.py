"""Offline TTS with flite (Debian package ``flite``), sentence by sentence.

Each sentence is one ``flite`` run (no shell; the text is a single argv
element) writing a WAV to its stdout, parsed with :mod:`wave`, resampled to
8 kHz with soxr and mu-law encoded. The next sentence is synthesised while
the current one is being played, so speech starts after the first sentence.
Every run is bounded by a timeout and killed on timeout or cancellation.

flite's ``slt`` voice (16 kHz, female) is the default: pocketsphinx
recognises it well, unlike espeak-ng. ``kal`` is an 8 kHz diphone voice
(needs no resampling, lower quality). A ``.flitevox`` file path also works.

Config (``tts.providers.local``): ``binary`` (``flite``), ``voice`` /
``voiceId`` (``slt``), ``speed`` (0.5-2.0, via flite's ``duration_stretch``),
``timeoutMs`` (per sentence, 10000).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import wave
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from voicecall.audio.g711 import SAMPLE_RATE, pcm16_to_mulaw
from voicecall.audio.resample import resample_pcm16
from voicecall.errors import ConfigError, ProviderError
from voicecall.speech.tts import _common as c
from voicecall.speech.tts.base import TtsCapabilities

__all__ = ["DEBIAN_PACKAGE", "DEFAULT_VOICE", "TTS", "VOICES", "create", "wav_to_mulaw"]

PROVIDER_ID = "local"
DEBIAN_PACKAGE = "flite"
DEFAULT_BINARY = "flite"
DEFAULT_VOICE = "slt"
VOICES = ("slt", "kal", "kal16", "awb", "rms", "awb_time")  # built into Debian's flite
DEFAULT_TIMEOUT_S = 10.0
MAX_WAV_BYTES = 32 * 1024 * 1024
CHUNK_BYTES = 3200  # 400 ms of mu-law


class TTS:
    """flite subprocess per sentence -> mu-law 8 kHz."""

    name = PROVIDER_ID
    capabilities = TtsCapabilities(streaming=True, telephony_native=False)

    def __init__(self, *, binary: str = DEFAULT_BINARY, voice: str = DEFAULT_VOICE,
                 speed: float | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.binary = binary
        self.voice = voice
        self.speed = speed
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"local.TTS(binary={self.binary!r}, voice={self.voice!r})"

    def command(self, sentence: str) -> list[str]:
        # flite wants its options before -o/-t; -t takes the next argv verbatim.
        argv = [self.binary, "-voice", self.voice]
        if self.speed:
            argv += ["--setf", f"duration_stretch={1.0 / self.speed:.3f}"]
        return [*argv, "-o", "/dev/stdout", "-t", sentence]

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        sentences = c.split_sentences(text)
        if not sentences:
            return
        pending: asyncio.Task[bytes] | None = asyncio.create_task(self._render(sentences[0]))
        try:
            for index in range(len(sentences)):
                assert pending is not None
                audio = await pending
                pending = (asyncio.create_task(self._render(sentences[index + 1]))
                           if index + 1 < len(sentences) else None)
                for start in range(0, len(audio), CHUNK_BYTES):
                    yield audio[start:start + CHUNK_BYTES]
        finally:
            if pending is not None:
                # Stopped early (barge-in) or failed: kill the look-ahead run and
                # wait for it without re-raising its own outcome.
                pending.cancel()
                await asyncio.wait([pending])
                if not pending.cancelled():
                    pending.exception()

    async def _render(self, sentence: str) -> bytes:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command(sentence), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except FileNotFoundError:
            raise ProviderError(
                f"local TTS: the flite binary {self.binary!r} was not found; install the "
                f"Debian package '{DEBIAN_PACKAGE}' (apt-get install {DEBIAN_PACKAGE}) or set "
                f"{c.path_of(PROVIDER_ID, 'binary')}") from None
        except PermissionError:
            raise ProviderError(
                f"local TTS: {self.binary!r} is not executable; check "
                f"{c.path_of(PROVIDER_ID, 'binary')}") from None
        try:
            async with asyncio.timeout(self.timeout_s):
                out, err = await proc.communicate()
        except TimeoutError:
            raise ProviderError(
                f"local TTS: flite did not finish within {self.timeout_s * 1000:.0f} ms",
                retryable=True) from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            detail = err.decode("utf-8", "replace").strip()[-c.MAX_ERROR_TEXT:]
            raise ProviderError(f"local TTS: flite exited with status {proc.returncode}"
                                + (f": {detail}" if detail else ""))
        if len(out) > MAX_WAV_BYTES:
            raise ProviderError("local TTS: flite output is too large")
        return wav_to_mulaw(out)

    async def aclose(self) -> None:
        return None


def wav_to_mulaw(data: bytes) -> bytes:
    """A 16-bit PCM WAV (any rate, mono or multichannel) -> mu-law 8 kHz mono."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ProviderError(f"local TTS: flite wrote an unreadable WAV ({exc})") from None
    if width != 2:
        raise ProviderError(f"local TTS: unsupported WAV sample width {width * 8} bits")
    samples: npt.NDArray[np.int16] = np.frombuffer(
        frames[: len(frames) - len(frames) % (2 * channels)], dtype="<i2").astype(np.int16)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return pcm16_to_mulaw(resample_pcm16(samples, rate, SAMPLE_RATE))


def create(cfg: Mapping[str, Any]) -> TTS:
    binary = c.opt_str(cfg, PROVIDER_ID, "binary") or DEFAULT_BINARY
    voice = c.opt_str(cfg, PROVIDER_ID, "voice", "voiceId") or DEFAULT_VOICE
    if voice not in VOICES and not (os.sep in voice or voice.endswith(".flitevox")):
        raise ConfigError(f"unknown flite voice {voice!r} (or give a .flitevox path)",
                          path=c.path_of(PROVIDER_ID, "voice"), allowed=VOICES)
    speed = c.opt_number(cfg, PROVIDER_ID, "speed", low=0.5, high=2.0)
    timeout_ms = c.opt_number(cfg, PROVIDER_ID, "timeoutMs", low=1, high=600_000)
    return TTS(binary=binary, voice=voice, speed=speed,
               timeout_s=DEFAULT_TIMEOUT_S if timeout_ms is None else timeout_ms / 1000.0)
