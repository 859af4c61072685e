"""Nested sections of the plugin config (everything below the top level).

Keys and defaults follow the seed document; where the seed and the reference
inventory differ, the seed wins. ``control``, ``responder``, ``mock`` and
``log`` are voicecall extensions (the seed's plugin ran inside a gateway that
owned those concerns).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator

from .fields import (
    E164,
    HttpUrl,
    IpOrCidr,
    NonEmptyStr,
    NonNegativeInt,
    Port,
    PositiveInt,
    ProviderConfigs,
    StrictModel,
    UserPath,
)
from .secret import Secret

DEFAULT_REALTIME_INSTRUCTIONS = (
    "You are OpenClaw's phone-call realtime voice interface. Keep spoken replies brief and "
    "natural. When a question needs deeper reasoning, current information, or tools, call "
    "openclaw_agent_consult before answering."
)
DEFAULT_TTS_TIMEOUT_MS = 8000


# --- carriers ---------------------------------------------------------------

class TwilioConfig(StrictModel):
    account_sid: NonEmptyStr | None = None
    auth_token: Secret | None = None
    region: Literal["us1", "ie1", "au1"] = "us1"
    # voicecall extension: REST base URL override (a regional edge, a proxy, or the
    # test fake); default is the region's api host.
    api_base_url: HttpUrl | None = None


class TelnyxConfig(StrictModel):
    api_key: Secret | None = None
    connection_id: NonEmptyStr | None = None
    # Ed25519 webhook key: public by nature, so a plain string.
    public_key: NonEmptyStr | None = None
    api_base_url: HttpUrl | None = None  # voicecall extension: REST base (proxy / test fake)


class PlivoConfig(StrictModel):
    auth_id: NonEmptyStr | None = None
    auth_token: Secret | None = None
    api_base_url: HttpUrl | None = None  # voicecall extension: REST base (proxy / test fake)


# --- TTS (same shape as the core ``messages.tts``) --------------------------

class TtsModelOverrides(StrictModel):
    enabled: bool | None = None
    allow_text: bool | None = None
    allow_provider: bool | None = None
    allow_voice: bool | None = None
    allow_model_id: bool | None = None
    allow_voice_settings: bool | None = None
    allow_normalization: bool | None = None
    allow_seed: bool | None = None


class TtsConfig(StrictModel):
    """Deep-merged over the core TTS config; legacy ``tts.<provider>`` keys are
    rejected here and rewritten by ``voicecall doctor --fix``."""

    auto: Literal["off", "always", "inbound", "tagged"] | None = None
    enabled: bool | None = None
    mode: Literal["final", "all"] | None = None
    provider: NonEmptyStr | None = None
    persona: str | None = None
    personas: ProviderConfigs = Field(default_factory=dict)
    summary_model: str | None = None
    model_overrides: TtsModelOverrides | None = None
    providers: ProviderConfigs = Field(default_factory=dict)
    prefs_path: str | None = None
    max_text_length: PositiveInt | None = None
    timeout_ms: int = Field(default=DEFAULT_TTS_TIMEOUT_MS, ge=1000, le=120000)


class NumberRoute(StrictModel):
    """Per-dialled-number overrides for inbound calls (exactly these keys)."""

    inbound_greeting: str | None = None
    tts: TtsConfig | None = None
    agent_id: NonEmptyStr | None = None
    response_model: str | None = None
    response_system_prompt: str | None = None
    response_timeout_ms: PositiveInt | None = None


# --- listeners and exposure -------------------------------------------------

class OutboundConfig(StrictModel):
    default_mode: Literal["notify", "conversation"] = "notify"
    notify_hangup_delay_sec: NonNegativeInt = 3


class ServeConfig(StrictModel):
    port: Port = 3334
    bind: NonEmptyStr = "127.0.0.1"
    path: NonEmptyStr = "/voice/webhook"


class TailscaleConfig(StrictModel):
    """Deprecated in favour of ``tunnel``; still honoured."""

    mode: Literal["off", "serve", "funnel"] = "off"
    path: NonEmptyStr = "/voice/webhook"
    port: Port = 443


class TunnelConfig(StrictModel):
    provider: Literal["none", "ngrok", "tailscale-serve", "tailscale-funnel"] = "none"
    ngrok_auth_token: Secret | None = None
    ngrok_domain: NonEmptyStr | None = None
    allow_ngrok_free_tier_loopback_bypass: bool = False


class WebhookSecurityConfig(StrictModel):
    allowed_hosts: list[NonEmptyStr] = Field(default_factory=list)
    trust_forwarding_headers: bool = False
    trusted_proxy_ips: list[IpOrCidr] = Field(default_factory=list, alias="trustedProxyIPs")


class ControlConfig(StrictModel):
    """voicecall extension: the private JSON-RPC listener."""

    bind: NonEmptyStr = "127.0.0.1"
    port: Port = 3335


# --- audio modes --------------------------------------------------------------

class StreamingConfig(StrictModel):
    enabled: bool = False
    provider: NonEmptyStr | None = None
    stream_path: NonEmptyStr = "/voice/stream"
    providers: ProviderConfigs = Field(default_factory=dict)
    pre_start_timeout_ms: PositiveInt = 5000
    max_pending_connections: PositiveInt = 32
    max_pending_connections_per_ip: PositiveInt = 4
    max_connections: PositiveInt = 128


FastContextSource = Literal["memory", "sessions"]
DEFAULT_FAST_CONTEXT_SOURCES: tuple[FastContextSource, ...] = ("memory", "sessions")


class FastContextConfig(StrictModel):
    enabled: bool = False
    timeout_ms: PositiveInt = 800
    max_results: PositiveInt = 3
    sources: list[FastContextSource] = Field(
        default_factory=lambda: list(DEFAULT_FAST_CONTEXT_SOURCES), min_length=1
    )
    fallback_to_consult: bool = False


class AgentContextConfig(StrictModel):
    enabled: bool = False
    max_chars: PositiveInt = 6000
    include_identity: bool = True
    include_system_prompt: bool = True
    include_workspace_files: bool = True
    files: list[NonEmptyStr] = Field(
        default_factory=lambda: ["SOUL.md", "IDENTITY.md", "USER.md"]
    )


class BargeInConfig(StrictModel):
    """voicecall extension: the local barge-in detector for realtime calls.

    While the model is heard, caller audio is checked here before the provider's
    VAD, so the carrier buffer is cleared within ``minSpeechMs`` of the caller
    talking over it. A frame counts only if WebRTC VAD (``aggressiveness``) calls
    it speech, it is not flat-spectrum noise, and it is at least ``minRms`` loud
    (line echo of the model's own voice comes back attenuated; OpenClaw's fixed
    0.035 / 40 ms fired on echo and noise, openclaw#91052).
    """

    enabled: bool = True
    min_speech_ms: Annotated[int, Field(ge=20, le=1000)] = 80
    min_rms: Annotated[float, Field(ge=0.0, le=1.0)] = 0.02
    aggressiveness: Annotated[int, Field(ge=0, le=3)] = 3


ThinkingLevel = Literal[
    "off", "minimal", "low", "medium", "high", "xhigh", "adaptive", "max", "ultra"
]


class RealtimeConfig(StrictModel):
    enabled: bool = False
    provider: NonEmptyStr | None = None
    # None = derived from serve.path; see VoiceCallConfig.effective_realtime_stream_path.
    stream_path: NonEmptyStr | None = None
    idle_hangup_ms: PositiveInt | None = None
    instructions: str = DEFAULT_REALTIME_INSTRUCTIONS
    tool_policy: Literal["safe-read-only", "owner", "none"] = "safe-read-only"
    consult_policy: Literal["auto", "substantive", "always"] = "auto"
    consult_thinking_level: ThinkingLevel | None = None
    consult_fast_mode: bool | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    fast_context: FastContextConfig = Field(default_factory=FastContextConfig)
    agent_context: AgentContextConfig = Field(default_factory=AgentContextConfig)
    barge_in: BargeInConfig = Field(default_factory=BargeInConfig)
    providers: ProviderConfigs = Field(default_factory=dict)

    @field_validator("tools")
    @classmethod
    def _function_tools(cls, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Shape of a realtime function tool; providers reject anything else late
        # and obscurely, so catch it at load time.
        for i, tool in enumerate(tools):
            params = tool.get("parameters")
            if (
                tool.get("type") != "function"
                or not isinstance(tool.get("name"), str)
                or not tool["name"]
                or not isinstance(params, dict)
                or params.get("type") != "object"
            ):
                raise ValueError(
                    f"tool {i} must look like {{type: \"function\", name, description, "
                    f"parameters: {{type: \"object\", properties}}}}"
                )
        return tools


# --- voicecall extensions -------------------------------------------------------

class ResponderConfig(StrictModel):
    """voicecall extension: the agent backend used for auto-responses."""

    # "openai" speaks to any OpenAI-compatible server; the local kinds only change the
    # default base URL (ollama :11434, vllm :8000, llamacpp :8080).
    kind: Literal["scripted", "openai", "ollama", "vllm", "llamacpp"] = "scripted"
    base_url: HttpUrl | None = None  # None: the kind's usual address
    api_key: Secret | None = None
    script: UserPath | None = None  # JSON5 rules file for the scripted responder


IdentityText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]


class AgentIdentity(StrictModel):
    """How an agent presents itself (OpenClaw's agent identity fields)."""

    name: IdentityText | None = None
    emoji: IdentityText | None = None
    vibe: IdentityText | None = None
    theme: IdentityText | None = None
    creature: IdentityText | None = None


class AgentProfile(StrictModel):
    """voicecall extension: what the gateway knows of an agent id (``agents.<id>``).

    ``identity`` unset: read from the workspace's ``IDENTITY.md``; ``workspace``
    unset: ``<home>/workspace``.
    """

    identity: AgentIdentity | None = None
    workspace: UserPath | None = None


class MockConfig(StrictModel):
    """voicecall extension: how the offline ``mock`` carrier's callee behaves."""

    ring_delay_ms: NonNegativeInt = 200
    answer_delay_ms: NonNegativeInt = 300
    reply_delay_ms: NonNegativeInt = 300
    callee_replies: list[str] = Field(
        default_factory=lambda: [
            "Hi, yes, this is a good time.",
            "Could you tell me the opening hours?",
            "Great, thank you. Goodbye.",
        ]
    )
    hangup_after_replies: bool = True
    answer: Literal["answer", "busy", "no-answer", "voicemail"] = "answer"


class LogConfig(StrictModel):
    """voicecall extension: phone numbers/transcripts/DTMF are logged only with include_pii."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    include_pii: bool = False


__all__ = [
    "DEFAULT_REALTIME_INSTRUCTIONS",
    "DEFAULT_TTS_TIMEOUT_MS",
    "E164",
    "AgentContextConfig",
    "AgentIdentity",
    "AgentProfile",
    "BargeInConfig",
    "ControlConfig",
    "FastContextConfig",
    "LogConfig",
    "MockConfig",
    "NumberRoute",
    "OutboundConfig",
    "PlivoConfig",
    "RealtimeConfig",
    "ResponderConfig",
    "ServeConfig",
    "StreamingConfig",
    "TailscaleConfig",
    "TelnyxConfig",
    "TtsConfig",
    "TtsModelOverrides",
    "TunnelConfig",
    "TwilioConfig",
    "WebhookSecurityConfig",
]
