"""In-process MCP: step-up authentication for the tools of an MCP server you build yourself.

Guard an ``MCPServer`` (or a low-level ``Server``) once; every ``tools/call`` then asks the
guard first, whichever transport serves it (stdio, Streamable HTTP, in-process) and whenever
the tool was registered::

    from mcp.server import MCPServer
    from agentguard.adapters.mcp import guard_server

    mcp = MCPServer("ops")

    @mcp.tool(annotations=ToolAnnotations(destructive_hint=True))
    def delete_file(path: str) -> str: ...

    guard_server(mcp, guard=guard, run=RunContext(principal="agent:desktop"))
    mcp.run()

A refused call does not run: the client gets ``CallToolResult(isError=true)`` whose text
says what happened, which rule decided, and that retrying will not help. Tool annotations
(``readOnlyHint``, ``destructiveHint``...) are passed to the policy as hints; on the default
``local`` server they are trusted like the decorator's arguments (name the server with
``server_name=`` to have the policy's ``servers:`` trust apply).

Who is calling: ``context_from(ctx)`` (your function reading the request, e.g. a verified
bearer token), then the transport (the HTTP client's address as ``source_ip``), then
:func:`agentguard.acting_as`, then ``run=``. Never from anything the client writes into the
request itself.

This is for servers in your own process; to guard servers you do not control, run the
agentguard MCP proxy in front of them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from agentguard.adapters._common import (
    Edge,
    RunContext,
    SchemaArguments,
    args_to_run,
    fill_schema_defaults,
    refusal_text,
)
from agentguard.canonical import CanonicalizationError, call_hash, canonical_bytes
from agentguard.errors import ArgumentValidationError, ConfigError
from agentguard.types import ToolCall, ToolHints

try:
    from mcp.server import MCPServer, Server
    from mcp.types import CallToolRequestParams, CallToolResult, TextContent
except ImportError as exc:  # pragma: no cover - mcp is a core dependency
    from agentguard.errors import ConfigError

    raise ConfigError("agentguard.adapters.mcp needs the 'mcp' package: "
                      "pip install 'agentguard'") from exc

if TYPE_CHECKING:
    from mcp.server.context import ServerRequestContext

    from agentguard.guard import Guard

__all__ = ["ContextFrom", "RunContext", "guard_server", "hints_from_annotations"]

ORIGIN = "mcp"
_MARK = "__agentguard_guarded__"
_LEDGER_SIZE = 10_000

ContextFrom = Callable[["ServerRequestContext[Any, Any]"], RunContext | Mapping[str, Any] | None]


def hints_from_annotations(annotations: Any) -> ToolHints:
    """Tool hints from MCP ``ToolAnnotations`` (absent hints stay unknown)."""
    if annotations is None:
        return ToolHints()
    return ToolHints(read_only=annotations.read_only_hint,
                     destructive=annotations.destructive_hint,
                     idempotent=annotations.idempotent_hint,
                     open_world=annotations.open_world_hint)


def _transport_layer(ctx: Any) -> RunContext | None:
    client = getattr(getattr(ctx, "request", None), "client", None)
    host = getattr(client, "host", None)
    return RunContext(source_ip=host) if isinstance(host, str) and host else None


class _Guarded:
    """A server middleware (the SDK's public ``Server.middleware`` / ``MCPServer.middleware``
    chain) that asks the guard about every ``tools/call`` before the server's own handler
    sees it, and hands that handler the approved arguments.

    It must be the innermost middleware: one added after it could rewrite the arguments
    between the decision and the tool, so a call arriving through such a chain is refused.

    The arguments are checked against the tool's ``inputSchema`` (strict JSON Schema: the
    SDK's own validation would read ``"true"`` as ``True`` after the policy read a string)
    before any rule reads them, and the tool gets the validated snapshot the guard decided
    on (an approver's edit included), never the arguments as sent.

    A tool that asks its client for input (2026-07-28 multi-round trips) is called once per
    round. After an approved round hands out request state, the guard issues a single-use
    grant for one more run of exactly the approved call (``Guard.grant_again``: in the store,
    audited); the next round of that call, recognised by the state and the hash of the call
    as first sent, asks the guard again with the approved snapshot (an approver's edit
    included) and the grant lets it through once. Nothing but "which call does this round
    continue" is remembered here.
    """

    def __init__(self, chain: list[Any], edge: Edge, describe: Callable[[str], Any],
                 context_from: ContextFrom | None, wait: float | None = None) -> None:
        self.chain = chain
        self.edge = edge
        self.wait = wait
        self.describe = describe
        self.context_from = context_from
        # tool name -> (its input schema as canonical JSON, the validator compiled from it)
        self.validators: dict[str, tuple[bytes, SchemaArguments]] = {}
        # request state handed out -> (hash of the call as first sent, the snapshot that ran)
        self.rounds: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()

    def _validator(self, name: str, tool: Any) -> SchemaArguments | None:
        schema = getattr(tool, "input_schema", None)
        if tool is None:
            return None  # a low-level server's tools: no definition to check against
        try:
            key = canonical_bytes(schema if isinstance(schema, Mapping) else {"": repr(schema)})
        except CanonicalizationError:
            key = repr(schema).encode()
        cached = self.validators.get(name)
        if cached is None or cached[0] != key:
            cached = self.validators[name] = (key, SchemaArguments(
                schema if isinstance(schema, Mapping) else {"not": {}}))
        return cached[1]

    @staticmethod
    def _digest(call: ToolCall, validator: SchemaArguments | None) -> str | None:
        try:
            args = validator.validate(call.args) if validator is not None else call.args
            return call_hash(replace(call, args=args))
        except (ArgumentValidationError, CanonicalizationError):
            return None  # the guard refuses such a call itself; nothing to remember

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        if ctx.method != "tools/call" or ctx.request_id is None:
            return await call_next(ctx)
        if not self.chain or self.chain[-1] is not self:
            return _refusal("agentguard refused the call: a server middleware added after "
                            "guard_server() could change the arguments after the decision. "
                            "Nothing ran; retrying will not help.")
        raw = dict(ctx.params or {})
        # Validated as the SDK validates it next (a malformed call fails there too).
        params = CallToolRequestParams.model_validate(raw, by_name=False)
        name = params.name
        tool = await self.describe(name)
        hints = hints_from_annotations(getattr(tool, "annotations", None))
        validator = self._validator(name, tool)
        args = fill_schema_defaults(params.arguments or {}, getattr(tool, "input_schema", None))
        layers = (RunContext.coerce(self.context_from(ctx)) if self.context_from else None,
                  _transport_layer(ctx))
        # The follow-up rounds resend the call as first sent: remember that call's hash.
        sent = self._digest(self.edge.build_call(name, args, *layers, hints=hints), validator)
        state = params.request_state
        earlier = self.rounds.pop(state, None) if state else None
        if earlier is not None and sent is not None and earlier[0] == sent:
            asked = earlier[1]  # a later round: the call that ran, as approved (or edited)
        else:
            asked = args
        auth = await self.edge.authorize(name, asked, *layers, hints=hints,
                                         validator=validator, wait=self.wait)
        refusal = refusal_text(auth)
        if refusal is not None:
            return _refusal(refusal)
        to_run = args_to_run(auth, asked)
        result = await call_next(replace(ctx, params={**raw, "arguments": to_run}))
        handed = result.get("requestState") if isinstance(result, Mapping) else None
        if (isinstance(result, Mapping) and result.get("resultType") == "input_required"
                and isinstance(handed, str) and handed and sent):
            if auth is not None:
                await self.edge.guard().grant_again(auth)
            self.rounds[handed] = (sent, to_run)
            while len(self.rounds) > _LEDGER_SIZE:
                self.rounds.popitem(last=False)
        return result


def _refusal(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def guard_server(
    server: MCPServer | Server, *, guard: Guard | None = None, server_name: str = "local",
    run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None,
    context_from: ContextFrom | None = None,
    answer_held_after: float | None = None,
) -> MCPServer | Server:
    """Make every ``tools/call`` of ``server`` ask the guard first (idempotent).

    The guard joins the server's public middleware chain (``server.middleware``) as its
    last, innermost entry; call this after adding your own middleware: calls through a
    middleware added later are refused.

    Args:
        server: An ``mcp.server.MCPServer`` or a low-level ``mcp.server.Server``.
        guard: The guard (default: the one in effect at call time).
        server_name: Server name the policy sees (default ``local``, like the decorator; the
            policy's ``servers:`` trust applies to it).
        run: Default facts about the caller.
        hints: Hints added to each tool's annotations (``privilege``, ``labels``...), for
            every tool or per tool name.
        context_from: Reads who is calling from the request context (for example the
            verified access token of an HTTP request); its answer comes first.
        answer_held_after: Seconds a held call waits before the client is answered with an
            error that says it waits for approval under request X and runs once approved if
            the identical call is made again (real clients give up at 60 s; the request lives
            on for its policy timeout). ``None``: wait for the verdict.

    Returns:
        ``server`` itself.
    """
    if isinstance(server, MCPServer):
        async def describe(tool: str) -> Any:
            return next((t for t in await server.list_tools() if t.name == tool), None)
    elif isinstance(server, Server):
        async def describe(tool: str) -> Any:
            return None
    else:
        raise TypeError(f"expected an MCPServer or a low-level Server, got "
                        f"{type(server).__name__}")
    # The SDK's public middleware chain (provisional in mcp 2.x): it wraps every request,
    # whenever its tools were registered; appended last, so it runs next to the handler.
    chain = server.middleware
    if any(getattr(m, _MARK, False) for m in chain):
        return server
    if answer_held_after is not None and answer_held_after < 0:
        raise ConfigError("answer_held_after must be 0 or more seconds")
    guarded = _Guarded(chain, Edge(ORIGIN, guard=guard, server=server_name, run=run,
                                   hints=hints), describe, context_from, answer_held_after)
    setattr(guarded, _MARK, True)
    chain.append(guarded)
    return server
