"""The ``Secret`` type: a credential string that never shows itself.

``repr``/``str``/f-strings print a mask, so a config object can be logged or
shown in a traceback without leaking tokens. Code that really needs the value
calls :meth:`Secret.reveal`.

Serialization (pydantic): ``model_dump()`` keeps ``Secret`` objects as they are
(they are still masked when printed); ``model_dump(mode="json")`` writes the
mask. Pass ``context={"reveal_secrets": True}`` to get plain strings instead.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from pydantic import GetCoreSchemaHandler, SerializationInfo
from pydantic_core import PydanticCustomError, core_schema

MASK = "**********"

# Keys whose string values are credentials inside free-form provider blobs
# (``realtime.providers.<id>``, ``tts.providers.<id>``, ...).
SECRET_KEY_NAMES = frozenset(
    {"apiKey", "api_key", "authToken", "auth_token", "accessToken", "token", "secret",
     "password"}
)


class Secret:
    """A secret string with a masked ``repr``; equality compares the values."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        """The secret itself. Call only where it is sent to its destination."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant time, so comparing against a guess leaks nothing via timing.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _validate_secret,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _serialize_secret, info_arg=True
            ),
        )


def _validate_secret(value: Any) -> Secret:
    # One plain validator (not a union) so a bad value yields one clear error.
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("secret_type", "Input should be a string")
    if not value:
        raise PydanticCustomError("secret_empty", "String should have at least 1 character")
    return Secret(value)


def _reveal_requested(info: SerializationInfo) -> bool:
    ctx = info.context
    return isinstance(ctx, Mapping) and bool(ctx.get("reveal_secrets"))


def _serialize_secret(value: Secret, info: SerializationInfo) -> Any:
    if _reveal_requested(info):
        return value.reveal()
    return MASK if info.mode_is_json() else value


def wrap_secrets(value: Any) -> Any:
    """Copy of a JSON-like tree with string values under secret-ish keys as ``Secret``."""
    if isinstance(value, dict):
        return {
            k: Secret(v) if k in SECRET_KEY_NAMES and isinstance(v, str) else wrap_secrets(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [wrap_secrets(v) for v in value]
    return value


def dump_tree(value: Any, *, reveal: bool, mask: bool) -> Any:
    """Copy of a tree with each ``Secret`` revealed, masked or kept as is."""
    if isinstance(value, Secret):
        if reveal:
            return value.reveal()
        return MASK if mask else value
    if isinstance(value, dict):
        return {k: dump_tree(v, reveal=reveal, mask=mask) for k, v in value.items()}
    if isinstance(value, list):
        return [dump_tree(v, reveal=reveal, mask=mask) for v in value]
    return value


def serialize_tree(value: Any, info: SerializationInfo) -> Any:
    """Pydantic serializer for free-form blobs that may hold ``Secret`` values."""
    return dump_tree(value, reveal=_reveal_requested(info), mask=info.mode_is_json())
