"""How the HTTP relay frames an answer: JSON, or an event stream with pings.

Both of its routes write what the SDK's Streamable HTTP app would: a JSON body with its
length, or, once the answer is slow in coming, ``text/event-stream`` with keep-alive comments
and the answer as a ``message`` event. :class:`AsgiAnswer` does it through an ASGI ``send``
(the relay inside the ASGI stack); the listener's direct route writes the same frames to the
transport itself.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from mcp.shared.message import SessionMessage
from mcp.types import JSONRPCError

from agentguard.proxy.wire import WireError, encode, serialize

__all__ = ["PING", "SSE_HEADERS", "Adoption", "AsgiAnswer", "TransportAnswer", "chunk",
           "compact", "json_headers", "jsonrpc_error", "sse_event", "stream_head"]

SSE_HEADERS = [(b"content-type", b"text/event-stream"),
               (b"cache-control", b"no-cache, no-transform"),
               (b"connection", b"keep-alive"), (b"x-accel-buffering", b"no")]
"""The head of an event-stream answer, as the SDK app sends it."""
PING = b": ping\r\n\r\n"
"""A keep-alive comment on an event stream."""


def compact(body: dict[str, Any]) -> bytes:
    """``body`` as the relay writes it to a client: :func:`~agentguard.proxy.wire.encode`
    without its newline (orjson's output when it can write it, as ``encode``'s)."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        return encode(body).rstrip(b"\n")


def sse_event(data: bytes) -> bytes:
    """One JSON-RPC message as an event-stream ``message`` event."""
    return b"event: message\r\ndata: " + data + b"\r\n\r\n"


def jsonrpc_error(exc: WireError) -> bytes:
    """The body of a refused request: the JSON-RPC error the stdio transport would write."""
    return serialize(SessionMessage(JSONRPCError(jsonrpc="2.0", id=exc.request_id,
                                                 error=exc.error)))


def json_headers(length: int) -> list[tuple[bytes, bytes]]:
    """The head of a JSON answer of ``length`` bytes."""
    return [(b"content-type", b"application/json"), (b"content-length", b"%d" % length)]


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked HTTP/1.1 body (``data`` must not be empty)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def stream_head(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The start of a chunked event stream's head with ``headers``, as the listener's ASGI
    bridge frames it (``connection`` comes last, written per request)."""
    return b"HTTP/1.1 200 OK\r\n" + b"".join(
        name + b": " + value + b"\r\n" for name, value in headers if name != b"connection") + \
        b"transfer-encoding: chunked\r\n"


_SSE_HEAD = stream_head(SSE_HEADERS)
_KEEP_ALIVE = b"connection: keep-alive\r\n\r\n"
_CLOSE = b"connection: close\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


class TransportAnswer:
    """:class:`AsgiAnswer`'s frames written straight to a connection (HTTP/1.1): the JSON
    answer as head and body in one write, or a chunked event stream.

    Args:
        write: Writes bytes to the connection.
        keep_alive: Whether the connection stays open after this answer.
        stream_head: The head of a handshake-era session's answer (:func:`stream_head` of
            ``sessions.sse_head``): given, every answer is an event stream with that head,
            even one that comes at once (as the SDK's stateful transport answers a
            session's request).
    """

    __slots__ = ("_connection", "_head", "_session", "_write", "streaming")

    def __init__(self, write: Any, *, keep_alive: bool,
                 stream_head: bytes | None = None) -> None:
        self._write = write
        self._connection = _KEEP_ALIVE if keep_alive else _CLOSE
        self._session = stream_head is not None
        self._head = _SSE_HEAD if stream_head is None else stream_head
        self.streaming = False

    def ping(self) -> None:
        """Write a keep-alive comment, committing the answer to an event stream first."""
        if self.streaming:
            self._write(chunk(PING))
            return
        self.streaming = True
        self._write(self._head + self._connection + chunk(PING))

    def finish(self, status: int, body: dict[str, Any]) -> None:
        """Write the JSON-RPC ``body``: as JSON with ``status``, or as the stream's last
        event (a session's answer: always, status 200)."""
        data = compact(body)
        if self.streaming:
            self._write(chunk(sse_event(data)) + _LAST_CHUNK)
            return
        if self._session:
            self.streaming = True
            self._write(self._head + self._connection + chunk(sse_event(data)) + _LAST_CHUNK)
            return
        self._write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n%b%b" % (status, _REASONS.get(status, b""),
                                                     len(data), self._connection, data))


_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


class AsgiAnswer:
    """One HTTP answer through an ASGI ``send``: plain JSON, or an event stream once the wait
    outlasts the deferral window.

    Args:
        send: The ASGI ``send`` of the request being answered.
    """

    def __init__(self, send: Any) -> None:
        self._send = send
        self.streaming = False
        self._adoption = Adoption()

    async def ping(self) -> None:
        """Send a keep-alive comment, committing the answer to an event stream first."""
        if not self.streaming:
            self.streaming = True
            await self._send({"type": "http.response.start", "status": 200,
                              "headers": SSE_HEADERS})
        await self._send({"type": "http.response.body", "body": PING, "more_body": True})

    async def finish(self, status: int, body: dict[str, Any]) -> None:
        """Send the JSON-RPC ``body``: as JSON with ``status``, or as the stream's last event."""
        data = compact(body)
        if self.streaming:
            await self._send({"type": "http.response.body", "body": sse_event(data)})
            return
        await self._send({"type": "http.response.start", "status": status,
                          "headers": json_headers(len(data))})
        await self._send({"type": "http.response.body", "body": data})

    async def adopt(self, message: dict[str, Any]) -> None:
        """An ASGI ``send`` for the SDK app once this stream is committed (see
        :class:`Adoption`)."""
        framed = self._adoption.frame(message)
        if framed is not None:
            chunk, more = framed
            await self._send({"type": "http.response.body", "body": chunk, "more_body": more})


class Adoption:
    """The SDK app's answer, re-framed for an event stream the relay already began:
    its event-stream frames pass through, a JSON answer becomes one ``message`` event."""

    def __init__(self) -> None:
        self._sse = False
        self._body: list[bytes] = []

    def frame(self, message: dict[str, Any]) -> tuple[bytes, bool] | None:
        """``(bytes, more)`` to send for one ASGI ``send`` message, or None for nothing yet."""
        kind = message.get("type")
        if kind == "http.response.start":
            headers = dict(message.get("headers") or ())
            self._sse = headers.get(b"content-type", b"").startswith(b"text/event-stream")
            return None
        if kind != "http.response.body":
            return None
        chunk, more = message.get("body", b""), message.get("more_body", False)
        if self._sse:
            return chunk, more
        self._body.append(chunk)
        if more:
            return None
        return sse_event(b"".join(self._body)), False
