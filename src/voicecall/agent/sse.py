"""A sans-I/O decoder for Server-Sent Events, as chat-completion streams use.

Feed it lines (without their line ending); it returns the ``data`` payloads of
the events each line completes. Only what the chat APIs use is kept: ``data``
fields (joined with "\\n" when an event has several), comments and the other
fields are ignored.
"""

from __future__ import annotations

__all__ = ["SSEDecoder"]


class SSEDecoder:
    def __init__(self) -> None:
        self._data: list[str] = []

    def feed_line(self, line: str) -> list[str]:
        """Consume one line; return the data of any event it completed."""
        if line == "":
            return self.flush()
        if line.startswith(":"):
            return []  # comment / keep-alive
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        return []

    def flush(self) -> list[str]:
        """End the current event (blank line, or end of stream)."""
        if not self._data:
            return []
        data = "\n".join(self._data)
        self._data = []
        return [data]
