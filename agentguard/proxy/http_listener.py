"""The ``--listen`` HTTP/1.1 server: asyncio + httptools, the relay first, ASGI for the rest.

Why we own it: behind uvicorn the relay answered inside the ASGI stack (uvicorn's request
cycle, ASGI messages, HardenedASGI reading the body, head and body in two writes), and
uvicorn's cheaper hooks are private. Here a complete ``POST /mcp`` goes to the relay before
any ASGI app runs (:mod:`agentguard.proxy.http_direct`: planned from the parser's callback,
answered from the upstream's, in one write); everything the relay declines, and every other
request, is served by the ASGI app through :mod:`agentguard.proxy.asgi_bridge`, body
replayed. Measured on the 2-vCPU dev VM (shared, load 4-8), 2026-12-05:

* ``benchmarks/bench_http_listener.py`` (raw keep-alive client, allowed ``get_status``
  relayed to the example ops server over HTTP; 3 runs of 4,000 calls): proxy CPU per call
  0.325-0.327 ms under uvicorn (main) against 0.255-0.273 ms here (-54 to -72 µs); p50 over
  direct 1.41-1.52x against 1.34-1.46x.
* ``benchmarks/bench_proxy.py --calls 1000`` (the official MCP client; 2 runs each): proxy
  CPU per HTTP call 0.477-0.487 ms (main) against 0.331-0.341 ms; p50 over direct
  1.13-1.20x against 1.01-1.09x.
* ``benchmarks/bench_http_server.py`` (the server alone, trivial answer; 2 runs each):
  server CPU per request: bare httptools protocol 6-7 µs, uvicorn + ASGI app 35-43 µs, this
  listener through the ASGI bridge 35-37 µs, its direct route 30-35 µs (with the JSON parse
  and answer encoding the relay needs).

Network-facing, so strict and bounded (each limit has an attack test in
``tests/proxy/test_http_listener.py``):

* llhttp strict parsing: ``Content-Length`` with ``Transfer-Encoding``, a duplicate or
  malformed ``Content-Length``, obs-fold, bare CR/LF and NUL are refused ``400`` and the
  connection closed; so are a ``Transfer-Encoding`` other than ``chunked`` (or on
  HTTP/1.0), upgrades and ``CONNECT``, a missing or repeated ``Host``, other HTTP versions.
* Head limits (``431``): :attr:`Limits.max_head_bytes` of request line and headers,
  :attr:`Limits.max_headers` headers. Body limit (``413`` with the JSON-RPC error the
  ASGI stack gives, connection closed): the config's ``max_message_bytes``, checked against
  ``Content-Length`` before ``100 Continue`` and while a chunked body arrives.
* Time limits: a request (head and body) must arrive within :attr:`Limits.read_timeout`
  of its first bytes (a slow drip does not extend it; ``408``, in turn); an idle
  keep-alive connection closes after :attr:`Limits.keep_alive`.
* Pipelined requests are answered in order, one at a time; reading pauses while
  :attr:`Limits.max_queued` wait. A client that hangs up makes ``receive`` answer
  ``http.disconnect`` (a held call is then cancelled, :mod:`agentguard.proxy.http_cancel`);
  a relayed call is abandoned upstream (the upstream is told it was cancelled).
* ``X-Forwarded-For`` / ``X-Forwarded-Proto`` are believed only from a peer in the
  configured trusted proxies (:func:`forwarded_client`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httptools
from mcp.types import INVALID_REQUEST

from agentguard.proxy.asgi_bridge import AsgiCycle, forwarded_client, run_app
from agentguard.proxy.http_direct import DirectRelay, Relayed
from agentguard.proxy.http_frames import Adoption, chunk, jsonrpc_error
from agentguard.proxy.wire import WireError

__all__ = ["DirectRelay", "Limits", "Listener", "forwarded_client"]  # re-exported

logger = logging.getLogger(__name__)

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """What one client may make the listener hold.

    Attributes:
        max_body_bytes: Largest request body (the config's ``max_message_bytes``).
        max_head_bytes: Largest request line plus headers.
        max_headers: Most header lines in one request.
        read_timeout: Seconds for a request, head and body, to arrive once it began.
        keep_alive: Seconds an idle connection stays open (above clients' own idle expiry,
            httpx 5 s, Node 4 s, so a request never crosses our close).
        max_queued: Pipelined requests read ahead of the one being answered.
    """

    max_body_bytes: int = 4 * 1024 * 1024
    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    read_timeout: float = 30.0
    keep_alive: float = 75.0
    max_queued: int = 8


class Listener:
    """The ``--listen`` server: one :class:`_Conn` per TCP connection.

    Args:
        app: The ASGI app for everything the relay does not answer.
        relay: The direct relay entry, or None (everything goes to ``app``).
        limits: Size and time limits.
        trusted_proxies: IPs or CIDRs whose forwarding headers are believed.
    """

    def __init__(self, app: App, *, relay: DirectRelay | None = None,
                 limits: Limits | None = None, trusted_proxies: Iterable[str] = ()) -> None:
        self.app = app
        self.relay = relay
        self.limits = limits or Limits()
        self.trusted = tuple(ipaddress.ip_network(t, strict=False) for t in trusted_proxies)
        self.conns: set[_Conn] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> asyncio.Server:
        """Listen on ``host:port``; returns the asyncio server (its sockets give the port)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Conn(self), host, port)
        return self._server

    async def close(self) -> None:
        """Stop listening, close every connection, and wait for their requests to end."""
        if self._server is not None:
            self._server.close()
        tasks = [c.task for c in self.conns if c.task is not None]
        for conn in list(self.conns):
            if conn.call is not None:
                conn.call.hang_up()
            conn.abort()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


