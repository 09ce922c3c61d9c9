"""One HTTP request of :mod:`agentguard.proxy.http_listener` served by an ASGI 3 app.

The listener reads a request completely (head and body, within its limits) before anything
serves it; :class:`AsgiCycle` then gives the app the standard ``receive`` (the body once,
then ``http.disconnect`` when the client hangs up or the answer is complete) and ``send``
(``http.response.start`` / ``http.response.body`` framed as HTTP/1.1: ``Content-Length`` when
the app gives one or the body comes in one piece, chunked otherwise, close-delimited for an
HTTP/1.0 client; nothing after the head for ``HEAD``). The head is held back until the first
body part so a short answer leaves in one write; a paused transport (``pause_writing``)
suspends ``send`` until it drains. An app that fails before its head gets a ``500``; one that
fails or stops after it gets the connection closed, so a client never takes a cut answer for
a whole one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Any, Protocol

__all__ = ["RELAY_DECLINED", "AsgiCycle", "Connection", "forwarded_client", "run_app"]

logger = logging.getLogger(__name__)

RELAY_DECLINED = "agentguard.relay_declined"
"""Scope key the listener sets on a request its direct route already relayed once and
handed to the SDK's app (a result asking for input): the ASGI stack must not relay it again
(the upstream would see the call once more), only serve it the SDK's way."""

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_NO_BODY = frozenset({204, 304})


class Connection(Protocol):
    """What a cycle needs of the listener's connection."""

    def write(self, data: bytes) -> None:
        """Queue bytes on the transport (nothing once the client is gone)."""

    def drain(self) -> Awaitable[None] | None:
        """An awaitable while the transport's buffer is over its high-water mark, else None."""


class AsgiCycle:
    """The ASGI ``receive`` and ``send`` of one request, over a listener connection.

    Args:
        conn: The connection to write the answer to.
        body: The request body, already read in full.
        http10: The request was HTTP/1.0 (no chunked answers).
        head: The request method was ``HEAD``.
        keep_alive: The connection may carry another request after this one.
    """

    __slots__ = ("_body_sent", "_chunked", "_conn", "_gone", "_head", "_http10", "_length",
                 "_pending", "_remaining", "body", "complete", "keep_alive", "started")

    def __init__(self, conn: Connection, body: bytes, *, http10: bool, head: bool,
                 keep_alive: bool, gone: asyncio.Future[None]) -> None:
        self._conn = conn
        self.body = body
        self._http10 = http10
        self._head = head
        self.keep_alive = keep_alive
        self._gone = gone
        self._body_sent = False
        self._pending: tuple[int, list[Any]] | None = None
        self._chunked = False
        self._length: int | None = None
        self._remaining = 0
        self.started = False
        self.complete = False

    async def receive(self) -> dict[str, Any]:
        """ASGI ``receive``: the body, then ``http.disconnect`` once the client is gone or
        the answer complete."""
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        if not self.complete:
            await asyncio.shield(self._gone)
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        """ASGI ``send``: frame the answer onto the connection."""
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self._pending = (int(message["status"]), list(message.get("headers") or ()))
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self.started or self.complete:
            raise RuntimeError("http.response.body outside a response")
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        if self._gone.done():
            self.complete = not more
            return  # the client hung up: nothing to write to
        out = self._head_bytes(len(body), more) if self._pending is not None else b""
        out += self._frame(body, more)
        if out:
            self._conn.write(out)
        if not more:
            self.complete = True
            if not self._gone.done():
                self._gone.set_result(None)  # receive() now answers http.disconnect
        waiting = self._conn.drain()
        if waiting is not None:
            await waiting

    def _head_bytes(self, size: int, more: bool) -> bytes:
        assert self._pending is not None
        status, headers = self._pending
        self._pending = None
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _reason(status))]
        length = None
        for name, value in headers:
            name = bytes(name).lower()
            value = bytes(value)
            if not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
                raise RuntimeError("invalid response header from the app")
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    raise RuntimeError("invalid Content-Length from the app")
                length = int(value)
                continue  # written below, once
            elif name == b"transfer-encoding":
                raise RuntimeError("the app may not set Transfer-Encoding")
            elif name == b"connection":
                if value.lower() == b"close":
                    self.keep_alive = False
                continue
            lines += (name, b": ", value, b"\r\n")
        bodyless = status in _NO_BODY or status < 200
        if length is not None:
            lines.append(b"content-length: %d\r\n" % length)
            self._length = self._remaining = length
        elif bodyless:
            self._length = self._remaining = 0
        elif not more:
            lines.append(b"content-length: %d\r\n" % size)
            self._length = self._remaining = size
        elif self._http10:
            self.keep_alive = False  # close-delimited
        else:
            self._chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(b"connection: keep-alive\r\n\r\n" if self.keep_alive
                     else b"connection: close\r\n\r\n")
        return b"".join(lines)

    def _frame(self, body: bytes, more: bool) -> bytes:
        if self._length is not None:
            self._remaining -= len(body)
            if self._remaining < 0 or (not more and self._remaining):
                raise RuntimeError("the app's body does not match its Content-Length")
        if self._head:
            return b""
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            return data if more else data + b"0\r\n\r\n"
        return body

    def fail(self) -> bool:
        """After the app raised or returned without completing its answer: send a ``500``
        if nothing was sent yet. Returns whether the connection can carry another request."""
        if not self.started:
            self.keep_alive = False
            self.started = True
            text = b"Internal Server Error"
            self._conn.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: "
                             b"text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n%b" % (len(text),
                                                               b"" if self._head else text))
        self.complete = True
        return False


_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


def _reason(status: int) -> bytes:
    return _REASONS.get(status, b"")


async def run_app(app: Callable[..., Awaitable[None]], scope: dict[str, Any],
                  cycle: AsgiCycle) -> bool:
    """Serve one request with ``app``; True when the connection may carry another one."""
    try:
        await app(scope, cycle.receive, cycle.send)
    except Exception:
        logger.exception("the ASGI app failed on %s %s", scope.get("method"), scope.get("path"))
        return cycle.fail()
    if not cycle.complete:
        if cycle.started:
            logger.error("the ASGI app left its answer to %s %s incomplete",
                         scope.get("method"), scope.get("path"))
        return cycle.fail()
    return cycle.keep_alive


def forwarded_client(peer: tuple[str, int] | None, headers: Iterable[tuple[bytes, bytes]],
                     trusted: Iterable[Any]) -> tuple[tuple[str, int] | None, str]:
    """The caller's ``(host, port)`` and the scheme, believing ``X-Forwarded-For`` and
    ``X-Forwarded-Proto`` only when ``peer`` is in ``trusted`` (IP networks).

    The caller is the rightmost address not itself a trusted proxy (what the nearest trusted
    proxy saw), as uvicorn's ``proxy_headers`` computes it.
    """
    nets = tuple(trusted)
    if peer is None or not nets or not _trusted(peer[0], nets):
        return peer, "http"
    chain: list[str] = []
    scheme = "http"
    for name, value in headers:
        if name == b"x-forwarded-for":
            chain += [part.strip() for part in value.decode("latin-1").split(",")]
        elif name == b"x-forwarded-proto":
            proto = value.decode("latin-1").strip().lower()
            scheme = proto if proto in ("http", "https") else scheme
    chain = [hop for hop in chain if hop]
    if not chain:
        return peer, scheme
    for hop in reversed(chain):
        if not _trusted(hop, nets):
            return (hop, 0), scheme
    return (chain[0], 0), scheme


def _trusted(host: str, nets: tuple[Any, ...]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in nets)
