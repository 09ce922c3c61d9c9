"""The edges the conformance suite (tests/test_conformance_edges.py) drives: the decorator,
every framework adapter, each in its own idiom, sync and async where it has both, and the MCP
proxy.

An edge gets a :class:`Setup` (how to build the guard and the tools) and returns an
:class:`EdgeRun` whose ``call(tool, args, run)`` makes one call the way that framework
would, and answers ``(ran, text the caller or model sees)``. To add an edge, write a
factory and list it in :data:`EDGES`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from agentguard import Guard, ToolCallRefused, acting_as, guarded
from agentguard.adapters._common import RunContext, principal_from

from .proxy_edge import ProxyFleet, expressible


class Setup(Protocol):
    """What every edge is built from: the same guard and the same tools."""

    def make_guard(self) -> Guard:
        """A fresh guard on the suite's policy."""

    def make_tools(self, ran: list[str]) -> dict[str, Callable[..., str]]:
        """The tools as plain functions, each appending its name to ``ran`` when it runs.

        A module-level function: the MCP proxy's upstream child imports it by name.
        """


def as_async(fn: Callable[..., str]) -> Callable[..., Awaitable[str]]:
    """The same tool as a coroutine function (same name, signature and docstring)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> str:
        return fn(*args, **kwargs)

    return wrapper


Result = tuple[bool, str]  # (the tool ran and answered, text the caller/model sees)
CallEdge = Callable[[str, dict[str, Any], RunContext], Awaitable[Result]]


@dataclass
class EdgeRun:
    """One edge under test: its guard, its tools' run log, and how to make a call."""

    guard: Guard
    ran: list[str]
    call: CallEdge
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def in_thread(fn: Callable[[], Result]) -> Awaitable[Result]:
    """Sync edges run on a worker thread, as frameworks run sync tools (no event loop)."""
    return anyio.to_thread.run_sync(fn)


def ambient(run: RunContext) -> Any:
    return acting_as(principal_from(run.principal, run.claims), session_id=run.session_id,
                     source_ip=run.source_ip, acting_for=run.acting_for, extra=run.extra)


# --------------------------------------------------------------------------- edges
async def decorator_edge(sync: bool, setup: Setup) -> EdgeRun:
    guard, ran = setup.make_guard(), []
    fns = {name: guarded(guard=guard)(fn if sync else as_async(fn))
           for name, fn in setup.make_tools(ran).items()}

    def call_sync(tool: str, args: dict[str, Any], run: RunContext) -> Result:
        with ambient(run):
            try:
                return True, fns[tool](**args)
            except ToolCallRefused as exc:
                return False, str(exc)

    async def call(tool: str, args: dict[str, Any], run: RunContext) -> Result:
        if sync:
            return await in_thread(lambda: call_sync(tool, args, run))
        with ambient(run):
            try:
                return True, await fns[tool](**args)
            except ToolCallRefused as exc:
                return False, str(exc)

    return EdgeRun(guard, ran, call)


async def langchain_tool_edge(sync: bool, setup: Setup) -> EdgeRun:
    from langchain_core.tools import StructuredTool

    from agentguard.adapters.langchain import guard_tools

    guard, ran = setup.make_guard(), []
    tools = {t.name: t for t in guard_tools(
        [StructuredTool.from_function(f) for f in setup.make_tools(ran).values()], guard=guard)}

    async def call(tool: str, args: dict[str, Any], run: RunContext) -> Result:
        tool_call = {"type": "tool_call", "name": tool, "args": args, "id": "call-1"}
        config = {"configurable": {"agentguard": run}}
        if sync:
            msg = await in_thread(lambda: tools[tool].invoke(tool_call, config))
        else:
            msg = await tools[tool].ainvoke(tool_call, config)
        return msg.status != "error", msg.content

    return EdgeRun(guard, ran, call)


