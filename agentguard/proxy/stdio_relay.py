"""The stdio relay: answer a ``tools/call`` that may skip the guard without two SDK stacks.

A proxy built from the SDK's server and client runs every message through both, which more
than doubles the cost of a call compared with talking to the upstream directly. For a call
the guard may skip (:func:`agentguard.proxy.relay.may_skip_guard`, the one rule), without a
progress token or multi-round state (:func:`agentguard.proxy.relay.relay_route`), there is
nothing to decide per call: the request is relayed to the upstream under a proxy-owned id
(with the envelope the lane learned from the SDK client's own requests, and the SDK's
per-request headers), and the answer is relayed back, shaped for the client's protocol era.
Both eras are relayed, a 2026-07-28 client in front of a handshake-era upstream too: its
upstream's requests mid-call need a round trip, so such a call is relayed with a
:class:`~agentguard.proxy.promote.Promotion` as its asker, which hands it to the SDK route's
ledger if (and only if) the upstream asks. Everything else — held calls, progress, an
``input_required`` answer (handed to the SDK route), a retry with ``requestState``, other
methods — takes the SDK route.

The upstream side is the upstream's lane (:class:`~agentguard.proxy.lane.Lane`: raw stdio,
or the SDK's HTTP transport with relayed calls on raw HTTP/1.1); this module is the
downstream side, sitting in the hardened stdio transport (:mod:`agentguard.proxy.wire`),
which has already parsed and checked the line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
from mcp.shared.message import SessionMessage
from mcp.types import (
    INTERNAL_ERROR,
    PROTOCOL_VERSION_META_KEY,
    REQUEST_TIMEOUT,
    JSONRPCResponse,
)
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from agentguard.proxy.answers import (
    INVALID_RESULT,
    Lost,
    RpcError,
    UpstreamAnswer,
    error_object,
    read_answer,
    shape,
    timed_out,
)
from agentguard.proxy.jsontypes import JsonObject, RequestId
from agentguard.proxy.lane import Lane
from agentguard.proxy.promote import Promotion
from agentguard.proxy.relay import RelayRoute, outgoing_call, relay_route
from agentguard.proxy.wire import encode

if TYPE_CHECKING:
    from agentguard.proxy.core import ProxyCore

__all__ = ["StdioRelay", "relay_allowed"]

logger = logging.getLogger(__name__)


Reply = Callable[[bytes], None]
"""Writes one line to the client at once (no await)."""
Fallback = Callable[[JsonObject], Awaitable[None]]
"""Hands a message to the SDK server after all."""
Spawn = Callable[[Fallback, JsonObject], None]
"""Starts ``fallback(value)`` as a task."""


async def relay_allowed(route: RelayRoute, params: JsonObject) -> UpstreamAnswer:
    """Relay a call that may skip the guard on the upstream's lane (the SDK-server relay).

    The upstream's ``request_timeout`` applies, answered in the SDK client's words.
    Cancelling the caller cancels the call upstream.
    """
    upstream = route.upstream
    lane: Lane | None = upstream.lane
    if lane is None:
        return Lost()  # the lane closed after the route was chosen
    out, headers = outgoing_call(route, params)
    answered = anyio.Event()
    box: list[JsonObject | None] = []

    def done(answer: JsonObject | None) -> None:
        box.append(answer)
        answered.set()

    sent = lane.start("tools/call", out, headers, done)
    if sent is None:
        return Lost()
    try:
        with anyio.fail_after(upstream.config.request_timeout):
            await answered.wait()
    except BaseException as exc:
        lane.forget(sent)  # the upstream is told; a late answer is dropped
        if isinstance(exc, TimeoutError):
            return RpcError(error_object(REQUEST_TIMEOUT, timed_out("tools/call")))
        raise
    return read_answer(box[0])


class _Plan:
    __slots__ = ("modern", "route", "upstream_modern", "version")

    def __init__(self, route: RelayRoute, version: str, modern: bool) -> None:
        self.route = route
        self.version = version
        self.modern = modern
        self.upstream_modern = route.upstream.modern


class StdioRelay:
    """Decides, per downstream stdio message, whether the relay answers it.

    A relayed call costs two event-loop wake-ups in the proxy, and one read and one write
    each: the request is parsed, offered and written to the upstream from the readiness
    callback of the client's pipe (:attr:`~agentguard.proxy.fdio.FdReader.intercept`), and
    the answer is written to the client from that of the upstream's pipe (the lane's
    ``start`` callback), with no task in between. Calls in flight share those: every request
    of one read is relayed from its callback with one write to the upstream, every answer of
    one read with one write to the client (:mod:`agentguard.proxy.fdio` batches the writes).

    Args:
        core: The proxy core (catalog, upstreams, guard).
        server_info: The proxy's ``serverInfo`` stamp for 2026-07-28 results.
    """

    def __init__(self, core: ProxyCore, server_info: Callable[[], JsonObject]) -> None:
        self._core = core
        self._server_info = server_info
        self._legacy_version: str | None = None
        self._initialized = False
        self._inflight: dict[RequestId, tuple[Lane, str, Promotion | None]] = {}
        self._debug = logger.isEnabledFor(logging.DEBUG)  # read once: off the hot path

    # ------------------------------------------------------------------ wire hooks

    def outgoing(self, message: SessionMessage) -> None:
        """Watch the proxy's answers: learn the handshake version the client negotiated."""
        msg = message.message
        if self._legacy_version is None and isinstance(msg, JSONRPCResponse):
            version = msg.result.get("protocolVersion")
            if isinstance(version, str) and "serverInfo" in msg.result:
                self._legacy_version = version

    def offer(self, value: JsonObject, reply: Reply, spawn: Spawn, fallback: Fallback) -> bool:
        """Take ``value`` if the relay carries it; True when it was taken."""
        method = value.get("method")
        if "id" not in value:
            if method == "notifications/initialized":
                self._initialized = True
            elif method == "notifications/cancelled":
                params = value.get("params")
                rid = params.get("requestId") if isinstance(params, dict) else None
                entry = self._inflight.pop(rid, None) if isinstance(rid, str | int) else None
                if entry is not None:
                    entry[0].forget(entry[1])  # a cancelled request gets no answer
                    if entry[2] is not None:
                        self._core.drop_asker(entry[2].server, entry[2])
                    return True
            return False
        if method != "tools/call" or value.get("jsonrpc") != "2.0":
            return False
        plan = self._plan(value)
        if plan is None:
            return False
        route = plan.route
        upstream = route.upstream
        params = value["params"]
        assert isinstance(params, dict)  # _plan checked it
        try:
            out, headers = outgoing_call(route, params)
        except Exception:
            logger.debug("cannot build a relayed request; taking the SDK route", exc_info=True)
            return False
        rid = value["id"]
        assert isinstance(rid, str | int)  # the stdio transport checked it
        lane = upstream.lane
        if lane is None:
            return False  # the lane closed after the route was chosen: the SDK route
        promotion: Promotion | None = None
        if plan.modern and not plan.upstream_modern:
            # The upstream may ask mid-call: a round trip then (see .promote).
            promotion = Promotion(self._core, upstream, rid, params, plan.version,
                                  self._server_info(), lambda message: reply(encode(message)),
                                  lambda: self._inflight.pop(rid, None) is not None,
                                  self._core.session_id)

        def answered(answer: JsonObject | None) -> None:
            if promotion is not None and promotion.trip is not None:
                promotion.settle(read_answer(answer))  # the round trip's now
                return
            if self._inflight.pop(rid, None) is None:
                return  # cancelled meanwhile
            if promotion is not None:
                self._core.drop_asker(promotion.server, promotion)
            self._answered(value, plan, read_answer(answer), reply, spawn, fallback)

        self._inflight[rid] = (lane, "", promotion)
        if promotion is not None:
            self._core.push_asker(upstream.name, promotion)
        sent = lane.start("tools/call", out, headers, answered)
        if sent is None:
            self._inflight.pop(rid, None)
            if promotion is not None:
                self._core.drop_asker(upstream.name, promotion)
            return False
        if promotion is not None:
            promotion.attach(lane, sent)
        if rid in self._inflight:
            self._inflight[rid] = (lane, sent, promotion)
        if self._debug:
            logger.debug("relayed tools/call %s to %r on the wire", params.get("name"),
                         upstream.name)
        return True

    # ------------------------------------------------------------------ decision

    def _plan(self, value: JsonObject) -> _Plan | None:
        params = value.get("params")
        if not isinstance(params, dict) or not isinstance(params.get("name"), str):
            return None
        rid = value["id"]
        if not isinstance(rid, str | int) or rid in self._inflight:
            return None  # a reused id: let the server deal with it
        meta = params.get("_meta")
        version = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, dict) else None
        if version is not None:
            if not isinstance(version, str) or version not in MODERN_PROTOCOL_VERSIONS or \
                    self._legacy_version is not None:
                return None
            down_version, modern = version, True
        elif self._legacy_version is not None and self._initialized:
            down_version, modern = self._legacy_version, False
        else:
            return None
        name = params["name"]
        assert isinstance(name, str)
        route = relay_route(self._core, name, params, on_wire=True, client_modern=modern,
                            promotes=True)
        if route is None:
            return None
        if modern and not route.upstream.modern:
            ledger = self._core.ledger
            if ledger is None or ledger.full():
                return None  # a promotion could not open: the SDK route refuses the call
        return _Plan(route, down_version, modern)

    # ------------------------------------------------------------------ answers

    def _answered(self, value: JsonObject, plan: _Plan, answer: UpstreamAnswer, reply: Reply,
                  spawn: Spawn, fallback: Fallback) -> None:
        upstream = plan.route.upstream
        rid = value["id"]
        assert isinstance(rid, str | int)
        shaped = shape(answer, rid, server=upstream.name, version=plan.version,
                       modern=plan.modern, upstream_modern=plan.upstream_modern,
                       server_info=self._server_info())
        if shaped is None:
            spawn(fallback, value)  # input_required: the SDK route relays the questions
            return
        if shaped.lost:
            upstream.lost(upstream.generation)
        try:
            line = encode(shaped.message)
        except ValueError:  # a result the client's JSON cannot carry (NaN beside a bignum)
            logger.exception("upstream %r returned an invalid tools/call result", upstream.name)
            line = encode({"jsonrpc": "2.0", "id": rid,
                           "error": error_object(INTERNAL_ERROR, INVALID_RESULT)})
        reply(line)
