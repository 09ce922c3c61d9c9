"""Our target server for the official MCP conformance suite: it implements what the suite's
server scenarios check (tools in ``everything_tools``; resources, prompts, completion, logging,
subscriptions and resumable SSE here), on the ``mcp`` SDK's public low-level server API.

The suite's own reference server is TypeScript and not published on any registry, so this one
is written from the scenario checks of npm ``@modelcontextprotocol/conformance`` 0.1.16.

Run it::

    python tests/conformance/everything_server.py --http 8765   # Streamable HTTP on /mcp
    python tests/conformance/everything_server.py               # stdio
"""

from __future__ import annotations

import argparse
import itertools
import sys
import warnings
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

if __package__ in (None, ""):  # run as a script: make the sibling module importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from everything_tools import PNG_B64, TOOLS, call_tool  # type: ignore[import-not-found]
else:
    from .everything_tools import PNG_B64, TOOLS, call_tool

__all__ = ["MemoryEventStore", "build_server", "main"]

Ctx = ServerRequestContext[Any, Any]

# ----------------------------------------------------------------------------- resources

_TEXT = "This is the content of the static text resource."
_Contents = types.TextResourceContents | types.BlobResourceContents
_RESOURCES: dict[str, tuple[types.Resource, _Contents]] = {
    r.uri: (r, contents)
    for r, contents in [
        (types.Resource(uri="test://static-text", name="static-text", mime_type="text/plain",
                        description="A static text resource"),
         types.TextResourceContents(uri="test://static-text", mime_type="text/plain", text=_TEXT)),
        (types.Resource(uri="test://static-binary", name="static-binary", mime_type="image/png",
                        description="A static binary resource (a PNG)"),
         types.BlobResourceContents(uri="test://static-binary", mime_type="image/png",
                                    blob=PNG_B64)),
        (types.Resource(uri="test://watched-resource", name="watched-resource",
                        mime_type="text/plain", description="A resource to subscribe to"),
         types.TextResourceContents(uri="test://watched-resource", mime_type="text/plain",
                                    text="Watched resource content")),
    ]
}
_TEMPLATE = types.ResourceTemplate(uri_template="test://template/{id}/data", name="template",
                                   mime_type="application/json",
                                   description="A resource template with an id parameter")
_PREFIX, _SUFFIX = "test://template/", "/data"


async def _list_resources(
    ctx: Ctx, params: types.PaginatedRequestParams
) -> types.ListResourcesResult:
    return types.ListResourcesResult(resources=[r for r, _ in _RESOURCES.values()])


async def _list_templates(
    ctx: Ctx, params: types.PaginatedRequestParams
) -> types.ListResourceTemplatesResult:
    return types.ListResourceTemplatesResult(resource_templates=[_TEMPLATE])


async def _read_resource(
    ctx: Ctx, params: types.ReadResourceRequestParams
) -> types.ReadResourceResult:
    uri = str(params.uri)
    if uri in _RESOURCES:
        return types.ReadResourceResult(contents=[_RESOURCES[uri][1]])
    if uri.startswith(_PREFIX) and uri.endswith(_SUFFIX) and len(uri) > len(_PREFIX + _SUFFIX):
        ident = uri[len(_PREFIX):-len(_SUFFIX)]
        text = f'{{"id":"{ident}","templateTest":true,"data":"Data for ID: {ident}"}}'
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=uri, mime_type="application/json", text=text)]
        )
    raise MCPError(code=types.INVALID_PARAMS, message=f"Resource not found: {uri}")


_SUBSCRIBED: set[str] = set()


