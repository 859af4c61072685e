"""Cross-field setup rules (the reference's ``validateProviderConfig``).

These are not schema errors: a config that fails them still loads, the
gateway logs a setup-incomplete warning and skips starting the runtime, and
commands/RPC report the exact missing keys. Messages use the JSON key paths;
pass ``prefix="plugins.entries.voice-call.config"`` to get the whole-file form.
"""

from __future__ import annotations

from pydantic.alias_generators import to_snake

from voicecall.errors import SetupIncompleteError

from .model import VoiceCallConfig

# (section, key, env var) of each credential the carrier needs.
_CREDENTIALS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "telnyx": (
        ("telnyx", "apiKey", "TELNYX_API_KEY"),
        ("telnyx", "connectionId", "TELNYX_CONNECTION_ID"),
        ("telnyx", "publicKey", "TELNYX_PUBLIC_KEY"),
    ),
    "twilio": (
        ("twilio", "accountSid", "TWILIO_ACCOUNT_SID"),
        ("twilio", "authToken", "TWILIO_AUTH_TOKEN"),
    ),
    "plivo": (
        ("plivo", "authId", "PLIVO_AUTH_ID"),
        ("plivo", "authToken", "PLIVO_AUTH_TOKEN"),
    ),
}


def _p(prefix: str) -> str:
    return f"{prefix.rstrip('.')}." if prefix else ""


def missing_credentials(cfg: VoiceCallConfig, prefix: str = "") -> list[str]:
    """The missing provider/fromNumber/credential settings ([] when disabled)."""
    if not cfg.enabled:
        return []
    p = _p(prefix)
    missing: list[str] = []
    if cfg.provider is None:
        missing.append(f"{p}provider is required")
    if not cfg.from_number and cfg.provider != "mock":
        hint = " (or set TWILIO_FROM_NUMBER env)" if cfg.provider == "twilio" else ""
        missing.append(f"{p}fromNumber is required{hint}")
    for section, key, env in _CREDENTIALS.get(cfg.provider or "", ()):
        if section == "telnyx" and key == "publicKey" and cfg.skip_signature_verification:
            continue
        if not getattr(getattr(cfg, section), to_snake(key)):
            missing.append(f"{p}{section}.{key} is required (or set {env} env)")
    return missing


def validate_setup(cfg: VoiceCallConfig, prefix: str = "") -> list[str]:
    """Every setup problem: missing credentials plus the audio-mode rules."""
    if not cfg.enabled:
        return []
    p = _p(prefix)
    problems = missing_credentials(cfg, prefix)
    realtime, streaming = cfg.realtime.enabled, cfg.streaming.enabled
    if realtime and cfg.inbound_policy == "disabled":
        problems.append(f'{p}inboundPolicy must not be "disabled" when realtime.enabled is true')
    if realtime and streaming:
        problems.append(f"{p}realtime.enabled and {p}streaming.enabled cannot both be true")
    if streaming and cfg.provider and cfg.provider not in ("twilio", "telnyx", "plivo"):
        problems.append(f'{p}provider must be "twilio", "telnyx" or "plivo" when '
                        f'streaming.enabled is true')
    if realtime and cfg.provider and cfg.provider not in ("twilio", "telnyx", "mock"):
        problems.append(
            f'{p}provider must be "twilio", "telnyx", or "mock" when realtime.enabled is true'
        )
    return problems


def require_setup(cfg: VoiceCallConfig, prefix: str = "") -> None:
    """Raise ``SetupIncompleteError`` listing every problem, if there is any."""
    problems = validate_setup(cfg, prefix)
    if problems:
        raise SetupIncompleteError(problems)
