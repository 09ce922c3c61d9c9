"""uvicorn's HTTP/1.1 protocol, with fixed-length answers in one write and the connection-level
fast path.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, and the body with the next message: two writes, two TCP segments
(``TCP_NODELAY``), and two wake-ups of the client for every JSON answer. For a response with
a ``Content-Length`` the head is held until the first body bytes and written with them. An
event stream (no length) is written as before: its head must reach the client at once.

:class:`FastHttpProtocol` also holds a ``POST`` to the MCP endpoint until its body is complete
and offers it to :class:`~agentguard.proxy.http_fastserve.ConnectionFastPath` before any ASGI
task starts for it. A request that path declines (or one that grows large, or expects
``100 Continue``) runs the ASGI app exactly as plain uvicorn would run it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, ClassVar

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from agentguard.proxy.http_fastserve import SKIP_FAST_PATH, ConnectionFastPath, Exchange

__all__ = ["CoalescingHttpToolsProtocol", "FastHttpProtocol", "fast_protocol"]

logger = logging.getLogger(__name__)

_HOLD_LIMIT = HIGH_WATER_LIMIT // 2
"""A held body past this size runs the app at once (uvicorn stops reading at the limit)."""


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol with fixed-length heads written with their body."""

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        shim = _HeadWithBody(cycle.transport)
        cycle.transport = shim  # type: ignore[assignment]
        done = cycle.on_response

        def on_response() -> None:
            shim.flush()  # a HEAD answer, or one with an empty body, has no body write
            done()

        cycle.on_response = on_response
        super()._start_asgi_task(cycle, app)


class FastHttpProtocol(CoalescingHttpToolsProtocol):
    """:class:`CoalescingHttpToolsProtocol` offering complete MCP POSTs to the fast path."""

    fast: ClassVar[ConnectionFastPath]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: tuple[RequestResponseCycle, Any] | None = None
        self._exchange: Exchange | None = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if SKIP_FAST_PATH in cycle.scope or not self.fast.wants(cycle.scope) or \
                cycle.waiting_for_100_continue:
            super()._start_asgi_task(cycle, app)
        elif cycle.more_body:
            self._held = (cycle, app)  # decided in on_message_complete
        else:
            self._decide(cycle, app)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        held = self._held
        if held is not None and held[0] is self.cycle and len(self.cycle.body) > _HOLD_LIMIT:
            self._held = None
            super()._start_asgi_task(*held)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        held = self._held
        if held is not None and held[0] is self.cycle:
            self._held = None
            self._decide(*held)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._held = None
        if self._exchange is not None:
            self._exchange.abandon()

    # ------------------------------------------------------------------ for Exchange

    def exchange_done(self, exchange: Exchange) -> None:
        if self._exchange is exchange:
            self._exchange = None

    def run_app(self, cycle: RequestResponseCycle) -> None:
        """Run the ASGI app for a request the fast path started on but cannot finish."""
        self._run(cycle, self.app)

    def spawn(self, work: Coroutine[Any, Any, None], cycle: RequestResponseCycle) -> None:
        """Run ``work`` (answering ``cycle``) as a task the server waits for on shutdown."""

        async def guarded() -> None:
            try:
                await work
            except Exception:
                logger.exception("the SDK app failed to continue a fast-path answer")
            finally:
                if not cycle.response_complete:
                    cycle.transport.close()

        task = self.loop.create_task(guarded())
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    # ------------------------------------------------------------------ internals

    def _decide(self, cycle: RequestResponseCycle, app: Any) -> None:
        if cycle.disconnected:
            return
        exchange = self.fast.take(self, cycle)
        if exchange is None:
            self._run(cycle, app)
        elif not exchange.done:
            self._exchange = exchange

    def _run(self, cycle: RequestResponseCycle, app: Any) -> None:
        cycle.scope[SKIP_FAST_PATH] = True  # type: ignore[literal-required]
        super()._start_asgi_task(cycle, app)


def fast_protocol(fast: ConnectionFastPath) -> type[FastHttpProtocol]:
    """A :class:`FastHttpProtocol` class bound to ``fast``, for ``uvicorn.Config(http=...)``."""
    return type("BoundFastHttpProtocol", (FastHttpProtocol,), {"fast": fast})


class _HeadWithBody:
    """The parts of a transport a uvicorn response cycle uses, holding a fixed-length head."""

    __slots__ = ("_held", "_seen_head", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._seen_head = False

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif not self._seen_head and data.startswith(b"HTTP/1.1 ") and \
                not data.startswith(b"HTTP/1.1 100 "):
            self._seen_head = True
            if b"\r\ncontent-length: " in data:
                self._held = data
                return
        self._transport.write(data)

    def flush(self) -> None:
        if self._held is not None:
            data, self._held = self._held, None
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)
