"""The Telnyx carrier's I/O shell: Call Control commands, webhooks, media streams.

Decisions worth knowing:

- Inbound calls arrive as ``call.initiated`` (``direction=incoming``, parked) and
  ring until someone answers them. The manager registers the call and applies the
  inbound policy while we wait; then this shell answers an accepted call with
  ``actions/answer`` (the reference plugin's most reported bug was never doing so)
  and the manager's ``reject`` turns a refused one away with ``actions/reject`` before
  it is ever answered. A failed answer fails the webhook (500), so Telnyx redelivers
  it and the answer is retried; the answer's ``command_id`` makes that idempotent.
- Telnyx webhooks only need a 200, so replies are cached and a replayed request gets
  the same "OK" without being processed again (``cache_replies``). Beyond the replay
  cache (keyed on the verified signature), events are de-duplicated on ``data.id``,
  which survives Telnyx's own re-signed redeliveries.
- Without a media stream, speech is ``actions/speak`` and returns when
  ``call.speak.ended`` says it was heard; a caller turn is a transcription window
  (``transcription_start`` .. first final ``call.transcription`` .. ``transcription_stop``)
  whose turn token travels in ``client_state``. A transcript whose token is not the
  open turn's is dropped here, and the manager drops stale tokens again.
- With ``streaming.enabled`` the dial/answer carries bidirectional PCMU stream
  parameters; speech then goes over the stream with paced playback, marks and
  ``clear`` on barge-in, exactly as for Twilio. Unlike TwiML, a Telnyx ``speak``
  does not tear a stream down, so a missing telephony TTS falls back to ``speak``.
- Pre-connect ``dtmfSequence`` digits go out with ``send_dtmf`` once the call is
  answered and before the greeting (``media_ready``), never silently dropped.
- Stream tokens are an HMAC of our call id under a per-install key (restart-proof);
  the token rides in the stream URL's query, in ``stream_auth_token`` (echoed in the
  ``connected`` frame) where the command allows it, and is checked against the call
  the ``start`` frame names.
- Realtime voice (``realtime.enabled`` with a provider; conversation calls only): once
  ``call.answered`` arrives, ``streaming_start`` points a bidirectional PCMU stream at
  ``<realtimeStreamPath>/<single-use token>`` (a path token: whether Telnyx keeps a
  query string on ``stream_url`` is unconfirmed). No ``speak`` greeting and no
  transcription turns: the model's own opening turn greets and it listens all the
  time. The token is claimed before the upgrade; the ``start`` frame must then name
  the call the token was issued for (else close 1008). The bridge is shared with
  Twilio (``RealtimeHost``). Telnyx does not redial a dropped stream the way Twilio
  runs the ``<Redirect>`` after ``<Connect>``, so this shell re-issues
  ``streaming_start`` with a fresh token itself when the socket goes under a live
  model session (or Telnyx reports the current stream stopped/failed); the host keeps
  the model session for the 2 s grace and ends the call if no stream is back by then.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from voicecall.calls.model import Call, CallEvent
from voicecall.carriers.base import (
    CarrierHost,
    DialRequest,
    RemoteStatus,
    SpeechTiming,
    Verification,
    WebhookReply,
)
from voicecall.carriers.streams import StreamRegistry, expire_call
from voicecall.carriers.telnyx import commands, media
from voicecall.carriers.telnyx.rest import TelnyxApiError, TelnyxRest
from voicecall.carriers.telnyx.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    check_signature,
    load_public_key,
    request_key,
)
from voicecall.carriers.telnyx.stream import StreamSession
from voicecall.carriers.telnyx.webhook import (
    DtmfMerger,
    Envelope,
    decode_client_state,
    dedupe_key,
    encode_client_state,
    parse_envelope,
    parse_events,
    remote_status,
)
from voicecall.config import LoadedConfig, VoiceCallConfig
from voicecall.errors import (
    CarrierError,
    ConfigError,
    ProtocolError,
    SignatureError,
    VoicecallError,
)
from voicecall.gateway.media import MediaSocket, StreamClosed, await_start, ws_url
from voicecall.gateway.realtime import RealtimeBridge
from voicecall.gateway.realtime.host import RealtimeCarrier, RealtimeHost
from voicecall.gateway.security import RequestView
from voicecall.speech.realtime.base import RealtimeProvider
from voicecall.speech.registry import close_speech, open_stt_session
from voicecall.speech.stt.base import STT
from voicecall.speech.tts.base import TTS

log = logging.getLogger("voicecall.telnyx")

STREAM_READY_TIMEOUT_S = 10.0
DISCONNECT_GRACE_S = 2.0
SPEAK_TIMEOUT_BASE_S = 15.0   # wait for call.speak.ended: this plus per-word time
SPEAK_TIMEOUT_PER_WORD_S = 0.6
SPEAK_TIMEOUT_MAX_S = 300.0
REALTIME_STREAM_ATTEMPTS = 3    # streaming_start tries without a stream attaching, then give up
REALTIME_RETRY_S = 0.2
DTMF_EVENT_IDS = 512            # webhook keypress ids remembered (redelivery guard, realtime)
OK = WebhookReply(200, "OK", "text/plain")


@dataclass
class _PendingSpeak:
    seq: int
    done: asyncio.Future[str]


@dataclass
class _RtStream:
    """A realtime call's media stream as this shell drives it (by call_control_id)."""

    call_id: str
    url: str | None = None            # stream_url of the latest streaming_start
    attempts: int = 0                 # streaming_starts since a stream last attached
    attached_once: bool = False
    carrier_stop: bool = False        # the last stream ended with Telnyx's ``stop``
    starting: asyncio.Task[None] | None = None


