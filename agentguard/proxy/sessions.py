"""Handshake-era Streamable HTTP sessions, learnt from the wire (the relay's session book).

The SDK's session manager keeps its sessions to itself. The HTTP relay may answer a
handshake-era ``tools/call`` only for a session the SDK would serve, so it keeps a book of
them from what passes through the stack to the SDK's app — public traffic only:

- an ``initialize`` POST without a session, answered ``200`` with an ``Mcp-Session-Id``
  header and a handshake-era ``protocolVersion`` in its result, opens an entry (with the
  credential that created it, compared as the SDK compares it);
- ``notifications/initialized`` answered ``202`` for that session marks it ready;
- a ``DELETE`` for it, an ``initialize`` in it, or a ``404`` answered for it, each with its
  own credential, drops it;
- every other answer the SDK gives it (2xx) refreshes it: the SDK ends a session after
  ``session_idle_timeout`` with no request in flight, and relayed calls never reach the SDK,
  so an entry not refreshed within half that time is not relayed (the call then reaches the
  SDK, which refreshes both).

Every doubt makes the relay decline, and the SDK answers: a stale or missing entry can only
cost speed. A session the SDK ends on its own while fresh here (a crash of its server task,
the app shutting down) is the one case the book cannot see.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, check_accept_headers
from mcp.server.streamable_http_manager import DEFAULT_MAX_SESSIONS
from mcp.server.transport_security import TransportSecurityMiddleware
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.types import methods as wire_methods
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import Request

from agentguard.proxy.relay import RESERVED_META_PREFIX

__all__ = ["Session", "SessionBook", "call_shape_passes", "handshake_version", "owner_of",
           "sdk_checks_pass", "sse_head", "transport_checks_pass", "with_sse_head"]

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_SESSION = MCP_SESSION_ID_HEADER.encode()
_VERSION = MCP_PROTOCOL_VERSION_HEADER.lower().encode()
_INIT_ANSWER_LIMIT = 1 << 20
"""Bytes of an ``initialize`` answer read for its version (a larger one is not booked)."""


def owner_of(scope: MutableMapping[str, Any]) -> Any:
    """The credential a request carries, as the SDK's session manager compares it (None
    without authentication)."""
    user = scope.get("user")
    return authorization_context(user) if isinstance(user, AuthenticatedUser) else None


@dataclass(slots=True)
class Session:
    """One handshake-era session the SDK created.

    Attributes:
        version: The protocol version its ``initialize`` answer negotiated.
        owner: The credential that created it (``owner_of``), None without authentication.
        touched: When the SDK last answered a request for it (``time.monotonic``).
        ready: Its ``notifications/initialized`` was accepted.
    """

    version: str
    owner: Any
    touched: float
    ready: bool = False


class SessionBook:
    """The handshake-era sessions of the SDK app, as seen on the wire.

    Args:
        idle_timeout: The app's ``session_idle_timeout`` (None: sessions never idle out).
        limit: Most entries kept (the SDK's default session limit); beyond it new sessions
            are not booked, and so not relayed.
        clock: Monotonic seconds.
        path: The MCP endpoint path (requests elsewhere are not the SDK transport's).
    """

    def __init__(self, idle_timeout: float | None, *, limit: int = DEFAULT_MAX_SESSIONS,
                 clock: Callable[[], float] = time.monotonic, path: str = "/mcp") -> None:
        self._path = path
        self._fresh_for = None if idle_timeout is None else idle_timeout / 2
        self._limit = limit
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._relayed: dict[tuple[str, Any], Callable[[], None]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def relayable(self, session_id: str, owner: Any) -> str | None:
        """The session's protocol version if the relay may answer for it, else None: it is
        booked, ready, fresh and requested with the credential that created it."""
        entry = self._sessions.get(session_id)
        if entry is None or not entry.ready or entry.owner != owner:
            return None
        if self._fresh_for is not None and self._clock() - entry.touched >= self._fresh_for:
            return None
        return entry.version

    def named(self, scope: MutableMapping[str, Any]) -> tuple[str, str] | None:
        """The session a handshake-era request names and its version, when the relay may
        answer for it (:meth:`relayable`, with the request's credential)."""
        if not self._sessions:
            return None  # nothing is relayable (and most requests name no session)
        session_id, version_header = _routing(scope)
        if session_id is None or (version_header is not None and
                                  version_header not in HANDSHAKE_PROTOCOL_VERSIONS):
            return None  # no session, or the SDK serves it in the 2026-07-28 era
        version = self.relayable(session_id, owner_of(scope))
        return None if version is None else (session_id, version)

    def relaying(self, session_id: str, rid: Any, cancel: Callable[[], None]
                 ) -> tuple[str, Any] | None:
        """Note a call relayed in a session, ``cancel`` run if the client cancels it; the key
        to pass to :meth:`relayed`, or None when that id is already in flight there."""
        key = (session_id, rid)
        if key in self._relayed:
            return None
        self._relayed[key] = cancel
        return key

    def relayed(self, key: tuple[str, Any]) -> None:
        """The call noted under ``key`` is over."""
        self._relayed.pop(key, None)

    def cancel(self, scope: MutableMapping[str, Any], value: dict[str, Any]) -> None:
        """A handshake-era ``notifications/cancelled`` for a call relayed in its session: the
        SDK would cancel the handler (and so the upstream call) and answer ``Request
        cancelled``; the relay's ``cancel`` does the same."""
        params = value.get("params")
        session = self.named(scope) if self._relayed else None
        if session is None or "id" in value or not isinstance(params, dict):
            return
        try:
            wire_methods.validate_client_notification("notifications/cancelled", session[1],
                                                      params)
        except Exception:
            return  # the SDK drops a malformed one
        rid = params.get("requestId")
        if isinstance(rid, bool) or not isinstance(rid, str | int):
            return
        cancel = self._relayed.get((session[0], rid))
        if cancel is not None:
            cancel()

    def watch(self, scope: MutableMapping[str, Any], value: Any, send: Send) -> Send:
        """The ``send`` to give the SDK app for this request, watching its answer.

        Args:
            scope: The request's ASGI scope.
            value: The parsed POST body (None for other methods).
            send: The ASGI ``send`` the answer goes to.
        """
        if scope.get("path") != self._path:
            return send
        session_id, version_header = _routing(scope)
        if version_header is not None and version_header not in HANDSHAKE_PROTOCOL_VERSIONS:
            return send  # the SDK serves it in the 2026-07-28 era, outside any session
        method = scope.get("method")
        if session_id is None:
            if method == "POST" and isinstance(value, dict) and \
                    value.get("method") == "initialize" and "id" in value:
                return self._opening(owner_of(scope), send)
            return send
        owner = owner_of(scope)
        posted = value.get("method") if method == "POST" and isinstance(value, dict) else None
        if method == "DELETE" or posted == "initialize":
            # Ended, or negotiated again: whatever the SDK answers, the relay stops here.
            entry = self._sessions.get(session_id)
            if entry is not None and entry.owner == owner:
                del self._sessions[session_id]
            return send
        initialized = posted == "notifications/initialized" and "id" not in value
        return self._answered(session_id, owner, initialized, send)

    # ------------------------------------------------------------------ watchers

    def _opening(self, owner: Any, send: Send) -> Send:
        head: dict[str, Any] = {}
        body: list[bytes] = []
        size = 0

        async def watching(message: MutableMapping[str, Any]) -> None:
            nonlocal size
            kind = message.get("type")
            if kind == "http.response.start":
                head["status"] = message.get("status")
                head["headers"] = list(message.get("headers") or ())
            elif kind == "http.response.body" and size <= _INIT_ANSWER_LIMIT:
                chunk = message.get("body", b"")
                size += len(chunk)
                body.append(chunk)
                if not message.get("more_body", False):
                    self._opened(head, b"".join(body), owner)
            await send(message)

        return watching

    def _opened(self, head: dict[str, Any], body: bytes, owner: Any) -> None:
        if head.get("status") != 200 or len(body) > _INIT_ANSWER_LIMIT:
            return
        session_id = next((v.decode("latin-1") for k, v in head.get("headers", ())
                           if k.lower() == _SESSION), None)
        version = _negotiated(head.get("headers", ()), body)
        if session_id is None or version not in HANDSHAKE_PROTOCOL_VERSIONS:
            return
        if len(self._sessions) >= self._limit:
            self._forget_stale()
            if len(self._sessions) >= self._limit:
                return
        assert version is not None
        self._sessions[session_id] = Session(version, owner, self._clock())

    def _answered(self, session_id: str, owner: Any, initialized: bool, send: Send) -> Send:
        async def watching(message: MutableMapping[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                status = message.get("status")
                entry = self._sessions.get(session_id)
                if entry is not None and entry.owner == owner:
                    if status == 404:
                        del self._sessions[session_id]  # the SDK no longer knows it
                    elif isinstance(status, int) and 200 <= status < 300:
                        entry.touched = self._clock()
                        if initialized and status == 202:
                            entry.ready = True
            await send(message)

        return watching

    def _forget_stale(self) -> None:
        if self._fresh_for is None:
            return
        now = self._clock()
        for key in [k for k, s in self._sessions.items()
                    if now - s.touched >= 2 * self._fresh_for]:
            del self._sessions[key]  # idled out at the SDK too


def _routing(scope: MutableMapping[str, Any]) -> tuple[str | None, str | None]:
    """The first ``Mcp-Session-Id`` and ``Mcp-Protocol-Version`` (as the SDK reads them)."""
    session_id = version_header = None
    for name, raw in scope.get("headers", ()):
        if name == _SESSION and session_id is None:
            session_id = raw.decode("latin-1")
        elif name == _VERSION and version_header is None:
            version_header = raw.decode("latin-1")
    return session_id, version_header


def _negotiated(headers: Any, body: bytes) -> str | None:
    """``result.protocolVersion`` of an ``initialize`` answer (JSON, or its stream's event)."""
    kind = next((v for k, v in headers if k.lower() == b"content-type"), b"")
    texts = [body] if kind.startswith(b"application/json") else \
        [line[5:].strip() for line in body.splitlines() if line.startswith(b"data:")]
    for text in texts:
        try:
            message = json.loads(text)
        except ValueError:
            continue
        result = message.get("result") if isinstance(message, dict) else None
        if isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
            return str(result["protocolVersion"])
    return None


def sse_head(session_id: str) -> list[tuple[bytes, bytes]]:
    """The head of the event stream the SDK's stateful transport answers a request with."""
    return [(b"cache-control", b"no-cache, no-transform"), (b"connection", b"keep-alive"),
            (b"content-type", b"text/event-stream"), (_SESSION, session_id.encode("latin-1")),
            (b"x-accel-buffering", b"no")]


def with_sse_head(send: Send, session_id: str) -> Send:
    """``send`` with every response head replaced by the session's event-stream head."""
    head = sse_head(session_id)

    async def sending(message: MutableMapping[str, Any]) -> None:
        if message.get("type") == "http.response.start":
            message = {**message, "headers": head}
        await send(message)

    return sending


def handshake_version(scope: MutableMapping[str, Any], value: dict[str, Any],
                      params: dict[str, Any], version: str,
                      security: TransportSecurityMiddleware) -> str | None:
    """``version`` when the SDK's stateful transport would dispatch this ``tools/call`` of a
    session that negotiated ``version``, else None.

    The checks, in the SDK's order: the version header absent or the session's own (the SDK
    takes any handshake-era value; a different one is left to it), Content-Type and
    DNS-rebinding protection (``validate_request``), ``Accept`` (both types: the relay serves
    no ``json_response`` app), the transport's own Content-Type test, a plain JSON-RPC
    request, no 2026-07-28 envelope, and the request's shape at ``version``.
    """
    headers: dict[str, str] = {}
    for name, raw in scope.get("headers", ()):
        headers.setdefault(name.decode("latin-1"), raw.decode("latin-1"))
    if headers.get(MCP_PROTOCOL_VERSION_HEADER, version) != version:
        return None
    if not transport_checks_pass(security, scope, needs_sse=True):
        return None
    media = headers.get("content-type", "").split(";")[0].split(",")
    if "application/json" not in [m.strip() for m in media]:
        return None
    if not value.keys() <= _REQUEST_KEYS:
        return None
    meta = params.get("_meta")
    if isinstance(meta, dict) and any(str(k).startswith(RESERVED_META_PREFIX) for k in meta):
        return None
    return version if call_shape_passes(version, params) else None


def transport_checks_pass(security: TransportSecurityMiddleware,
                          scope: MutableMapping[str, Any], *, needs_sse: bool) -> bool:
    """The SDK transport's checks of a POST that both eras share, in its order: Content-Type
    and DNS-rebinding protection (:func:`sdk_checks_pass`), then ``Accept`` (JSON, and the
    event stream unless the app answers in JSON mode: ``needs_sse`` False)."""
    request = Request(scope)
    if not sdk_checks_pass(security, request):
        return False
    has_json, has_sse = check_accept_headers(request)
    return has_json and (has_sse or not needs_sse)


def call_shape_passes(version: str, params: Any) -> bool:
    """The last check of both eras: ``tools/call`` params of the shape ``version`` defines."""
    try:
        wire_methods.validate_client_request("tools/call", version, params)
    except Exception:
        return False
    return True


def sdk_checks_pass(security: TransportSecurityMiddleware, request: Request) -> bool:
    """The SDK's Content-Type and DNS-rebinding checks (``validate_request``) on a POST.

    ``validate_request`` is a coroutine that never suspends; the relay decides from a
    synchronous callback, so it is driven by hand. Should a later SDK make it suspend, the
    request is declined (the SDK's app then checks it itself): never a pass by default.
    """
    coro = security.validate_request(request, is_post=True)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value is None
    coro.close()
    return False


_REQUEST_KEYS = frozenset({"jsonrpc", "id", "method", "params"})