async def langchain_agent_edge(sync: bool, setup: Setup) -> EdgeRun:
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.tools import StructuredTool

    from agentguard.adapters.langchain import GuardMiddleware

    class ScriptedChat(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChat:
            return self

    guard, ran = setup.make_guard(), []
    tools = [StructuredTool.from_function(f) for f in setup.make_tools(ran).values()]

    async def call(tool: str, args: dict[str, Any], run: RunContext) -> Result:
        model = ScriptedChat(messages=iter([
            AIMessage(content="", tool_calls=[{"name": tool, "args": args, "id": "c1"}]),
            AIMessage(content="done")]))
        agent = create_agent(model, tools, middleware=[GuardMiddleware(guard=guard)],
                             context_schema=RunContext)
        request = {"messages": [("user", "go")]}
        if sync:
            out = await in_thread(lambda: agent.invoke(request, context=run))
        else:
            out = await agent.ainvoke(request, context=run)
        (msg,) = [m for m in out["messages"] if isinstance(m, ToolMessage)]
        return msg.status != "error", msg.content

    return EdgeRun(guard, ran, call)


async def openai_chat_edge(sync: bool, setup: Setup) -> EdgeRun:
    from agentguard.adapters.openai import ToolDispatcher

    guard, ran = setup.make_guard(), []
    tools = ToolDispatcher(setup.make_tools(ran), guard=guard)

    async def call(tool: str, args: dict[str, Any], run: RunContext) -> Result:
        calls = [{"id": "call_1", "type": "function",
                  "function": {"name": tool, "arguments": json.dumps(args)}}]
        if sync:
            (outcome,) = await in_thread(lambda: tools.chat_sync(calls, run=run))
        else:
            (outcome,) = await tools.chat(calls, run=run)
        return not refused(outcome["content"]), outcome["content"]

    return EdgeRun(guard, ran, call)


async def openai_responses_edge(sync: bool, setup: Setup) -> EdgeRun:
    from agentguard.adapters.openai import ToolDispatcher

    guard, ran = setup.make_guard(), []
    tools = ToolDispatcher({n: as_async(f) for n, f in setup.make_tools(ran).items()}, guard=guard)

    async def call(tool: str, args: dict[str, Any], run: RunContext) -> Result:
        items = [{"type": "reasoning", "id": "r1"},
                 {"type": "function_call", "call_id": "c1", "name": tool,
                  "arguments": json.dumps(args)}]
        if sync:
            (outcome,) = await in_thread(lambda: tools.responses_sync(items, run=run))
        else:
            (outcome,) = await tools.responses(items, run=run)
        return not refused(outcome["output"]), outcome["output"]

    return EdgeRun(guard, ran, call)


def refused(text: str) -> bool:
    """Chat and Responses outputs carry no error flag: the model reads the refusal's text
    (which starts with agentguard's fixed wording; the tools here never return that)."""
    return text.startswith("agentguard refused")


async def openai_agents_edge(sync: bool, setup: Setup) -> EdgeRun:
    from agents import function_tool
    from agents.tool_context import ToolContext

    from agentguard.adapters.openai import guard_function_tools

    guard, ran = setup.make_guard(), []
    tools = {t.name: t for t in guard_function_tools(
        [function_tool(f, strict_mode=False) for f in setup.make_tools(ran).values()], guard=guard)}

    async def call(tool: str, args: dict[str, Any], run: RunContext) -> Result:
        arguments = json.dumps(args)
        ctx = ToolContext(context=run, tool_name=tool, tool_call_id="call_1",
                          tool_arguments=arguments)
        out = await tools[tool].on_invoke_tool(ctx, arguments)
        return not refused(out), out

    return EdgeRun(guard, ran, call)


async def anthropic_dispatch_edge(sync: bool, setup: Setup) -> EdgeRun:
    from agentguard.adapters.anthropic import ToolDispatcher

    guard, ran = setup.make_guard(), []
    tools = ToolDispatcher(setup.make_tools(ran), guard=guard)

    async def call(tool: str, args: dict[str, Any], run: RunContext) -> Result:
        blocks = [{"type": "text", "text": "on it"},
                  {"type": "tool_use", "id": "toolu_1", "name": tool, "input": args}]
        if sync:
            (block,) = await in_thread(lambda: tools.results_sync(blocks, run=run))
        else:
            (block,) = await tools.results(blocks, run=run)
        return not block.get("is_error", False), block["content"]

    return EdgeRun(guard, ran, call)


async def anthropic_runner_tool_edge(sync: bool, setup: Setup) -> EdgeRun:
    from anthropic import beta_async_tool, beta_tool
    from anthropic.lib.tools import ToolError

    from agentguard.adapters.anthropic import guard_beta_tools

    guard, ran = setup.make_guard(), []
    fns = setup.make_tools(ran).values()
    wrap = beta_tool if sync else beta_async_tool
    tools = {t.name: t for t in guard_beta_tools(
        [wrap(f if sync else as_async(f)) for f in fns], guard=guard)}

    def call_sync(tool: str, args: dict[str, Any], run: RunContext) -> Result:
        with ambient(run):
            try:
                return True, tools[tool].call(args)
            except ToolError as exc:
                return False, str(exc.content)

    async def call(tool: str, args: dict[str, Any], run: RunContext) -> Result:
        if sync:
            return await in_thread(lambda: call_sync(tool, args, run))
        with ambient(run):
            try:
                return True, await tools[tool].call(args)
            except ToolError as exc:
                return False, str(exc.content)

    return EdgeRun(guard, ran, call)


async def mcp_edge(sync: bool, setup: Setup) -> EdgeRun:
    from mcp import Client
    from mcp.server import MCPServer

    from agentguard.adapters.mcp import guard_server

    guard, ran = setup.make_guard(), []
    server = MCPServer("conformance")
    for fn in setup.make_tools(ran).values():
        server.add_tool(fn if sync else as_async(fn))
    current: list[RunContext] = []
    # The caller would come from the request (a verified token); here the test says who.
    guard_server(server, guard=guard, context_from=lambda ctx: current[-1])
    client = Client(server)
    await client.__aenter__()

    async def call(tool: str, args: dict[str, Any], run: RunContext) -> Result:
        current.append(run)
        result = await client.call_tool(tool, args)
        return not result.is_error, result.content[0].text

    return EdgeRun(guard, ran, call, [lambda: client.__aexit__(None, None, None)])


async def mcp_proxy_edge(sync: bool, setup: Setup) -> EdgeRun:
    """The MCP proxy (``agentguard.proxy``), in process, in front of the suite's tools served
    by an upstream child process; see ``tests/adapters/proxy_edge.py``.

    The proxy can be told only part of a caller: give ``call`` runs reduced by
    :data:`PARTIAL` (anything else is refused, so no test compares different calls). Runs of
    the tools are read back from the upstream's file after each call.
    """
    fleet = ProxyFleet(setup.make_guard(), setup.make_tools)
    await fleet.open()
    ran: list[str] = []

    async def call(tool: str, args: dict[str, Any], run: RunContext) -> Result:
        try:
            return await fleet.call(tool, args, run)
        finally:
            ran[:] = fleet.runs()

    return EdgeRun(fleet.guard, ran, call, [fleet.close])


EdgeFactory = Callable[[bool, Setup], Awaitable[EdgeRun]]

#: name -> (factory, sync?, the origin its audit records carry)
EDGES: dict[str, tuple[EdgeFactory, bool, str]] = {
    "decorator-async": (decorator_edge, False, "decorator"),
    "decorator-sync": (decorator_edge, True, "decorator"),
    "langchain-tool-async": (langchain_tool_edge, False, "langchain"),
    "langchain-tool-sync": (langchain_tool_edge, True, "langchain"),
    "langchain-middleware-async": (langchain_agent_edge, False, "langchain"),
    "langchain-middleware-sync": (langchain_agent_edge, True, "langchain"),
    "openai-chat-async": (openai_chat_edge, False, "openai"),
    "openai-chat-sync": (openai_chat_edge, True, "openai"),
    "openai-responses-async": (openai_responses_edge, False, "openai"),
    "openai-responses-sync": (openai_responses_edge, True, "openai"),
    "openai-agents": (openai_agents_edge, False, "openai-agents"),
    "anthropic-dispatch-async": (anthropic_dispatch_edge, False, "anthropic"),
    "anthropic-dispatch-sync": (anthropic_dispatch_edge, True, "anthropic"),
    "anthropic-runner-tool-async": (anthropic_runner_tool_edge, False, "anthropic"),
    "anthropic-runner-tool-sync": (anthropic_runner_tool_edge, True, "anthropic"),
    "mcp-in-process-async-tools": (mcp_edge, False, "mcp"),
    "mcp-in-process-sync-tools": (mcp_edge, True, "mcp"),
    "mcp-proxy": (mcp_proxy_edge, False, "mcp-proxy"),
}

#: Edges that cannot be told every caller fact a ``RunContext`` carries per call, with what
#: they keep of one. The suite plays them on the calls reduced to that, and marks as not
#: applicable the calls whose outcome the reduction changes.
PARTIAL: dict[str, Callable[[RunContext], RunContext]] = {"mcp-proxy": expressible}
