"""``VoiceCallConfig``: the one frozen model of the voice-call plugin config."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from .fields import CROSS_FIELD, E164, HttpUrl, NonEmptyStr, PositiveInt, StrictModel, UserPath
from .fields import NonNegativeInt as NonNegInt
from .sections import (
    AgentProfile,
    ControlConfig,
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

Provider = Literal["twilio", "telnyx", "plivo", "mock"]
CARRIERS: tuple[Provider, ...] = ("twilio", "telnyx", "plivo", "mock")
TAILSCALE_FUNNEL_PORTS = (443, 8443, 10000)
# The mock carrier needs no real caller id; the reference uses this one.
MOCK_FROM_NUMBER = "+15550000000"


class VoiceCallConfig(StrictModel):
    """Plugin config (``plugins.entries.voice-call.config``), validated.

    Python attributes are the snake_case of the JSON keys; both spellings are
    accepted on input. ``enabled`` defaults to True here because the loader
    decides it from the file shape (see ``sources.load_config``).
    """

    enabled: bool = True
    provider: Provider | None = None
    from_number: E164 | None = None
    to_number: E164 | None = None
    inbound_policy: Literal["disabled", "allowlist", "pairing", "open"] = "disabled"
    allow_from: list[E164] = Field(default_factory=list)
    inbound_greeting: str | None = None
    numbers: dict[E164, NumberRoute] = Field(default_factory=dict)
    outbound: OutboundConfig = Field(default_factory=OutboundConfig)

    max_duration_seconds: PositiveInt = 300
    stale_call_reaper_seconds: NonNegInt = 0  # 0 = disabled (seed default)
    silence_timeout_ms: PositiveInt = 800
    transcript_timeout_ms: PositiveInt = 180000
    ring_timeout_ms: PositiveInt = 30000
    max_concurrent_calls: PositiveInt = 1

    serve: ServeConfig = Field(default_factory=ServeConfig)
    tailscale: TailscaleConfig = Field(default_factory=TailscaleConfig)
    tunnel: TunnelConfig = Field(default_factory=TunnelConfig)
    webhook_security: WebhookSecurityConfig = Field(default_factory=WebhookSecurityConfig)
    session_scope: Literal["per-phone", "per-call", "main"] = "per-phone"
    public_url: HttpUrl | None = None
    skip_signature_verification: bool = False

    tts: TtsConfig = Field(default_factory=TtsConfig)
    store: UserPath | None = None
    agent_id: NonEmptyStr | None = None
    response_model: str | None = None
    response_system_prompt: str | None = None
    response_timeout_ms: PositiveInt = 30000

    twilio: TwilioConfig = Field(default_factory=TwilioConfig)
    telnyx: TelnyxConfig = Field(default_factory=TelnyxConfig)
    plivo: PlivoConfig = Field(default_factory=PlivoConfig)
    streaming: StreamingConfig = Field(default_factory=StreamingConfig)
    realtime: RealtimeConfig = Field(default_factory=RealtimeConfig)

    agents: dict[NonEmptyStr, AgentProfile] = Field(default_factory=dict)
    control: ControlConfig = Field(default_factory=ControlConfig)
    responder: ResponderConfig = Field(default_factory=ResponderConfig)
    mock: MockConfig = Field(default_factory=MockConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @model_validator(mode="after")
    def _funnel_port(self) -> VoiceCallConfig:
        funnel = self.tailscale.mode == "funnel" or self.tunnel.provider == "tailscale-funnel"
        if funnel and self.tailscale.port not in TAILSCALE_FUNNEL_PORTS:
            raise PydanticCustomError(
                CROSS_FIELD,
                "Tailscale Funnel HTTPS port must be one of 443, 8443, 10000",
                {"field": "tailscale.port"},
            )
        return self

    @property
    def effective_realtime_stream_path(self) -> str:
        """``realtime.streamPath``, else serve.path with "/webhook" → "/stream/realtime"."""
        if self.realtime.stream_path:
            return normalize_path(self.realtime.stream_path)
        base = normalize_path(self.serve.path)
        if base.endswith("/webhook"):
            return base[: -len("/webhook")] + "/stream/realtime"
        if base == "/":
            return "/voice/stream/realtime"
        return base + "/stream/realtime"

    @property
    def effective_from_number(self) -> str | None:
        """Caller id to dial from; the mock carrier falls back to a fictional number."""
        if self.from_number:
            return self.from_number
        return MOCK_FROM_NUMBER if self.provider == "mock" else None

    @property
    def webhook_path(self) -> str:
        return normalize_path(self.serve.path)

    @property
    def local_webhook_url(self) -> str:
        """Where the webhook listener answers on this host (the serve fallback URL)."""
        host = self.serve.bind
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.serve.port}{self.webhook_path}"


def normalize_path(path: str) -> str:
    """Leading slash, no trailing slash (except the root): how routes are matched."""
    path = "/" + path.strip().strip("/")
    return path
