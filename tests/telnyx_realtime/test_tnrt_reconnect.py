"""A dropped realtime stream over Telnyx: the gateway asks for a new one (Telnyx does not
redial); back within the grace it carries on with the same model session, else the call ends.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tnrt_kit import BOUND, STREAM_PREFIX, openai_cfg, rig, stream_starts

from voicecall.calls import CallState
from voicecall.testing.fake_openai_realtime import FakeOpenAIRealtime, Speech
from voicecall.testing.fake_telnyx import CalleeScript

LONG = Speech("Our opening hours are nine to five on weekdays and ten to two on Saturdays.",
              ms=4000)


async def test_dropped_stream_is_restarted_on_the_same_model_session(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime(script=[LONG, Speech("Yes, Saturdays too.", ms=600)],
                                      transcripts=["What are your hours?",
                                                   "Are you open Saturdays?"],
                                      pace_s=0.05) as oa, \
                rig(tmp_path, callee=CalleeScript(replies=["What are your hours?"]),
                    inboundGreeting="Hello, clinic here.", **openai_cfg(oa)) as r:
            ccid, fake_call = await r.inbound()
            rt = r.carrier.rt
            assert rt is not None
            # Lose the socket while the long answer plays (no stop, no close frame).
            await r.fake.wait_for(lambda: len(fake_call.outbound_audio) > (400 + 800) * 8, 10)
            loop = asyncio.get_running_loop()
            dropped_at = loop.time()
            await r.fake.drop_stream(ccid)
            await r.fake.wait_for(lambda: len(fake_call.streams) == 2
                                  and fake_call.streams[1].connected and rt.attached(ccid), 5)
            assert loop.time() - dropped_at < 1.0     # well inside the 2 s grace
            first, second = fake_call.streams
            assert first.end_reason == "dropped"
            starts = stream_starts(fake_call)
            assert len(starts) == 2
            # A fresh single-use token, at the same path, same stream parameters.
            assert starts[1]["stream_url"] != starts[0]["stream_url"]
            assert starts[1]["stream_url"].startswith(STREAM_PREFIX)
            assert second.url == starts[1]["stream_url"]
            assert {k: v for k, v in starts[1].items() if k not in ("stream_url", "command_id")} \
                == {k: v for k, v in starts[0].items() if k not in ("stream_url", "command_id")}
            assert starts[1]["command_id"] != starts[0]["command_id"]
            # One model session for the whole call: the conversation carried on.
            assert len(oa.connections) == 1
            # What the caller never heard of the interrupted answer is cut from the model.
            await r.fake.wait_for(lambda: oa.truncations and len(oa.replies) >= 2, 8)
            assert oa.truncations[0]["item_id"] == oa.replies[1]["item_id"]
            assert 600 <= oa.truncations[0]["audio_end_ms"] < 4000
            # The restarted stream carries the next turn both ways.
            await r.fake.speak(ccid, "Are you open Saturdays?")
            await r.wait_call(r.call_id(ccid), lambda c: any(
                t.speaker == "bot" and "Saturdays too" in t.text for t in c.transcript))
            await r.fake.wait_for(lambda: any(
                f.get("event") == "media" for f in second.frames_in), 5)
            # Past the first drop's grace: still up, and the late streaming.stopped of the
            # dropped stream did not start a third one.
            await asyncio.sleep(max(0.0, dropped_at + 2.3 - loop.time()))
            assert any(w.kind == "streaming.stopped" for w in fake_call.webhooks)
            assert len(stream_starts(fake_call)) == 2 and len(fake_call.streams) == 2
            assert not r.manager.get(ccid).terminal  # type: ignore[union-attr]
            assert fake_call.is_alive and not fake_call.errors
    await asyncio.wait_for(run(), BOUND)


async def test_stream_not_back_within_the_grace_ends_the_call(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime(script=[Speech("Hi.", ms=300)]) as oa, \
                rig(tmp_path, inboundGreeting="Hello.", **openai_cfg(oa)) as r:
            ccid, fake_call = await r.inbound()
            await r.fake.wait_for(lambda: oa.replies and fake_call.marks_echoed, 10)
            call_id = r.call_id(ccid)
            # Telnyx refuses every new stream: the socket is lost for good.
            r.fake.fail_next(422, 10, code="10015", title="Invalid stream parameters",
                             action="streaming_start")
            loop = asyncio.get_running_loop()
            await r.fake.drop_stream(ccid)
            dropped_at = loop.time()
            ended = await r.wait_call(call_id, lambda c: c.terminal, timeout=6)
            waited = loop.time() - dropped_at
            assert ended.state is CallState.COMPLETED
            assert 1.8 <= waited < 4.0, waited
            # It tried (a bounded number of times), then hung up at Telnyx.
            tries = fake_call.actions.count("streaming_start") - 1
            assert 1 <= tries <= 3, fake_call.actions
            await r.fake.wait_for(lambda: not fake_call.is_alive, 5)
            assert fake_call.hung_up_by == "api"
            # The model session was closed with the call.
            await r.fake.wait_for(lambda: all(c.closed for c in oa.connections), 5)
            assert len(oa.connections) == 1
    await asyncio.wait_for(run(), BOUND)


async def test_stream_that_never_starts_ends_the_call(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime() as oa, rig(tmp_path, **openai_cfg(oa)) as r:
            r.fake.fail_next(422, 10, code="10015", title="Invalid stream parameters",
                             action="streaming_start")
            ccid, fake_call = await r.inbound()
            # A few tries, then the caller is not left in silence: hung up, call errored.
            ended = await r.wait_call(r.call_id(ccid), lambda c: c.terminal, timeout=6)
            assert ended.state is CallState.ERROR
            assert "media stream" in str(ended.metadata.get("error"))
            assert fake_call.actions.count("streaming_start") == 3
            await r.fake.wait_for(lambda: not fake_call.is_alive, 5)
            assert fake_call.hung_up_by == "api"
            assert oa.connections == []
    await asyncio.wait_for(run(), BOUND)


async def test_failed_stream_connection_is_retried_with_a_new_token(tmp_path: Path) -> None:
    async def run() -> None:
        async with FakeOpenAIRealtime() as oa, rig(tmp_path, **openai_cfg(oa)) as r:
            rt = r.carrier.rt
            assert rt is not None
            issue = rt.issue_token

            def stale_first(sid: str) -> str:
                token = issue(sid)      # the first one expires at once; later ones do not
                rt.token_ttl_s = 30.0
                return token

            rt.token_ttl_s = 0.0
            rt.issue_token = stale_first  # type: ignore[method-assign]
            ccid, fake_call = await r.inbound()
            # Refused at the upgrade -> streaming.failed -> a new streaming_start.
            await r.fake.wait_for(lambda: oa.replies and fake_call.marks_echoed, 10)
            failed, ok = fake_call.streams
            assert failed.handshake_status == 403 and failed.end_reason == "failed"
            assert fake_call.events("streaming.failed")
            urls = [s["stream_url"] for s in stream_starts(fake_call)]
            assert len(urls) == len(set(urls)) == 2
            assert ok.url == urls[1] and ok.connected
            assert not r.manager.get(ccid).terminal  # type: ignore[union-attr]
    await asyncio.wait_for(run(), BOUND)
