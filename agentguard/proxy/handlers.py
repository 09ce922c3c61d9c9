"""The downstream MCP server: one low-level ``Server`` whose handlers forward to upstreams.

Every method a client may send is answered for both protocol eras by the SDK's dual-era
loop; the handlers here route by exposed name (tools, prompts), URI (resources) or reference
(completions), forward with the upstream's own errors unchanged, and pass on what upstreams ask
of the client. Capabilities mirror what the upstreams offer (tools always).
"""

from __future__ import annotations

import functools
import logging
import warnings
from typing import Any, cast

import anyio
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    CompleteRequest,
    CompleteRequestParams,
    CompleteResult,
    EmptyResult,
    GetPromptRequest,
    GetPromptRequestParams,
    GetPromptResult,
    InputRequiredResult,
    ListPromptsResult,
    ListResourcesResult,
    ListResourceTemplatesResult,
    ListToolsResult,
    NotificationParams,
    PaginatedRequestParams,
    PromptReference,
    ReadResourceRequest,
    ReadResourceRequestParams,
    ReadResourceResult,
    RootsListChangedNotification,
    SubscribeRequestParams,
    UnsubscribeRequestParams,
)
from mcp.types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import TypeAdapter

from agentguard.proxy.answers import InputRequired, unstamped, unstamped_model
from agentguard.proxy.askers import Asker, PushAsker, RequestContext, client_name_of
from agentguard.proxy.calls import call_info, input_rounds, run_tool_call
from agentguard.proxy.catalog import Collision
from agentguard.proxy.core import ProxyCore
from agentguard.proxy.declared import (
    DeclaredServer,
    declared_kinds,
    logging_handlers,
    notification_options,
)
from agentguard.proxy.ledger import binding_for
from agentguard.proxy.notify import session_key
from agentguard.proxy.relay import relay_route
from agentguard.proxy.stdio_relay import relay_allowed
from agentguard.proxy.upstream import Upstream, strip_envelope

__all__ = ["Handlers", "build_server"]

logger = logging.getLogger(__name__)

Ctx = RequestContext
_READ_RESULT: TypeAdapter[Any] = TypeAdapter(ReadResourceResult | InputRequiredResult)
_PROMPT_RESULT: TypeAdapter[Any] = TypeAdapter(GetPromptResult | InputRequiredResult)


def _modern(ctx: Ctx) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def _meta(params: Any) -> dict[str, Any] | None:
    meta = getattr(params, "meta", None)
    return strip_envelope(dict(meta)) if meta else None


