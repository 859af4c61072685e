"""The two ASGI apps: the public webhook listener and the private control listener."""

from __future__ import annotations

import hmac
import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from voicecall.carriers import mock
from voicecall.errors import ProtocolError, VoicecallError
from voicecall.gateway.limits import BodyTimeout, BodyTooLarge, InFlight, read_capped
from voicecall.gateway.rpc import RpcContext, dispatch
from voicecall.gateway.runtime import Runtime

log = logging.getLogger("voicecall.gateway")
MAX_RPC_BODY = 1024 * 1024


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def webhook_app(runtime: Runtime) -> Starlette:
    """Carrier webhooks on ``serve.path`` (exact match; trailing slash tolerated)."""
    cfg = runtime.config
    path = cfg.webhook_path  # normalised: leading slash, no trailing slash
    in_flight = InFlight()

    async def webhook(request: Request) -> Response:
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
            manager = runtime.manager
            if manager is None:
                return PlainTextResponse("Voice call runtime not started", status_code=503)
            if manager.carrier.name != "mock":
                return PlainTextResponse("Unsupported carrier", status_code=501)
            try:
                events = mock.parse_webhook(body)
            except ProtocolError as exc:
                return PlainTextResponse(str(exc), status_code=400)
            try:
                for event in events:
                    await manager.handle_event(event)
            except VoicecallError as exc:
                log.warning("webhook.failed", extra={"why": str(exc)})
                return PlainTextResponse("Webhook processing failed", status_code=500)
            return JSONResponse({"ok": True, "events": len(events)})
        finally:
            in_flight.release(ip)

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "runtime": runtime.manager is not None})

    routes = [Route(path, webhook, methods=["POST"]), Route("/healthz", health)]
    if path != "/":
        routes.append(Route(path + "/", webhook, methods=["POST"]))
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
