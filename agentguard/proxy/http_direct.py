"""The listener's direct route: a complete ``POST /mcp`` relayed without ASGI.

:class:`DirectRelay` parses the body as the ASGI stack's checks do, asks the relay
(:class:`~agentguard.proxy.http_relay.HttpRelay`: the SDK's own inbound checks, the
one may-skip-the-guard rule, the session book for a handshake-era session, the plan) whether
it carries the call, and sends it on the upstream's lane from the parser's callback.
:class:`Relayed` writes the answer from the upstream's callback — no task, no ASGI message —
as the relay shapes it through ASGI: a 2026-07-28 call's JSON in one write, or an event
stream with pings once the upstream stays silent past the relay's window; a handshake-era
session's call gets the event stream (session head, one ``message`` event) the SDK's
stateful transport writes, and is noted in the book while in flight so the client's
``notifications/cancelled`` cancels it. A 2026-07-28 call to a handshake-era upstream is
relayed with a :class:`~agentguard.proxy.promote.Promotion` as its asker: should the upstream
ask mid-call, the promotion takes the call into the SDK route's ledger and answers the POST
with the ``InputRequiredResult`` (JSON, or the message event of a stream already pinging),
and :class:`Relayed` answers no more. A call the relay declines is served by the ASGI
app, body replayed; a result asking for input goes to the SDK's app as
:meth:`HttpRelay.offer` sends it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS

from agentguard.proxy.answers import read_answer
from agentguard.proxy.http_frames import TransportAnswer, stream_head
from agentguard.proxy.http_relay import CANCELLED
from agentguard.proxy.sessions import sse_head
from agentguard.proxy.wire import WireError, parse_value

if TYPE_CHECKING:
    from agentguard.proxy.http_connection import ClientConnection
    from agentguard.proxy.http_request import Request
    from agentguard.proxy.promote import Promotion

__all__ = ["DirectRelay", "Relayed"]

logger = logging.getLogger(__name__)

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class DirectRelay:
    """The relay's entry before ASGI: a complete ``POST /mcp`` planned, sent upstream and
    answered from the upstream's callback, no task, no ASGI message (:class:`Relayed`).

    Args:
        fast: The relay (:class:`~agentguard.proxy.http_relay.HttpRelay`): its
            checks, plan and answer shaping.
        app: The SDK's app, for an answer the relay began and the full path must finish.
        path: The MCP endpoint.
        max_depth: Deepest JSON accepted (as the ASGI stack's body checks).
    """

    def __init__(self, fast: Any, app: App, *, path: str = "/mcp", max_depth: int) -> None:
        self.fast = fast
        self.app = app
        self.path = path
        self._max_depth = max_depth
        self._heads: dict[str, bytes] = {}

    def session_head(self, session_id: str) -> bytes:
        """The head of a session's event-stream answer (built once per session)."""
        head = self._heads.get(session_id)
        if head is None:
            if len(self._heads) >= _HEADS_LIMIT:
                self._heads.clear()
            head = self._heads[session_id] = stream_head(sse_head(session_id))
        return head

    def relayed(self, conn: ClientConnection, req: Request) -> Relayed | None:
        """The relayed call for ``req``, or None when the relay does not take it (nothing
        was sent; the ASGI app gets the request, body replayed)."""
        body = b"".join(req.body)
        req.body = [body]
        try:
            value = parse_value(body, max_depth=self._max_depth)
        except WireError:
            return None  # the ASGI stack answers it with its own error
        if value is None:
            return None
        assert req.scope is not None
        plan = self.fast.plan(req.scope, value, promotes=True)
        if plan is None:
            return None
        if plan.session is not None:
            logger.debug("tools/call %r takes the listener's direct route (handshake-era "
                         "session)", plan.entry.exposed)
        return Relayed(self, conn, req, value, plan)


_HEADS_LIMIT = 1024
"""Session heads kept (cleared when full)."""


class Relayed:
    """One call on the relay, answered straight onto the connection: JSON in one write, or,
    once the upstream is silent past the relay's window, an event stream with pings (as
    :class:`~agentguard.proxy.http_frames.AsgiAnswer` frames it through ASGI).

    Args:
        relay: The direct relay that took the call.
        conn: The connection to answer on.
        req: The request, body complete.
        value: Its parsed JSON-RPC message.
        plan: The relay's plan for it (how to send it upstream, abandon it, shape its answer).
    """

    __slots__ = ("_answer", "_gone", "_key", "_promotion", "_starting", "_window", "conn",
                 "done", "plan", "relay", "req", "sent", "value")

    def __init__(self, relay: DirectRelay, conn: ClientConnection, req: Request, value: Any,
                 plan: Any) -> None:
        self.relay, self.conn, self.req, self.value, self.plan = relay, conn, req, value, plan
        self.sent: str | None = None
        self.done = False
        self._answer = TransportAnswer(
            conn.write, keep_alive=req.keep_alive,
            stream_head=None if plan.session is None else relay.session_head(plan.session))
        self._key: tuple[str, Any] | None = None
        self._starting = False
        self._window: float | None = None
        self._promotion: Promotion | None = None
        self._gone = False

    def begin(self) -> bool:
        """Send the call upstream; False when it could not be (nothing reached it)."""
        self._starting = True
        plan, fast = self.plan, self.relay.fast
        if plan.promotes:  # the upstream may ask mid-call: a round trip then (see .promote)
            self._promotion = fast.promotion(self.req.scope, plan, self.value["id"],
                                             self.value["params"], self._promoted,
                                             self._release)
        try:
            self.sent = plan.relay(self.value["params"], self.answered)
        except Exception:
            # Before anything reached the upstream (stamping the request): the full path
            # serves it, and reports whatever is wrong in its own words.
            logger.exception("cannot relay %r; taking the SDK route", plan.entry.exposed)
            self._drop()
            return False
        finally:
            self._starting = False
        if self._promotion is not None and self.sent is not None:
            lane = plan.upstream.lane
            if lane is not None:
                self._promotion.attach(lane, self.sent)
        if self.sent is None:
            self.answered(None)  # the lane is closed
        elif not self.done:
            if self.plan.session is not None:
                # As the ASGI route: the client may cancel it (None: its id is in flight).
                self._key = self.relay.fast.sessions.relaying(
                    self.plan.session, self.value["id"], self._cancelled)
            window = self.relay.fast.window
            if window is not None and window <= 0:
                self._answer.ping()  # no window: an event stream at once, whatever answers first
            elif window is not None:
                self._window = window
                self.conn.pings.arm(window)  # the connection calls tick() when it passes
        return True

    def answered(self, answer: dict[str, Any] | None) -> None:
        """The upstream's answer (None: its connection closed): write it, or hand the call
        to the full path when the result asks for input."""
        promotion = self._promotion
        if promotion is not None and promotion.trip is not None:
            promotion.settle(read_answer(answer))  # the round trip's now
            return
        if self.done:
            return
        if self._starting:  # answered inside begin(): finish once begin() has returned
            self.conn.loop.call_soon(self.answered, answer)
            return
        self._stop()
        self._drop()
        try:
            reply = self.relay.fast.reply(self.plan, self.value["id"], answer)
            if reply is None:  # input_required: the full path relays the questions
                self.conn.full_path(self.req, adopt=self._answer.streaming)
                return
            self._answer.finish(*reply)
        except Exception:  # called by the upstream's reader: fail this request, not it
            logger.exception("cannot answer a relayed call; closing its connection")
            self.conn.served(False)
            return
        self.conn.served(self.req.keep_alive)

    def hang_up(self) -> None:
        """The client is gone: abandon the upstream call (it is told it was cancelled), or,
        once promoted, leave the round trip to the promotion."""
        self._gone = True
        if not self.done:
            self._stop()
            self._drop()
            if self.sent is not None:
                self.plan.abandon(self.sent)
        elif self._promotion is not None:
            self._promotion.hang_up()

    def _cancelled(self) -> None:
        """The client cancelled the call (``notifications/cancelled`` in its session): answer
        as the SDK's stateful transport does, and abandon the upstream call."""
        if self.done:
            return
        sent = self.sent
        self.answered(CANCELLED)
        if sent is not None:
            self.plan.abandon(sent)

    def tick(self) -> None:
        """The upstream was silent for the window: ping, and wait another."""
        if self.done or self._window is None:
            return
        self._answer.ping()
        self.conn.pings.arm(self._window)

    def _release(self) -> bool:
        """The promotion takes the call (False: it was answered meanwhile)."""
        if self.done:
            return False
        self._stop()
        return True

    def _promoted(self, message: dict[str, Any]) -> None:
        """The promotion's answer to the POST: as the SDK's app writes a handler's result or
        error (JSON with the status of its error table, or the stream's message event)."""
        if self._gone:
            return
        error = message.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        status = ERROR_CODE_HTTP_STATUS.get(code, 200) if isinstance(code, int) else 200
        self._answer.finish(status, message)  # raises before writing if it cannot encode
        self.conn.served(self.req.keep_alive)

    def _drop(self) -> None:
        if self._promotion is not None:
            self.relay.fast.drop(self._promotion)

    def _stop(self) -> None:
        self.done = True
        if self._window is not None:
            self.conn.pings.disarm()
        if self._key is not None:
            self.relay.fast.sessions.relayed(self._key)
            self._key = None
