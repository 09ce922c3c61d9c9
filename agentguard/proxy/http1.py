"""Keep-alive HTTP/1.1 POSTs straight from the event loop, for the relay on an HTTP lane.

A relayed call through ``httpx`` and the SDK's client transport costs more than the rest of
the proxy together. This client does only what the relay needs: ``POST`` to one plain
``http://`` endpoint over a small pool of keep-alive connections, responses parsed by
``httptools`` (llhttp) inside ``data_received``. On a warm connection a request is written
and its answer delivered from loop callbacks, with no task per request; only opening a new
connection runs in a task.

It is deliberately narrow: no TLS, no proxies, no redirects, no authentication flows. The
caller (:class:`agentguard.proxy.upstream_http.HttpLane`) uses it only where the SDK's own
client would send exactly the same bytes, and takes the SDK path everywhere else.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol, cast

import httptools

from agentguard.errors import AgentGuardError

__all__ = ["IDLE_EXPIRY", "Http1Pool", "PendingPost", "ResponseSink", "UnsafeHeader",
           "check_header"]

logger = logging.getLogger(__name__)

IDLE_EXPIRY = 1.0
"""Seconds an idle keep-alive connection is reused for.

A server closes an idle connection after its own timeout (gunicorn 2 s, uvicorn and Node 5 s);
a request sent as that close happens is lost with no way to tell whether it ran. Dropping our
idle connections well before any common server timeout avoids the race; a fresh local
connection costs a fraction of a millisecond."""

Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


class UnsafeHeader(AgentGuardError, ValueError):
    """A header name or value that could split or smuggle a request."""


def check_header(name: str, value: str) -> None:
    """Refuse header text that is not a plain token / printable latin-1 value.

    Raises:
        UnsafeHeader: CR, LF, NUL or another control character, a non-token name, or text
            outside latin-1.
    """
    if not _TOKEN.fullmatch(name):
        raise UnsafeHeader(f"unusable HTTP header name {name!r}")
    if _BAD_VALUE.search(value):
        raise UnsafeHeader(f"unusable value for HTTP header {name!r}")


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""RFC 9110 token characters."""
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")
"""Control characters other than HTAB, and anything outside latin-1."""


class ResponseSink(Protocol):
    """Receives one response, from event-loop callbacks (must not block)."""

    def started(self, status: int, headers: dict[str, str]) -> None:
        """Status line and headers (names lower-cased; repeated headers joined by ", ")."""

    def body(self, chunk: bytes) -> None:
        """A piece of the (de-chunked) body."""

    def finished(self) -> None:
        """The response is complete."""

    def failed(self, error: BaseException, sent: bool) -> None:
        """No (complete) response will come. ``sent``: the request may have reached the server."""


