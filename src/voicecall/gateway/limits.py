"""Pre-auth guards shared by every webhook: body size/time caps and per-IP in-flight caps.

These run before a body is parsed or a signature checked, so an attacker who
cannot sign requests can cost us at most 64 KB and 5 s per connection, and
only a few connections per address at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator

MAX_BODY_BYTES = 64 * 1024
BODY_TIMEOUT_S = 5.0
MAX_IN_FLIGHT_PER_IP = 8


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


async def read_capped(chunks: AsyncIterator[bytes], *, declared_length: str | None,
                      max_bytes: int = MAX_BODY_BYTES,
                      timeout_s: float = BODY_TIMEOUT_S) -> bytes:
    """Read a body, refusing early when it is declared or turns out too big or too slow."""
    if declared_length is not None:
        try:
            if int(declared_length) > max_bytes:
                raise BodyTooLarge
        except ValueError:
            raise BodyTooLarge from None
    buf = bytearray()
    deadline = time.monotonic() + timeout_s
    iterator = chunks.__aiter__()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BodyTimeout
        try:
            chunk = await asyncio.wait_for(iterator.__anext__(), remaining)
        except StopAsyncIteration:
            return bytes(buf)
        except TimeoutError:
            raise BodyTimeout from None
        buf += chunk
        if len(buf) > max_bytes:
            raise BodyTooLarge


class InFlight:
    """Counts requests being processed per client address."""

    def __init__(self, per_ip: int = MAX_IN_FLIGHT_PER_IP) -> None:
        self.per_ip = per_ip
        self._counts: defaultdict[str, int] = defaultdict(int)

    def try_acquire(self, ip: str) -> bool:
        if self._counts[ip] >= self.per_ip:
            return False
        self._counts[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self._counts[ip] -= 1
        if self._counts[ip] <= 0:
            del self._counts[ip]
