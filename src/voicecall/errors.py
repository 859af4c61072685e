"""The one exception tree of voicecall.

::

    VoicecallError
    ├── ConfigError            bad or missing configuration (names the key path)
    │   └── SetupIncompleteError   the selected carrier lacks credentials
    ├── UsageError             a command or RPC call was given bad arguments
    ├── CallStateError         an illegal call-state transition
    ├── CallNotFoundError      no call with that id (internal or carrier id)
    ├── CarrierError           a carrier refused a request or sent something we cannot use
    │   ├── SignatureError     a webhook failed its signature / replay / size checks
    │   └── ProtocolError      a webhook or media frame is malformed
    ├── ProviderError          an AI provider (agent, STT, TTS, realtime) failed
    ├── StoreError             the call store could not persist or load
    └── RpcError               the control API answered with a JSON-RPC error

The CLI maps these to exit codes in one place (``EXIT_CODES`` below).
"""

from __future__ import annotations

from collections.abc import Sequence


class VoicecallError(Exception):
    """Base of every error voicecall raises on purpose."""

    exit_code = 1


class ConfigError(VoicecallError):
    """Configuration is invalid. ``path`` is the dotted key path, when known."""

    exit_code = 2

    def __init__(self, message: str, path: str | None = None,
                 allowed: Sequence[str] | None = None) -> None:
        self.path = path
        self.allowed = list(allowed) if allowed else None
        text = message
        if path and not message.startswith(path):
            text = f"{path}: {message}"
        if self.allowed:
            text += f" (allowed: {', '.join(self.allowed)})"
        super().__init__(text)


class SetupIncompleteError(ConfigError):
    """The selected carrier is missing required settings; ``missing`` lists the keys."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = list(missing)
        ConfigError.__init__(self, "setup incomplete: " + "; ".join(self.missing))


class UsageError(VoicecallError):
    exit_code = 2


class CallStateError(VoicecallError):
    pass


class CallNotFoundError(VoicecallError):
    pass


class CarrierError(VoicecallError):
    def __init__(self, message: str, status_code: int | None = None,
                 retryable: bool = False) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable


class SignatureError(CarrierError):
    pass


class ProtocolError(CarrierError):
    pass


class ProviderError(VoicecallError):
    def __init__(self, message: str, retryable: bool = False,
                 status_code: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status_code = status_code


class StoreError(VoicecallError):
    pass


class RpcError(VoicecallError):
    """A JSON-RPC error object. ``code`` follows JSON-RPC 2.0 plus our own range."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    # Application codes (-32000..-32099 is the implementation-defined range).
    UNAVAILABLE = -32000
    NOT_FOUND = -32001
    CONFLICT = -32002
    SETUP_INCOMPLETE = -32003
    UNAUTHORIZED = -32004

    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


def exit_code_for(exc: BaseException) -> int:
    """Exit code for an exception reaching the CLI: 2 usage/config, 1 otherwise."""
    if isinstance(exc, VoicecallError):
        return exc.exit_code
    return 1


class GatewayUnavailableError(RpcError):
    """No gateway answered at the transport level; the CLI may fall back to in-process."""

    def __init__(self, message: str) -> None:
        super().__init__(RpcError.UNAVAILABLE, message)
