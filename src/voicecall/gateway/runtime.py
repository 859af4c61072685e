"""Wiring: config -> carrier, store, responder -> a started ``CallManager``.

When the config is disabled or incomplete the runtime is skipped (``manager``
is None) and ``setup_error`` says exactly what is missing, so the control API
and the CLI can still answer with it.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from voicecall.agent import make_responder
from voicecall.agent.base import Responder
from voicecall.carriers import mock
from voicecall.carriers.base import Carrier
from voicecall.carriers.plivo import carrier as plivo_carrier
from voicecall.carriers.twilio.carrier import Carrier as TwilioCarrier
from voicecall.carriers.twilio.rest import TwilioRest
from voicecall.config import (
    LoadedConfig,
    VoiceCallConfig,
    effective_tts,
    missing_credentials,
    validate_setup,
    webhook_exposure,
)
from voicecall.errors import ConfigError, SetupIncompleteError
from voicecall.gateway.manager import CallManager
from voicecall.gateway.realtime.fast import FastContext
from voicecall.speech.builtin import register_builtins
from voicecall.speech.realtime.base import RealtimeProvider
from voicecall.speech.registry import resolve_stt, resolve_tts, tts_names
from voicecall.speech.stt.base import STT
from voicecall.speech.tts import build_tts
from voicecall.speech.tts.base import TTS
from voicecall.speech.tts.routed import RoutedTTS
from voicecall.store import CallStore, SqliteCallStore

log = logging.getLogger("voicecall.runtime")
STREAM_KEY_FILE = "stream.key"


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
    if cfg.provider != "mock":
        ok, why = webhook_exposure(cfg)
        if not ok:
            # A carrier cannot call back a local-only URL: refuse to start rather than
            # place calls whose webhooks never arrive.
            return ConfigError(f"{cfg.provider} requires a publicly reachable webhook URL: "
                               f"{why}", path="publicUrl")
        if not cfg.public_url:
            return ConfigError("set publicUrl to the public webhook URL (tunnel and tailscale "
                               "exposure are checked by setup but not started by this build)",
                               path="publicUrl")
    return None


def stream_secret(home: Path) -> bytes:
    """Per-install key for stream tokens (0600), so they survive restarts."""
    path = home / STREAM_KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex())
    return key


def build_carrier(loaded: LoadedConfig, home: Path) -> Carrier:
    cfg = loaded.config
    if cfg.provider == "mock":
        m = cfg.mock
        return mock.Carrier(
            mock.MockTimings(ring_delay_ms=m.ring_delay_ms, answer_delay_ms=m.answer_delay_ms,
                             reply_delay_ms=m.reply_delay_ms),
            m.callee_replies, hangup_after_replies=m.hangup_after_replies, answer=m.answer)
    if cfg.provider not in ("twilio", "telnyx", "plivo"):
        raise ConfigError(f"carrier {cfg.provider!r} is not available in this build",
                          path="provider", allowed=["mock", "twilio", "telnyx"])
    # What every real carrier's media streams need.
    stt, tts = _speech(loaded)
    secret = stream_secret(home)
    if cfg.provider == "plivo":
        return plivo_carrier.build(loaded, home, stream_secret=secret, stt=stt, tts=tts)
    realtime, workspace = resolve_realtime(cfg), home / "workspace"
    if cfg.provider == "telnyx":
        # Imported here: the Telnyx carrier needs PyNaCl (the ``telnyx`` extra).
        from voicecall.carriers.telnyx import carrier as telnyx_carrier

        return telnyx_carrier.build(loaded, home, stream_secret=secret, stt=stt, tts=tts,
                                    realtime=realtime, workspace_dir=workspace)
    return _build_twilio(cfg, stream_secret=secret, stt=stt, tts=tts, realtime=realtime,
                         workspace_dir=workspace)


def _speech(loaded: LoadedConfig) -> tuple[STT | None, TTS | None]:
    """STT and TTS for media streams; ``None`` (with a warning) when unavailable.

    An unknown or broken STT provider skips media instead of failing the gateway.
    TTS comes from the core ``messages.tts`` deep-merged with the plugin's ``tts`` and,
    per call, the dialled number's ``numbers.<E.164>.tts`` (``RoutedTTS``).
    """
    cfg = loaded.config
    if not cfg.streaming.enabled:
        return None, None
    register_builtins()
    try:
        stt = resolve_stt(cfg.streaming.provider, cfg.streaming.providers)
    except ConfigError as exc:
        log.warning("streaming STT unavailable, media will be skipped: %s", exc)
        stt = None
    if cfg.tts.provider in tts_names():
        return stt, resolve_tts(cfg.tts.provider, cfg.tts.providers)
    routed = RoutedTTS(build_tts, lambda key: effective_tts(cfg, key, loaded.core_tts))
    return stt, (routed if routed.for_route(None) is not None else None)


def _tts_voice(cfg: VoiceCallConfig) -> str | None:
    provider = cfg.tts.providers.get(cfg.tts.provider or "", {})
    for key in ("speakerVoice", "speakerVoiceId", "voice", "voiceId"):
        value = provider.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _build_twilio(cfg: VoiceCallConfig, *, stream_secret: bytes, stt: STT | None,
                  tts: TTS | None, realtime: RealtimeProvider | None,
                  workspace_dir: Path) -> Carrier:
    tw = cfg.twilio
    assert tw.account_sid and tw.auth_token and cfg.public_url  # checked by setup_error_for
    token = tw.auth_token.reveal()
    rest = TwilioRest(tw.account_sid, token, base_url=tw.api_base_url, region=tw.region)
    return TwilioCarrier(cfg, rest, auth_token=token, public_url=cfg.public_url,
                          stream_secret=stream_secret, stt=stt, tts=tts,
                          voice=_tts_voice(cfg), realtime=realtime, workspace_dir=workspace_dir)


def resolve_realtime(cfg: VoiceCallConfig) -> RealtimeProvider | None:
    """The realtime voice provider, or None (with a warning) when unavailable.

    ``realtime.provider`` names one of the registered providers; unset, the first
    registered one whose config is complete is used. An unknown or unusable
    provider skips realtime media instead of failing the gateway.
    """
    if not cfg.realtime.enabled:
        return None
    from voicecall.speech.realtime.builtin import builtin_factories

    factories = builtin_factories()
    wanted = cfg.realtime.provider
    if wanted is not None and wanted not in factories:
        log.warning("realtime voice provider %r is not registered (registered: %s); "
                    "realtime media will be skipped", wanted, ", ".join(factories))
        return None
    names = [wanted] if wanted is not None else list(factories)
    problems: list[str] = []
    for name in names:
        try:
            return factories[name](cfg.realtime.providers.get(name) or {})
        except (ConfigError, ValueError) as exc:
            problems.append(f"{name}: {exc}")
    log.warning("no realtime voice provider is available, realtime media will be skipped: %s",
                "; ".join(problems) or "none registered")
    return None


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
            carrier = build_carrier(loaded, home)
        except ConfigError as exc:
            error = exc
    if error is not None or carrier is None:
        log.warning("Runtime not started; %s", error)
        return Runtime(loaded, home, store, None, error)
    try:
        manager = CallManager(cfg, carrier, store, responder or build_responder(cfg))
        manager.fast_context = _fast_context(cfg, store, home)
        await manager.start()
    except BaseException:
        store.close()
        raise
    return Runtime(loaded, home, store, manager, None)


def _fast_context(cfg: VoiceCallConfig, store: CallStore, home: Path) -> FastContext | None:
    """The fastContext index, its encoder loading in the background from now on."""
    if not (cfg.realtime.enabled and cfg.realtime.fast_context.enabled):
        return None
    index = FastContext(cfg, store, home)
    # A daemon thread: loading the model (~0.3 s) and embedding the memory files
    # must neither delay the gateway's start nor hold up its shutdown.
    threading.Thread(target=index.warm, args=(cfg.agent_id or "main",),
                     name="fast-context-warm", daemon=True).start()
    return index


async def close_runtime(rt: Runtime, *, handover: bool | None = None) -> None:
    if rt.manager is not None:
        await rt.manager.aclose(handover=handover)
        if rt.manager.fast_context is not None:
            rt.manager.fast_context.close()
    rt.store.close()
