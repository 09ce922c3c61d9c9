"""The HTTP fast path at the connection: allowed calls answered from loop callbacks.

:class:`~agentguard.proxy.http_fastpath.HttpFastPath` answers an unconditionally allowed
2026-07-28 ``tools/call`` inside the ASGI stack, so every call still pays for uvicorn's
task, the middleware layers, ``receive`` and two ``send`` calls. Served by
:class:`~agentguard.proxy.http_protocol.FastHttpProtocol`, the same calls are taken once
their body is complete: the same checks (:meth:`HttpFastPath.plan`), the same relay and the
same answer (:meth:`HttpFastPath.reply`), written straight to the connection from the
upstream's answer callback. No task runs unless the answer needs the SDK app after all.

Anything the plan declines, and an answer that asks for input, runs the ASGI app as usual,
marked so the ASGI-level fast path does not look at it a second time.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

from agentguard.proxy.http_fastpath import HttpFastPath, Plan
from agentguard.proxy.http_frames import PING, SSE_HEADERS, Adoption, json_headers, sse_event
from agentguard.proxy.wire import WireError, encode, parse_value

__all__ = ["SKIP_FAST_PATH", "ConnectionFastPath", "Exchange"]

logger = logging.getLogger(__name__)

SKIP_FAST_PATH = "agentguard.skip_fast_path"
"""ASGI scope key: the connection-level fast path has already declined this request."""


class ConnectionFastPath:
    """Takes complete POST requests off a uvicorn connection when the fast path may answer.

    Args:
        fast: The checks, relay and answer shaping (shared with the ASGI-level path).
        sdk_app: The SDK's Streamable HTTP app, for an answer that turns into questions
            after its event stream has begun.
        path: The MCP endpoint path.
        max_message_bytes: Larger bodies are left to the ASGI stack (which refuses them).
        max_depth: JSON nesting limit, as for every other message.
    """

    def __init__(self, fast: HttpFastPath, sdk_app: Any, *, path: str, max_message_bytes: int,
                 max_depth: int) -> None:
        self.fast = fast
        self.sdk_app = sdk_app
        self.path = path
        self.max_message_bytes = max_message_bytes
        self.max_depth = max_depth

    def wants(self, scope: dict[str, Any]) -> bool:
        """Whether a request with this scope is worth holding until its body is complete."""
        return scope.get("method") == "POST" and scope.get("path") == self.path

    def take(self, connection: Any, cycle: Any) -> Exchange | None:
        """Start answering the complete request of ``cycle``; None leaves it to the app."""
        body = bytes(cycle.body)
        if len(body) > self.max_message_bytes:
            return None
        try:
            value = parse_value(body, max_depth=self.max_depth)
        except WireError:
            return None
        plan = self.fast.plan(cycle.scope, value)
        if plan is None:
            return None
        logger.debug("tools/call %r is answered at the connection", plan.entry.exposed)
        exchange = Exchange(self, connection, cycle, plan, value)
        try:
            exchange.start()
        except Exception:
            # Before anything reached the upstream (stamping the request): the full path
            # serves it, and reports whatever is wrong in its own words.
            logger.exception("cannot relay %r on the fast path; taking the full path",
                             plan.entry.exposed)
            exchange.done = True
            return None
        return exchange


class Exchange:
    """One relayed call: the answer, a ping on a timer, or the client hanging up."""

    def __init__(self, owner: ConnectionFastPath, connection: Any, cycle: Any, plan: Plan,
                 value: dict[str, Any]) -> None:
        self._owner = owner
        self._connection = connection
        self._cycle = cycle
        self._plan = plan
        self._value = value
        self._response = _RawResponse(cycle)
        self._sent: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.done = False

    def start(self) -> None:
        """Relay the call; the answer (or a ping, or the hang-up) comes in a callback."""
        self._sent = self._plan.relay(self._value["params"], self._answer)
        if self._sent is None:
            self._answer(None)
        elif not self.done:
            self._arm()

    def abandon(self) -> None:
        """The client hung up: stop waiting and cancel the upstream call."""
        if self.done:
            return
        self._close()
        if self._sent is not None:
            self._plan.abandon(self._sent)

    def _arm(self) -> None:
        window = self._owner.fast.window
        if window is not None:
            self._timer = asyncio.get_running_loop().call_later(window, self._tick)

    def _tick(self) -> None:
        if not self.done:
            self._response.ping()
            self._arm()

    def _close(self) -> None:
        self.done = True
        if self._timer is not None:
            self._timer.cancel()
        self._connection.exchange_done(self)

    def _answer(self, answer: dict[str, Any] | None) -> None:
        if self.done:
            return
        self._close()
        try:
            reply = self._owner.fast.reply(self._plan, self._value["id"], answer)
            if reply is not None:
                self._response.finish(*reply)
            elif not self._response.streaming:
                self._connection.run_app(self._cycle)  # questions: the full path asks them
            else:
                self._connection.spawn(self._adopt(), self._cycle)
        except Exception:
            logger.exception("the HTTP fast path failed to answer; closing the connection")
            self._cycle.transport.close()

    async def _adopt(self) -> None:
        cycle = self._cycle
        body = bytes(cycle.body)
        cycle.body = bytearray()
        cycle.message_event.clear()  # the app's later receive() waits for the hang-up
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await cycle.receive()

        await self._owner.sdk_app(cycle.scope, receive, self._response.adopt)


class _RawResponse:
    """An answer written straight to the connection, as uvicorn would frame it."""

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle
        self.streaming = False
        self._adoption = Adoption()

    def ping(self) -> None:
        if not self.streaming:
            self.streaming = True
            self._write(self._head(200, [*SSE_HEADERS, (b"transfer-encoding", b"chunked")]))
        self._write(_chunk(PING))

    def finish(self, status: int, body: dict[str, Any]) -> None:
        data = encode(body).rstrip(b"\n")
        if self.streaming:
            self._write(_chunk(sse_event(data)) + b"0\r\n\r\n")
        else:
            self._write(self._head(status, json_headers(len(data))) + data)
        self._complete()

    async def adopt(self, message: dict[str, Any]) -> None:
        """An ASGI ``send`` for the SDK app once the event stream has begun (see
        :class:`~agentguard.proxy.http_frames.Adoption`)."""
        framed = self._adoption.frame(message)
        if framed is None or self._cycle.response_complete:
            return
        chunk, more = framed
        self._write((_chunk(chunk) if chunk else b"") + (b"" if more else b"0\r\n\r\n"))
        if not more:
            self._complete()

    def _head(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        cycle = self._cycle
        cycle.response_started = True
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
        for name, value in (*cycle.default_headers, *headers):
            parts += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _write(self, data: bytes) -> None:
        if not self._cycle.disconnected:
            self._cycle.transport.write(data)

    def _complete(self) -> None:
        # What uvicorn's cycle does when the last body message is sent.
        cycle = self._cycle
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            cycle.transport.close()
        cycle.on_response()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)
