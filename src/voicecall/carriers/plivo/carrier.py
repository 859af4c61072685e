"""The Plivo carrier's I/O shell: REST calls, XML replies, audio streams.

Decisions worth knowing:

- Plivo answers ``Call/`` with a ``request_uuid``; the ``CallUUID`` first arrives
  in the ring/answer callbacks (with ``RequestUUID`` to join them). Every callback
  URL we hand out carries our ``callId``, so callbacks resolve to the call whatever
  id Plivo uses, and the carrier keeps the request -> CallUUID mapping for its own
  REST calls (hang-up, DTMF, transfer) and stream lookups.
- A callback Plivo is waiting on (answer URL, ``<GetInput>`` action, ``<Redirect>``)
  is answered with the XML the call manager produces while handling it (greeting,
  the agent's reply), held for a bounded time; speech produced while nothing is
  pending goes out as a REST transfer of the A leg to a one-off document URL.
- Every document's callback URLs carry a fresh nonce (``n``), so Plivo's redirect
  to "the same" URL is a new request, not a replay; ``<GetInput>`` actions carry
  the turn token, and a callback with a stale token never satisfies a newer turn.
- Replies are cached (``cache_replies``): the gateway answers a replayed request
  (same nonce + signature) with the XML sent the first time, and this carrier
  answers a Plivo retry of the same callback (same URL and body, fresh nonce) the
  same way, without processing it twice.
- Streams: ``<Stream bidirectional keepCallAlive>`` in the audio format we ask for
  (mu-law 8 kHz unless ``stream_format`` says otherwise), honouring the format the
  ``start`` frame reports. Stream tokens are an HMAC of the CallUUID under a
  per-install key, sent in ``extraHeaders``. While a stream is up, speech and DTMF
  go over it only (``playAudio`` / ``sendDTMF``): new XML would end the stream.
- Ring timeout: Plivo's ``ring_timeout``. ``hangup_on_ring`` is deliberately not
  sent: it schedules a hang-up N seconds after ringing starts that also ends an
  answered call (Plivo's open-source core runs it as ``sched_hangup`` on ring).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

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
from voicecall.carriers.plivo import media, plivoxml
from voicecall.carriers.plivo.rest import PlivoRest
from voicecall.carriers.plivo.signature import (
    V2_HEADER,
    V2_NONCE_HEADER,
    V3_HEADER,
    V3_NONCE_HEADER,
    request_key,
    verify_v2,
    verify_v3,
)
from voicecall.carriers.plivo.stream import StreamSession
from voicecall.carriers.plivo.webhook import call_ids, parse_events, parse_form, remote_status
from voicecall.carriers.streams import StreamRegistry, expire_call
from voicecall.config import LoadedConfig, VoiceCallConfig
from voicecall.errors import CarrierError, ConfigError, ProtocolError, VoicecallError
from voicecall.gateway.media import MediaSocket, await_start, ws_url
from voicecall.gateway.security import RequestView, port_variants
from voicecall.speech.registry import close_speech, open_stt_session
from voicecall.speech.stt.base import STT
from voicecall.speech.tts.base import TTS

log = logging.getLogger("voicecall.plivo")

HOLD_S = 10.0                 # Plivo waits 40 s, but answer XML should come well inside 15 s
KEEPALIVE_S = 60
STREAM_READY_TIMEOUT_S = 10.0
DISCONNECT_GRACE_S = 2.0
REPLY_CACHE_TTL_S = 600.0
REPLY_CACHE_MAX = 2048
DOCS_MAX = 256                # one-off documents waiting for Plivo to fetch them
XML = plivoxml.CONTENT_TYPE


def _xml(body: str) -> WebhookReply:
    return WebhookReply(200, body, XML)


def plivo_number(number: str) -> str:
    """Plivo wants country code + number without ``+``; SIP URIs pass through."""
    text = number.strip()
    if text.lower().startswith("sip:"):
        return text
    return text[1:] if text.startswith("+") else text


class Carrier:
    name = "plivo"
    survives_restart = True
    notify_inline = True   # the notify message is the answer document itself
    cache_replies = True   # Plivo retries expect the same XML back
    required_headers: tuple[str, ...] = (V3_HEADER.lower(), V3_NONCE_HEADER.lower())

    @staticmethod
    def signature_headers_present(headers: Mapping[str, str]) -> bool:
        """V3 signature + nonce, or (where Plivo still sends it) V2 signature + nonce."""
        return all(h.lower() in headers for h in (V3_HEADER, V3_NONCE_HEADER)) or \
            all(h.lower() in headers for h in (V2_HEADER, V2_NONCE_HEADER))

    def __init__(self, config: VoiceCallConfig, rest: PlivoRest, *, auth_token: str,
                 public_url: str, stream_secret: bytes, stt: STT | None = None,
                 tts: TTS | None = None, voice: str | None = None,
                 language: str = "en-US",
                 stream_format: media.StreamFormat = media.MULAW_8K) -> None:
        self.config = config
        self.rest = rest
        self._auth_token = auth_token
        self.public_url = public_url
        self._stream_secret = stream_secret
        self.stt = stt
        self.tts = tts
        self.voice = plivoxml.speak_voice(voice)
        self.language = language
        self.stream_format = stream_format   # what <Stream contentType> asks for
        self._host: CarrierHost | None = None
        # ids: our call id <-> Plivo CallUUID, and the request uuid of each dial
        self._uuid_by_call: dict[str, str] = {}
        self._call_by_uuid: dict[str, str] = {}
        self._request_by_call: dict[str, str] = {}
        self._requests: set[str] = set()
        # per CallUUID
        self._pending: dict[str, asyncio.Future[str]] = {}
        self._deferred: dict[str, str | None] = {}  # speech held while pre-connect DTMF plays
        self._turns: dict[str, str] = {}
        self._streams: StreamRegistry[StreamSession] = StreamRegistry(
            grace_s=DISCONNECT_GRACE_S, on_expired=self._expire, log=log)
        # per call id
        self._preconnect: dict[str, str] = {}
        self._notify: dict[str, str] = {}
        # one-off documents fetched after a REST transfer, and the reply cache
        self._docs: OrderedDict[str, str] = OrderedDict()
        self._replies: OrderedDict[str, tuple[float, WebhookReply]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[WebhookReply]] = {}

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: CarrierHost) -> None:
        self._host = host

    async def aclose(self) -> None:
        await self._streams.aclose()
        await self.rest.aclose()
        await close_speech(self.stt, self.tts)

    def _host_or_raise(self) -> CarrierHost:
        if self._host is None:
            raise CarrierError("plivo carrier not started")
        return self._host

    # ------------------------------------------------------------------ ids
    def _learn(self, call_id: str, call_uuid: str) -> None:
        old = self._uuid_by_call.get(call_id)
        if old is not None and old != call_uuid:
            self._call_by_uuid.pop(old, None)
        self._uuid_by_call[call_id] = call_uuid
        self._call_by_uuid[call_uuid] = call_id

    def call_uuid(self, call: Call) -> str | None:
        """The Plivo CallUUID of ``call``, once known (``None`` before the first callback)."""
        known = self._uuid_by_call.get(call.call_id)
        if known:
            return known
        pid = call.provider_call_id
        if pid and pid not in self._requests and pid != self._request_by_call.get(call.call_id):
            return pid
        return None

    def _lookup(self, host: CarrierHost, call_uuid: str | None,
                call_id: str | None) -> Call | None:
        call = host.get(call_id) if call_id else None
        if call is None and call_uuid:
            known = self._call_by_uuid.get(call_uuid)
            call = host.get(known) if known else None
            if call is None:
                call = host.get(call_uuid)
        if call is not None and call_uuid:
            self._learn(call.call_id, call_uuid)
        return call

    # ------------------------------------------------------------------ URLs
    def _url(self, **query: str) -> str:
        return with_query(self.public_url, **query)

    def _doc_url(self, call_id: str, flow: str = "redirect", turn_token: str | None = None,
                 **extra: str) -> str:
        """A callback URL for one document's Redirect/GetInput, unique per document.

        Plivo's redirect to an unchanged URL would repeat an earlier request; the
        nonce makes each document's callback distinct, while a true replay (same
        URL, same nonce header) is still caught.
        """
        token = {"turnToken": turn_token} if turn_token else {}
        return self._url(callId=call_id, flow=flow, **token, **extra,
                         n=secrets.token_urlsafe(6))

    def stream_url(self) -> str:
        return ws_url(self.public_url, self.config.streaming.stream_path)

    def stream_token(self, call_uuid: str) -> str:
        """Alphanumeric (``extraHeaders`` allows nothing else), 128 bits."""
        return hmac.new(self._stream_secret, call_uuid.encode(), hashlib.sha256).hexdigest()[:32]

    def _action_url(self, call: Call, token: str) -> str:
        return self._doc_url(call.call_id, "getinput", token)

    # ------------------------------------------------------------------ outbound
    async def dial(self, req: DialRequest) -> str:
        if req.mode == "conversation" and req.dtmf_sequence:
            # Built (and validated) before dialling: bad digits fail the request instead of
            # being dropped on the floor once the call is up.
            self._preconnect[req.call_id] = plivoxml.dtmf_then_redirect(
                req.dtmf_sequence, self._doc_url(req.call_id))
        if req.mode == "notify":
            self._notify[req.call_id] = req.message or ""
        body = {
            "from": plivo_number(req.from_number),
            "to": plivo_number(req.to_number),
            "answer_url": self._url(callId=req.call_id, flow="answer"),
            "answer_method": "POST",
            "ring_url": self._url(callId=req.call_id, flow="ring"),
            "ring_method": "POST",
            "hangup_url": self._url(callId=req.call_id, flow="hangup"),
            "hangup_method": "POST",
            "ring_timeout": max(1, math.floor(req.ring_timeout_ms / 1000)),
        }
        try:
            created = await self.rest.create_call(body)
        except BaseException:
            self._preconnect.pop(req.call_id, None)
            self._notify.pop(req.call_id, None)
            raise
        request_uuid = created.get("request_uuid")
        if isinstance(request_uuid, list) and request_uuid:
            request_uuid = request_uuid[0]
        if not isinstance(request_uuid, str) or not request_uuid:
            raise CarrierError("plivo create call: response has no request_uuid")
        self._request_by_call[req.call_id] = request_uuid
        self._requests.add(request_uuid)
        return request_uuid

    # ------------------------------------------------------------------ call control
    async def media_ready(self, call: Call) -> None:
        uuid = self.call_uuid(call)
        if not self.config.streaming.enabled or not uuid:
            return
        await self._streams.wait_up(uuid, STREAM_READY_TIMEOUT_S)

    def incremental_speech(self, call: Call) -> bool:
        return (self.call_uuid(call) or "") in self._streams

    async def _deliver(self, call: Call, doc: str) -> None:
        """Answer the callback Plivo is waiting on, else transfer the live call to ``doc``."""
        uuid = self.call_uuid(call) or ""
        pending = self._pending.get(uuid)
        if pending is not None and not pending.done():
            pending.set_result(doc)
            return
        if uuid in self._deferred:
            self._deferred[uuid] = doc
            return
        if not uuid:
            raise CarrierError("call has no Plivo CallUUID yet")
        doc_id = secrets.token_urlsafe(9)
        self._docs[doc_id] = doc
        while len(self._docs) > DOCS_MAX:
            self._docs.popitem(last=False)
        try:
            await self.rest.transfer(uuid, self._doc_url(call.call_id, "doc", doc=doc_id))
        except BaseException:
            self._docs.pop(doc_id, None)
            raise

    async def speak(self, call: Call, text: str, *, listen_token: str | None = None,
                    hangup_after: bool = False) -> SpeechTiming | None:
        uuid = self.call_uuid(call) or ""
        session = self._streams.get(uuid)
        if session is not None:
            timing = await self._speak_stream(session, text)
            if hangup_after:
                await self.hangup(call)
            return timing
        if hangup_after:
            doc = plivoxml.speak_then_hangup(text, voice=self.voice, language=self.language)
        elif listen_token:
            self._turns[uuid] = listen_token
            doc = plivoxml.speak_then_listen(text, self._action_url(call, listen_token),
                                             self._doc_url(call.call_id), voice=self.voice,
                                             language=self.language)
        else:
            doc = plivoxml.keepalive(self._doc_url(call.call_id), say=text, voice=self.voice,
                                     language=self.language, seconds=KEEPALIVE_S)
        await self._deliver(call, doc)
        return None

    async def _speak_stream(self, session: StreamSession, text: str) -> SpeechTiming:
        if self.tts is None:
            raise CarrierError("telephony TTS is unavailable while an audio stream is active; "
                               "refusing an XML fallback")
        return await session.speak(self.tts, text)

    async def start_listening(self, call: Call, turn_token: str) -> None:
        uuid = self.call_uuid(call) or ""
        if uuid in self._streams:
            return  # the stream's STT listens all the time
        self._turns[uuid] = turn_token
        await self._deliver(call, plivoxml.listen(self._action_url(call, turn_token),
                                                  self._doc_url(call.call_id),
                                                  language=self.language))

    async def send_dtmf(self, call: Call, digits: str) -> None:
        keys = plivoxml.normalize_digits(digits)
        uuid = self.call_uuid(call)
        session = self._streams.get(uuid or "")
        if session is not None:
            await session.send_dtmf(keys)
            return
        if not uuid:
            raise CarrierError("call has no Plivo CallUUID yet")
        # The DTMF API leaves the running XML (a GetInput turn, say) untouched.
        await self.rest.send_dtmf(uuid, keys)

    async def hangup(self, call: Call) -> None:
        uuid = self.call_uuid(call)
        if uuid and await self.rest.hangup(uuid):
            return
        request = self._request_by_call.get(call.call_id) or (
            call.provider_call_id if call.provider_call_id != uuid else None)
        if request and not await self.rest.cancel_request(request) and not uuid:
            await self.rest.hangup(request)  # live calls may answer to their request uuid

    async def reject(self, call: Call) -> None:
        uuid = self.call_uuid(call) or ""
        if uuid in self._pending:
            return  # the answer request in flight replies <Hangup reason="rejected"/>
        await self.hangup(call)

    async def get_status(self, provider_call_id: str) -> RemoteStatus:
        call_id = next((c for c, r in self._request_by_call.items() if r == provider_call_id),
                       None)
        uuid = self._uuid_by_call.get(call_id, provider_call_id) if call_id else \
            provider_call_id
        live = await self.rest.get_live_call(uuid)
        if live is not None:
            return "active" if remote_status(live) != "terminal" else "terminal"
        if await self.rest.get_queued_call(provider_call_id) is not None:
            return "active"
        if await self.rest.get_call(uuid) is not None:
            return "terminal"
        return "not-found"

    # ------------------------------------------------------------------ webhooks
    def verify_webhook(self, req: RequestView, body: bytes) -> Verification:
        return verify_request(req, body, self._auth_token, signed_url(self.config, req),
                              public_url=self.config.public_url)

    def replay_reply(self) -> WebhookReply:
        return _xml(plivoxml.empty())

    async def handle_webhook(self, req: RequestView, body: bytes,
                             request_key: str | None) -> WebhookReply:
        """Answer one verified callback; a repeat of one already answered gets that answer.

        Repeats are recognised by content (method, path, query, body), not by the
        signature nonce, because Plivo's own retries may be signed afresh.
        """
        key = "plivo:req:" + hashlib.sha256(b"\n".join((
            req.method.encode(), req.path.encode(), req.query_string.encode(), body))
        ).hexdigest()
        now = time.monotonic()
        cached = self._replies.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        inflight = self._inflight.get(key)
        if inflight is not None:
            return await asyncio.shield(inflight)
        fut: asyncio.Future[WebhookReply] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            reply = await self._handle(req, body, key)
        except BaseException as exc:
            fut.set_exception(exc if isinstance(exc, Exception) else CarrierError("cancelled"))
            fut.exception()  # retrieved: only concurrent repeats care
            raise
        finally:
            self._inflight.pop(key, None)
        fut.set_result(reply)
        self._replies[key] = (now + REPLY_CACHE_TTL_S, reply)
        self._replies.move_to_end(key)
        while len(self._replies) > REPLY_CACHE_MAX or (
                self._replies and next(iter(self._replies.values()))[0] <= now):
            self._replies.popitem(last=False)
        return reply

    async def _handle(self, req: RequestView, body: bytes, key: str) -> WebhookReply:
        host = self._host_or_raise()
        params = parse_form(body) if body and _is_form(req) else {}
        query = dict(parse_qsl(req.query_string, keep_blank_values=True))
        ids = call_ids(params)
        uuid = ids.call_uuid
        call_id = query.get("callId") or None
        if uuid and call_id:
            self._learn(call_id, uuid)
        events = parse_events(params, query, dedupe_key=key, now=time.time())
        if any(e.type == "call.ended" for e in events) or query.get("flow") in ("ring",
                                                                               "hangup"):
            for event in events:
                await host.handle_event(event)
            if uuid and any(e.type == "call.ended" for e in events):
                self._forget(uuid, call_id)
            return _xml(plivoxml.empty())
        if not uuid:
            raise ProtocolError("plivo callback without CallUUID")
        if query.get("flow") == "doc":
            doc = self._docs.pop(query.get("doc", ""), None)
            if doc is not None:
                return _xml(doc)
        pending: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[uuid] = pending
        try:
            return await self._answer(host, uuid, call_id, events, key, pending)
        finally:
            if self._pending.get(uuid) is pending:
                del self._pending[uuid]
            if not pending.done():
                pending.cancel()

    async def _answer(self, host: CarrierHost, uuid: str, call_id: str | None,
                      events: list[CallEvent], key: str,
                      pending: asyncio.Future[str]) -> WebhookReply:
        before = self._lookup(host, uuid, call_id)
        was_answered = before is not None and before.answered_at is not None
        for event in events:
            await host.handle_event(event)
        call = self._lookup(host, uuid, call_id)
        if call is None:
            return _xml(plivoxml.reject())
        if call.terminal:
            if call.metadata.get("rejectionReason"):
                return _xml(plivoxml.reject())
            return _xml(plivoxml.empty())
        speech = [e for e in events if e.type == "call.speech"]
        expects_reply = bool(speech) or (not was_answered and call.answered_at is not None)
        if call.answered_at is None:
            # Plivo answers the call by running this document (inbound calls).
            await host.handle_event(CallEvent(
                "call.answered", call_id=call.call_id, provider_call_id=uuid,
                timestamp=time.time(), dedupe_key=key + ":answered"))
            expects_reply = True
            call = self._lookup(host, uuid, call.call_id) or call
        preconnect = self._preconnect.pop(call.call_id, None)
        if preconnect is not None:
            # Speech produced while the digits play waits for the redirect back here.
            self._deferred[uuid] = None
            return _xml(preconnect)
        if uuid in self._deferred:
            doc = self._deferred.pop(uuid)
            if doc is not None:
                return _xml(doc)
            expects_reply = True  # the greeting is still being prepared
        if call.mode == "notify" and call.direction == "outbound":
            message = self._notify.pop(call.call_id, None) or str(
                call.metadata.get("initialMessage") or "")
            return _xml(plivoxml.speak_then_hangup(
                message, voice=self.voice, language=self.language,
                wait_s=self.config.outbound.notify_hangup_delay_sec))
        if self.config.streaming.enabled and uuid not in self._streams:
            return _xml(plivoxml.stream(
                self.stream_url(), content_type=self.stream_format.content_type,
                extra_headers=f"token={self.stream_token(uuid)}",
                then_redirect=self._doc_url(call.call_id)))
        turn = self._turns.get(uuid)
        stale = bool(speech) and turn is not None and all(
            e.turn_token is not None and e.turn_token != turn for e in speech)
        if stale:
            log.warning("speech.stale_turn_token", extra={"call_id": call.call_id})
        elif expects_reply or any(e.type == "call.dtmf" for e in events):
            try:
                return _xml(await asyncio.wait_for(asyncio.shield(pending), HOLD_S))
            except TimeoutError:
                return _xml(plivoxml.keepalive(self._doc_url(call.call_id),
                                               seconds=KEEPALIVE_S))
        turn = self._turns.get(uuid)
        if turn is not None:
            # A silent GetInput fell through to its Redirect (or a stale answer came
            # in): keep listening for the current turn.
            return _xml(plivoxml.listen(self._action_url(call, turn),
                                        self._doc_url(call.call_id), language=self.language))
        return _xml(plivoxml.keepalive(self._doc_url(call.call_id), seconds=KEEPALIVE_S))

    def _forget(self, uuid: str, call_id: str | None) -> None:
        self._turns.pop(uuid, None)
        self._deferred.pop(uuid, None)
        self._streams.forget(uuid)
        cid = call_id or self._call_by_uuid.get(uuid)
        if cid is not None:
            self._preconnect.pop(cid, None)
            self._notify.pop(cid, None)
            request = self._request_by_call.pop(cid, None)
            if request is not None:
                self._requests.discard(request)
            self._uuid_by_call.pop(cid, None)
        self._call_by_uuid.pop(uuid, None)

    # ------------------------------------------------------------------ audio streams
    async def handle_stream(self, ws: MediaSocket, query_string: str) -> None:
        """Run one audio stream from ``start`` to ``stop`` (or a dropped socket)."""
        host = self._host_or_raise()
        start = await self._await_start(ws)
        if start is None:
            return
        token = start.extra_headers.get("token") or \
            dict(parse_qsl(query_string)).get("token", "")
        expected = self.stream_token(start.call_id)
        call = self._lookup(host, start.call_id, None)
        if not hmac.compare_digest(token.encode(), expected.encode()) or call is None \
                or call.terminal:
            await ws.close(1008, "Unknown call or bad stream token")
            return
        ws.started()
        stt_session = await open_stt_session(self.stt, call.call_id)
        session = StreamSession(ws, start, call.call_id, host, stt_session)
        self._streams.attach(start.call_id, session, format=session.format.content_type)
        try:
            await session.run()
        finally:
            self._streams.detach(start.call_id, session)

    async def _await_start(self, ws: MediaSocket) -> media.Start | None:
        got = await await_start(
            ws, self.config.streaming.pre_start_timeout_ms / 1000, media.parse_frame,
            is_start=lambda f: isinstance(f, media.Start),
            is_preamble=lambda f: isinstance(f, media.Unknown))
        return got[1] if got is not None and isinstance(got[1], media.Start) else None

    async def _expire(self, uuid: str, call_id: str) -> None:
        """A dropped stream did not come back within the grace: the call is over."""
        await expire_call(self._host, uuid, call_id, carrier=self.name, hangup=self.hangup,
                          log=log)


def verify_request(req: RequestView, body: bytes, auth_token: str, url: str, *,
                   public_url: str | None) -> Verification:
    """Check a Plivo callback whose public URL is ``url``: V3 when present, else V2.

    The one implementation behind both the gateway and ``voicecall verify-webhook``.
    A present-but-wrong V3 signature is refused outright (no falling back to the
    weaker V2, which covers neither the query nor the body).
    """
    headers = req.headers
    sig3 = headers.get(V3_HEADER.lower(), "")
    nonce3 = headers.get(V3_NONCE_HEADER.lower(), "")
    sig2 = headers.get(V2_HEADER.lower(), "")
    nonce2 = headers.get(V2_NONCE_HEADER.lower(), "")
    extra = [*port_variants(url, public_url, headers.get("host")), *_no_port(url)]
    if sig3 or nonce3:
        if not (sig3 and nonce3):
            missing = V3_HEADER if not sig3 else V3_NONCE_HEADER
            return Verification(False, f"missing {missing} header")
        try:
            params = parse_form(body) if body and _is_form(req) and \
                req.method.upper() != "GET" else None
        except VoicecallError as exc:
            return Verification(False, str(exc))
        matched = verify_v3(auth_token, url, nonce3, sig3, params, method=req.method,
                            extra_urls=extra)
        if matched is None:
            return Verification(False, f"Invalid signature for URL: {url}")
        return Verification(True, request_key=request_key("v3", nonce3, matched))
    if sig2 and nonce2:
        matched = verify_v2(auth_token, url, nonce2, sig2, extra_urls=extra)
        if matched is None:
            return Verification(False, f"Invalid V2 signature for URL: {url}")
        return Verification(True, request_key=request_key("v2", nonce2, matched))
    return Verification(False, f"missing {V3_HEADER} header")


def _no_port(url: str) -> list[str]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return []
    if not port:
        return []
    host = parts.netloc.rpartition("@")[2].rsplit(":", 1)[0]
    return [urlunsplit(parts._replace(netloc=host))]


def _is_form(req: RequestView) -> bool:
    ctype = req.headers.get("content-type", "application/x-www-form-urlencoded")
    return ctype.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded"


def _tts_voice(cfg: VoiceCallConfig) -> str | None:
    provider = cfg.tts.providers.get(cfg.tts.provider or "", {})
    for key in ("speakerVoice", "speakerVoiceId", "voice", "voiceId"):
        value = provider.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def build(loaded: LoadedConfig, home: Path, *, stream_secret: bytes, stt: STT | None,
          tts: TTS | None) -> Carrier:
    """The configured Plivo carrier (credentials and ``publicUrl`` checked by setup)."""
    cfg = loaded.config
    pl = cfg.plivo
    if not (pl.auth_id and pl.auth_token and cfg.public_url):
        raise ConfigError("plivo needs plivo.authId, plivo.authToken and publicUrl",
                          path="plivo")
    token = pl.auth_token.reveal()
    rest = PlivoRest(pl.auth_id, token, base_url=pl.api_base_url)
    return Carrier(cfg, rest, auth_token=token, public_url=cfg.public_url,
                   stream_secret=stream_secret, stt=stt, tts=tts, voice=_tts_voice(cfg))


__all__ = ["Carrier", "build", "plivo_number", "verify_request"]
