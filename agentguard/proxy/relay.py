"""The one rule that lets a ``tools/call`` skip the guard, and the relay routes that use it.

Two questions are asked of every ``tools/call``, in this order, and never mixed:

1. **Security — may it skip the guard?** :func:`may_skip_guard` is the only place that says
   yes: the tool's definition is pinned exactly as listed (pin state ``"pinned"``), and the
   policy allows every call to it whatever its arguments, principal and context, with no
   signal, no step-up, no rate-limited label, not in shadow mode and without audited allows
   (:meth:`~agentguard.guard.Guard.static_allow`). Anything else is decided by the guard.
2. **Routing — how does a call that may skip the guard travel?** :func:`relay_route` adds
   only conditions about carrying the call faithfully (the relay is switched on, the call
   is a plain one, the upstream's lane is up, its era and timeout suit the route). A call the
   relay declines still skips the guard on the SDK route, for the same reason — never by a
   second rule.

Routes of one ``tools/call`` (every route consults :func:`may_skip_guard`):

==========================  ==============================================  ===============
route                       entry point                                     guard
==========================  ==============================================  ===============
stdio relay                 ``stdio_relay.StdioRelay.offer`` (on the wire;  skipped if Skip
                            a 2026 client's call to a handshake-era
                            upstream that asks mid-call is promoted to a
                            ledger round trip: ``promote.Promotion``)
HTTP relay, direct          ``http_direct.DirectRelay`` (the listener, no   skipped if Skip
                            OAuth; both eras, a session's call only as the
                            book allows) → ``HttpRelay``
HTTP relay, in ASGI         ``asgi.HardenedASGI`` → ``HttpRelay`` (both     skipped if Skip
                            eras; after ``BearerAuth`` with OAuth)
SDK-server relay            ``handlers.Handlers.call_tool`` → lane          skipped if Skip
SDK forward                 ``calls.run_tool_call`` (pin re-read first)     skipped if Skip
full guard                  ``calls.run_tool_call`` → ``Guard``             consulted
==========================  ==============================================  ===============

A 2026-07-28 client's call to a handshake-era upstream is relayed on stdio and on the HTTP
listener's direct route (promoted as above should the upstream ask); in ASGI (with OAuth) it
takes the SDK route.

``--no-relay`` turns every relay route off (checked here, once); the SDK forward route
stays, so a ``--no-relay`` proxy makes the same security decisions through the SDK stacks —
the oracle the relay-vs-SDK equivalence tests compare with.

Every relay route sends on the upstream's lane through :class:`~agentguard.proxy.lane.Lane`
only, and every route (relay or SDK) shapes the upstream's answer with
:mod:`agentguard.proxy.answers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    encode_header_value,
    mcp_param_headers,
    x_mcp_header_map,
)
from mcp.types import LOG_LEVEL_META_KEY, PROTOCOL_VERSION_META_KEY, Tool

from agentguard.proxy.catalog import Entry
from agentguard.proxy.jsontypes import JsonObject, JsonValue
from agentguard.proxy.lane import Lane
from agentguard.types import ToolHints

if TYPE_CHECKING:
    from agentguard.proxy.core import ProxyCore
    from agentguard.proxy.upstream import Upstream

__all__ = [
    "RESERVED_META_PREFIX",
    "MustGuard",
    "RelayRoute",
    "Skip",
    "StaticPolicy",
    "may_skip_guard",
    "outgoing_call",
    "plain_call",
    "relay_route",
]

RESERVED_META_PREFIX = PROTOCOL_VERSION_META_KEY.rpartition("/")[0] + "/"
"""The ``_meta`` key prefix the protocol reserves (``io.modelcontextprotocol/``)."""

_PLAIN_CALL = frozenset({"name", "arguments", "_meta"})


class StaticPolicy(Protocol):
    """What the rule asks of the policy: a :class:`~agentguard.guard.Guard` or a
    :class:`~agentguard.policy.Policy` (``policy explain`` asks without a guard)."""

    def static_allow(self, server: str, tool: str, hints: ToolHints) -> bool: ...


@dataclass(frozen=True, slots=True)
class Skip:
    """Nothing about this call can change the guard's answer: it may run without it.

    Attributes:
        reason: Why that is safe (the pin and the policy's static allow).
    """

    reason: str
    kind: Literal["skip"] = "skip"


@dataclass(frozen=True, slots=True)
class MustGuard:
    """The guard decides this call.

    Attributes:
        reason: Why the guard cannot be skipped.
    """

    reason: str
    kind: Literal["guard"] = "guard"


def may_skip_guard(guard: StaticPolicy, entry: Entry[Tool]) -> Skip | MustGuard:
    """Whether a call to ``entry`` may skip the guard: the single rule, used by every route.

    Pure and synchronous (the relay asks from a read callback). A pin re-read from the store
    happens before, in the caller, which passes the refreshed entry.

    Args:
        guard: The proxy's guard, or a policy (it decides what is allowed statically).
        entry: The catalog entry of the tool, with its pin status and hints.

    Returns:
        :class:`Skip` with the reason it is safe, or :class:`MustGuard` with the reason not.
    """
    where = f"{entry.server}/{entry.name}"
    pin = entry.pin
    if pin is None:
        return MustGuard(f"{where}: no pin status for the definition")
    if pin.state != "pinned":
        what = "changed since it was pinned" if pin.state == "changed" else \
            "new since the server's tools were pinned"
        return MustGuard(f"{where}: definition {what}")
    hints = entry.hints
    if hints is None or hints.unpinned:
        return MustGuard(f"{where}: no hints from a pinned definition")
    if not guard.static_allow(entry.server, entry.name, hints):
        return MustGuard(f"{where}: the policy decides per call (a rule may read arguments, "
                         "principal, context or signals; or shadow mode, audited allows, "
                         "step-up, rate limits)")
    return Skip(f"{where}: static allow — the policy allows every call whatever its "
                f"arguments, principal and context, with no signal; definition pinned "
                f"{pin.hash[:12]}")


def plain_call(params: Mapping[str, JsonValue]) -> bool:
    """A call the relay carries byte for byte: only ``name``/``arguments``/``_meta``, object
    ``arguments`` and ``_meta``, no progress token (progress and multi-round state need the
    SDK route)."""
    if not params.keys() <= _PLAIN_CALL:
        return False
    meta = params.get("_meta")
    if meta is not None and (not isinstance(meta, dict) or "progressToken" in meta):
        return False
    arguments = params.get("arguments")
    return arguments is None or isinstance(arguments, dict)


@dataclass(frozen=True, slots=True)
class RelayRoute:
    """A call the relay carries: the guard is skipped for ``skip.reason``.

    Attributes:
        entry: The tool's catalog entry.
        upstream: The upstream serving it (its lane is up).
        skip: The security decision that allows skipping the guard.
        log_level: The client's ``logging/setLevel``, which a 2026-07-28 upstream reads from
            each request's ``_meta`` (None: the client set none).
    """

    entry: Entry[Tool]
    upstream: Upstream
    skip: Skip
    log_level: str | None = None


def relay_route(core: ProxyCore, name: str, params: Mapping[str, JsonValue], *, on_wire: bool,
                client_modern: bool, asks_reach_caller: bool = True,
                promotes: bool = False) -> RelayRoute | None:
    """How a ``tools/call`` to exposed ``name`` is relayed, or None for the SDK route.

    Args:
        core: The proxy core (catalog, upstreams, guard, whether the relay is on).
        name: The exposed tool name.
        params: The call's raw ``params`` as sent by the client.
        on_wire: True for the relays that answer from the transport, with no task of their
            own to run a timer: they need no ``request_timeout``. A handshake-era upstream's
            requests made mid-call go to the latest handshake-era client (``ProxyCore.ask``),
            which on stdio is the caller.
        client_modern: The client speaks 2026-07-28 (a handshake-era upstream's requests
            mid-call need a round trip, which only the SDK route's ledger can take).
        asks_reach_caller: A handshake-era upstream's requests mid-call reach the caller
            (False for the HTTP relay of a handshake-era session: ``ProxyCore.ask`` would
            send them to the latest session, perhaps another client's, so such upstreams
            take the SDK route, which pushes them on the caller's own stream).
        promotes: The route turns a 2026-07-28 client's relayed call into a round trip of
            the SDK route's ledger when a handshake-era upstream asks mid-call (the stdio
            relay and the HTTP listener's direct route, :mod:`agentguard.proxy.promote`);
            without it such calls take the SDK route.
    """
    if not core.relay_enabled or not plain_call(params):
        return None
    entry = core.catalog.tools.names.get(name)
    if entry is None:
        return None
    decision = may_skip_guard(core.guard, entry)
    if not isinstance(decision, Skip):
        return None
    upstream = core.upstreams[entry.server]
    lane: Lane | None = upstream.lane
    if lane is None or lane.closed or upstream.client is None:
        return None
    if on_wire and upstream.config.request_timeout is not None:
        return None
    if not upstream.modern and (not asks_reach_caller or (client_modern and not promotes)):
        return None
    if upstream.modern and lane.envelope is None:
        return None  # the lane has not seen the SDK stamp a request yet
    return RelayRoute(entry, upstream, decision, core.log_level)


def outgoing_call(route: RelayRoute, params: Mapping[str, JsonValue], *,
                  upstream_modern: bool | None = None
                  ) -> tuple[JsonObject, dict[str, str] | None]:
    """The ``params`` and HTTP headers the SDK client would send upstream for this call.

    The client's reserved ``_meta`` keys are replaced by the envelope the lane learned from
    the SDK's own requests; the headers are the SDK's per-request ones (version; in
    2026-07-28 also method, name and ``Mcp-Param-*``), built from the public helpers of
    ``mcp.shared.inbound`` and the tool's listed schema — None for a lane that sends no
    headers (:attr:`~agentguard.proxy.lane.Lane.carries_headers`: stdio), which need not be
    built. ``upstream_modern`` is the upstream's era when the caller already read it (read
    here otherwise).
    """
    entry, upstream = route.entry, route.upstream
    modern = upstream.modern if upstream_modern is None else upstream_modern
    out: JsonObject = dict(params)
    out["name"] = entry.name
    given = out.get("_meta")
    meta: JsonObject = {} if not isinstance(given, dict) else {
        k: v for k, v in given.items() if not k.startswith(RESERVED_META_PREFIX)}
    lane: Lane | None = upstream.lane
    envelope = lane.envelope if lane is not None and modern else None
    if envelope is not None:
        meta.update(envelope)
        if route.log_level is not None:
            # A 2026-07-28 upstream logs only for requests that ask (no logging/setLevel).
            meta[LOG_LEVEL_META_KEY] = route.log_level
    if meta:
        out["_meta"] = meta
    else:
        out.pop("_meta", None)
    if lane is not None and not lane.carries_headers:
        return out, None
    if envelope is not None:
        version = str(envelope[PROTOCOL_VERSION_META_KEY])
        headers = {MCP_PROTOCOL_VERSION_HEADER: version, MCP_METHOD_HEADER: "tools/call",
                   MCP_NAME_HEADER: _encoded_name(entry.name)}
        header_map = _header_map(entry.item)
        if header_map:  # (mcp_param_headers of an empty map is empty)
            arguments = out.get("arguments")
            headers.update(mcp_param_headers(header_map,
                                             arguments if isinstance(arguments, dict) else {}))
    else:
        client = upstream.client
        assert client is not None  # relay_route chose a connected upstream
        headers = {MCP_PROTOCOL_VERSION_HEADER: str(client.protocol_version)}
    return out, headers


_ENCODED_NAMES: dict[str, str] = {}


def _encoded_name(name: str) -> str:
    """``encode_header_value(name)`` (a pure function of the name), once per tool name."""
    encoded = _ENCODED_NAMES.get(name)
    if encoded is None:
        if len(_ENCODED_NAMES) > 4096:
            _ENCODED_NAMES.clear()
        encoded = _ENCODED_NAMES[name] = encode_header_value(name)
    return encoded


_HEADER_MAPS: dict[int, tuple[Tool, dict[tuple[str, ...], str]]] = {}


def _header_map(tool: Tool) -> dict[tuple[str, ...], str]:
    """``x_mcp_header_map`` of a listed tool, once per definition object."""
    cached = _HEADER_MAPS.get(id(tool))
    if cached is not None and cached[0] is tool:
        return cached[1]
    if len(_HEADER_MAPS) > 4096:
        _HEADER_MAPS.clear()
    found = x_mcp_header_map(tool.input_schema)
    _HEADER_MAPS[id(tool)] = (tool, found)  # holding the tool keeps its id unique
    return found
