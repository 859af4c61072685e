"""Vendor message -> SttEvent mapping, fed straight into sessions (no socket needed)."""

from __future__ import annotations

from typing import Any

from voicecall.speech.stt import deepgram, openai, xai
from voicecall.speech.stt._ws import WsSttSession
from voicecall.speech.stt.base import SttEvent


def pending(session: WsSttSession) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    while not session._events.empty():
        ev: SttEvent = session._events.get_nowait()
        out.append((ev.type, ev.text))
    return out


def dg_results(text: str, *, is_final: bool, speech_final: bool = False,
               confidence: float = 0.9) -> dict[str, Any]:
    return {"type": "Results", "is_final": is_final, "speech_final": speech_final,
            "channel": {"alternatives": [{"transcript": text, "confidence": confidence}]}}


async def test_deepgram_segments_join_until_speech_final() -> None:
    s = deepgram.DeepgramSttSession(deepgram.STT("k"), "c")
    for msg in (dg_results("", is_final=True),                       # silence: ignored
                {"type": "SpeechStarted", "channel": [0], "timestamp": 0.1},
                dg_results("where is", is_final=False),
                dg_results("where is my", is_final=True),              # locked, not the end
                dg_results("order", is_final=False),
                dg_results("order", is_final=True, speech_final=True, confidence=0.7),
                {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 1.2},
                {"type": "Metadata"}):
        await s.on_text(msg)
    assert pending(s) == [("speech-start", ""), ("partial", "where is"),
                          ("partial", "where is my"), ("partial", "where is my order"),
                          ("final", "where is my order")]    # UtteranceEnd: nothing left


async def test_deepgram_utterance_end_flushes_and_close_flushes() -> None:
    s = deepgram.DeepgramSttSession(deepgram.STT("k"), "c")
    await s.on_text(dg_results("hello there", is_final=True))
    await s.on_text({"type": "UtteranceEnd"})
    await s.on_text(dg_results("bye", is_final=True))
    s.flush_pending()                                         # the socket went away
    assert pending(s) == [("partial", "hello there"), ("final", "hello there"),
                          ("partial", "bye"), ("final", "bye")]


async def test_xai_locked_chunks_and_transcript_done() -> None:
    s = xai.XaiSttSession(xai.STT("k"), "c")
    base = {"type": "transcript.partial", "speech_final": False}
    for msg in ({**base, "text": "", "is_final": False},
                {**base, "text": "one two", "is_final": False},
                {**base, "text": "one two three", "is_final": True},   # ~3 s chunk locked
                {**base, "text": "four", "is_final": False},
                {**base, "text": "four five", "is_final": True, "speech_final": True},
                {**base, "text": "six", "is_final": False},
                {"type": "transcript.done", "text": "one two three four five six"}):
        await s.on_text(msg)
    assert pending(s) == [("speech-start", ""), ("partial", "one two"),
                          ("partial", "one two three"), ("partial", "one two three four"),
                          ("final", "one two three four five"),
                          ("speech-start", ""), ("partial", "six"), ("final", "six")]


async def test_xai_error_after_ready_is_an_event() -> None:
    s = xai.XaiSttSession(xai.STT("k"), "c")
    s._is_ready = True
    await s.on_text({"type": "error", "message": "slow down"})
    assert pending(s) == [("error", "xai: slow down")]


async def test_openai_deltas_accumulate_per_item_and_failures_report() -> None:
    s = openai.OpenAISttSession(openai.STT("k"), "c")
    s._is_ready = True
    prefix = "conversation.item.input_audio_transcription"
    for msg in ({"type": "input_audio_buffer.speech_started", "item_id": "i1"},
                {"type": f"{prefix}.delta", "item_id": "i1", "delta": "Hel"},
                {"type": f"{prefix}.delta", "item_id": "i1", "delta": "lo there"},
                {"type": f"{prefix}.completed", "item_id": "i1", "transcript": "Hello there.",
                 "logprobs": [{"token": "Hello", "logprob": 0.0}]},
                {"type": f"{prefix}.failed", "item_id": "i2",
                 "error": {"type": "server_error", "code": "audio_unintelligible",
                           "message": "could not transcribe"}},
                {"type": "error", "error": {"type": "invalid_request_error",
                                            "code": "input_audio_buffer_commit_empty",
                                            "message": "buffer too small"}}):
        await s.on_text(msg)
    events = pending(s)
    assert events[:4] == [("speech-start", ""), ("partial", "Hel"), ("partial", "Hello there"),
                          ("final", "Hello there.")]
    assert events[4] == ("error", "openai: server_error/audio_unintelligible: "
                                  "could not transcribe")
    assert events[5][0] == "error" and "input_audio_buffer_commit_empty" in events[5][1]


def test_openai_logprob_confidence() -> None:
    assert openai._confidence([{"logprob": 0.0}, {"logprob": 0.0}]) == 1.0
    assert openai._confidence(None) is None and openai._confidence([{"x": 1}]) is None
