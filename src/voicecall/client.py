"""A JSON-RPC client for the control listener, used by the CLI, the agent tool and the demo."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import httpx

from voicecall.config import VoiceCallConfig
from voicecall.errors import GatewayUnavailableError, RpcError
from voicecall.gateway.server import gateway_file
from voicecall.gateway.token import TOKEN_FILE, read_token

DEFAULT_TIMEOUT_S = 5.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def control_url(cfg: VoiceCallConfig, home: Path) -> str:
    """The running gateway's control URL: its own record first, else the configured one."""
    try:
        info = json.loads(gateway_file(home).read_text())
        if isinstance(info, dict) and int(info["pid"]) > 0 and _pid_alive(int(info["pid"])):
            return str(info["controlUrl"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    host = cfg.control.bind
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{cfg.control.port}/rpc"


class GatewayClient:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.token = token
        self._ids = itertools.count(1)

    @classmethod
    def discover(cls, cfg: VoiceCallConfig, home: Path) -> GatewayClient:
        return cls(control_url(cfg, home), read_token(home))

    async def call(self, method: str, params: dict[str, Any] | None = None,
                   timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
        if self.token is None:
            raise GatewayUnavailableError("no control token (has the gateway ever started?)")
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                "params": params or {}}
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as http:
                resp = await http.post(self.url, json=body, headers=headers)
        except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
            # Nothing listening (or it closed without answering): the caller may fall back.
            raise GatewayUnavailableError(f"gateway not reachable at {self.url}: {exc}") from None
        except httpx.TimeoutException:
            raise RpcError(RpcError.UNAVAILABLE, f"gateway timed out after {timeout_s}s") from None
        except httpx.HTTPError as exc:
            # The request may have reached the gateway: never a fallback (no double calls).
            raise RpcError(RpcError.UNAVAILABLE,
                           f"gateway request failed: {type(exc).__name__}: {exc}") from None
        if resp.status_code == 401:
            raise RpcError(RpcError.UNAUTHORIZED,
                           f"gateway at {self.url} rejected the control token (HTTP 401); "
                           f"check {TOKEN_FILE} in the state directory")
        if resp.status_code != 200:
            raise RpcError(RpcError.INTERNAL_ERROR, f"gateway answered HTTP {resp.status_code}")
        try:
            doc = resp.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise RpcError(RpcError.INTERNAL_ERROR,
                           f"{self.url} did not answer with a JSON-RPC object")
        err = doc.get("error")
        if err is not None:
            if not isinstance(err, dict):
                raise RpcError(RpcError.INTERNAL_ERROR, f"gateway error: {err}")
            code = err.get("code")
            raise RpcError(code if isinstance(code, int) else RpcError.INTERNAL_ERROR,
                           str(err.get("message")), err.get("data"))
        return doc.get("result")
