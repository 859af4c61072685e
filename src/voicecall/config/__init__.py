"""Configuration: sources (defaults < JSON5 file < env < SecretRefs), one frozen
pydantic model, setup rules, webhook exposure, number routing, and the legacy
key migration behind ``voicecall doctor --fix``.

Typical use::

    loaded = load_config(args.config)          # LoadedConfig
    cfg = loaded.config                        # VoiceCallConfig (frozen)
    problems = validate_setup(cfg)             # [] when ready to place calls
    ok, why = webhook_exposure(cfg)
"""

from .doctor import DoctorResult, doctor_fix
from .document import parse_json5, read_document
from .errors import ConfigValidationError
from .exposure import is_private_host, private_host_reason, webhook_exposure
from .migrate import detect_legacy_keys, migrate_legacy
from .model import MOCK_FROM_NUMBER, VoiceCallConfig
from .routing import (
    agent_workspace,
    deep_merge,
    digits_only,
    effective_config,
    effective_tts,
    merge_tts,
    normalize_e164,
    route_key_for,
)
from .secret import Secret
from .sections import (
    DEFAULT_REALTIME_INSTRUCTIONS,
    AgentContextConfig,
    AgentIdentity,
    AgentProfile,
    ControlConfig,
    FastContextConfig,
    LogConfig,
    MockConfig,
    NumberRoute,
    OutboundConfig,
    PlivoConfig,
    RealtimeConfig,
    ResponderConfig,
    ServeConfig,
    StreamingConfig,
    TailscaleConfig,
    TelnyxConfig,
    TtsConfig,
    TunnelConfig,
    TwilioConfig,
    WebhookSecurityConfig,
)
from .sources import (
    EMBEDDED_DEFAULTS,
    LoadedConfig,
    find_config_path,
    home_dir,
    load_config,
    load_config_data,
)
from .validate import missing_credentials, require_setup, validate_setup

__all__ = [
    "DEFAULT_REALTIME_INSTRUCTIONS",
    "EMBEDDED_DEFAULTS",
    "MOCK_FROM_NUMBER",
    "AgentContextConfig",
    "agent_workspace",
    "AgentIdentity",
    "AgentProfile",
    "ConfigValidationError",
    "ControlConfig",
    "DoctorResult",
    "FastContextConfig",
    "LoadedConfig",
    "LogConfig",
    "MockConfig",
    "NumberRoute",
    "OutboundConfig",
    "PlivoConfig",
    "RealtimeConfig",
    "ResponderConfig",
    "Secret",
    "ServeConfig",
    "StreamingConfig",
    "TailscaleConfig",
    "TelnyxConfig",
    "TtsConfig",
    "TunnelConfig",
    "TwilioConfig",
    "VoiceCallConfig",
    "WebhookSecurityConfig",
    "deep_merge",
    "detect_legacy_keys",
    "digits_only",
    "doctor_fix",
    "effective_config",
    "effective_tts",
    "find_config_path",
    "home_dir",
    "is_private_host",
    "load_config",
    "load_config_data",
    "merge_tts",
    "migrate_legacy",
    "missing_credentials",
    "normalize_e164",
    "parse_json5",
    "private_host_reason",
    "read_document",
    "require_setup",
    "route_key_for",
    "validate_setup",
    "webhook_exposure",
]
