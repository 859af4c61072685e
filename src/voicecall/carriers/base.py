"""What the runtime needs from a carrier's I/O shell.

Each carrier module (``mock``, ``twilio``, ...) exposes a ``Carrier`` class with
this shape. Parsing and signatures live beside it as pure functions; the class
only moves bytes and reports normalised ``CallEvent``s to its host (the call
manager).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from voicecall.calls.model import Call, CallEvent, Mode
from voicecall.gateway.security import reconstruct_public_url

if TYPE_CHECKING:
    from voicecall.config import VoiceCallConfig
    from voicecall.gateway.security import RequestView

RemoteStatus = Literal["active", "terminal", "not-found", "unknown"]


def with_query(url: str, **query: str) -> str:
    """``url`` with ``query`` added after the query it already has."""
    parts = urlsplit(url)
    merged = [*parse_qsl(parts.query, keep_blank_values=True), *query.items()]
    return urlunsplit(parts._replace(query=urlencode(merged)))


def signed_url(config: VoiceCallConfig, req: RequestView) -> str:
    """The public URL a carrier signed ``req`` for (``webhookSecurity``, ngrok bypass)."""
    bypass = config.tunnel.provider == "ngrok" \
        and config.tunnel.allow_ngrok_free_tier_loopback_bypass
    return reconstruct_public_url(req, public_url=config.public_url,
                                  security_cfg=config.webhook_security,
                                  ngrok_loopback_bypass=bypass)


@dataclass(frozen=True)
class DialRequest:
    call_id: str
    from_number: str
    to_number: str
    mode: Mode
    message: str | None
    dtmf_sequence: str | None = None
    ring_timeout_ms: int = 30000


@dataclass(frozen=True)
class SpeechTiming:
    """When speech got going, in ms after ``speak()`` was called (None: unknown)."""

    tts_first_byte_ms: float | None = None
    first_frame_ms: float | None = None


@dataclass(frozen=True)
class Verification:
    ok: bool
    reason: str = ""
    request_key: str | None = None   # identifies the request for replay protection


@dataclass(frozen=True)
class WebhookReply:
    status: int = 200
    body: str = ""
    content_type: str = "text/plain"


class CarrierHost(Protocol):
    """The side of the call manager a carrier talks to."""

    async def handle_event(self, event: CallEvent, *, ack: bool = True) -> None: ...

    def get(self, call_id: str) -> Call | None: ...

    def barge_in_allowed(self, call_id: str) -> bool: ...


class Carrier(Protocol):
    name: str
    survives_restart: bool   # its calls outlive our process (real carriers)
    notify_inline: bool      # notify calls carry their message in the dial request

    async def start(self, host: CarrierHost) -> None:
        """Begin delivering events for calls to ``host``."""

    async def dial(self, req: DialRequest) -> str:
        """Place an outbound call; returns the carrier's call id."""

    async def media_ready(self, call: Call) -> None:
        """Return when the call can be spoken to (e.g. its media stream and STT are up)."""

    def incremental_speech(self, call: Call) -> bool:
        """Whether speaking sentence by sentence makes speech start sooner on this call."""

    async def speak(self, call: Call, text: str, *, listen_token: str | None = None,
                    hangup_after: bool = False) -> SpeechTiming | None:
        """Play ``text``; with ``listen_token``, open a caller turn right after it;
        with ``hangup_after``, hang up once it has been heard (last words are not cut).

        Returns once the speech is delivered (heard, where the carrier can tell).
        """

    async def start_listening(self, call: Call, turn_token: str) -> None:
        """Open a speech turn; the transcript comes back as a ``call.speech`` event."""

    async def send_dtmf(self, call: Call, digits: str) -> None: ...

    async def hangup(self, call: Call) -> None: ...

    async def reject(self, call: Call) -> None:
        """Refuse an inbound call the policy rejected (before answering, where possible)."""

    async def get_status(self, provider_call_id: str) -> RemoteStatus: ...

    async def aclose(self) -> None: ...

    # -- webhooks: the gateway runs the security pipeline, the carrier the rest --
    required_headers: tuple[str, ...]   # rejected before the body is read when missing
    cache_replies: bool                 # a replay gets the first answer again (else replay_reply)

    def verify_webhook(self, req: RequestView, body: bytes) -> Verification: ...

    def replay_reply(self) -> WebhookReply:
        """What a replayed (already processed) request gets: acknowledged, no effects."""

    async def handle_webhook(self, req: RequestView, body: bytes,
                             request_key: str | None) -> WebhookReply: ...
