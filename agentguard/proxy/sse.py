"""An incremental ``text/event-stream`` decoder (the WHATWG parsing rules, no reconnection)."""

from __future__ import annotations

import codecs

from agentguard.errors import AgentGuardError

__all__ = ["SseDecoder", "SseTooLarge"]


class SseTooLarge(AgentGuardError, ValueError):
    """One event grew past the decoder's limit."""


class SseDecoder:
    """Feed bytes, get complete ``(event, data)`` pairs.

    Lines end in CRLF, LF or CR; ``:`` lines are comments (keep-alive pings); ``data`` lines
    are joined with LF; an event without data is not dispatched; the event type defaults to
    ``message``.

    Args:
        max_event_bytes: Largest accepted event (data plus pending line); None: no limit.
    """

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._buffer = ""
        self._event = ""
        self._data: list[str] = []
        self._size = 0
        self._limit = max_event_bytes
        self._first = True

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """Decode ``chunk``; the events it completed, in order.

        Raises:
            SseTooLarge: an event exceeded ``max_event_bytes``.
        """
        text = self._decoder.decode(chunk)
        if self._first and text:
            self._first = False
            text = text.removeprefix("\ufeff")
        self._buffer += text
        events: list[tuple[str, str]] = []
        buffer, start = self._buffer, 0
        while True:
            cr, lf = buffer.find("\r", start), buffer.find("\n", start)
            if cr < 0 and lf < 0:
                break
            end = lf if cr < 0 or (0 <= lf < cr) else cr
            if end == cr and end + 1 == len(buffer):
                break  # a CR at the very end may be the first half of CRLF
            line = buffer[start:end]
            start = end + (2 if end == cr and buffer.startswith("\n", end + 1) else 1)
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._buffer = buffer[start:]
        if self._limit is not None and self._size + len(self._buffer) > self._limit:
            raise SseTooLarge(f"an event-stream event is larger than {self._limit} bytes")
        return events

    def _line(self, line: str) -> tuple[str, str] | None:
        if not line:
            data, event = self._data, self._event or "message"
            self._data, self._event, self._size = [], "", 0
            return (event, "\n".join(data)) if data else None
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._size += len(value) + 1
            if self._limit is not None and self._size > self._limit:
                raise SseTooLarge(f"an event-stream event is larger than {self._limit} bytes")
        elif name == "event":
            self._event = value
        return None