class Handlers:
    """The ``on_*`` handlers, bound to one :class:`ProxyCore`."""

    def __init__(self, core: ProxyCore) -> None:
        self.core = core

    def _live(self) -> list[Upstream]:
        return [u for u in self.core.upstreams.values() if u.client is not None]

    async def _each(self, fn: Any) -> None:
        """Run ``fn(upstream)`` for every live upstream at once; log (not raise) failures."""
        async def one(upstream: Upstream) -> None:
            try:
                await fn(upstream)
            except Exception as exc:
                logger.warning("upstream %r: %s", upstream.name, exc)

        async with anyio.create_task_group() as tg:
            for upstream in self._live():
                tg.start_soon(one, upstream)

    async def _rounds(self, ctx: Ctx, method: str, target: str, args: Any, params: Any,
                      work: Any) -> Any:
        """Run ``work(asker)`` inline (old era: push) or over round trips (2026)."""
        if not _modern(ctx):
            return await work(PushAsker(ctx))
        core = self.core
        assert core.ledger is not None
        info = call_info(core, ctx, client_name_of(ctx))
        binding = binding_for(method, target, args, info.session_id)
        return await core.ledger.serve(ctx, binding, params.request_state,
                                       params.input_responses, work)

    # ------------------------------------------------------------------ tools

    async def list_tools(self, ctx: Ctx, params: PaginatedRequestParams | None) -> ListToolsResult:
        await self._each(self.core.refresh_tools)
        return ListToolsResult(tools=self.core.catalog.visible_tools())

    def input_schema(self, name: str) -> dict[str, Any] | None:
        """The cached input schema of an exposed tool (for 2026 header validation)."""
        entry = self.core.catalog.tool(name)
        item = getattr(entry, "item", None)
        return item.input_schema if item is not None else None

    async def call_tool(self, ctx: Ctx, params: CallToolRequestParams) -> Any:
        core = self.core
        target = core.catalog.tool(params.name)
        if target is None:
            await self._each(core.refresh_tools)  # a tool the client knows and we do not yet
            target = core.catalog.tool(params.name)
        if target is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {params.name}")
        if not isinstance(target, Collision):
            handled, result = await self._allowed(target, ctx)
            if handled:
                return result
        info = call_info(core, ctx, client_name_of(ctx))

        async def work(asker: Asker) -> CallToolResult:
            return await run_tool_call(core, target, params, info, asker)

        return await self._rounds(ctx, "tools/call", params.name, params.arguments, params, work)

    async def _allowed(self, entry: Any, ctx: Ctx) -> tuple[bool, Any]:
        """Relay a call that may skip the guard on the upstream's lane (SDK-server relay).

        Returns (False, None) when the call takes the SDK route (:mod:`~.relay`).
        """
        raw = dict(ctx.params or {})
        route = relay_route(self.core, entry.exposed, raw, on_wire=False,
                            client_modern=_modern(ctx))
        if route is None:
            return False, None
        upstream = route.upstream
        if upstream.modern:
            answer = await relay_allowed(route, raw)
        else:
            # A handshake-era upstream may push requests mid-call: route them to this client.
            with self.core.asking(upstream.name, PushAsker(ctx)):
                answer = await relay_allowed(route, raw)
        answer = upstream.raise_for(answer)
        if isinstance(answer, InputRequired):
            return False, None  # the upstream wants input: the SDK route relays it
        return True, unstamped(answer.body)  # the SDK server shapes it for the client's era

    # ------------------------------------------------------------------ resources

    async def list_resources(self, ctx: Ctx,
                             params: PaginatedRequestParams | None) -> ListResourcesResult:
        found: dict[str, list[Any]] = {}

        async def fetch(upstream: Upstream) -> None:
            items, cursor = [], None
            for _ in range(1000):
                page = await upstream.request(functools.partial(_list_resources, cursor=cursor))
                items.extend(page.resources)
                cursor = page.next_cursor
                if cursor is None:
                    break
            self.core.resources[upstream.name] = {str(r.uri): r for r in items}
            found[upstream.name] = items

        await self._each(fetch)
        owners: dict[str, list[str]] = {}
        for server, items in found.items():
            for r in items:
                owners.setdefault(str(r.uri), []).append(server)
        out = []
        for server in self.core.upstreams:
            for r in found.get(server, []):
                if len(owners[str(r.uri)]) > 1:
                    logger.error("resource %s is listed by %s; hidden (never shadowed)",
                                 r.uri, ", ".join(owners[str(r.uri)]))
                    continue
                out.append(r)
        return ListResourcesResult(resources=out)

    async def list_templates(self, ctx: Ctx, params: PaginatedRequestParams | None
                             ) -> ListResourceTemplatesResult:
        found: dict[str, list[Any]] = {}

        async def fetch(upstream: Upstream) -> None:
            page = await upstream.request(lambda c: c.list_resource_templates())
            self.core.remember_templates(upstream.name, page.resource_templates)
            found[upstream.name] = page.resource_templates

        await self._each(fetch)
        return ListResourceTemplatesResult(resource_templates=[
            t for server in self.core.upstreams for t in found.get(server, [])])

    async def _owner_of(self, uri: str) -> Upstream:
        core = self.core
        owners = core.resource_owner(uri)
        if not owners and len(core.upstreams) > 1:
            await self.list_resources_quiet()
            owners = core.resource_owner(uri)
        if not owners and len(core.upstreams) == 1:
            owners = list(core.upstreams)
        if not owners:
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown resource: {uri}")
        if len(owners) > 1:
            raise MCPError(code=INVALID_PARAMS, message=(
                f"resource {uri} is offered by {', '.join(owners)}; refusing to pick one"))
        return core.upstreams[owners[0]]

    async def list_resources_quiet(self) -> None:
        async def both(upstream: Upstream) -> None:
            page = await upstream.request(lambda c: c.list_resources())
            self.core.resources[upstream.name] = {str(r.uri): r for r in page.resources}
            templates = await upstream.request(lambda c: c.list_resource_templates())
            self.core.remember_templates(upstream.name, templates.resource_templates)

        await self._each(both)

    async def read_resource(self, ctx: Ctx, params: ReadResourceRequestParams) -> Any:
        uri = str(params.uri)
        upstream = await self._owner_of(uri)
        meta = _meta(params)

        async def work(asker: Asker) -> Any:
            async def send(responses: Any, state: Any) -> Any:
                request = ReadResourceRequest(params=ReadResourceRequestParams(
                    uri=uri, input_responses=responses, request_state=state,
                    _meta=cast(Any, meta)))
                return await upstream.request(lambda c: c.session.send_request(
                    request, _READ_RESULT))

            with self.core.asking(upstream.name, asker):
                return unstamped_model(await input_rounds(send, asker))

        return await self._rounds(ctx, "resources/read", uri, None, params, work)

    async def subscribe(self, ctx: Ctx, params: SubscribeRequestParams) -> EmptyResult:
        uri = str(params.uri)
        await self._owner_of(uri)
        await self.core.notifier.add_subscriber(uri, session_key(ctx) or "anonymous")
        return EmptyResult()

    async def unsubscribe(self, ctx: Ctx, params: UnsubscribeRequestParams) -> EmptyResult:
        await self.core.notifier.remove_subscriber(str(params.uri),
                                                   session_key(ctx) or "anonymous")
        return EmptyResult()

    # ------------------------------------------------------------------ prompts, completion

    async def list_prompts(self, ctx: Ctx,
                           params: PaginatedRequestParams | None) -> ListPromptsResult:
        await self._each(self.core.refresh_prompts)
        return ListPromptsResult(prompts=[e.public() for e in
                                          self.core.catalog.prompts.listing()])

    async def get_prompt(self, ctx: Ctx, params: GetPromptRequestParams) -> Any:
        core = self.core
        target = core.catalog.prompt(params.name)
        if target is None:
            await self._each(core.refresh_prompts)
            target = core.catalog.prompt(params.name)
        if target is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown prompt: {params.name}")
        if isinstance(target, Collision):
            raise MCPError(code=INVALID_PARAMS, message=target.message())
        upstream, meta = core.upstreams[target.server], _meta(params)

        async def work(asker: Asker) -> Any:
            async def send(responses: Any, state: Any) -> Any:
                request = GetPromptRequest(params=GetPromptRequestParams(
                    name=target.name, arguments=params.arguments, input_responses=responses,
                    request_state=state, _meta=cast(Any, meta)))
                return await upstream.request(lambda c: c.session.send_request(
                    request, _PROMPT_RESULT))

            with core.asking(upstream.name, asker):
                return unstamped_model(await input_rounds(send, asker))

        return await self._rounds(ctx, "prompts/get", params.name, params.arguments, params,
                                  work)

    async def complete(self, ctx: Ctx, params: CompleteRequestParams) -> CompleteResult:
        core = self.core
        ref = params.ref
        if isinstance(ref, PromptReference):
            target = core.catalog.prompt(ref.name)
            if target is None:
                await self._each(core.refresh_prompts)
                target = core.catalog.prompt(ref.name)
            if target is None or isinstance(target, Collision):
                raise MCPError(code=INVALID_PARAMS, message=f"Unknown prompt: {ref.name}")
            upstream = core.upstreams[target.server]
            ref = ref.model_copy(update={"name": target.name})
        else:
            owners = [s for s, ts in core.templates.items()
                      if any(t.uri_template == ref.uri for _, t in ts)]
            if not owners:
                await self.list_resources_quiet()
                owners = [s for s, ts in core.templates.items()
                          if any(t.uri_template == ref.uri for _, t in ts)]
            if len(owners) != 1:
                if len(core.upstreams) != 1:
                    raise MCPError(code=INVALID_PARAMS,
                                   message=f"Unknown resource template: {ref.uri}")
                owners = list(core.upstreams)
            upstream = core.upstreams[owners[0]]
        request = CompleteRequest(params=params.model_copy(update={"ref": ref, "meta": None}))
        return unstamped_model(await upstream.request(
            lambda c: c.session.send_request(request, CompleteResult)))

    async def roots_changed(self, ctx: Ctx, params: NotificationParams | None) -> None:
        async def tell(upstream: Upstream) -> None:
            if not upstream.modern and upstream.client is not None:
                await upstream.client.session.send_notification(RootsListChangedNotification())

        await self._each(tell)


