"""Carrying upstream notifications to downstream clients of both eras.

Handshake-era clients get notifications pushed on their connection's standalone channel;
the registry keeps the latest ``ServerSession`` of each connection for that (stdio has one
connection; stateful Streamable HTTP has one per ``Mcp-Session-Id``). 2026-07-28 clients
receive change notifications only on ``subscriptions/listen`` streams, which the SDK's
:class:`~mcp.server.subscriptions.ListenHandler` serves from the proxy's subscription bus.

Resource subscriptions are reference-counted per URI across both kinds of subscriber, so
the upstream is subscribed while anybody downstream wants updates. They are bound to the
session that made them: a listen stream's end with the stream, a handshake-era session's when
the session ends — deleted by its client (``DELETE``, seen by :meth:`Notifier.watch_sessions`
in the ASGI stack, as the SDK gives a handler no signal of a session's end), or found gone when
a notification cannot be sent to it. Nothing of an ended session is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler
from mcp.shared.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)
from mcp.types import (
    LoggingMessageNotificationParams,
    NotificationParams,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
)
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from agentguard.proxy.askers import RequestContext

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Notifier", "http_session_key", "session_key"]

logger = logging.getLogger(__name__)

Subscribe = Callable[[str], Awaitable[None]]


def session_key(ctx: RequestContext) -> str | None:
    """Which downstream connection a request belongs to (None when it has no identity)."""
    request = ctx.request
    if request is None:
        return "stdio"
    return http_session_key(request.headers.get("mcp-session-id"))


def http_session_key(session_id: str | None) -> str | None:
    """The key of a Streamable HTTP session (None without an ``Mcp-Session-Id``)."""
    return f"http:{session_id}" if session_id else None


class Notifier:
    """Downstream sessions, listen streams and resource subscriptions.

    Args:
        subscribe: Called with a URI when its first downstream subscriber arrives.
        unsubscribe: Called with a URI when its last subscriber leaves.
    """

    def __init__(self, subscribe: Subscribe, unsubscribe: Subscribe) -> None:
        self.bus = InMemorySubscriptionBus()
        self._listen = ListenHandler(self.bus)
        self._sessions: dict[str, ServerSession] = {}
        self._subscribers: dict[str, set[str]] = {}
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self._listen_ids = 0
        #: List kinds whose changes handshake-era clients are told of (as the upstreams
        #: declare ``listChanged``); 2026 listen streams get every event they asked for.
        self.announce: set[str] = {"tools", "prompts", "resources"}
        #: Set once a handshake-era client has finished its handshake: an upstream's own
        #: requests (``roots/list`` during its start) wait for it instead of failing.
        self.client_ready = anyio.Event()

    # ------------------------------------------------------------------ sessions

    def seen(self, ctx: RequestContext) -> None:
        """Remember a handshake-era connection so notifications can reach it."""
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return
        key = session_key(ctx)
        if key is not None:
            self._sessions[key] = ctx.session

    async def initialized(self, ctx: RequestContext, params: NotificationParams | None) -> None:
        """``notifications/initialized``: this client can now be asked (roots, sampling...)."""
        self.seen(ctx)
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            self.client_ready.set()

    async def wait_for_client(self, timeout: float) -> ServerSession | None:
        """The latest handshake-era session, waiting (bounded) for a first client."""
        if self.latest_session() is None:
            with anyio.move_on_after(timeout):
                await self.client_ready.wait()
        return self.latest_session()

    def latest_session(self) -> ServerSession | None:
        """The most recently active handshake-era session, if any."""
        return next(reversed(self._sessions.values()), None) if self._sessions else None

    async def _push(self, send: Callable[[ServerSession], Awaitable[None]],
                    keys: set[str] | None = None) -> None:
        for key, session in list(self._sessions.items()):
            if keys is not None and key not in keys:
                continue
            try:
                await send(session)
            except Exception as exc:  # a connection that went away
                logger.info("dropping downstream session %s: %s", key, exc)
                await self.session_ended(key)

    async def session_ended(self, key: str) -> None:
        """The downstream session ``key`` ended: forget it and drop its subscriptions (the
        upstream is unsubscribed from URIs nobody else wants)."""
        self._sessions.pop(key, None)
        for uri in [u for u, holders in self._subscribers.items() if key in holders]:
            try:
                await self.remove_subscriber(uri, key)
            except Exception:
                logger.debug("unsubscribe of %s failed", uri, exc_info=True)

    def session_count(self) -> int:
        """How many handshake-era sessions notifications are pushed to."""
        return len(self._sessions)

    def subscriber_count(self, uri: str | None = None) -> int:
        """How many downstream subscriptions are held (to ``uri``, or to any URI)."""
        if uri is not None:
            return len(self._subscribers.get(uri, ()))
        return sum(len(holders) for holders in self._subscribers.values())

    def watch_sessions(self, app: ASGIApp) -> ASGIApp:
        """``app`` (the SDK's Streamable HTTP app), telling this notifier when a client
        deletes its session: a ``DELETE`` carrying ``Mcp-Session-Id`` that the app accepts.

        Only an accepted ``DELETE`` counts: a ``404`` is also what another credential's
        request for a live session gets, so it cannot end anybody's session here.
        """
        async def watched(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["method"] != "DELETE":
                await app(scope, receive, send)
                return
            sid = next((v.decode("latin-1") for k, v in scope["headers"]
                        if k == b"mcp-session-id"), None)
            status = 0

            async def watch(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            await app(scope, receive, watch)
            key = http_session_key(sid)
            if key is not None and 200 <= status < 300:
                await self.session_ended(key)

        return watched

    # ------------------------------------------------------------------ events

    async def list_changed(self, kind: str, *, sent_upstream: bool = False) -> None:
        """Tell every client that the tool, prompt or resource list changed.

        Args:
            kind: ``tools``, ``prompts`` or ``resources``.
            sent_upstream: An upstream sent this notification itself: handshake-era clients
                get it whatever the upstream declared, as they would direct (an SDK server
                sends it without declaring ``listChanged``). A change the proxy noticed on its
                own reaches them only where the upstreams declared it.
        """
        event: ServerEvent
        push = sent_upstream or kind in self.announce
        if kind == "tools":
            event = ToolsListChanged()
            if push:
                await self._push(lambda s: s.send_tool_list_changed())
        elif kind == "prompts":
            event = PromptsListChanged()
            if push:
                await self._push(lambda s: s.send_prompt_list_changed())
        else:
            event = ResourcesListChanged()
            if push:
                await self._push(lambda s: s.send_resource_list_changed())
        await self.bus.publish(event)

    async def log(self, params: LoggingMessageNotificationParams) -> None:
        """An upstream's ``notifications/message``, to every handshake-era client (the level
        each asked for was forwarded upstream, which filters)."""
        await self._push(lambda s: s.send_log_message(params.level, params.data,
                                                      params.logger))

    async def resource_updated(self, uri: str) -> None:
        """Tell the subscribers of ``uri`` that it changed."""
        holders = self._subscribers.get(uri, set())
        await self._push(lambda s: s.send_resource_updated(uri),
                         {k for k in holders if not k.startswith("listen:")})
        await self.bus.publish(ResourceUpdated(uri=uri))

    # ------------------------------------------------------------------ subscriptions

    async def add_subscriber(self, uri: str, key: str) -> None:
        """``key`` wants updates of ``uri`` (subscribes upstream on the first one)."""
        holders = self._subscribers.setdefault(uri, set())
        first = not holders
        holders.add(key)
        if first:
            await self._subscribe(uri)

    async def remove_subscriber(self, uri: str, key: str) -> None:
        """``key`` no longer wants updates of ``uri`` (unsubscribes upstream on the last)."""
        holders = self._subscribers.get(uri)
        if not holders or key not in holders:
            return
        holders.discard(key)
        if not holders:
            del self._subscribers[uri]
            await self._unsubscribe(uri)

    def subscribed(self) -> list[str]:
        """URIs somebody downstream subscribes to."""
        return sorted(self._subscribers)

    async def listen(self, ctx: RequestContext,
                     params: SubscriptionsListenRequestParams) -> SubscriptionsListenResult:
        """Serve a 2026 ``subscriptions/listen`` stream, subscribing its URIs upstream."""
        self._listen_ids += 1
        key = f"listen:{self._listen_ids}"
        uris = list(params.notifications.resource_subscriptions or [])
        try:
            for uri in uris:
                await self.add_subscriber(uri, key)
            return await self._listen(ctx, params)
        finally:
            # The stream ends by cancellation when the client goes away: clean up shielded.
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                for uri in uris:
                    try:
                        await self.remove_subscriber(uri, key)
                    except Exception:
                        logger.debug("unsubscribe of %s failed", uri, exc_info=True)