class _Refuse(Exception):
    pass


class _Req:
    __slots__ = ("body", "complete", "expect", "head", "http10", "keep_alive", "refusal",
                 "scope", "size")

    def __init__(self, scope: dict[str, Any] | None, *, refusal: int = 0) -> None:
        self.scope = scope
        self.refusal = refusal
        self.body: list[bytes] = []
        self.size = 0
        self.complete = refusal != 0
        self.expect = self.head = self.http10 = False
        self.keep_alive = True


_STATUS_TEXT = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large",
                417: b"Expectation Failed", 431: b"Request Header Fields Too Large"}


class _Conn(asyncio.Protocol):
    """One client connection: parse, queue, answer in order."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.limits = listener.limits
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[_Req] = deque()
        self.task: asyncio.Task[None] | None = None
        self.call: Relayed | None = None
        self.gone: asyncio.Future[None] | None = None
        self.closed = False  # no more requests: stop parsing, close after the queue
        self.reading = True
        self._drain: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._in_message = False
        self._refusal = 0
        self.peer: tuple[str, int] | None = None
        self.sock: tuple[str, int] | None = None

    # ---------------------------------------------------------------- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        peer, sock = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
        self.peer = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self.sock = (str(sock[0]), int(sock[1])) if isinstance(sock, tuple) else None
        self.listener.conns.add(self)
        self._arm(self.limits.read_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.listener.conns.discard(self)
        self._disarm()
        if self.gone is not None and not self.gone.done():
            self.gone.set_result(None)  # the request being served sees http.disconnect
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self.call is not None:
            self.call.hang_up()
            self.call = None
        if self.task is None:
            self.queue.clear()

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400)  # upgrades and CONNECT are not served
            return
        except httptools.HttpParserError:
            # A callback's refusal reaches here wrapped (HttpParserCallbackError).
            self._refuse(self._refusal or 400)
            return
        if self._in_message and self._timer is None:
            # Armed once per request, when it did not arrive whole: the allowance is for
            # all of it, so a slow drip cannot extend it.
            self._arm(self.limits.read_timeout)

    # ---------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        self._url, self._headers, self._head_bytes = b"", [], 0
        self._in_message = True
        if self._timer is not None:
            self._disarm()  # the keep-alive wait ended

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        if len(self._headers) >= self.limits.max_headers:
            raise self._stop(431)
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser, limits = self.parser, self.limits
        version = parser.get_http_version()
        method = parser.get_method()
        hosts = lengths = 0
        chunked = expect = False
        for name, value in self._headers:
            if name == b"host":
                hosts += 1
            elif name == b"content-length":
                lengths = int(value)  # llhttp let through one, digits only
            elif name == b"transfer-encoding":
                if value.strip().lower() != b"chunked" or version != "1.1":
                    raise self._stop(400)
                chunked = True
            elif name == b"expect":
                if value.strip().lower() != b"100-continue":
                    raise self._stop(417)
                expect = True
            elif name == b"upgrade":
                raise self._stop(400)
        if version not in ("1.0", "1.1") or method == b"CONNECT" or hosts > 1 or \
                (hosts == 0 and version == "1.1"):
            raise self._stop(400)
        if lengths > limits.max_body_bytes:
            raise self._stop(413)
        raw = self._url
        try:
            if raw[:1] == b"/":  # origin form; llhttp checked its characters
                raw_path, _, query = raw.partition(b"?")
                raw_path = raw_path.partition(b"#")[0]
                query = query.partition(b"#")[0]
            else:
                url = httptools.parse_url(raw)
                raw_path, query = url.path or b"/", url.query or b""
            path = raw_path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            raise self._stop(400) from None
        client, scheme = forwarded_client(self.peer, self._headers, self.listener.trusted) \
            if self.listener.trusted else (self.peer, "http")
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
                 "http_version": version, "method": method.decode("ascii"), "scheme": scheme,
                 "path": unquote(path) if "%" in path else path, "raw_path": raw_path,
                 "query_string": query, "root_path": "",
                 "headers": self._headers, "client": client, "server": self.sock}
        req = _Req(scope)
        req.http10 = version == "1.0"
        req.head = method == b"HEAD"
        req.keep_alive = parser.should_keep_alive()
        req.expect = expect and (lengths > 0 or chunked)
        self.queue.append(req)
        if len(self.queue) == 1 and req.expect:
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            req.expect = False

    def on_body(self, body: bytes) -> None:
        req = self.queue[-1]
        req.size += len(body)
        if req.size > self.limits.max_body_bytes:
            raise self._stop(413)
        req.body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self._timer is not None:
            self._disarm()
        self.queue[-1].complete = True
        if len(self.queue) > self.limits.max_queued and self.reading and self.transport:
            self.reading = False
            self.transport.pause_reading()
        self._next()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_head_bytes:
            raise self._stop(431)

    def _stop(self, status: int) -> _Refuse:
        """Remember why the parse stops; raised from a callback, it aborts ``feed_data``."""
        self._refusal = status
        return _Refuse(status)

    # ---------------------------------------------------------------- serving

    def _refuse(self, status: int) -> None:
        """Answer ``status`` in turn (after what is queued before it), then close."""
        self.closed = True
        self._in_message = False
        self._disarm()
        if self.queue and not self.queue[-1].complete:
            self.queue.pop()  # the request being read is the one refused
        self.queue.append(_Req(None, refusal=status))
        if self.reading and self.transport is not None:
            self.reading = False
            self.transport.pause_reading()
        self._next()

    def _next(self) -> None:
        """Start serving the head of the queue if nothing is being served."""
        if self.task is not None or self.call is not None or not self.queue or \
                self.transport is None:
            return
        req = self.queue[0]
        if not req.complete:
            if req.expect:
                req.expect = False
                self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        if req.refusal:
            self._write_refusal(req.refusal)
            self.transport.close()
            return
        relay, scope = self.listener.relay, req.scope
        if relay is not None and scope is not None and scope["method"] == "POST" and \
                scope["path"] == relay.path and not req.http10:
            try:
                self.call = relay.relayed(self, req)
                if self.call is not None and self.call.begin():
                    return
            except Exception:  # from a parser or an upstream callback: never raise there
                logger.exception("the relay failed on a request; the ASGI app serves it")
            self.call = None  # nothing was sent: the ASGI app serves it
        self.task = self.loop.create_task(self._serve(req))

    def full_path(self, req: _Req, *, adopt: bool) -> None:
        """A relayed call the SDK's app must finish: served afresh (nothing was written), or
        its answer adopted into the event stream the relay began."""
        self.call = None
        self.task = self.loop.create_task(self._adopt(req) if adopt else self._serve(req))

    async def _serve(self, req: _Req) -> None:
        assert req.scope is not None
        cycle = self._cycle(req)
        keep = False
        try:
            keep = await run_app(self.listener.app, req.scope, cycle)
        except Exception:
            logger.exception("serving %s %s failed", req.scope["method"], req.scope["path"])
            keep = cycle.fail()
        finally:
            self.served(keep)

    async def _adopt(self, req: _Req) -> None:
        assert req.scope is not None and self.listener.relay is not None
        cycle, adoption, ended = self._cycle(req), Adoption(), False

        async def send(message: dict[str, Any]) -> None:
            nonlocal ended
            framed = adoption.frame(message)
            if framed is not None and not ended:
                data, more = framed
                ended = not more
                self.write((chunk(data) if data else b"") + (b"" if more else b"0\r\n\r\n"))
                waiting = self.drain()
                if waiting is not None:
                    await waiting

        try:
            await self.listener.relay.app(req.scope, cycle.receive, send)
        except Exception:
            logger.exception("the SDK app failed on a relayed call's questions")
        finally:
            self.served(ended and req.keep_alive)

    def _cycle(self, req: _Req) -> AsgiCycle:
        self.gone = self.loop.create_future()
        if self.transport is None or self.transport.is_closing():
            self.gone.set_result(None)
        return AsgiCycle(self, b"".join(req.body), http10=req.http10, head=req.head,
                         keep_alive=req.keep_alive, gone=self.gone)

    def served(self, keep: bool) -> None:
        """The head of the queue was answered: close, or go on with the next request."""
        self.task = self.call = None
        if self.queue:
            self.queue.popleft()
        if not keep or self.transport is None or self.transport.is_closing():
            self.closed = True
            self.queue.clear()
            if self.transport is not None:
                self.transport.close()
            return
        if not self.reading and len(self.queue) <= self.limits.max_queued and not self.closed:
            self.reading = True
            self.transport.resume_reading()
        if self.queue:
            self._next()
        elif not self._in_message:
            self._arm(self.limits.keep_alive)

    # ---------------------------------------------------------------- output, timers

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def drain(self) -> asyncio.Future[None] | None:
        drain = self._drain
        return drain if drain is not None and not drain.done() else None

    def _write_refusal(self, status: int) -> None:
        if status == 413:
            body = jsonrpc_error(WireError(INVALID_REQUEST, "Invalid Request: message larger "
                                           f"than {self.limits.max_body_bytes} bytes"))
            kind = b"application/json"
        else:
            body, kind = _STATUS_TEXT.get(status, b"Bad Request"), b"text/plain; charset=utf-8"
        self.write(b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
                    b"connection: close\r\n\r\n%b" % (status, _STATUS_TEXT.get(status, b""),
                                                      kind, len(body), body))

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.transport is None or self.closed:
            return
        if self._in_message:
            logger.debug("closing a connection whose request did not arrive in time")
            self._refuse(408)  # after the answer in progress, if any
            return
        self.closed = True  # idle: only armed while nothing is being served
        self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