def build_server(core: ProxyCore, *, name: str = "agentguard-proxy") -> DeclaredServer:
    """The downstream server, with handlers for what the connected upstreams offer."""
    from agentguard.proxy import __version__

    h = Handlers(core)
    caps = [u.client.server_capabilities for u in core.upstreams.values()
            if u.client is not None and u.client.server_capabilities is not None]
    resources = any(c.resources is not None for c in caps)
    # Old-era subscribe needs an upstream that serves it; a 2026 one delivers resource
    # updates on its listen stream instead.
    subscribe = any(c.resources is not None and c.resources.subscribe for c in caps) or any(
        u.modern and u.client is not None and u.client.server_capabilities is not None
        and u.client.server_capabilities.resources is not None
        for u in core.upstreams.values())
    prompts = any(c.prompts is not None for c in caps)
    completions = any(c.completions is not None for c in caps)
    instructions = [u.client.session.instructions for u in core.upstreams.values()
                    if u.client is not None and u.client.session.instructions]
    kwargs: dict[str, Any] = {}
    if resources:
        kwargs |= {"on_list_resources": h.list_resources,
                   "on_list_resource_templates": h.list_templates,
                   "on_read_resource": h.read_resource}
    if subscribe:
        kwargs |= {"on_subscribe_resource": h.subscribe, "on_unsubscribe_resource": h.unsubscribe}
    if prompts:
        kwargs |= {"on_list_prompts": h.list_prompts, "on_get_prompt": h.get_prompt}
    if completions:
        kwargs["on_completion"] = h.complete
    with warnings.catch_warnings():
        # Roots are deprecated in 2026-07-28 but old-era clients still send the notification.
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        kwargs |= logging_handlers(core)
        server = DeclaredServer(
            name, version=__version__,
            instructions="\n\n".join(instructions) or None,
            # Without this the SDK runs tools/list (an upstream round trip) for every 2026 HTTP
            # call to check its Mcp-Param headers; the cached listing answers the same.
            get_tool_input_schema=h.input_schema,
            on_list_tools=h.list_tools, on_call_tool=h.call_tool,
            on_subscriptions_listen=core.notifier.listen,
            on_roots_list_changed=h.roots_changed,
            **kwargs,
        )

    async def remember_session(ctx: Ctx, call_next: Any) -> Any:
        # Every request (initialize included) registers its old-era connection, so list_changed
        # and resource updates reach a client whose calls all were relayed.
        core.notifier.seen(ctx)
        return await call_next(ctx)

    server.middleware.append(remember_session)
    server.notification_options = notification_options(core)
    core.notifier.announce = declared_kinds(server.notification_options)
    return server


async def _list_resources(client: Any, *, cursor: str | None) -> Any:
    """One page of an upstream's resources."""
    return await client.list_resources(cursor=cursor)
