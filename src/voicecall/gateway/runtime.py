"""Wiring: config -> carrier, store, responder -> a started ``CallManager``.

When the config is disabled or incomplete the runtime is skipped (``manager``
is None) and ``setup_error`` says exactly what is missing, so the control API
and the CLI can still answer with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from voicecall.agent import make_responder
from voicecall.agent.base import Responder
from voicecall.carriers import mock
from voicecall.carriers.base import Carrier
from voicecall.config import (
    LoadedConfig,
    VoiceCallConfig,
    missing_credentials,
    validate_setup,
)
from voicecall.errors import ConfigError, SetupIncompleteError
from voicecall.gateway.manager import CallManager
from voicecall.store import CallStore, SqliteCallStore

log = logging.getLogger("voicecall.runtime")


@dataclass
class Runtime:
    loaded: LoadedConfig
    home: Path
    store: CallStore
    manager: CallManager | None
    setup_error: ConfigError | None

    @property
    def config(self) -> VoiceCallConfig:
        return self.loaded.config


def store_dir(cfg: VoiceCallConfig, home: Path) -> Path:
    return Path(cfg.store).expanduser() if cfg.store else home


def setup_error_for(cfg: VoiceCallConfig) -> ConfigError | None:
    if not cfg.enabled:
        return ConfigError("voice-call is disabled (set enabled: true)", path="enabled")
    missing = missing_credentials(cfg)
    if missing:
        return SetupIncompleteError(missing)
    problems = validate_setup(cfg)
    if problems:
        return ConfigError("; ".join(problems))
    return None


def build_carrier(cfg: VoiceCallConfig) -> Carrier:
    if cfg.provider == "mock":
        m = cfg.mock
        return mock.Carrier(
            mock.MockTimings(ring_delay_ms=m.ring_delay_ms, answer_delay_ms=m.answer_delay_ms,
                             reply_delay_ms=m.reply_delay_ms),
            m.callee_replies, hangup_after_replies=m.hangup_after_replies, answer=m.answer)
    raise ConfigError(f"carrier {cfg.provider!r} is not available in this build",
                      path="provider", allowed=["mock"])


def build_responder(cfg: VoiceCallConfig) -> Responder:
    r = cfg.responder
    return make_responder(r.kind, base_url=r.base_url,
                          api_key=r.api_key.reveal() if r.api_key else None,
                          model=cfg.response_model, script=r.script)


async def open_runtime(loaded: LoadedConfig, home: Path, *, carrier: Carrier | None = None,
                       responder: Responder | None = None) -> Runtime:
    """Open the store and start the manager, unless setup is incomplete."""
    cfg = loaded.config
    store = SqliteCallStore(store_dir(cfg, home))
    for warning in loaded.warnings:
        log.warning("config.warning", extra={"why": warning})
    error = setup_error_for(cfg)
    if error is None and carrier is None:
        try:
            carrier = build_carrier(cfg)
        except ConfigError as exc:
            error = exc
    if error is not None or carrier is None:
        log.warning("Runtime not started; %s", error)
        return Runtime(loaded, home, store, None, error)
    try:
        manager = CallManager(cfg, carrier, store, responder or build_responder(cfg))
        await manager.start()
    except BaseException:
        store.close()
        raise
    return Runtime(loaded, home, store, manager, None)


async def close_runtime(rt: Runtime, *, handover: bool | None = None) -> None:
    if rt.manager is not None:
        await rt.manager.aclose(handover=handover)
    rt.store.close()