class Carrier(RealtimeCarrier):
    name = "telnyx"
    survives_restart = True
    notify_inline = False
    cache_replies = True

    def __init__(self, config: VoiceCallConfig, rest: TelnyxRest, *, connection_id: str,
                 public_key: bytes | None, public_url: str, stream_secret: bytes,
                 stt: STT | None = None, tts: TTS | None = None, voice: str | None = None,
                 language: str = commands.DEFAULT_LANGUAGE,
                 realtime: RealtimeProvider | None = None,
                 workspace_dir: Path | None = None) -> None:
        self.config = config
        self.rest = rest
        self.connection_id = connection_id
        self._public_key = public_key
        self.public_url = public_url
        self._stream_secret = stream_secret
        self.stt = stt
        self.tts = tts
        self.voice = commands.voice_for(voice)
        self.language = language
        self.required_headers: tuple[str, ...] = () if config.skip_signature_verification \
            else (SIGNATURE_HEADER, TIMESTAMP_HEADER)
        self._host: CarrierHost | None = None
        self._seq = itertools.count(1)
        self._speaks: dict[str, _PendingSpeak] = {}          # by call_control_id
        self._speak_locks: dict[str, asyncio.Lock] = {}
        self._turns: dict[str, str] = {}                     # open transcription turn
        self._turned: set[str] = set()                       # calls we opened turns on
        self._transcribing: set[str] = set()
        self._tx_locks: dict[str, asyncio.Lock] = {}
        self._answered: set[str] = set()
        self._preconnect: dict[str, str] = {}                # by our call id
        self._dtmf: dict[str, DtmfMerger] = {}
        self._streams: StreamRegistry[StreamSession] = StreamRegistry(
            grace_s=DISCONNECT_GRACE_S, on_expired=self._expire, log=log)
        self._tasks: set[asyncio.Task[Any]] = set()
        # Realtime voice: stream tokens and one bridge per call (kept across reconnects).
        self.realtime = realtime
        self.rt = RealtimeHost(realtime, carrier=self.name, workspace_dir=workspace_dir,
                               on_expired=self._expire, on_failed=self.hangup,
                               grace_s=DISCONNECT_GRACE_S) if realtime is not None else None
        self._rt: dict[str, _RtStream] = {}                  # by call_control_id
        self._hanging_up: set[str] = set()
        self._rt_dtmf_ids: OrderedDict[str, None] = OrderedDict()

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: CarrierHost) -> None:
        self._host = host

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for pending in self._speaks.values():
            if not pending.done.done():
                pending.done.set_result("gateway-closing")
        await self._streams.aclose()
        if self.rt is not None:
            await self.rt.aclose()
        await self.rest.aclose()
        await close_speech(self.stt, self.tts)

    def _host_or_raise(self) -> CarrierHost:
        if self._host is None:
            raise CarrierError("telnyx carrier not started")
        return self._host

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ URLs and tokens
    def stream_token(self, call_id: str) -> str:
        digest = hmac.new(self._stream_secret, b"telnyx:" + call_id.encode(),
                          hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def stream_url(self, call_id: str) -> str:
        query = urlencode({"callId": call_id, "token": self.stream_token(call_id)})
        return ws_url(self.public_url, self.config.streaming.stream_path, query)

    def _stream_params(self, call_id: str) -> commands.StreamParams | None:
        if not self.config.streaming.enabled:
            return None
        return commands.StreamParams(self.stream_url(call_id),
                                     auth_token=self.stream_token(call_id))

    # ------------------------------------------------------------------ realtime
    def _bridge(self, ccid: str) -> RealtimeBridge | None:
        return self.rt.bridge(ccid) if self.rt is not None and ccid else None

    def _realtime_answered(self, host: CarrierHost, ccid: str) -> None:
        """``call.answered`` of a realtime call: start its stream (once per call)."""
        if self.rt is None or not ccid or ccid in self._rt:
            return
        call = host.get(ccid)
        if call is None or call.terminal or not self.uses_realtime(call) \
                or call.provider_call_id != ccid:
            return
        state = self._rt[ccid] = _RtStream(call.call_id)
        state.starting = self._spawn(self._realtime_start(ccid, state, first=True))

    def _realtime_restart(self, ccid: str, why: str) -> None:
        """The call's stream went away (or never came): ask Telnyx for a new one.

        Only while it matters: the model session waits out the grace for it, or no
        stream ever attached. One ``streaming_start`` at a time; a bounded number of
        attempts without a stream attaching.
        """
        state = self._rt.get(ccid)
        if state is None or self.rt is None or self._host is None:
            return
        if state.starting is not None and not state.starting.done():
            return
        call = self._host.get(state.call_id)
        if call is None or call.terminal or self.rt.attached(ccid) or ccid in self._hanging_up:
            return
        if self.rt.bridge(ccid) is None and state.attached_once:
            return      # the model session is gone (the call is ending): nothing to restore
        log.info("stream.realtime_restart", extra={"call_id": state.call_id, "why": why})
        state.starting = self._spawn(self._realtime_start(ccid, state))

    async def _realtime_start(self, ccid: str, state: _RtStream, *, first: bool = False) -> None:
        try:
            await self._realtime_start_inner(ccid, state, first=first)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stream.realtime_start_crashed", extra={"call_id": state.call_id})

    async def _realtime_start_inner(self, ccid: str, state: _RtStream, *, first: bool) -> None:
        host = self._host_or_raise()
        if first:
            digits = self._preconnect.pop(state.call_id, None)
            if digits:
                # Pre-connect digits (an IVR, a PIN) first: the model greets after them.
                await self.rest.action(ccid, commands.send_dtmf(
                    digits, call_id=state.call_id, seq=f"pre-{next(self._seq)}"))
                await asyncio.sleep(commands.dtmf_duration_s(digits))
        while True:
            call = host.get(state.call_id)
            if call is None or call.terminal or self._rt.get(ccid) is not state:
                return
            if state.attempts >= REALTIME_STREAM_ATTEMPTS:
                await self._realtime_give_up(ccid, call)
                return
            state.attempts += 1
            state.url = self.realtime_stream_url(self.issue_realtime_token(ccid))
            # Path token only (no stream_auth_token): it is single-use and already
            # checked before the upgrade. Inbound track to us; PCMU both ways, 8 kHz.
            cmd = commands.streaming_start(
                commands.StreamParams(state.url), call_id=state.call_id,
                seq=f"rt-{next(self._seq)}", client_state=encode_client_state(state.call_id))
            try:
                await self.rest.action(ccid, cmd)
                return
            except TelnyxApiError as exc:
                if exc.call_ended:
                    return
                why = str(exc)
            except VoicecallError as exc:
                why = str(exc)
            log.warning("stream.realtime_start_failed", extra={"call_id": state.call_id,
                                                               "why": why})
            await asyncio.sleep(REALTIME_RETRY_S)

    async def _realtime_give_up(self, ccid: str, call: Call) -> None:
        """No stream would come up. A session in its grace ends by itself; otherwise
        the caller would hear nothing for the rest of the call: end it."""
        if self.rt is not None and self.rt.bridge(ccid) is not None:
            return
        log.warning("stream.realtime_unavailable", extra={"call_id": call.call_id})
        with contextlib.suppress(VoicecallError):
            await self.hangup(call)
        if self._host is not None:
            await self._host.handle_event(CallEvent(
                "call.error", call_id=call.call_id, provider_call_id=ccid,
                timestamp=time.time(), error="realtime: media stream could not be started",
                dedupe_key=f"telnyx:realtime:{ccid}:nostream"))

    def _realtime_stream_event(self, ccid: str, env: Envelope) -> None:
        """``streaming.stopped``/``failed`` of a realtime call's *current* stream."""
        state = self._rt.get(ccid)
        if state is None:
            return
        params = env.payload.get("stream_params")
        url = env.text("stream_url") or (
            params.get("stream_url") if isinstance(params, dict) else None)
        if url is not None and url != state.url:
            return      # an earlier stream (already replaced)
        self._realtime_restart(ccid, env.event_type)

    async def _realtime_dtmf(self, ccid: str, bridge: RealtimeBridge, env: Envelope,
                             events: list[CallEvent]) -> None:
        """Webhook keypresses of a realtime call go to the model (never end the call)."""
        if env.event_id is not None:
            if env.event_id in self._rt_dtmf_ids:
                return      # a redelivery (re-signed, so not caught by the replay cache)
            self._rt_dtmf_ids[env.event_id] = None
            while len(self._rt_dtmf_ids) > DTMF_EVENT_IDS:
                self._rt_dtmf_ids.popitem(last=False)
        for event in events:
            if event.digits:
                await bridge.on_dtmf(event.digits)

    # ------------------------------------------------------------------ outbound
    async def dial(self, req: DialRequest) -> str:
        digits = commands.normalize_dtmf(req.dtmf_sequence) if req.dtmf_sequence else None
        cmd = commands.dial(
            connection_id=self.connection_id, to=req.to_number, from_=req.from_number,
            webhook_url=self.public_url, client_state=encode_client_state(req.call_id),
            call_id=req.call_id, timeout_secs=math.ceil(req.ring_timeout_ms / 1000),
            stream=self._stream_params(req.call_id))
        if digits:
            self._preconnect[req.call_id] = digits
        try:
            data = await self.rest.dial(cmd)
        except BaseException:
            self._preconnect.pop(req.call_id, None)
            raise
        ccid = data.get("call_control_id")
        if not isinstance(ccid, str) or not ccid:
            self._preconnect.pop(req.call_id, None)
            raise CarrierError("telnyx dial: response has no call_control_id")
        return ccid

    # ------------------------------------------------------------------ call control
    async def media_ready(self, call: Call) -> None:
        ccid = call.provider_call_id or ""
        digits = self._preconnect.pop(call.call_id, None)
        if digits and ccid:
            # Pre-connect digits (an IVR, a conference PIN) go first; the greeting waits
            # until Telnyx has played them.
            await self.rest.action(ccid, commands.send_dtmf(
                digits, call_id=call.call_id, seq=f"pre-{next(self._seq)}"))
            await asyncio.sleep(commands.dtmf_duration_s(digits))
        if not self.config.streaming.enabled or not ccid:
            return
        await self._streams.wait_up(ccid, STREAM_READY_TIMEOUT_S)

    def incremental_speech(self, call: Call) -> bool:
        return self.tts is not None and (call.provider_call_id or "") in self._streams

    async def speak(self, call: Call, text: str, *, listen_token: str | None = None,
                    hangup_after: bool = False) -> SpeechTiming | None:
        ccid = call.provider_call_id or ""
        if not ccid:
            raise CarrierError("call has no Telnyx call_control_id yet")
        bridge = self._bridge(ccid)
        if bridge is not None:
            await bridge.say(text)      # the realtime model says it, in its own voice
            if hangup_after:
                await self.hangup(call)
            return None
        if self.uses_realtime(call):
            listen_token = None         # the model listens all the time: no turns
        session = self._streams.get(ccid)
        if session is not None and self.tts is not None:
            if listen_token and session.stt is None:
                self._end_turn(ccid)
            timing: SpeechTiming | None = await self._speak_stream(session, text)
            if listen_token and session.stt is None:
                await self._open_turn(call, listen_token)
        else:
            if listen_token:
                self._end_turn(ccid)  # the new turn supersedes an open one
            timing = await self._speak_rest(call, ccid, text)
            if listen_token and not (session is not None and session.stt is not None):
                await self._open_turn(call, listen_token)
        if hangup_after:
            await self.hangup(call)
        return timing

    async def _speak_stream(self, session: StreamSession, text: str) -> SpeechTiming:
        assert self.tts is not None
        return await session.speak(self.tts, text)

    async def _speak_rest(self, call: Call, ccid: str, text: str) -> SpeechTiming | None:
        """``actions/speak`` each piece of ``text``; returns once Telnyx says it was heard."""
        lock = self._speak_locks.setdefault(ccid, asyncio.Lock())
        async with lock:
            for piece in commands.split_speech(text):
                seq = next(self._seq)
                pending = _PendingSpeak(seq, asyncio.get_running_loop().create_future())
                self._speaks[ccid] = pending
                state = encode_client_state(call.call_id, turn_token=self._turns.get(ccid),
                                            speak_seq=seq)
                try:
                    await self.rest.action(ccid, commands.speak(
                        piece, call_id=call.call_id, seq=seq, client_state=state,
                        voice=self.voice, language=self.language))
                    limit = min(SPEAK_TIMEOUT_MAX_S, SPEAK_TIMEOUT_BASE_S
                                + SPEAK_TIMEOUT_PER_WORD_S * len(piece.split()))
                    status = await asyncio.wait_for(asyncio.shield(pending.done), limit)
                except TimeoutError:
                    log.warning("speak.ended_missing", extra={"call_id": call.call_id})
                    status = "unknown"
                finally:
                    if self._speaks.get(ccid) is pending:
                        del self._speaks[ccid]
                if status not in ("completed", "unknown"):
                    break  # the call hung up (or AMD cancelled it): say no more
        return None

    async def _open_turn(self, call: Call, turn: str) -> None:
        """Open a caller turn: transcription with ``turn`` in ``client_state``."""
        ccid = call.provider_call_id or ""
        lock = self._tx_locks.setdefault(ccid, asyncio.Lock())
        async with lock:
            self._turned.add(ccid)
            self._turns[ccid] = turn
            state = encode_client_state(call.call_id, turn_token=turn)
            if ccid in self._transcribing:
                await self.rest.action(ccid, commands.client_state_update(client_state=state))
                return
            try:
                await self.rest.action(ccid, commands.transcription_start(
                    call_id=call.call_id, turn=turn, client_state=state,
                    language=self.language))
            except TelnyxApiError as exc:
                if exc.status_code != 422 or exc.call_ended:
                    raise
                # Already transcribing (e.g. started before a restart): keep it, new turn.
                await self.rest.action(ccid, commands.client_state_update(client_state=state))
            self._transcribing.add(ccid)

    def _end_turn(self, ccid: str) -> None:
        """Close the open turn, if any; transcription stops in the background."""
        turn = self._turns.pop(ccid, None)
        if ccid in self._transcribing:
            self._spawn(self._stop_transcription(ccid, turn))

    async def _stop_transcription(self, ccid: str, turn: str | None) -> None:
        lock = self._tx_locks.setdefault(ccid, asyncio.Lock())
        async with lock:
            if ccid not in self._transcribing or ccid in self._turns:
                return  # already stopped, or a new turn took the running transcription
            self._transcribing.discard(ccid)
            with contextlib.suppress(VoicecallError):
                await self.rest.action(ccid, commands.transcription_stop(
                    call_id=self._call_id_for(ccid), turn=turn or f"x{next(self._seq)}"))

    def _call_id_for(self, ccid: str) -> str:
        call = self._host.get(ccid) if self._host is not None else None
        return call.call_id if call is not None else ccid

    async def start_listening(self, call: Call, turn_token: str) -> None:
        if self.uses_realtime(call):
            return  # the realtime model listens all the time (no transcription turns)
        ccid = call.provider_call_id or ""
        session = self._streams.get(ccid)
        if session is not None and session.stt is not None:
            return  # the stream's STT listens all the time
        await self._open_turn(call, turn_token)

    async def send_dtmf(self, call: Call, digits: str) -> None:
        ccid = call.provider_call_id or ""
        if not ccid:
            raise CarrierError("call has no Telnyx call_control_id yet")
        # Telnyx plays DTMF natively, also while a media stream is up, realtime ones
        # included: unlike Twilio's <Play digits> the command leaves the stream alone,
        # the far end gets proper DTMF (RFC 2833 or in-band, per the leg) instead of
        # tones squeezed through PCMU, and the digits are not queued behind model audio.
        await self.rest.action(ccid, commands.send_dtmf(digits, call_id=call.call_id,
                                                        seq=next(self._seq)))

    async def hangup(self, call: Call) -> None:
        ccid = call.provider_call_id
        if not ccid:
            return
        self._hanging_up.add(ccid)      # the stream ending now is not one to bring back
        try:
            await self.rest.action(ccid, commands.hangup(call_id=call.call_id))
        except TelnyxApiError as exc:
            if not exc.call_ended:
                self._hanging_up.discard(ccid)
                raise  # already gone: hanging up is idempotent
        except BaseException:
            self._hanging_up.discard(ccid)
            raise

    async def reject(self, call: Call) -> None:
        ccid = call.provider_call_id or ""
        if not ccid:
            return
        if call.answered_at is None and ccid not in self._answered:
            try:
                await self.rest.action(ccid, commands.reject(call_id=call.call_id))
                return
            except TelnyxApiError as exc:
                if exc.call_ended:
                    return
                if exc.status_code != 422:
                    raise
                # 422: no longer rejectable (answered meanwhile): hang up instead.
        await self.hangup(call)

    async def get_status(self, provider_call_id: str) -> RemoteStatus:
        data = await self.rest.fetch_call(provider_call_id)
        if data is None:
            return "not-found"
        return remote_status(data.get("is_alive"))

    # ------------------------------------------------------------------ webhooks
    def verify_webhook(self, req: RequestView, body: bytes) -> Verification:
        if self._public_key is None:
            return Verification(False, "no Telnyx public key configured")
        return verify_request(req, body, self._public_key, now=time.time())

    def replay_reply(self) -> WebhookReply:
        return OK

    async def handle_webhook(self, req: RequestView, body: bytes,
                             request_key: str | None) -> WebhookReply:
        host = self._host_or_raise()
        env = parse_envelope(body)
        if env is None:
            return OK
        key = request_key or "telnyx:unsigned:" + hashlib.sha256(body).hexdigest()
        ccid = env.call_control_id or ""
        events = [self._bind(host, e, ccid) for e in
                  parse_events(env, dedupe_key=dedupe_key(env, key), now=time.time())]
        kind = env.event_type
        if kind == "call.speak.ended":
            self._speak_ended(ccid, env)
        elif kind in ("streaming.failed", "streaming.stopped"):
            if kind == "streaming.failed":
                log.warning("stream.failed", extra={"why": env.text("failure_reason")})
            self._streams.settle(ccid)
            self._realtime_stream_event(ccid, env)
        elif kind == "call.transcription":
            events = self._gate_speech(ccid, events)
        elif kind == "call.dtmf.received":
            events = [e for e in events
                      if self._merger(ccid).accept("webhook", e.digits or "", time.monotonic())]
            bridge = self._bridge(ccid)
            if bridge is not None:
                await self._realtime_dtmf(ccid, bridge, env, events)
                events = []     # the bridge records them
        for event in events:
            await host.handle_event(event)
        if kind == "call.initiated" and env.direction == "inbound" and ccid:
            await self._answer_accepted(host, ccid)
        elif kind == "call.answered":
            self._realtime_answered(host, ccid)
        elif kind == "call.hangup":
            self._forget(ccid, env)
        return OK

    def _bind(self, host: CarrierHost, event: CallEvent, ccid: str) -> CallEvent:
        """Trust ``client_state``'s call id only for the call it was set on."""
        if event.call_id and ccid:
            call = host.get(event.call_id)
            if call is not None and call.provider_call_id and call.provider_call_id != ccid:
                log.warning("webhook.client_state_mismatch", extra={"call_id": call.call_id})
                return replace(event, call_id=None)
        return event

    def _speak_ended(self, ccid: str, env: Envelope) -> None:
        pending = self._speaks.get(ccid)
        seq = env.client_state.speak_seq
        if pending is None or (seq is not None and seq != pending.seq):
            return
        if not pending.done.done():
            pending.done.set_result(env.text("status") or "completed")

    def _gate_speech(self, ccid: str, events: list[CallEvent]) -> list[CallEvent]:
        out: list[CallEvent] = []
        for event in events:
            if event.type != "call.speech":
                out.append(event)
                continue
            if ccid not in self._turned:
                # Not a turn of this process (e.g. opened before a restart): the manager
                # still checks the token against the turn it waits for.
                out.append(event)
                continue
            open_turn = self._turns.get(ccid)
            if open_turn is None or event.turn_token != open_turn:
                log.warning("speech.stale_turn_token", extra={"call_id": event.call_id})
                continue
            # One final transcript answers the turn; stop transcribing until the next.
            self._end_turn(ccid)
            out.append(event)
        return out

    def _merger(self, ccid: str) -> DtmfMerger:
        return self._dtmf.setdefault(ccid, DtmfMerger())

    async def _answer_accepted(self, host: CarrierHost, ccid: str) -> None:
        """Answer an inbound call the manager accepted (it registers it on this event)."""
        call = host.get(ccid)
        if call is None or call.terminal or call.direction != "inbound" \
                or call.answered_at is not None or ccid in self._answered:
            return
        self._answered.add(ccid)
        try:
            await self.rest.action(ccid, commands.answer(
                call_id=call.call_id, client_state=encode_client_state(call.call_id),
                stream=self._stream_params(call.call_id)))
        except TelnyxApiError as exc:
            if exc.call_ended:
                return  # the caller gave up while we decided
            self._answered.discard(ccid)
            raise
        except BaseException:
            self._answered.discard(ccid)
            raise
        log.info("call.answer_sent", extra={"call_id": call.call_id})

    def _forget(self, ccid: str, env: Envelope | None = None) -> None:
        pending = self._speaks.pop(ccid, None)
        if pending is not None and not pending.done.done():
            pending.done.set_result("call_hangup")
        self._turns.pop(ccid, None)
        self._turned.discard(ccid)
        self._transcribing.discard(ccid)
        self._speak_locks.pop(ccid, None)
        self._tx_locks.pop(ccid, None)
        self._dtmf.pop(ccid, None)
        self._answered.discard(ccid)
        self._streams.forget(ccid)
        self._hanging_up.discard(ccid)
        state = self._rt.pop(ccid, None)
        if state is not None and state.starting is not None:
            state.starting.cancel()
        if env is not None and env.client_state.call_id:
            self._preconnect.pop(env.client_state.call_id, None)

    # ------------------------------------------------------------------ media streams
    async def handle_stream(self, ws: MediaSocket, query_string: str) -> None:
        """Run one media stream from ``connected`` to ``stop`` (or a dropped socket)."""
        host = self._host_or_raise()
        hello = await self._await_start(ws)
        if hello is None:
            return
        connected, start = hello
        query = dict(parse_qsl(query_string))
        params = start.custom_parameters
        state = decode_client_state(start.client_state)
        call_id = query.get("callId") or params.get("callId") or state.call_id
        call = host.get(call_id) if call_id else host.get(start.call_control_id)
        token = (connected.auth_token if connected is not None else None) \
            or query.get("token") or params.get("token") or ""
        if call is None or call.terminal \
                or not hmac.compare_digest(token.encode(), self.stream_token(call.call_id).encode()) \
                or (call.provider_call_id or start.call_control_id) != start.call_control_id:
            await ws.close(1008, "Unknown call or bad stream token")
            return
        ws.started()
        ccid = start.call_control_id
        stt_session = await open_stt_session(self.stt, call.call_id)

        async def on_dtmf(digit: str) -> None:
            if self._merger(ccid).accept("stream", digit, time.monotonic()):
                await host.handle_event(CallEvent(
                    "call.dtmf", call_id=call.call_id, provider_call_id=ccid,
                    timestamp=time.time(), digits=digit,
                    dedupe_key=f"telnyx:stream:{start.stream_id}:dtmf:{time.time_ns()}"),
                    ack=False)

        session = StreamSession(ws, start, call.call_id, host, stt_session, on_dtmf)
        self._streams.attach(ccid, session)
        try:
            await session.run()
        finally:
            self._streams.detach(ccid, session)

    async def _await_start(self, ws: MediaSocket,
                           ) -> tuple[media.Connected | None, media.Start] | None:
        got = await await_start(
            ws, self.config.streaming.pre_start_timeout_ms / 1000, media.parse_frame,
            is_start=lambda f: isinstance(f, media.Start),
            is_preamble=lambda f: isinstance(f, media.Connected))
        if got is None or not isinstance(got[1], media.Start):
            return None
        connected = [f for f in got[0] if isinstance(f, media.Connected)]
        return (connected[-1] if connected else None), got[1]

    async def _expire(self, ccid: str, call_id: str) -> None:
        """A dropped stream did not come back within the grace: the call is over."""
        await expire_call(self._host, ccid, call_id, carrier=self.name, hangup=self.hangup,
                          log=log)

    # ------------------------------------------------------------------ realtime streams
    async def handle_realtime_stream(self, ws: MediaSocket, ccid: str) -> None:
        """Run one realtime media stream (its path token already claimed for ``ccid``)."""
        host = self._host_or_raise()
        if self.rt is None:
            await ws.close(1008, "Realtime voice unavailable")
            return
        hello = await self._await_start(ws)
        if hello is None:
            return
        start = hello[1]
        call = host.get(ccid)
        # Token binding: the stream must be the one of the call the token was issued for.
        if start.call_control_id != ccid or call is None or call.terminal \
                or call.provider_call_id != ccid:
            log.warning("stream.realtime_call_mismatch",
                        extra={"call_id": call.call_id if call is not None else None})
            await ws.close(1008, "Unknown call or bad stream token")
            return
        if start.encoding.upper() != media.ENCODING or start.sample_rate != media.SAMPLE_RATE:
            log.warning("stream.unexpected_format", extra={
                "call_id": call.call_id, "why": f"{start.encoding}/{start.sample_rate}"})
        ws.started()
        state = self._rt.get(ccid)
        if state is None:       # e.g. a stream of a call this process did not start
            state = self._rt[ccid] = _RtStream(call.call_id)
        state.attempts = 0
        state.attached_once = True
        state.carrier_stop = False
        await self.rt.serve(host, call, ccid,  # type: ignore[arg-type]
                            _TelnyxPort(ws),
                            lambda bridge: self._read_realtime(ws, bridge, ccid, state))
        if self.rt.bridge(ccid) is not None and not self.rt.attached(ccid) \
                and not state.carrier_stop:
            # The socket went under a live model session, which waits out the grace.
            # Telnyx does not redial on its own: ask for a new stream now. (After a
            # ``stop`` the call is usually ending; a ``streaming.stopped`` webhook
            # brings the stream back if it is not.)
            self._realtime_restart(ccid, "stream lost")

    async def _read_realtime(self, ws: MediaSocket, bridge: RealtimeBridge, ccid: str,
                             state: _RtStream) -> None:
        while True:
            try:
                text = await ws.receive_text()
            except StreamClosed:
                return
            try:
                frame = media.parse_frame(text)
            except ProtocolError as exc:
                log.warning("stream.bad_frame", extra={"call_id": bridge.call_id,
                                                       "why": str(exc)})
                await ws.close(1007, "malformed frame")
                return
            if isinstance(frame, media.Media):
                if frame.track == "inbound":
                    await bridge.on_audio(frame.payload)
            elif isinstance(frame, media.Mark):
                bridge.on_mark(frame.name)
            elif isinstance(frame, media.Dtmf):
                # Merged with the call.dtmf.received webhook; to the model, never a hangup.
                if self._merger(ccid).accept("stream", frame.digit, time.monotonic()):
                    await bridge.on_dtmf(frame.digit)
            elif isinstance(frame, media.Error):
                log.warning("stream.error_frame", extra={
                    "call_id": bridge.call_id,
                    "why": f"{frame.code} {frame.title} {frame.detail}"})
            elif isinstance(frame, media.Stop):
                state.carrier_stop = True
                return


class _TelnyxPort:
    """A realtime bridge's view of a Telnyx media stream: media, mark and clear frames."""

    def __init__(self, ws: MediaSocket) -> None:
        self.ws = ws

    async def send_media(self, frame: bytes) -> None:
        await self.ws.send_text(media.encode_media(frame))

    async def send_mark(self, name: str) -> None:
        await self.ws.send_text(media.encode_mark(name))

    async def send_clear(self) -> None:
        await self.ws.send_text(media.encode_clear())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code, reason)


