"""The Twilio carrier's I/O shell: REST calls, webhook replies, media streams.

Decisions worth knowing:

- Notify calls carry their ``<Say>`` TwiML inline in the create request, so
  the first message never depends on Twilio fetching a webhook.
- A webhook that Twilio is waiting on is answered with the TwiML the call
  manager produces while handling it (the greeting, the agent's reply), held
  for a bounded time; later speech goes out as a REST TwiML update. That
  saves a REST round trip per turn and never races an update against the
  document Twilio is still fetching.
- Stream tokens are an HMAC of the CallSid under a per-install key, so a
  restarted gateway still accepts the stream of a call it restored.
- While a media stream is up, speech goes over the stream only: no TwiML
  ``<Say>`` fallback (which would tear the stream down), and DTMF is played
  as tones instead of ``<Play digits>`` for the same reason.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from urllib.parse import parse_qsl

from voicecall.audio.dtmf import dtmf_audio
from voicecall.calls.model import Call, CallEvent
from voicecall.carriers.base import (
    CarrierHost,
    DialRequest,
    RemoteStatus,
    SpeechTiming,
    Verification,
    WebhookReply,
    signed_url,
    with_query,
)
from voicecall.carriers.streams import StreamRegistry, expire_call
from voicecall.carriers.twilio import media, twiml
from voicecall.carriers.twilio.rest import TwilioRest
from voicecall.carriers.twilio.signature import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    request_key,
    signature_algorithm,
    verify_signature,
)
from voicecall.carriers.twilio.stream import StreamSession
from voicecall.carriers.twilio.webhook import parse_events, parse_form, remote_status
from voicecall.config import VoiceCallConfig
from voicecall.errors import CarrierError, ProtocolError, VoicecallError
from voicecall.gateway.media import MediaSocket, StreamClosed, await_start, ws_url
from voicecall.gateway.realtime import RealtimeBridge
from voicecall.gateway.realtime.host import RealtimeCarrier, RealtimeHost
from voicecall.gateway.security import RequestView, port_variants
from voicecall.speech.realtime.base import RealtimeProvider
from voicecall.speech.registry import close_speech, open_stt_session
from voicecall.speech.stt.base import STT
from voicecall.speech.tts.base import TTS
from voicecall.speech.tts.routed import RoutedTTS

log = logging.getLogger("voicecall.twilio")

STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
HOLD_S = 10.0                 # Twilio waits 15 s for a webhook reply; keep well inside
KEEPALIVE_S = 60
STREAM_READY_TIMEOUT_S = 10.0
DISCONNECT_GRACE_S = 2.0
REALTIME_TOKEN_TTL_S = 30.0
TWIML = "text/xml"


def _twiml(body: str) -> WebhookReply:
    return WebhookReply(200, body, TWIML)


def _first(params: Mapping[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


class Carrier(RealtimeCarrier):
    name = "twilio"
    survives_restart = True
    notify_inline = True
    cache_replies = False
    required_headers: tuple[str, ...] = (SIGNATURE_HEADER.lower(),)

    def __init__(self, config: VoiceCallConfig, rest: TwilioRest, *, auth_token: str,
                 public_url: str, stream_secret: bytes, stt: STT | None = None,
                 tts: TTS | None = None, voice: str | None = None,
                 language: str = "en-US", realtime: RealtimeProvider | None = None,
                 workspace_dir: Path | None = None) -> None:
        self.config = config
        self.rest = rest
        self._auth_token = auth_token
        self.public_url = public_url
        self._stream_secret = stream_secret
        self.stt = stt
        self.tts = tts
        self.voice = twiml.polly_voice(voice)
        self.language = language
        self._host: CarrierHost | None = None
        self._pending: dict[str, asyncio.Future[str]] = {}
        self._preconnect: dict[str, str] = {}
        self._streams: StreamRegistry[StreamSession] = StreamRegistry(
            grace_s=DISCONNECT_GRACE_S, on_expired=self._expire, log=log)
        self._turns: dict[str, str] = {}
        self._deferred: dict[str, str | None] = {}  # speech held while pre-connect DTMF plays
        # Realtime voice: stream tokens and one bridge per call (kept across reconnects).
        self.realtime = realtime
        self.rt = RealtimeHost(realtime, carrier=self.name, workspace_dir=workspace_dir,
                               on_expired=self._expire, on_failed=self.hangup,
                               grace_s=DISCONNECT_GRACE_S) if realtime is not None else None

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: CarrierHost) -> None:
        self._host = host

    async def aclose(self) -> None:
        await self._streams.aclose()
        if self.rt is not None:
            await self.rt.aclose()
        await self.rest.aclose()
        await close_speech(self.stt, self.tts)

    def _host_or_raise(self) -> CarrierHost:
        if self._host is None:
            raise CarrierError("twilio carrier not started")
        return self._host

    # ------------------------------------------------------------------ URLs
    def _url(self, **query: str) -> str:
        return with_query(self.public_url, **query)

    def _doc_url(self, call_id: str, turn_token: str | None = None) -> str:
        """A webhook URL for a document's Redirect/Gather action, unique per document.

        Twilio's redirect to an unchanged URL carries the same parameters and so
        the same signature as the earlier request: replay protection would drop
        it. A nonce makes each document's callback distinct, while a true replay
        (same URL, same body) is still caught.
        """
        extra = {"turnToken": turn_token} if turn_token else {}
        return self._url(callId=call_id, **extra, n=secrets.token_urlsafe(6))

    def stream_url(self) -> str:
        return ws_url(self.public_url, self.config.streaming.stream_path)

    def stream_token(self, call_sid: str) -> str:
        digest = hmac.new(self._stream_secret, call_sid.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    # ------------------------------------------------------------------ realtime
    def _bridge(self, sid: str) -> RealtimeBridge | None:
        return self.rt.bridge(sid) if self.rt is not None else None

    def _action_url(self, call: Call, token: str | None) -> str:
        return self._doc_url(call.call_id, token)

    # ------------------------------------------------------------------ outbound
    async def dial(self, req: DialRequest) -> str:
        form: dict[str, str | list[str]] = {
            "To": req.to_number, "From": req.from_number,
            "StatusCallback": self._url(callId=req.call_id, type="status"),
            "StatusCallbackEvent": list(STATUS_EVENTS), "StatusCallbackMethod": "POST",
            "Timeout": str(max(5, min(600, math.ceil(req.ring_timeout_ms / 1000)))),
        }
        if req.mode == "notify":
            doc = twiml.say_then_hangup(
                req.message or "", voice=self.voice, language=self.language,
                pause_s=self.config.outbound.notify_hangup_delay_sec)
            if twiml.fits_inline(doc):
                form["Twiml"] = doc
            else:
                form["Url"] = self._url(callId=req.call_id)
        else:
            form["Url"] = self._url(callId=req.call_id)
            if req.dtmf_sequence:
                self._preconnect[req.call_id] = twiml.play_digits_then_redirect(
                    req.dtmf_sequence, self._doc_url(req.call_id))
        created = await self.rest.create_call(form)
        sid = created.get("sid")
        if not isinstance(sid, str) or not sid:
            raise CarrierError("twilio create call: response has no sid")
        return sid

    # ------------------------------------------------------------------ call control
    async def media_ready(self, call: Call) -> None:
        if not self.config.streaming.enabled or not call.provider_call_id:
            return
        await self._streams.wait_up(call.provider_call_id, STREAM_READY_TIMEOUT_S)

    async def _deliver(self, call: Call, doc: str) -> None:
        """Answer the webhook Twilio is waiting on, else update the live call."""
        sid = call.provider_call_id or ""
        pending = self._pending.get(sid)
        if pending is not None and not pending.done():
            pending.set_result(doc)
            return
        if sid in self._deferred:
            self._deferred[sid] = doc
            return
        if not sid:
            raise CarrierError("call has no Twilio CallSid yet")
        await self.rest.update_call(sid, {"Twiml": doc})

    def incremental_speech(self, call: Call) -> bool:
        return (call.provider_call_id or "") in self._streams

    async def speak(self, call: Call, text: str, *, listen_token: str | None = None,
                    hangup_after: bool = False) -> SpeechTiming | None:
        sid = call.provider_call_id or ""
        bridge = self._bridge(sid)
        if bridge is not None:
            await bridge.say(text)   # the realtime model says it (no TwiML on a live stream)
            if hangup_after:
                await self.hangup(call)
            return None
        session = self._streams.get(sid)
        if session is not None:
            timing = await self._speak_stream(session, text)
            if hangup_after:
                await self.hangup(call)
            return timing
        if hangup_after:
            doc = twiml.say_then_hangup(text, voice=self.voice, language=self.language)
        elif listen_token:
            self._turns[sid] = listen_token
            doc = twiml.say_then_gather(text, self._action_url(call, listen_token),
                                        voice=self.voice, language=self.language)
        else:
            doc = twiml.keepalive(self._doc_url(call.call_id), say=text, voice=self.voice,
                                  language=self.language, seconds=KEEPALIVE_S)
        await self._deliver(call, doc)
        return None

    def _tts_for(self, route_key: str | None) -> TTS | None:
        if isinstance(self.tts, RoutedTTS):
            return self.tts.for_route(route_key)
        return self.tts

    async def _speak_stream(self, session: StreamSession, text: str) -> SpeechTiming:
        call = self._host.get(session.call_id) if self._host else None
        tts = self._tts_for(call.number_route_key if call else None)
        if tts is None:
            raise CarrierError("telephony TTS is unavailable while a media stream is active; "
                               "refusing TwiML fallback")
        return await session.speak(tts, text)

    async def start_listening(self, call: Call, turn_token: str) -> None:
        sid = call.provider_call_id or ""
        if sid in self._streams or self.uses_realtime(call):
            return  # the stream's STT (or the realtime model) listens all the time
        self._turns[sid] = turn_token
        await self._deliver(call, twiml.gather(self._action_url(call, turn_token),
                                               language=self.language))

    async def send_dtmf(self, call: Call, digits: str) -> None:
        sid = call.provider_call_id or ""
        bridge = self._bridge(sid)
        if bridge is not None:
            tones = dtmf_audio(digits)

            async def tone_chunks() -> AsyncIterator[bytes]:
                yield tones

            result = await bridge.queue.play(tone_chunks())
            if result.outcome == "failed":
                raise CarrierError(f"DTMF playback failed: {result.error}")
            return
        session = self._streams.get(sid)
        if session is not None:
            audio = dtmf_audio(digits)

            async def chunks() -> AsyncIterator[bytes]:
                yield audio

            result = await session.play(chunks())
            if result.outcome == "failed":
                raise CarrierError(f"DTMF playback failed: {result.error}")
            return
        await self._deliver(call, twiml.play_digits_then_redirect(
            digits, self._doc_url(call.call_id)))

    async def hangup(self, call: Call) -> None:
        if call.provider_call_id:
            await self.rest.hangup(call.provider_call_id)

    async def reject(self, call: Call) -> None:
        sid = call.provider_call_id or ""
        if sid in self._pending:
            return  # the webhook being answered replies <Reject>: the caller is never billed
        await self.hangup(call)

    async def get_status(self, provider_call_id: str) -> RemoteStatus:
        resource = await self.rest.fetch_call(provider_call_id)
        if resource is None:
            return "not-found"
        return remote_status(str(resource.get("status") or ""))

    # ------------------------------------------------------------------ webhooks
    def verify_webhook(self, req: RequestView, body: bytes) -> Verification:
        return verify_request(req, body, self._auth_token, signed_url(self.config, req),
                              public_url=self.config.public_url)

    def replay_reply(self) -> WebhookReply:
        return _twiml(twiml.empty())

    async def handle_webhook(self, req: RequestView, body: bytes,
                             request_key: str | None) -> WebhookReply:
        host = self._host_or_raise()
        params = parse_form(body) if body and _is_form(req) else {}
        query = dict(parse_qsl(req.query_string, keep_blank_values=True))
        key = request_key or "twilio:unsigned:" + hashlib.sha256(
            req.query_string.encode() + b"\n" + body).hexdigest()
        events = parse_events(params, query, dedupe_key=key, now=time.time())
        sid = _first(params, "CallSid") or ""
        if query.get("type") == "status":
            for event in events:
                if event.type == "call.answered" and self._answer_via_document(host, event):
                    continue
                await host.handle_event(event)
            if any(e.type == "call.ended" for e in events):
                self._forget(sid)
            return _twiml(twiml.empty())
        if not sid:
            raise ProtocolError("twilio webhook without CallSid")
        pending: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[sid] = pending
        try:
            return await self._answer(host, sid, events, key, pending)
        finally:
            if self._pending.get(sid) is pending:
                del self._pending[sid]
            if not pending.done():
                pending.cancel()

    def _answer_via_document(self, host: CarrierHost, event: CallEvent) -> bool:
        """Conversation calls are answered by the document fetch, not the status callback.

        Both arrive at about the same time; letting only the fetch answer means the
        greeting always goes into the document Twilio is waiting for.
        """
        call = host.get(event.call_id or event.provider_call_id or "")
        return call is not None and not (call.mode == "notify" and call.direction == "outbound")

    async def _answer(self, host: CarrierHost, sid: str, events: list[CallEvent], key: str,
                      pending: asyncio.Future[str]) -> WebhookReply:
        before = host.get(sid)
        was_answered = before is not None and before.answered_at is not None
        for event in events:
            await host.handle_event(event)
        call = host.get(sid)
        if call is None:
            return _twiml(twiml.reject())
        if call.terminal:
            if call.metadata.get("rejectionReason"):
                return _twiml(twiml.reject())
            return _twiml(twiml.empty())
        expects_reply = any(e.type == "call.speech" for e in events) or (
            not was_answered and call.answered_at is not None)
        if call.answered_at is None:
            # Twilio answered by fetching this document (inbound, or an outbound Url).
            await host.handle_event(CallEvent(
                "call.answered", call_id=call.call_id, provider_call_id=sid,
                timestamp=time.time(), dedupe_key=key + ":answered"))
            expects_reply = True
            call = host.get(sid) or call
        preconnect = self._preconnect.pop(call.call_id, None)
        if preconnect is not None:
            # Speech produced while the digits play waits for the redirect back here.
            self._deferred[sid] = None
            return _twiml(preconnect)
        if sid in self._deferred:
            doc = self._deferred.pop(sid)
            if doc is not None:
                return _twiml(doc)
        if call.mode == "notify" and call.direction == "outbound":
            message = str(call.metadata.get("initialMessage") or "")
            return _twiml(twiml.say_then_hangup(
                message, voice=self.voice, language=self.language,
                pause_s=self.config.outbound.notify_hangup_delay_sec))
        if self.uses_realtime(call):
            if self.rt is not None and self.rt.attached(sid):
                return _twiml(twiml.keepalive(self._doc_url(call.call_id),
                                              seconds=KEEPALIVE_S))
            # The inbound policy was applied when the call was registered, before this.
            # No <Say>: the realtime model's own opening turn greets the caller. The
            # redirect after <Connect> brings a dropped stream back within the grace.
            return _twiml(twiml.connect_stream(
                self.realtime_stream_url(self.issue_realtime_token(sid)),
                then_redirect=self._doc_url(call.call_id)))
        if self.config.streaming.enabled and sid not in self._streams:
            return _twiml(twiml.connect_stream(
                self.stream_url(), parameters={"token": self.stream_token(sid)},
                then_redirect=self._doc_url(call.call_id)))
        if expects_reply or any(e.type == "call.dtmf" for e in events):
            try:
                return _twiml(await asyncio.wait_for(asyncio.shield(pending), HOLD_S))
            except TimeoutError:
                return _twiml(twiml.keepalive(self._doc_url(call.call_id),
                                              seconds=KEEPALIVE_S))
        turn = self._turns.get(sid)
        if turn is not None:
            # A <Gather> timed out on silence and redirected here: keep listening.
            return _twiml(twiml.gather(self._action_url(call, turn), language=self.language))
        return _twiml(twiml.keepalive(self._doc_url(call.call_id), seconds=KEEPALIVE_S))

    def _forget(self, sid: str) -> None:
        self._turns.pop(sid, None)
        self._deferred.pop(sid, None)
        self._streams.forget(sid)

    # ------------------------------------------------------------------ media streams
    async def handle_stream(self, ws: MediaSocket, query_string: str) -> None:
        """Run one Media Stream from ``connected`` to ``stop`` (or a dropped socket)."""
        host = self._host_or_raise()
        start = await self._await_start(ws)
        if start is None:
            return
        token = start.custom_parameters.get("token") or \
            dict(parse_qsl(query_string)).get("token", "")
        expected = self.stream_token(start.call_sid)
        call = host.get(start.call_sid)
        if not hmac.compare_digest(token.encode(), expected.encode()) or call is None \
                or call.terminal:
            await ws.close(1008, "Unknown call or bad stream token")
            return
        ws.started()
        stt_session = await open_stt_session(self.stt, call.call_id)
        session = StreamSession(ws, start, call.call_id, host, stt_session)
        self._streams.attach(start.call_sid, session)
        try:
            await session.run()
        finally:
            self._streams.detach(start.call_sid, session)

    async def handle_realtime_stream(self, ws: MediaSocket, sid: str) -> None:
        """Run one realtime Media Stream (its path token already claimed for ``sid``)."""
        host = self._host_or_raise()
        if self.rt is None:
            await ws.close(1008, "Realtime voice unavailable")
            return
        start = await self._await_start(ws)
        if start is None:
            return
        call = host.get(start.call_sid)
        if start.call_sid != sid or call is None or call.terminal:
            await ws.close(1008, "Unknown call or bad stream token")
            return
        ws.started()
        await self.rt.serve(host, call, sid,  # type: ignore[arg-type]
                            _TwilioPort(ws, start.stream_sid),
                            lambda bridge: self._read_realtime(ws, bridge))

    async def _read_realtime(self, ws: MediaSocket, bridge: RealtimeBridge) -> None:
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
                await bridge.on_audio(frame.payload)
            elif isinstance(frame, media.Mark):
                bridge.on_mark(frame.name)
            elif isinstance(frame, media.Dtmf):
                await bridge.on_dtmf(frame.digit)   # to the model; never ends the call
            elif isinstance(frame, media.Stop):
                return

    async def _await_start(self, ws: MediaSocket) -> media.Start | None:
        got = await await_start(
            ws, self.config.streaming.pre_start_timeout_ms / 1000, media.parse_frame,
            is_start=lambda f: isinstance(f, media.Start),
            is_preamble=lambda f: isinstance(f, media.Connected))
        return got[1] if got is not None and isinstance(got[1], media.Start) else None

    async def _expire(self, sid: str, call_id: str) -> None:
        """A dropped stream did not come back within the grace: the call is over."""
        await expire_call(self._host, sid, call_id, carrier=self.name, hangup=self.hangup,
                          log=log)


class _TwilioPort:
    """A realtime bridge's view of a Twilio Media Stream: media, mark and clear frames."""

    def __init__(self, ws: MediaSocket, stream_sid: str) -> None:
        self.ws = ws
        self.stream_sid = stream_sid

    async def send_media(self, frame: bytes) -> None:
        await self.ws.send_text(media.encode_media(self.stream_sid, frame))

    async def send_mark(self, name: str) -> None:
        await self.ws.send_text(media.encode_mark(self.stream_sid, name))

    async def send_clear(self) -> None:
        await self.ws.send_text(media.encode_clear(self.stream_sid))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code, reason)


def verify_request(req: RequestView, body: bytes, auth_token: str, url: str, *,
                   public_url: str | None) -> Verification:
    """Check ``X-Twilio-Signature`` of a request whose public URL is ``url``.

    The one implementation behind both the gateway and ``voicecall verify-webhook``.
    """
    signature = req.headers.get(SIGNATURE_HEADER.lower(), "")
    if not signature:
        return Verification(False, f"missing {SIGNATURE_HEADER} header")
    try:
        params = parse_form(body) if _is_form(req) else None
        algorithm = signature_algorithm(req.headers.get(SIGNATURE_SETTINGS_HEADER.lower()))
    except VoicecallError as exc:
        return Verification(False, str(exc))
    extra = port_variants(url, public_url, req.headers.get("host"))
    if not verify_signature(auth_token, url, params, signature, raw_body=body,
                            extra_urls=extra, algorithm=algorithm):
        return Verification(False, f"Invalid signature for URL: {url}")
    return Verification(True, request_key=request_key(url, params or {}, signature))


def _is_form(req: RequestView) -> bool:
    ctype = req.headers.get("content-type", "application/x-www-form-urlencoded")
    return ctype.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded"
