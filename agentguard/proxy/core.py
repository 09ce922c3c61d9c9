"""The proxy's shared state: upstreams, the catalog, pins, notifications, open round trips.

:class:`ProxyCore` owns one task group for the life of the proxy: each upstream's supervisor,
the multi-round ledger's sweeper, and the background work of 2026 round trips run in it. It
implements :class:`~agentguard.proxy.upstream.UpstreamEvents`: a (re)connected upstream is
listed and checked against its pins, its notifications are carried downstream, and its
requests to the client (old-era upstreams) are routed to the client request that caused them
(an asker pushed while it is in flight: :meth:`ProxyCore.asking`, or
:meth:`ProxyCore.push_asker` for a call the stdio relay carries).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine, Iterator
from types import TracebackType
from typing import TypeVarTuple, Unpack

import anyio
import anyio.abc
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate
from mcp.types import (
    METHOD_NOT_FOUND,
    ErrorData,
    InputRequest,
    InputResponse,
    ListRootsRequest,
    LoggingMessageNotificationParams,
    PromptListChangedNotification,
    Resource,
    ResourceListChangedNotification,
    ResourceTemplate,
    ResourceUpdatedNotification,
    SubscribeRequest,
    SubscribeRequestParams,
    Tool,
    ToolListChangedNotification,
    UnsubscribeRequest,
    UnsubscribeRequestParams,
)
from mcp.types import EmptyResult as Empty

from agentguard.errors import ConfigError
from agentguard.guard import Guard
from agentguard.proxy.askers import Asker, result_type_for
from agentguard.proxy.catalog import Catalog
from agentguard.proxy.config import ProxyConfig
from agentguard.proxy.ledger import Ledger
from agentguard.proxy.notify import Notifier
from agentguard.proxy.pins import PinBook
from agentguard.proxy.schemas import SchemaBook
from agentguard.proxy.upstream import Upstream
from agentguard.types import Principal, new_request_id

__all__ = ["ProxyCore"]

logger = logging.getLogger(__name__)

Args = TypeVarTuple("Args")

CLIENT_WAIT = 30.0
"""Seconds an upstream's request waits for a first client to ask, before it fails."""
FIRST_ROOTS_ATTEMPT = 2.0
"""Seconds one ``roots/list`` asked at an upstream's start waits before it is asked again."""


