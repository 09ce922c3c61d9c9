"""The stdio relay: answer a ``tools/call`` that may skip the guard without two SDK stacks.

A proxy built from the SDK's server and client runs every message through both, which more
than doubles the cost of a call compared with talking to the upstream directly. For a call
the guard may skip (:func:`agentguard.proxy.relay.may_skip_guard`, the one rule), without a
progress token or multi-round state (:func:`agentguard.proxy.relay.relay_route`), there is
nothing to decide per call: the request is relayed to the upstream under a proxy-owned id
(with the envelope the lane learned from the SDK client's own requests, and the SDK's
per-request headers), and the answer is relayed back, shaped for the client's protocol era.
Both eras are relayed; a 2026-07-28 client in front of a handshake-era upstream is not (its
upstream's requests mid-call need a round trip, which the SDK route's ledger takes).
Everything else — held calls, elicitation, progress, an ``input_required`` answer (handed to
the SDK route), other methods — takes the SDK route.

The upstream side is the upstream's lane (:class:`~agentguard.proxy.lane.Lane`: raw stdio,
or the SDK's HTTP transport with relayed calls on raw HTTP/1.1); this module is the
downstream side, sitting in the hardened stdio transport (:mod:`agentguard.proxy.wire`),
which has already parsed and checked the line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp.shared.message import SessionMessage
from mcp.types import (
    INTERNAL_ERROR,
    PROTOCOL_VERSION_META_KEY,
    REQUEST_TIMEOUT,
    SERVER_INFO_META_KEY,
    JSONRPCResponse,
)
from mcp.types import methods as wire_methods
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from agentguard.proxy.relay import RelayRoute, outgoing_call, relay_route
from agentguard.proxy.wire import encode

__all__ = ["StdioRelay", "relay_allowed", "shape_result"]

logger = logging.getLogger(__name__)


Reply = Callable[[bytes], None]
Fallback = Callable[[dict[str, Any]], Awaitable[None]]


def _error(rid: Any, code: int, message: str, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return encode({"jsonrpc": "2.0", "id": rid, "error": error})


async def relay_allowed(route: RelayRoute, params: dict[str, Any]) -> dict[str, Any] | None:
    """Relay a call that may skip the guard on the upstream's lane.

    Returns the JSON-RPC answer as a dict (``result`` with the upstream's ``serverInfo``
    stamp removed, or ``error``), ``{}`` when the upstream wants input (take the full
    path), or None when the connection closed. Cancelling the caller cancels upstream.
    """
    upstream = route.upstream
    lane = upstream.lane
    if lane is None:
        return None  # the lane closed after the route was chosen
    out, headers = outgoing_call(route, params)
    sent, wait = await lane.begin("tools/call", out, headers)
    timeout = upstream.config.request_timeout
    try:
        with anyio.fail_after(timeout):
            answer = await wait()
    except BaseException as exc:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await lane.cancel(sent)
        if isinstance(exc, TimeoutError):
            return {"error": {"code": REQUEST_TIMEOUT, "message": (
                f"upstream server {upstream.name!r} did not answer within {timeout:g}s")}}
        raise
    if answer is None or "error" in answer:
        return answer
    result = answer.get("result")
    if not isinstance(result, dict) or result.get("resultType", "complete") != "complete":
        return {}
    return {"result": _unstamped(result)}


class StdioRelay:
    """Decides, per downstream stdio message, whether the relay answers it.

    A relayed call costs two event-loop wake-ups in the proxy: the request is written to the
    upstream from the read loop that parsed it, and the answer is written to the client from
    the read loop that received it (the lane's ``start`` callbacks), with no task between.

    Args:
        core: The proxy core (catalog, upstreams, guard).
        server_info: The proxy's ``serverInfo`` stamp for 2026-07-28 results.
    """

    def __init__(self, core: Any, server_info: Callable[[], dict[str, Any]]) -> None:
        self._core = core
        self._server_info = server_info
        self._legacy_version: str | None = None
        self._initialized = False
        self._inflight: dict[Any, tuple[Any, str]] = {}

    # ------------------------------------------------------------------ wire hooks

    def outgoing(self, message: SessionMessage) -> None:
        """Watch the proxy's answers: learn the handshake version the client negotiated."""
        msg = message.message
        if self._legacy_version is None and isinstance(msg, JSONRPCResponse):
            version = msg.result.get("protocolVersion")
            if isinstance(version, str) and "serverInfo" in msg.result:
                self._legacy_version = version

    def offer(self, value: dict[str, Any], reply: Reply, spawn: Callable[..., None],
              fallback: Fallback) -> bool:
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
                    return True
            return False
        if method != "tools/call" or value.get("jsonrpc") != "2.0":
            return False
        plan = self._plan(value)
        if plan is None:
            return False
        route = plan[0]
        upstream = route.upstream
        try:
            params, headers = outgoing_call(route, value["params"])
        except Exception:
            logger.debug("cannot build a relayed request; taking the SDK route", exc_info=True)
            return False
        rid = value["id"]

        def answered(answer: dict[str, Any] | None) -> None:
            if self._inflight.pop(rid, None) is None:
                return  # cancelled meanwhile
            self._answered(value, plan, answer, reply, spawn, fallback)

        lane = upstream.lane
        if lane is None:
            return False  # the lane closed after the route was chosen: the SDK route
        self._inflight[rid] = (lane, "")
        sent = lane.start("tools/call", params, headers, answered)
        if sent is None:
            self._inflight.pop(rid, None)
            return False
        if rid in self._inflight:
            self._inflight[rid] = (upstream.lane, sent)
        return True

    # ------------------------------------------------------------------ decision

    def _plan(self, value: dict[str, Any]) -> tuple[RelayRoute, str, bool] | None:
        params = value.get("params")
        if not isinstance(params, dict) or not isinstance(params.get("name"), str):
            return None
        if value["id"] in self._inflight:
            return None  # a reused id: let the server deal with it
        meta = params.get("_meta")
        version = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, dict) else None
        if version is not None:
            if version not in MODERN_PROTOCOL_VERSIONS or self._legacy_version is not None:
                return None
            down_version, modern = version, True
        elif self._legacy_version is not None and self._initialized:
            down_version, modern = self._legacy_version, False
        else:
            return None
        route = relay_route(self._core, params["name"], params, on_wire=True,
                            client_modern=modern)
        if route is None:
            return None
        return route, down_version, modern

    # ------------------------------------------------------------------ answers

    def _answered(self, value: dict[str, Any], plan: tuple[RelayRoute, str, bool],
                  answer: dict[str, Any] | None, reply: Reply, spawn: Callable[..., None],
                  fallback: Fallback) -> None:
        route, down_version, modern = plan
        upstream = route.upstream
        rid = value["id"]
        if answer is None:
            upstream.lost(upstream.generation)
            reply(_error(rid, INTERNAL_ERROR, (
                f"upstream server {upstream.name!r} closed the connection during the request "
                "(it is being restarted); the request may or may not have taken effect")))
            return
        if "error" in answer:
            error = answer["error"] if isinstance(answer["error"], dict) else {}
            reply(encode({"jsonrpc": "2.0", "id": rid, "error": error}))
            return
        result = answer.get("result")
        if not isinstance(result, dict) or result.get("resultType", "complete") != "complete":
            spawn(fallback, value)  # input_required: the SDK route relays the questions
            return
        try:
            shaped = shape_result(result, down_version, modern=modern,
                                  upstream_modern=upstream.modern,
                                  server_info=self._server_info())
            line = encode({"jsonrpc": "2.0", "id": rid, "result": shaped})
        except Exception:
            logger.exception("upstream %r returned an invalid tools/call result", upstream.name)
            line = _error(rid, INTERNAL_ERROR, "Handler returned an invalid result")
        reply(line)


def shape_result(result: dict[str, Any], version: str, *, modern: bool, upstream_modern: bool,
                 server_info: dict[str, Any]) -> dict[str, Any]:
    """An upstream ``tools/call`` result made to fit the downstream's era, as the proxy's.

    The upstream's ``serverInfo`` stamp is removed; a 2026-07-28 downstream gets the proxy's.
    """
    result = _unstamped(result)
    if modern != upstream_modern:
        result = wire_methods.serialize_server_result("tools/call", version, result)
    if modern:
        result.setdefault("resultType", "complete")
        stamped = dict(result.get("_meta") or {})
        stamped[SERVER_INFO_META_KEY] = server_info
        result["_meta"] = stamped
    return result


def _unstamped(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` without the upstream's serverInfo stamp (the client talks to the proxy)."""
    meta = result.get("_meta")
    if isinstance(meta, dict) and SERVER_INFO_META_KEY in meta:
        rest = {k: v for k, v in meta.items() if k != SERVER_INFO_META_KEY}
        result = {k: v for k, v in result.items() if k != "_meta"}
        if rest:
            result["_meta"] = rest
    return result