async def _subscribe(ctx: Ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
    _SUBSCRIBED.add(str(params.uri))
    return types.EmptyResult()


async def _unsubscribe(ctx: Ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    _SUBSCRIBED.discard(str(params.uri))
    return types.EmptyResult()


# ----------------------------------------------------------------------------- prompts

_PROMPTS = [
    types.Prompt(name="test_simple_prompt", description="A simple prompt without arguments"),
    types.Prompt(name="test_prompt_with_arguments", description="A prompt with two arguments",
                 arguments=[types.PromptArgument(name=n, description=f"Argument {n}", required=True)
                            for n in ("arg1", "arg2")]),
    types.Prompt(name="test_prompt_with_embedded_resource",
                 description="A prompt that embeds a resource",
                 arguments=[types.PromptArgument(name="resourceUri", description="Resource URI",
                                                 required=True)]),
    types.Prompt(name="test_prompt_with_image", description="A prompt with an image"),
]


def _user(content: Any) -> types.PromptMessage:
    return types.PromptMessage(role="user", content=content)


async def _list_prompts(ctx: Ctx, params: types.PaginatedRequestParams) -> types.ListPromptsResult:
    return types.ListPromptsResult(prompts=_PROMPTS)


async def _get_prompt(ctx: Ctx, params: types.GetPromptRequestParams) -> types.GetPromptResult:
    args = params.arguments or {}
    text = lambda s: types.TextContent(type="text", text=s)  # noqa: E731
    if params.name == "test_simple_prompt":
        messages = [_user(text("This is a simple prompt for testing."))]
    elif params.name == "test_prompt_with_arguments":
        messages = [_user(text(f"Prompt with arguments: arg1='{args.get('arg1', '')}', "
                               f"arg2='{args.get('arg2', '')}'"))]
    elif params.name == "test_prompt_with_embedded_resource":
        uri = args.get("resourceUri", "test://example-resource")
        messages = [
            _user(types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
                uri=uri, mime_type="text/plain", text="Embedded resource content for testing."))),
            _user(text("Please process the embedded resource above.")),
        ]
    elif params.name == "test_prompt_with_image":
        messages = [_user(types.ImageContent(type="image", data=PNG_B64, mime_type="image/png")),
                    _user(text("Please analyze the image above."))]
    else:
        raise ValueError(f"Unknown prompt: {params.name}")
    return types.GetPromptResult(description=params.name, messages=messages)


async def _complete(ctx: Ctx, params: types.CompleteRequestParams) -> types.CompleteResult:
    candidates = ["paris", "park", "party", "test", "testValue1", "testValue2"]
    values = [v for v in candidates if v.startswith(params.argument.value)]
    return types.CompleteResult(completion=types.Completion(values=values, total=len(values),
                                                            has_more=False))


async def _set_level(ctx: Ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
    return types.EmptyResult()


# ----------------------------------------------------------------------------- resumable SSE


class MemoryEventStore(EventStore):
    """Keeps every SSE event in memory so a client can resume a stream with Last-Event-ID."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._events: list[tuple[str, str, types.JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        event_id = str(next(self._ids))
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(
        self, last_event_id: str, send_callback: EventCallback
    ) -> str | None:
        stream = next((s for e, s, _ in self._events if e == last_event_id), None)
        if stream is None:
            return None
        after = False
        for event_id, stream_id, message in self._events:
            if after and stream_id == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
            after = after or event_id == last_event_id
        return stream


# ----------------------------------------------------------------------------- server


class _Server(Server[Any]):
    """Declares ``listChanged`` for tools, resources and prompts, as the suite's reference
    server does, on every transport (the HTTP session manager asks for the defaults)."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        notify = notification_options or NotificationOptions(
            prompts_changed=True, resources_changed=True, tools_changed=True)
        return super().create_initialization_options(notify, experimental_capabilities,
                                                     extensions)


def build_server() -> Server[Any]:
    """The conformance target: every tool, resource and prompt the suite's scenarios use."""

    async def list_tools(ctx: Ctx, params: types.PaginatedRequestParams) -> types.ListToolsResult:
        return types.ListToolsResult(tools=TOOLS)

    with warnings.catch_warnings():  # logging is deprecated only for the 2026-07-28 era
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        return _Server(
            "conformance-everything",
            version="1.0.0",
            on_list_tools=list_tools,
            on_call_tool=call_tool,
            on_list_resources=_list_resources,
            on_list_resource_templates=_list_templates,
            on_read_resource=_read_resource,
            on_subscribe_resource=_subscribe,
            on_unsubscribe_resource=_unsubscribe,
            on_list_prompts=_list_prompts,
            on_get_prompt=_get_prompt,
            on_completion=_complete,
            on_set_logging_level=_set_level,
        )


async def _serve_stdio(server: Server[Any]) -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def main(argv: list[str] | None = None) -> None:
    """Serve over stdio, or Streamable HTTP on 127.0.0.1 with ``--http PORT``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve Streamable HTTP on PORT")
    args = parser.parse_args(argv)
    server = build_server()
    if args.http is None:
        anyio.run(_serve_stdio, server)
        return
    import uvicorn

    app = server.streamable_http_app(host="127.0.0.1", event_store=MemoryEventStore(),
                                     retry_interval=1000)
    uvicorn.run(app, host="127.0.0.1", port=args.http, log_level="warning")


if __name__ == "__main__":
    main()
