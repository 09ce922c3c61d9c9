"""One client connection of the ``--listen`` listener: parse, queue, answer in order.

:class:`ClientConnection` feeds the bytes to httptools, queues the requests it completes
(:mod:`agentguard.proxy.http_request` checks their heads), and serves the head of the queue:
a ``POST /mcp`` the relay takes is answered from the upstream's callback
(:mod:`agentguard.proxy.http_direct`), anything else by the ASGI app in a task
(:mod:`agentguard.proxy.asgi_bridge`). One request is served at a time; reading pauses while
:attr:`~agentguard.proxy.http_request.Limits.max_queued` pipelined requests, or bodies over
:attr:`~agentguard.proxy.http_request.Limits.max_body_bytes` in all, wait (so a connection
holds about two bodies' worth, plus what one socket read brought, whatever it pipelines). A
refusal is answered in its turn, after what was queued before it, and closes the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from agentguard.proxy.asgi_bridge import RELAY_DECLINED, AsgiCycle, run_app
from agentguard.proxy.http_frames import Adoption, chunk
from agentguard.proxy.http_request import Refused, Request, refusal, request_from_head
from agentguard.proxy.http_timer import LazyTimer

if TYPE_CHECKING:
    from agentguard.proxy.http_direct import Relayed
    from agentguard.proxy.http_listener import Listener

__all__ = ["ClientConnection"]

logger = logging.getLogger(__name__)

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ClientConnection(asyncio.Protocol):
    """One client connection of a :class:`~agentguard.proxy.http_listener.Listener`.

    Args:
        listener: The listener that accepted it (its app, relay, limits, open connections).

    Attributes:
        loop: The event loop serving it.
        task: The ASGI app serving the head of the queue, if it is.
        call: The relayed call answering the head of the queue, if it is.
        pings: The ping window of :attr:`call` (see
            :class:`~agentguard.proxy.http_direct.Relayed`).
    """

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.limits = listener.limits
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[Request] = deque()
        self.task: asyncio.Task[None] | None = None
        self.call: Relayed | None = None
        self.gone: asyncio.Future[None] | None = None
        self.closed = False  # no more requests: stop parsing, close after the queue
        self.reading = True
        self._drain: asyncio.Future[None] | None = None
        self._timer = LazyTimer(self.loop, self._expired)
        self.pings = LazyTimer(self.loop, self._ping)
        self._max_head_bytes = self.limits.max_head_bytes
        self._max_headers = self.limits.max_headers
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._in_message = False
        self._refusal = 0
        self.peer: tuple[str, int] | None = None
        self.sock: tuple[str, int] | None = None

    # ---------------------------------------------------------------- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register with the listener, or refuse ``503`` when it is full."""
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        if not self.listener.admit(self):
            self.closed = True
            self.write(refusal(503, self.limits))
            transport.close()
            return
        peer, sock = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
        self.peer = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self.sock = (str(sock[0]), int(sock[1])) if isinstance(sock, tuple) else None
        self._arm(self.limits.read_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        """The client is gone: end what is served for it (a relayed call is abandoned)."""
        self.closed = True
        self.listener.conns.discard(self)
        self._timer.close()
        self.pings.close()
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
        """The transport's buffer is full: :meth:`drain` makes writers wait."""
        if self._drain is None or self._drain.done():
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        """The transport's buffer drained: waiting writers go on."""
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; a request it completes is queued, a malformed one refused."""
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
        if self._in_message and not self._timer.armed:
            # Armed once per request, when it did not arrive whole: the allowance is for
            # all of it, so a slow drip cannot extend it.
            self._arm(self.limits.read_timeout)

    # ------------------------------------------------ httptools callbacks (parser events)

    def on_message_begin(self) -> None:
        self._url, self._headers, self._head_bytes = b"", [], 0
        self._in_message = True
        self._timer.disarm()  # the keep-alive wait ended

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        headers = self._headers
        if self._head_bytes > self._max_head_bytes or len(headers) >= self._max_headers:
            raise self._stop(431)
        headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        try:
            req = request_from_head(self.parser, self._url, self._headers, limits=self.limits,
                                    peer=self.peer, sock=self.sock,
                                    trusted=self.listener.trusted)
        except Refused as exc:
            raise self._stop(exc.status) from None
        self.queue.append(req)
        if len(self.queue) == 1 and req.expect:
            self.write(_CONTINUE)
            req.expect = False

    def on_body(self, body: bytes) -> None:
        req = self.queue[-1]
        req.size += len(body)
        if req.size > self.limits.max_body_bytes:
            raise self._stop(413)
        req.body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._timer.disarm()
        self.queue[-1].complete = True
        if self.reading and self.transport and self._read_ahead_full():
            self.reading = False
            self.transport.pause_reading()
        self._next()

    def _read_ahead_full(self) -> bool:
        """Whether the queue holds enough: reading pauses until it is served down."""
        return len(self.queue) > self.limits.max_queued or \
            sum(req.size for req in self.queue) > self.limits.max_body_bytes

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_head_bytes:
            raise self._stop(431)

    def _stop(self, status: int) -> Refused:
        """Remember why the parse stops; raised from a callback, it aborts ``feed_data``."""
        self._refusal = status
        return Refused(status)

    # ---------------------------------------------------------------- serving

    def _refuse(self, status: int) -> None:
        """Answer ``status`` in turn (after what is queued before it), then close."""
        self.closed = True
        self._in_message = False
        self._timer.disarm()
        if self.queue and not self.queue[-1].complete:
            self.queue.pop()  # the request being read is the one refused
        self.queue.append(Request(None, refusal=status))
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
                self.write(_CONTINUE)
            return
        if req.refusal:
            self.write(refusal(req.refusal, self.limits))
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

    def full_path(self, req: Request, *, adopt: bool) -> None:
        """A relayed call the SDK's app must finish: served afresh (nothing was written), or
        its answer adopted into the event stream the relay began."""
        self.call = None
        if not adopt and req.scope is not None:
            req.scope[RELAY_DECLINED] = True  # relayed once already: the SDK's way now
        self.task = self.loop.create_task(self._adopt(req) if adopt else self._serve(req))

    async def _serve(self, req: Request) -> None:
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

    async def _adopt(self, req: Request) -> None:
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

    def _cycle(self, req: Request) -> AsgiCycle:
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
        if not self.reading and not self.closed and not self._read_ahead_full():
            self.reading = True
            self.transport.resume_reading()
        if self.queue:
            self._next()
        elif not self._in_message:
            self._arm(self.limits.keep_alive)

    # ---------------------------------------------------------------- output, timers

    def write(self, data: bytes) -> None:
        """Queue bytes on the transport (nothing once the client is gone)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def drain(self) -> asyncio.Future[None] | None:
        """A future while the transport's buffer is over its high-water mark, else None."""
        drain = self._drain
        return drain if drain is not None and not drain.done() else None

    def _arm(self, seconds: float) -> None:
        self._timer.arm(seconds)

    def _ping(self) -> None:
        if self.call is not None:
            self.call.tick()

    def _expired(self) -> None:
        if self.transport is None or self.closed:
            return
        if self._in_message:
            logger.debug("closing a connection whose request did not arrive in time")
            self._refuse(408)  # after the answer in progress, if any
            return
        self.closed = True  # idle: only armed while nothing is being served
        self.transport.close()

    def abort(self) -> None:
        """Close the connection now (the listener is closing)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()
