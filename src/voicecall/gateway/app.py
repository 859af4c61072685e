"""The two ASGI apps: the public webhook listener and the private control listener."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from voicecall.carriers.base import Verification, WebhookReply
from voicecall.errors import ProtocolError, VoicecallError
from voicecall.gateway.limits import BodyTimeout, BodyTooLarge, InFlight, read_capped
from voicecall.gateway.media import media_route, realtime_route
from voicecall.gateway.rpc import RpcContext, dispatch
from voicecall.gateway.runtime import Runtime
from voicecall.gateway.security import NO_REMOTE, CachedResponse, ReplayCache, RequestView

log = logging.getLogger("voicecall.gateway")
MAX_RPC_BODY = 1024 * 1024


def _client_ip(request: Request) -> str:
    # The socket peer, never a forwarded header: this keys a pre-auth limit.
    return request.client.host if request.client else NO_REMOTE


def request_view(request: Request) -> RequestView:
    """The raw request as signatures see it: path and query verbatim, as sent."""
    scope = request.scope
    raw_path = scope.get("raw_path") or scope["path"].encode()
    return RequestView(
        method=request.method,
        path=raw_path.decode("latin-1").split("?", 1)[0],
        query_string=scope.get("query_string", b"").decode("latin-1"),
        headers={k.lower(): v for k, v in request.headers.items()},
        remote_ip=request.client.host if request.client else None,
        scheme=scope.get("scheme", "http"),
    )


def _signed(carrier: object, headers: Mapping[str, str]) -> bool:
    """The carrier's signature headers are present (checked before reading the body).

    Carriers with alternative header sets (Plivo V3 or V2) decide for themselves.
    """
    check = getattr(carrier, "signature_headers_present", None)
    if check is not None:
        return bool(check(headers))
    required: tuple[str, ...] = getattr(carrier, "required_headers", ())
    return all(h in headers for h in required)


def _reply(reply: WebhookReply) -> Response:
    return Response(reply.body, status_code=reply.status, media_type=reply.content_type)


def webhook_app(runtime: Runtime) -> Starlette:
    """Carrier webhooks on ``serve.path`` behind the pre-auth security pipeline.

    Order matters: unsigned requests are refused before their body is read;
    the per-IP in-flight cap and the 64 KB / 5 s body limits bound what an
    unauthenticated sender can cost; only a verified body is parsed, and a
    replayed one is acknowledged without side effects.
    """
    cfg = runtime.config
    path = cfg.webhook_path  # normalised: leading slash, no trailing slash
    in_flight = InFlight()
    replays = ReplayCache()
    skip_signatures = cfg.skip_signature_verification

    async def webhook(request: Request) -> Response:
        manager = runtime.manager
        if manager is None:
            return PlainTextResponse("Voice call runtime not started", status_code=503)
        carrier = manager.carrier
        if not skip_signatures and not _signed(carrier, request.headers):
            return PlainTextResponse("Missing signature", status_code=401)
        ip = _client_ip(request)
        if not in_flight.try_acquire(ip):
            return PlainTextResponse("Too many requests", status_code=429)
        try:
            try:
                body = await read_capped(request.stream(),
                                         declared_length=request.headers.get("content-length"))
            except BodyTooLarge:
                return PlainTextResponse("Payload too large", status_code=413)
            except BodyTimeout:
                return PlainTextResponse("Request timeout", status_code=408)
            view = request_view(request)
            if skip_signatures:
                key: str | None = "unsigned:" + hashlib.sha256(
                    b"%s\n%s?%s\n" % (view.method.encode(), view.path.encode(),
                                       view.query_string.encode()) + body).hexdigest()
            else:
                try:
                    verdict = carrier.verify_webhook(view, body)
                except VoicecallError as exc:
                    verdict = Verification(False, str(exc))
                if not verdict.ok:
                    log.warning("webhook.rejected", extra={"why": verdict.reason})
                    return PlainTextResponse("Invalid signature", status_code=401)
                key = verdict.request_key
            now = time.time()
            if key is not None and replays.seen(key, now):
                log.info("webhook.replay_acknowledged")
                cached = replays.get_response(key, now) if carrier.cache_replies else None
                if cached is not None:
                    return Response(cached.body, status_code=cached.status_code,
                                    media_type=cached.media_type)
                return _reply(carrier.replay_reply())
            try:
                reply = await carrier.handle_webhook(view, body, key)
                if key is not None and carrier.cache_replies:
                    # Carriers without per-request tokens get the very same answer on a
                    # replay, and nothing is processed twice.
                    replays.put_response(key, CachedResponse(
                        reply.status, reply.body.encode(), reply.content_type), now)
                return _reply(reply)
            except ProtocolError as exc:
                return PlainTextResponse(str(exc), status_code=400)
            except VoicecallError as exc:
                log.warning("webhook.failed", extra={"why": str(exc)})
                return PlainTextResponse("Webhook processing failed", status_code=500)
        finally:
            in_flight.release(ip)

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "runtime": runtime.manager is not None})

    routes: list[BaseRoute] = [Route(path, webhook, methods=["POST"]),
                               Route("/healthz", health)]
    if path != "/":
        routes.append(Route(path + "/", webhook, methods=["POST"]))
    media = media_route(runtime)
    if media is not None:
        routes.append(media)
    realtime = realtime_route(runtime)
    if realtime is not None:
        routes.append(realtime)
    return Starlette(routes=routes)


def control_app(ctx: RpcContext, token: str) -> Starlette:
    """JSON-RPC 2.0 on ``POST /rpc`` behind a bearer token."""
    expected = f"Bearer {token}".encode()

    async def rpc(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return JSONResponse({"error": "unauthorized"}, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer realm="voicecall"'})
        try:
            body = await read_capped(request.stream(),
                                     declared_length=request.headers.get("content-length"),
                                     max_bytes=MAX_RPC_BODY, timeout_s=30.0)
        except BodyTooLarge:
            return PlainTextResponse("Payload too large", status_code=413)
        except BodyTimeout:
            return PlainTextResponse("Request timeout", status_code=408)
        reply = await dispatch(ctx, body)
        if reply is None:
            return Response(status_code=204)
        return JSONResponse(reply)

    return Starlette(routes=[Route("/rpc", rpc, methods=["POST"])])