class PendingPost:
    """One request in flight; :meth:`abort` gives up on it (closing its connection)."""

    __slots__ = ("aborted", "connection", "data", "sink")

    def __init__(self, data: bytes, sink: ResponseSink) -> None:
        self.data = data
        self.sink = sink
        self.connection: _Connection | None = None
        self.aborted = False

    def abort(self) -> None:
        """Stop waiting: the sink hears nothing more; an open response stream is closed."""
        if self.aborted:
            return
        self.aborted = True
        connection = self.connection
        if connection is not None and connection.pending is self:
            connection.close()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; carries one pending POST at a time."""

    def __init__(self, pool: Http1Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.pending: PendingPost | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self._headers: dict[str, str] = {}
        self._headers_done = False
        self._complete = False
        self._framed = False
        self.idle_since = 0.0

    # ------------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.pending is None:
            self.close()  # bytes nobody asked for: the stream cannot be trusted any more
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ConnectionError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"the upstream sent a malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        pending = self.pending
        if pending is None:
            return
        if self._headers_done and not self._framed and not self._complete:
            # A response delimited by the connection closing ends here.
            self.on_message_complete()
            return
        self._fail(exc or ConnectionError("the upstream closed the connection"))

    # ------------------------------------------------------------------ httptools

    def on_message_begin(self) -> None:
        self._headers = {}
        self._headers_done = False
        self._complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._framed = "content-length" in self._headers or \
            "chunked" in self._headers.get("transfer-encoding", "").lower()
        pending = self.pending
        if pending is not None and not pending.aborted:
            pending.sink.started(self.parser.get_status_code(), self._headers)

    def on_body(self, body: bytes) -> None:
        pending = self.pending
        if pending is not None and not pending.aborted:
            pending.sink.body(body)

    def on_message_complete(self) -> None:
        self._complete = True
        pending, self.pending = self.pending, None
        keep = not self.closed and self._framed and self.parser.should_keep_alive()
        if keep:
            self.pool.release(self)
        else:
            self.close()
        if pending is not None and not pending.aborted:
            pending.sink.finished()

    # ------------------------------------------------------------------ ours

    def send(self, pending: PendingPost) -> None:
        assert self.transport is not None
        self.pending = pending
        pending.connection = self
        self._headers_done = False
        self.transport.write(pending.data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.discard(self)
            if self.transport is not None:
                self.transport.close()

    def _fail(self, error: BaseException) -> None:
        pending, self.pending = self.pending, None
        self.close()
        if pending is not None and not pending.aborted:
            pending.sink.failed(error, True)


class Http1Pool:
    """Keep-alive connections to one ``host:port`` for POSTs to one path.

    Args:
        host: Server host.
        port: Server port.
        path: Request target (path and query).
        headers: Headers sent with every request (checked with :func:`check_header`).
        spawn: Starts a task (opening a connection is the only thing that needs one).
        max_idle: Idle connections kept for reuse.
        connect_timeout: Seconds to wait for a new connection.
        idle_expiry: Seconds after which an idle connection is closed instead of reused.

    Raises:
        UnsafeHeader: a header that could split the request.
    """

    def __init__(self, host: str, port: int, path: str, headers: Mapping[str, str], *,
                 spawn: Spawn, max_idle: int = 32, connect_timeout: float = 30.0,
                 idle_expiry: float = IDLE_EXPIRY) -> None:
        self.host = host
        self.port = port
        authority = f"[{host}]" if ":" in host else host
        lines = [f"POST {path} HTTP/1.1", f"host: {authority}:{port}"]
        for name, value in headers.items():
            check_header(name, value)
            lines.append(f"{name}: {value}")
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self._spawn = spawn
        self._max_idle = max_idle
        self._connect_timeout = connect_timeout
        self._idle_expiry = idle_expiry
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self.closed = False

    def post(self, body: bytes, headers: Mapping[str, str], sink: ResponseSink) -> PendingPost:
        """Send one POST; its response goes to ``sink``.

        Raises:
            UnsafeHeader: a per-request header that could split the request.
        """
        extra = []
        for name, value in headers.items():
            check_header(name, value)
            extra.append(f"{name}: {value}\r\n")
        data = b"".join((self._head, "".join(extra).encode("latin-1"),
                         b"content-length: %d\r\n\r\n" % len(body), body))
        pending = PendingPost(data, sink)
        if self.closed:
            sink.failed(ConnectionError("the connection pool is closed"), False)
            return pending
        stale = time.monotonic() - self._idle_expiry
        while self._idle:
            connection = self._idle.pop()
            if connection.closed:
                continue
            if connection.idle_since < stale:
                connection.close()
                continue
            connection.send(pending)
            return pending
        self._spawn(lambda: self._open_and_send(pending))
        return pending

    async def _open_and_send(self, pending: PendingPost) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self), self.host, self.port)
        except (OSError, TimeoutError) as exc:
            if not pending.aborted:
                pending.sink.failed(ConnectionError(
                    f"could not connect to {self.host}:{self.port}: {exc}"), False)
            return
        self._all.add(connection)
        if self.closed:
            connection.close()
            if not pending.aborted:
                pending.sink.failed(ConnectionError("the connection pool is closed"), False)
        elif pending.aborted:
            self.release(connection)
        else:
            connection.send(pending)

    def release(self, connection: _Connection) -> None:
        """Take a connection back for reuse (or close it when the pool is full/closed)."""
        if self.closed or connection.closed or len(self._idle) >= self._max_idle:
            connection.close()
        else:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)

    def discard(self, connection: _Connection) -> None:
        """Forget a closed connection."""
        self._all.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)

    def close(self) -> None:
        """Close every connection; pending POSTs fail."""
        self.closed = True
        for connection in list(self._all):
            connection.close()
        self._idle.clear()
