"""``voicecall serve``: both listeners in one process, with graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from voicecall.config import LoadedConfig
from voicecall.errors import ConfigError
from voicecall.gateway.app import control_app, webhook_app
from voicecall.gateway.rpc import RpcContext
from voicecall.gateway.runtime import Runtime, close_runtime, open_runtime
from voicecall.gateway.token import ensure_token

log = logging.getLogger("voicecall.server")
GATEWAY_FILE = "gateway.json"


class _Server(uvicorn.Server):
    # We own signal handling: shutdown order matters (webhooks first, then calls).
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets that
    # say they are TCP. Without it, Nagle + delayed ACK add ~40 ms to every response
    # on a kept-alive connection (headers and body go out as two writes).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = " (likely a running gateway)" if exc.errno == 98 else ""
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Gateway:
    runtime: Runtime
    webhook_url: str
    control_url: str
    stop: asyncio.Event


def gateway_file(home: Path) -> Path:
    return home / GATEWAY_FILE


def _write_gateway_file(home: Path, webhook_url: str, control_url: str) -> None:
    path = gateway_file(home)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"pid": os.getpid(), "webhookUrl": webhook_url,
                   "controlUrl": control_url}, fh)
    os.replace(tmp, path)


def _uvicorn(app: Starlette) -> _Server:
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=5, ws="websockets-sansio")
    return _Server(config)


async def run_gateway(loaded: LoadedConfig, home: Path, *, stop: asyncio.Event | None = None,
                      ready: asyncio.Future[Gateway] | None = None,
                      install_signals: bool = True) -> None:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM), then shut down in order."""
    try:
        await _serve(loaded, home, stop or asyncio.Event(), ready, install_signals)
    except Exception as exc:
        # Whoever waits for ``ready`` hears about a failed start at once.
        if ready is not None and not ready.done():
            ready.set_exception(exc)
        raise


async def _serve(loaded: LoadedConfig, home: Path, stop: asyncio.Event,
                 ready: asyncio.Future[Gateway] | None, install_signals: bool) -> None:
    cfg = loaded.config
    if not _is_loopback(cfg.control.bind):
        log.warning("SECURITY WARNING: control listener bound to non-loopback %s",
                    cfg.control.bind)
    if cfg.skip_signature_verification:
        log.warning("SECURITY WARNING: skipSignatureVerification is on: carrier webhooks are "
                    "NOT authenticated. Use it for local testing only.")
    token = ensure_token(home)
    webhook_sock = _bind(cfg.serve.bind, cfg.serve.port)
    try:
        control_sock = _bind(cfg.control.bind, cfg.control.port)
    except ConfigError:
        webhook_sock.close()
        raise
    try:
        runtime = await open_runtime(loaded, home)
    except BaseException:
        webhook_sock.close()
        control_sock.close()
        raise
    ctx = RpcContext(runtime.manager, runtime.setup_error)
    hook = _uvicorn(webhook_app(runtime))
    ctrl = _uvicorn(control_app(ctx, token))
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    hook_task = loop.create_task(hook.serve(sockets=[webhook_sock]))
    ctrl_task = loop.create_task(ctrl.serve(sockets=[control_sock]))
    try:
        while not (hook.started and ctrl.started):
            if hook_task.done() or ctrl_task.done():
                raise ConfigError("gateway listeners failed to start")
            await asyncio.sleep(0.01)
        whost, wport = webhook_sock.getsockname()[:2]
        chost, cport = control_sock.getsockname()[:2]
        webhook_url = f"http://{_fmt(whost)}:{wport}{cfg.webhook_path}"
        control_url = f"http://{_fmt(chost)}:{cport}/rpc"
        _write_gateway_file(home, webhook_url, control_url)
        log.info("gateway.listening", extra={"webhook": webhook_url, "control": control_url})
        if ready is not None and not ready.done():
            ready.set_result(Gateway(runtime, webhook_url, control_url, stop))
        await stop.wait()
    finally:
        # Order: stop taking carrier events, settle calls, then close the control API.
        hook.should_exit = True
        await asyncio.gather(hook_task, return_exceptions=True)
        try:
            await close_runtime(runtime)
        finally:
            ctrl.should_exit = True
            await asyncio.gather(ctrl_task, return_exceptions=True)
            if install_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(gateway_file(home).read_text())
                if info.get("pid") == os.getpid():
                    gateway_file(home).unlink()


def _fmt(host: str) -> str:
    return f"[{host}]" if ":" in host else host
