"""The relay of the Streamable HTTP proxy: allowed calls of both protocol eras.

The stdio relay (:mod:`agentguard.proxy.stdio_relay`) has an HTTP twin here. A call the
policy allows whatever its arguments can be answered without the SDK's server stack:

- a 2026-07-28 ``tools/call`` POST is self-contained (no session). It is checked with the
  SDK's *own* inbound checks (content type and DNS-rebinding protection, ``Accept``,
  duplicated routing headers, the envelope/header ladder, ``Mcp-Param-*`` headers against
  the advertised schema, the request's shape for its protocol version), relayed on the
  upstream's lane, and the answer written as the SDK would write it: JSON with the
  status its error table gives, or, when the upstream stays silent past
  :data:`PING_INTERVAL`, an event stream with keep-alive pings;
- a handshake-era ``tools/call`` POST names a session (``Mcp-Session-Id``). It is relayed
  only for a session the SDK created and the client finished initializing, requested with
  the credential that created it and the version it negotiated, after the checks the SDK's
  stateful transport applies (:mod:`agentguard.proxy.sessions`); the answer is the event
  stream the SDK's app writes, its one ``message`` event carrying the answer.

A request any check would refuse is not answered here: the SDK's app sees it and produces
its usual error. Held calls, progress tokens and anything else take the full path too.
Authentication (``BearerAuth``) sits outside and applies either way.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from mcp.server.streamable_http import REQUEST_CANCELLED
from mcp.server.streamable_http_manager import DEFAULT_SESSION_IDLE_TIMEOUT
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.inbound import (
    X_MCP_HEADER_KEY,
    InboundModernRoute,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from agentguard.proxy.answers import read_answer, shape
from agentguard.proxy.http_frames import AsgiAnswer, compact, json_headers, sse_event
from agentguard.proxy.promote import Promotion
from agentguard.proxy.relay import RelayRoute, outgoing_call, relay_route
from agentguard.proxy.sessions import (
    SessionBook,
    call_shape_passes,
    handshake_version,
    sse_head,
    transport_checks_pass,
    with_sse_head,
)

if TYPE_CHECKING:
    from mcp.types import Tool

    from agentguard.proxy.catalog import Entry
    from agentguard.proxy.upstream import Upstream

__all__ = ["CANCELLED", "PING_INTERVAL", "HttpRelay", "Plan"]

logger = logging.getLogger(__name__)

PING_INTERVAL = 15.0
"""Seconds of upstream silence before a relayed answer becomes an event stream, and between
its keep-alive pings. Our own setting (the SDK keeps its window private); 15 s matches what the
SDK's app does today, so both routes answer alike, and stays well under common client
idle-read timeouts."""


class HttpRelay:
    """Answers unconditionally allowed ``tools/call`` POSTs itself, in both eras.

    Args:
        core: The proxy core (catalog, upstreams, guard).
        server_info: The proxy's ``serverInfo`` stamp.
        security: The transport security settings the SDK app was built with.
        path: The MCP endpoint path.
        json_response: Whether the SDK app answers in JSON mode (then no ``text/event-stream``
            is needed in ``Accept``, and a slow answer is never streamed).
        ping_interval: Seconds of upstream silence before the answer becomes an event stream,
            and between its keep-alive pings (the SDK's value by default).
        session_idle_timeout: The SDK app's ``session_idle_timeout`` (its default here).

    Attributes:
        sessions: The handshake-era sessions of the SDK app; the stack in front of the app
            feeds it every request the app serves (:meth:`SessionBook.watch`).
    """

    def __init__(self, core: Any, server_info: Callable[[], dict[str, Any]],
                 security: TransportSecuritySettings | None, *, path: str = "/mcp",
                 json_response: bool = False, ping_interval: float = PING_INTERVAL,
                 session_idle_timeout: float | None = DEFAULT_SESSION_IDLE_TIMEOUT) -> None:
        self.sessions = SessionBook(session_idle_timeout, path=path)
        self._core = core
        self._server_info = server_info
        self._security = TransportSecurityMiddleware(security)
        self._path = path
        self._json_response = json_response
        self._ping_interval = ping_interval
        self._declares: dict[int, tuple[Any, bool]] = {}
        self._passed: dict[tuple[Any, ...], str] = {}

    async def offer(self, scope: dict[str, Any], value: Any, receive: Any, send: Any,
                    fallback: Callable[[Any], Awaitable[None]]) -> bool:
        """Answer the parsed POST body ``value`` if it qualifies; True when answered.

        False leaves the request (body unread by anyone else) to the SDK app. ``fallback``
        runs the SDK app with a given ``send``, for an answer that turns out to need it.
        """
        plan = self.plan(scope, value)
        if plan is None:
            if isinstance(value, dict) and value.get("method") == "notifications/cancelled":
                self.sessions.cancel(scope, value)  # and the SDK's app answers it as usual
            return False
        if plan.session is not None:
            send = with_sse_head(send, plan.session)
        stream = AsgiAnswer(send)
        answer = await self._relay(plan, value["params"], receive, stream, value["id"])
        if answer is _DECLINED:
            return False
        if answer is _DISCONNECTED:
            return True  # nobody to answer; the upstream request was abandoned
        reply = self.reply(plan, value["id"], answer)
        if reply is None:
            # input_required: the full path relays the questions.
            if not stream.streaming:
                return False
            await fallback(stream.adopt)
            return True
        if plan.session is not None and not stream.streaming:
            status, head, data = self.framed(plan, *reply)
            await send({"type": "http.response.start", "status": status, "headers": head})
            # A stream, as the SDK sends it (its end comes apart: no Content-Length is set).
            await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return True
        await stream.finish(*reply)
        return True

    @staticmethod
    def framed(plan: Plan, status: int, body: dict[str, Any]
               ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """A complete answer (from :meth:`reply`) as the SDK's app writes it when it comes
        within the window: status, head and body. A 2026-07-28 answer is JSON; the SDK's
        stateful transport answers a session's request with an event stream at once."""
        data = compact(body)
        if plan.session is None:
            return status, json_headers(len(data)), data
        return 200, sse_head(plan.session), sse_event(data)

    def reply(self, plan: Plan, rid: Any, answer: dict[str, Any] | None
              ) -> tuple[int, dict[str, Any]] | None:
        """The HTTP status and JSON-RPC body for the upstream's ``answer`` (None: its
        connection closed), or None when the result asks for input (the full path's job)."""
        upstream = plan.upstream
        modern = plan.session is None
        shaped = shape(read_answer(answer), rid, server=upstream.name, version=plan.version,
                       modern=modern, upstream_modern=plan.upstream_modern,
                       server_info=self._server_info())  # the one answer shaper
        if shaped is not None and shaped.lost:
            upstream.lost(upstream.generation)
        if shaped is None:
            return None
        # The SDK's stateful transport carries every answer of a session in a 200 stream.
        return (shaped.status if modern else 200), shaped.message

    # ------------------------------------------------------------------ decision

    def plan(self, scope: dict[str, Any], value: Any, *, promotes: bool = False
             ) -> Plan | None:
        """How to relay the parsed POST body ``value``, or None if this path must not.

        ``promotes``: the caller relays a 2026-07-28 call to a handshake-era upstream with a
        :class:`~agentguard.proxy.promote.Promotion` as its asker (:meth:`promotion`; the
        listener's direct route); without it such calls take the SDK route.
        """
        if scope.get("path") != self._path or not isinstance(value, dict) or \
                value.get("method") != "tools/call" or value.get("jsonrpc") != "2.0" or \
                not _valid_id(value.get("id")):
            return None
        params = value.get("params")
        if not isinstance(params, dict) or not isinstance(params.get("name"), str):
            return None
        session = None if self._json_response else self.sessions.named(scope)
        version = self._checked_version(scope, value, params, session)
        if version is None:
            return None
        # A handshake-era upstream's requests mid-call could not reach this client's
        # stream from here (ProxyCore.ask would pick the latest session): the SDK route.
        route = relay_route(self._core, params["name"], params, on_wire=True,
                            client_modern=session is None, asks_reach_caller=session is None,
                            promotes=promotes and session is None)
        if route is None:
            return None
        if session is None and not route.upstream.modern:
            ledger = self._core.ledger
            if ledger is None or ledger.full():
                return None  # a promotion could not open: the SDK route refuses the call
        entry = route.entry
        if session is not None:
            logger.debug("tools/call %r is relayed on HTTP (handshake-era session)",
                         entry.exposed)
            return Plan(route, version, route.upstream.modern, session[0])
        schema = entry.item.input_schema
        if self._declares_headers(schema) and validate_mcp_param_headers(
                schema, params.get("arguments") or {}, _first_copies(scope.get("headers", ()))):
            return None
        plan = Plan(route, version, route.upstream.modern)
        if plan.promotes:
            logger.debug("tools/call %r is relayed on HTTP (handshake-era upstream, promoted "
                         "should it ask)", entry.exposed)
        else:
            logger.debug("tools/call %r is relayed on HTTP", entry.exposed)
        return plan

    def _checked_version(self, scope: dict[str, Any], value: dict[str, Any],
                         params: dict[str, Any], session: tuple[str, str] | None = None
                         ) -> str | None:
        """The protocol version when the SDK's inbound checks pass the request, else None.

        Their outcome is a function of the headers (but ``Content-Length``), the parameter
        names, the tool name, the ``_meta`` envelope and the type of ``arguments`` (whose
        contents they accept whatever they are): a client sends the same ones call after
        call, so a pass is remembered under exactly those (a refusal never is).
        """
        try:
            meta = orjson.dumps(params.get("_meta"))
        except orjson.JSONEncodeError:
            meta = None  # not exactly representable: check it every time
        key = None
        raw = scope.get("headers", ())
        if meta is not None:
            key = (tuple([h for h in raw if h[0] != b"content-length"]), tuple(params),
                   params["name"], meta, type(params.get("arguments")), tuple(value),
                   session)
            version = self._passed.get(key)
            if version is not None:
                return version
        version = self._check(scope, value, params) if session is None else \
            handshake_version(scope, value, params, session[1], self._security)
        if version is not None and key is not None:
            if len(self._passed) >= _PASSED_LIMIT:
                self._passed.clear()
            self._passed[key] = version
        return version

    def _check(self, scope: dict[str, Any], value: dict[str, Any], params: dict[str, Any]
               ) -> str | None:
        raw = scope.get("headers", ())
        pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
        headers = _first_copies(raw)
        version = headers.get("mcp-protocol-version")
        if version not in MODERN_PROTOCOL_VERSIONS:
            return None
        if not transport_checks_pass(self._security, scope, needs_sse=not self._json_response):
            return None
        if find_duplicated_routing_header(pairs) is not None:
            return None
        if not isinstance(classify_inbound_request(value, headers=headers), InboundModernRoute):
            return None
        return version if call_shape_passes(version, params) else None

    def _declares_headers(self, schema: Any) -> bool:
        """Whether ``schema`` can declare ``Mcp-Param-*`` headers at all (cached per schema).

        Without an ``x-mcp-header`` key anywhere, header validation has nothing to compare
        (and the SDK's walk over the schema is the costliest check of the relay).
        """
        if schema is None:
            return False
        cached = self._declares.get(id(schema))
        if cached is not None and cached[0] is schema:
            return cached[1]
        if len(self._declares) > 4096:
            self._declares.clear()
        declares = X_MCP_HEADER_KEY in json.dumps(schema, default=str)
        self._declares[id(schema)] = (schema, declares)  # holding it keeps the id unique
        return declares

    def promotion(self, scope: dict[str, Any], plan: Plan, rid: Any, params: dict[str, Any],
                  reply: Callable[[dict[str, Any]], None], release: Callable[[], bool]
                  ) -> Promotion:
        """The asker of a relayed call whose plan :attr:`~Plan.promotes`, pushed as the
        call's asker (drop it with :meth:`drop`); its round trip is bound as the SDK route
        binds the POST's (to its ``Mcp-Session-Id`` header, if any, as ``call_info`` reads
        it)."""
        session = _first_copies(scope.get("headers", ())).get("mcp-session-id")
        promotion = Promotion(self._core, plan.upstream, rid, params, plan.version,
                              self._server_info(), reply, release, session)
        self._core.push_asker(plan.upstream.name, promotion)
        return promotion

    def drop(self, promotion: Promotion) -> None:
        """Stop routing the upstream's requests to ``promotion`` (its call was answered)."""
        self._core.drop_asker(promotion.server, promotion)

    # ------------------------------------------------------------------ relay

    async def _relay(self, plan: Plan, params: dict[str, Any], receive: Any,
                     stream: AsgiAnswer, rid: Any = None) -> Any:
        """The upstream's answer, ``None`` if its connection closed, ``_DISCONNECTED``, or
        ``_DECLINED`` (nothing was sent: the full path takes the call)."""
        waiter = _Waiter(asyncio.get_running_loop())
        try:
            sent = plan.relay(params, waiter.answer)
        except Exception:
            # Before anything reached the upstream (stamping the request): the full path
            # serves it, and reports whatever is wrong in its own words.
            logger.exception("cannot relay %r; taking the SDK route",
                             plan.entry.exposed)
            return _DECLINED
        if sent is None:
            return None
        # Like the SDK: answer in JSON if the upstream answers within the deferral window,
        # else commit to an event stream and ping so idle-read timeouts do not cut it.
        key = None
        if plan.session is not None:
            def cancel() -> None:
                waiter.answer(CANCELLED)  # as the SDK's stateful transport answers
                plan.abandon(sent)

            key = self.sessions.relaying(plan.session, rid, cancel)
        try:
            return await waiter.wait(receive, stream, self.window)
        finally:
            if key is not None:
                self.sessions.relayed(key)
            if not waiter.answered:  # hung up, or cancelled: abandon the upstream call
                plan.abandon(sent)
            waiter.close()

    @property
    def window(self) -> float | None:
        """Seconds before a silent upstream's answer becomes an event stream (None: never)."""
        return None if self._json_response else self._ping_interval


@dataclass(slots=True)
class Plan:
    """A ``tools/call`` the relay carries: the catalog entry, its upstream, the version,
    whether the upstream spoke 2026-07-28 when it was planned (the era its answer is shaped
    from), and the handshake-era session it was sent in (None: 2026-07-28)."""

    route: RelayRoute
    version: str
    upstream_modern: bool
    session: str | None = None

    @property
    def entry(self) -> Entry[Tool]:
        return self.route.entry

    @property
    def upstream(self) -> Upstream:
        return self.route.upstream

    @property
    def promotes(self) -> bool:
        """A 2026-07-28 call to a handshake-era upstream: promoted if the upstream asks."""
        return self.session is None and not self.upstream_modern

    def relay(self, params: dict[str, Any], on_answer: Callable[[Any], None]) -> str | None:
        """Send the call on the upstream's lane; ``on_answer`` gets the answer (a dict,
        or None if the connection closed). Returns the lane's id, None if it is closed."""
        lane = self.upstream.lane
        if lane is None:
            return None
        out, headers = outgoing_call(self.route, params, upstream_modern=self.upstream_modern)
        return lane.start("tools/call", out, headers, on_answer)

    def abandon(self, sent: str) -> None:
        """Drop a relayed call nobody waits for (the upstream is told it was cancelled)."""
        if self.upstream.lane is not None:
            self.upstream.lane.forget(sent)


class _Waiter:
    """Waits for a relayed call's answer, a client hang-up, or the next ping, on timers.

    A task watching for the hang-up starts only once the answer is slow in coming (most
    answers arrive first), so the common case costs one future and two timer handles.
    """

    _WATCH_AFTER = 0.05

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._wake: asyncio.Future[None] = loop.create_future()
        self._box: list[Any] = []
        self._gone = False
        self._ping = False
        self._timers: list[asyncio.TimerHandle] = []
        self._watcher: asyncio.Task[None] | None = None

    @property
    def answered(self) -> bool:
        return bool(self._box)

    def answer(self, value: dict[str, Any] | None) -> None:
        if not self._box:
            self._box.append(value)
            self._poke()

    async def wait(self, receive: Any, stream: AsgiAnswer, window: float | None) -> Any:
        self._timers.append(self._loop.call_later(self._WATCH_AFTER, self._watch, receive))
        if window is not None and window <= 0:
            self._ping = True  # no window: an event stream at once, whatever answers first
        elif window is not None:
            self._timers.append(self._loop.call_later(window, self._tick))
        while True:
            if self._box:
                return self._box[0]
            if self._gone:
                return _DISCONNECTED
            if self._ping:
                self._ping = False
                await stream.ping()
                assert window is not None
                self._timers.append(self._loop.call_later(window, self._tick))
                continue
            await self._wake
            self._wake = self._loop.create_future()

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()

    def _poke(self) -> None:
        if not self._wake.done():
            self._wake.set_result(None)

    def _tick(self) -> None:
        self._ping = True
        self._poke()

    def _watch(self, receive: Any) -> None:
        self._watcher = self._loop.create_task(_disconnected(receive))
        self._watcher.add_done_callback(self._hung_up)

    def _hung_up(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled():
            self._gone = True
            self._poke()


_PASSED_LIMIT = 1024
"""Remembered passes of the inbound checks (cleared when full)."""


def _first_copies(raw: Any) -> dict[str, str]:
    """Headers by name, the first copy of a repeated one (as Starlette reads them for the SDK)."""
    headers: dict[str, str] = {}
    for name, text in raw:
        headers.setdefault(name.decode("latin-1"), text.decode("latin-1"))
    return headers


_DISCONNECTED = object()
_DECLINED = object()
CANCELLED = {"error": {"code": REQUEST_CANCELLED, "message": "Request cancelled"}}
"""The upstream answer a relayed call of a session gets when its client cancels it (what the
SDK's stateful transport answers a cancelled request)."""


def _valid_id(rid: Any) -> bool:
    return isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool))


async def _disconnected(receive: Any) -> None:
    while (await receive()).get("type") != "http.disconnect":
        pass