def verify_request(req: RequestView, body: bytes, public_key: bytes, *,
                   now: float) -> Verification:
    """Check a Telnyx webhook's Ed25519 signature and freshness.

    The one implementation behind both the gateway and ``voicecall verify-webhook``.
    Telnyx does not sign the URL, so only headers and the raw body matter.
    """
    check = check_signature(public_key, req.headers, body, now=now)
    if not check.ok or check.signature is None or check.timestamp is None:
        return Verification(False, check.reason)
    return Verification(True, request_key=request_key(check.timestamp, check.signature, body))


def _tts_voice(cfg: VoiceCallConfig) -> str | None:
    provider = cfg.tts.providers.get(cfg.tts.provider or "", {})
    for key in ("speakerVoice", "speakerVoiceId", "voice", "voiceId"):
        value = provider.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def build(loaded: LoadedConfig, home: Path, *, stream_secret: bytes, stt: STT | None,
          tts: TTS | None, realtime: RealtimeProvider | None = None,
          workspace_dir: Path | None = None) -> Carrier:
    """The runtime's Telnyx carrier (``runtime.build_carrier`` calls this)."""
    cfg = loaded.config
    tx = cfg.telnyx
    if not (tx.api_key and tx.connection_id and cfg.public_url):
        raise ConfigError("telnyx needs apiKey, connectionId and publicUrl", path="telnyx")
    public_key: bytes | None = None
    if not cfg.skip_signature_verification:
        if not tx.public_key:
            raise ConfigError("telnyx.publicKey is required (or set TELNYX_PUBLIC_KEY env)",
                              path="telnyx.publicKey")
        try:
            public_key = load_public_key(tx.public_key)
        except SignatureError as exc:
            raise ConfigError(str(exc), path="telnyx.publicKey") from None
    rest = TelnyxRest(tx.api_key.reveal(), base_url=tx.api_base_url)
    return Carrier(cfg, rest, connection_id=tx.connection_id, public_key=public_key,
                   public_url=cfg.public_url, stream_secret=stream_secret, stt=stt, tts=tts,
                   voice=_tts_voice(cfg), realtime=realtime, workspace_dir=workspace_dir)