class ProxyCore:
    """Everything the downstream handlers share.

    Args:
        config: The proxy configuration (upstreams, principal, limits).
        guard: The guard every tool call goes through (already configured).
        relay: Relay calls that may skip the guard without the SDK stacks (see
            :mod:`agentguard.proxy.relay`); off, every call takes the SDK route.
        client_era: Hold the ``auto`` upstreams' connections until :meth:`started` learns the
            client's era (the process of an early-started stdio upstream runs meanwhile).
    """

    def __init__(self, config: ProxyConfig, guard: Guard, *, relay: bool = True,
                 client_era: bool = False) -> None:
        if not config.servers:
            raise ConfigError("the proxy needs at least one upstream server")
        self.config = config
        self.guard = guard
        self.relay_enabled = relay
        self._client_era = client_era
        p = config.principal
        self.principal = Principal(id=p.id, kind=p.kind, claims=dict(p.claims))
        self.session_id = new_request_id()
        self.upstreams = {s.name: Upstream(s, self) for s in config.servers}
        self.catalog = Catalog({s.name: config.namespace_of(s) for s in config.servers})
        self.pins = PinBook(guard.store, guard.audit)
        self.schemas = SchemaBook()
        self.notifier = Notifier(self._subscribe, self._unsubscribe)
        self.ledger: Ledger | None = None
        #: The level a handshake-era client asked for with ``logging/setLevel``.
        self.log_level: str | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._locks: dict[str, anyio.Lock] = {name: anyio.Lock() for name in self.upstreams}
        self._askers: dict[str, list[Asker]] = {name: [] for name in self.upstreams}
        self.resources: dict[str, dict[str, Resource]] = {name: {} for name in self.upstreams}
        self.templates: dict[str, list[tuple[UriTemplate, ResourceTemplate]]] = {
            name: [] for name in self.upstreams}

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> ProxyCore:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self.ledger = Ledger(self._tg)
        self._tg.start_soon(self.ledger.sweep)
        for upstream in self.upstreams.values():
            if self._client_era and upstream.config.mode == "auto":
                upstream.hold()  # an explicit mode connects at once
            self._tg.start_soon(upstream.run)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        for upstream in self.upstreams.values():
            upstream.stop()
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(exc_type, exc, tb)

    async def started(self, timeout: float = 30.0, *, client_legacy: bool = False) -> None:
        """Connect the upstreams (held ones in their client's era) and wait for every
        upstream's first connection and listing.

        Args:
            timeout: How long to wait for each upstream's connection.
            client_legacy: The client speaks the handshake era: with ``client_era``, ``auto``
                upstreams connect in it (stdio has one client, whose era a matched upstream
                serves at less cost, and which the relay carries on the wire).

        Raises:
            ConfigError: no upstream came up, or two upstreams claim the same tool name.
        """
        async def connect(upstream: Upstream) -> None:
            try:
                await upstream.wait_connected(timeout)
            except MCPError as exc:
                logger.error("%s", exc.error.message)

        for upstream in self.upstreams.values():
            upstream.release(client_legacy)

        async def first(upstream: Upstream) -> None:
            try:
                await self.refresh_tools(upstream)
            except MCPError as exc:
                logger.error("%s", exc.error.message)

        async with anyio.create_task_group() as tg:
            for upstream in self.upstreams.values():
                tg.start_soon(connect, upstream)
        await self._adopt_names()
        async with anyio.create_task_group() as tg:
            for upstream in self.upstreams.values():
                if upstream.client is not None:
                    tg.start_soon(first, upstream)
        if not any(u.client is not None for u in self.upstreams.values()):
            raise ConfigError("no upstream server could be started: " + "; ".join(
                f"{u.name}: {u.failure or 'did not connect'}" for u in self.upstreams.values()))
        if self.catalog.tools.collisions:
            raise ConfigError("; ".join(c.message() for c in
                                        self.catalog.tools.collisions.values()))

    async def _adopt_names(self) -> None:
        """Upstreams without an explicit name take their own (``serverInfo.name``), before
        anything is listed, pinned or served under the placeholder."""
        from agentguard.proxy.naming import adopt_name

        renamed: dict[str, str] = {}
        for upstream in self.upstreams.values():
            cfg = upstream.config
            if not cfg.name_from_server or upstream.client is None:
                continue
            info = upstream.client.server_info
            taken = {renamed.get(u.name, u.name) for u in self.upstreams.values()
                     if u is not upstream}
            name = await adopt_name(self.guard.store, self.guard.policy, cfg,
                                    info.name if info is not None else None, taken)
            if name != cfg.name:
                renamed[cfg.name] = name
        if not renamed:
            return
        servers = [s.model_copy(update={"name": renamed.get(s.name, s.name)})
                   for s in self.config.servers]
        self.config = self.config.model_copy(update={"servers": servers})
        upstreams: dict[str, Upstream] = {}
        for cfg in servers:
            upstream = next(u for u in self.upstreams.values()
                            if renamed.get(u.name, u.name) == cfg.name)
            upstream.config, upstream.name = cfg, cfg.name
            upstreams[cfg.name] = upstream
        self.upstreams = upstreams
        self.catalog = Catalog({s.name: self.config.namespace_of(s) for s in servers})
        for old, new in renamed.items():
            self._locks[new] = self._locks.pop(old)
            self._askers[new] = self._askers.pop(old)
            self.resources[new] = self.resources.pop(old)
            self.templates[new] = self.templates.pop(old)
        for old, new in renamed.items():
            logger.info("upstream %r goes by its own name %r", old, new)

    def spawn(self, fn: Callable[[Unpack[Args]], Coroutine[object, object, object]],
              *args: *Args
              ) -> None:
        """Run ``fn(*args)`` in the proxy's task group."""
        assert self._tg is not None
        self._tg.start_soon(fn, *args)

    # ------------------------------------------------------------------ listings

    async def refresh_tools(self, upstream: Upstream) -> None:
        """List an upstream's tools (every page), check pins, update the catalog."""
        async with self._locks[upstream.name]:
            async def list_all(client: Client) -> list[Tool]:
                tools: list[Tool] = []
                cursor: str | None = None
                for _ in range(1000):
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if cursor is None:
                        break
                return tools

            tools = await upstream.request(list_all)
            statuses = await self.pins.check_listing(upstream.name, tools)
            for collision in self.catalog.set_tools(upstream.name, tools, statuses):
                logger.error("%s", collision.message())

    async def refresh_prompts(self, upstream: Upstream) -> None:
        """List an upstream's prompts into the catalog (when it has any)."""
        caps = upstream.client.server_capabilities if upstream.client else None
        if caps is None or caps.prompts is None:
            self.catalog.set_prompts(upstream.name, [])
            return
        page = await upstream.request(lambda c: c.list_prompts())
        for collision in self.catalog.set_prompts(upstream.name, page.prompts):
            logger.error("%s", collision.message())

    def resource_owner(self, uri: str) -> list[str]:
        """Servers that listed ``uri`` or have a template matching it."""
        owners = [name for name, listed in self.resources.items() if uri in listed]
        if owners:
            return owners
        owners = [name for name, templates in self.templates.items()
                  if any(t.match(uri) is not None for t, _ in templates)]
        if not owners and len(self.upstreams) == 1:
            return list(self.upstreams)  # one upstream: nothing to route, nothing to confuse
        return owners

    def remember_templates(self, server: str, templates: list[ResourceTemplate]) -> None:
        """Keep an upstream's resource templates for routing reads and completions."""
        parsed: list[tuple[UriTemplate, ResourceTemplate]] = []
        for template in templates:
            try:
                parsed.append((UriTemplate.parse(template.uri_template), template))
            except InvalidUriTemplate:
                logger.warning("server %r lists an invalid URI template %r", server,
                               template.uri_template)
        self.templates[server] = parsed

    # ------------------------------------------------------------------ UpstreamEvents

    async def connected(self, upstream: Upstream) -> None:
        """Re-list and re-subscribe after a (re)connection."""
        try:
            if upstream.restarts:
                await self.refresh_tools(upstream)
                await self.notifier.list_changed("tools")
            for uri in self.notifier.subscribed():
                if upstream.name in self.resource_owner(uri):
                    await self._subscribe_upstream(upstream, uri)
        except Exception as exc:
            logger.warning("refreshing upstream %r after connect failed: %s", upstream.name, exc)

    async def notification(self, upstream: Upstream, message: object) -> None:
        """Carry an upstream notification downstream."""
        root = getattr(message, "root", message)
        try:
            if isinstance(root, ToolListChangedNotification):
                await self.refresh_tools(upstream)
                await self.notifier.list_changed("tools", sent_upstream=True)
            elif isinstance(root, PromptListChangedNotification):
                await self.refresh_prompts(upstream)
                await self.notifier.list_changed("prompts", sent_upstream=True)
            elif isinstance(root, ResourceListChangedNotification):
                await self.notifier.list_changed("resources", sent_upstream=True)
            elif isinstance(root, ResourceUpdatedNotification):
                await self.notifier.resource_updated(str(root.params.uri))
        except Exception as exc:
            logger.warning("handling a notification from %r failed: %s", upstream.name, exc)

    async def log(self, upstream: Upstream, params: LoggingMessageNotificationParams) -> None:
        """Carry an upstream's log message to the clients (debug on the proxy's stderr)."""
        logger.debug("upstream %r log (%s): %s", upstream.name, params.level,
                     str(params.data)[:500])
        try:
            await self.notifier.log(params)
        except Exception as exc:
            logger.warning("forwarding a log message from %r failed: %s", upstream.name, exc)

    async def ask(self, upstream: Upstream, request: InputRequest) -> InputResponse | ErrorData:
        """Route an old-era upstream's request to the client request that caused it.

        The stdio wire does not say which of our requests an upstream request belongs to; with
        one call in flight on that upstream it is that call's client, with several the latest.
        With none (e.g. ``roots/list`` at start-up), the latest handshake-era client is asked,
        once one has finished its handshake (waiting up to :data:`CLIENT_WAIT` for it).
        """
        stack = self._askers.get(upstream.name) or []
        if stack:
            return await stack[-1].ask(request)
        # Asked before any client finished its handshake (an upstream asking for roots as it
        # starts): wait for the first one, as a direct connection would have had one.
        session = await self.notifier.wait_for_client(CLIENT_WAIT)
        if session is None:
            return ErrorData(code=METHOD_NOT_FOUND, message="no MCP client is connected to ask")
        if isinstance(request, ListRootsRequest):
            return await self._first_roots(request)
        try:
            return await session.send_request(request, result_type_for(request))
        except MCPError as exc:
            return exc.error

    async def _first_roots(self, request: ListRootsRequest) -> InputResponse | ErrorData:
        """``roots/list`` for an upstream that asks as it starts, asked again (it changes
        nothing) while a new HTTP client has not opened the stream a server's own requests
        travel on: a request sent before that stream exists never reaches the client."""
        last: ErrorData = ErrorData(code=METHOD_NOT_FOUND, message="no MCP client answered")
        with anyio.move_on_after(CLIENT_WAIT):
            while True:
                session = self.notifier.latest_session()
                if session is not None:
                    with anyio.move_on_after(FIRST_ROOTS_ATTEMPT):
                        try:
                            return await session.send_request(request,
                                                              result_type_for(request))
                        except MCPError as exc:
                            last = exc.error
                await anyio.sleep(0.2)
        return last

    @contextlib.contextmanager
    def asking(self, server: str, asker: Asker) -> Iterator[None]:
        """Route ``server``'s requests to ``asker`` while a request to it is in flight."""
        self.push_asker(server, asker)
        try:
            yield
        finally:
            self.drop_asker(server, asker)

    def push_asker(self, server: str, asker: Asker) -> None:
        """:meth:`asking` for a request in flight without a task of its own (the stdio relay):
        ``server``'s requests go to ``asker`` until :meth:`drop_asker`."""
        self._askers[server].append(asker)

    def drop_asker(self, server: str, asker: Asker) -> None:
        """Stop routing ``server``'s requests to ``asker`` (no-op when it is not there)."""
        with contextlib.suppress(ValueError, KeyError):
            self._askers[server].remove(asker)

    # ------------------------------------------------------------------ subscriptions

    async def _subscribe(self, uri: str) -> None:
        for name in self.resource_owner(uri):
            await self._subscribe_upstream(self.upstreams[name], uri)

    async def _subscribe_upstream(self, upstream: Upstream, uri: str) -> None:
        upstream.subscriptions.add(uri)
        if upstream.modern:
            await upstream.resubscribe()
            return
        caps = upstream.client.server_capabilities if upstream.client else None
        if caps is None or caps.resources is None or not caps.resources.subscribe:
            return
        request = SubscribeRequest(params=SubscribeRequestParams(uri=uri))
        await upstream.request(lambda c: c.session.send_request(request, Empty))

    async def _unsubscribe(self, uri: str) -> None:
        for name in self.resource_owner(uri):
            upstream = self.upstreams[name]
            upstream.subscriptions.discard(uri)
            if upstream.modern:
                await upstream.resubscribe()
                continue
            caps = upstream.client.server_capabilities if upstream.client else None
            if caps is None or caps.resources is None or not caps.resources.subscribe:
                continue
            request = UnsubscribeRequest(params=UnsubscribeRequestParams(uri=uri))
            with contextlib.suppress(MCPError):
                await upstream.request(functools.partial(_send, request=request))


async def _send(client: Client, *, request: UnsubscribeRequest) -> Empty:
    """Send ``request`` on an upstream client's session (an empty result expected)."""
    return await client.session.send_request(request, Empty)
