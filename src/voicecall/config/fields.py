"""Building blocks shared by the config models: the strict base and value types."""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from .secret import serialize_tree, wrap_secrets

E164_RE = re.compile(r"\+[1-9][0-9]{1,14}")
E164_MESSAGE = "Expected E.164 format, e.g. +15550001234"

# Error type for rules that span fields; ``ctx["field"]`` names the offending
# key relative to the model that raised it (see errors.format_errors).
CROSS_FIELD = "voicecall_cross_field"


class StrictModel(BaseModel):
    """Frozen, unknown keys rejected, camelCase JSON keys, no type coercion.

    ``strict`` keeps "3334" from silently becoming 3334: a config file that
    says a string where a number belongs is a mistake worth reporting.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
        strict=True,
    )


def _check_e164(value: str) -> str:
    if not E164_RE.fullmatch(value):
        raise PydanticCustomError("e164", E164_MESSAGE)
    return value


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError("url", "Expected an absolute http(s) URL")
    return value


def _check_ip_or_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise PydanticCustomError(
            "ip", "Expected an IP address or CIDR range, e.g. 203.0.113.7"
        ) from None
    return value.strip()


def _expand_user(value: str) -> str:
    return os.path.expanduser(value)


E164 = Annotated[str, AfterValidator(_check_e164)]
HttpUrl = Annotated[str, AfterValidator(_check_url)]
IpOrCidr = Annotated[str, AfterValidator(_check_ip_or_cidr)]
UserPath = Annotated[str, Field(min_length=1), AfterValidator(_expand_user)]
NonEmptyStr = Annotated[str, Field(min_length=1)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Port = Annotated[int, Field(gt=0, le=65535)]

# Raw config owned by a provider plugin (``providers.<id>``): free-form, but
# credential-looking values become ``Secret`` so they never print.
ProviderConfigs = Annotated[
    dict[str, dict[str, Any]],
    AfterValidator(wrap_secrets),
    PlainSerializer(serialize_tree),
]
