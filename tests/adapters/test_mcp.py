"""In-process MCP: a guarded ``MCPServer`` (and low-level ``Server``) driven by the real MCP
client, in-process on both protocol eras and over Streamable HTTP."""

from __future__ import annotations

import socket
from dataclasses import replace
from typing import Annotated, Any

import anyio
import pytest
import uvicorn
from mcp import Client
from mcp.server import MCPServer, Server
from mcp.server.mcpserver import AcceptedElicitation, Elicit, ElicitationResult, Resolve
from mcp.types import (
    CallToolRequestParams,
    CallToolResult,
    ElicitResult,
    ListToolsResult,
    TextContent,
    Tool,
    ToolAnnotations,
)
from pydantic import BaseModel

from agentguard.adapters.mcp import RunContext, guard_server, hints_from_annotations
from agentguard.types import ToolHints

from .conftest import RecordingChannel, events

pytestmark = pytest.mark.anyio

ran: list[str] = []

POLICY = """
defaults: {unknown_tool: approve, timeout: 30s, deny_cooldown: 0s}
groups: {oncall: [alice]}
classes:
  read: {require: allow}
  write: {require: allow}
  destructive: {require: approve, approvers: [group:oncall]}
signals:
  local_net: {cidr: [127.0.0.0/8]}
rules:
  - id: local-restarts
    match: {tool: restart}
    class: write
    approvers: [group:oncall]
    step_up: [{unless: local_net, require: approve}]
"""


class Confirm(BaseModel):
    sure: bool


async def ask_first(path: str) -> Confirm | Elicit[Confirm]:
    return Elicit(f"Really wipe {path}?", Confirm)


def build_server() -> MCPServer:
    server = MCPServer("ops")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def peek(path: str) -> str:
        ran.append(f"peek {path}")
        return f"contents of {path}"

    @server.tool(annotations=ToolAnnotations(destructive_hint=True))
    def delete(path: str, recursive: bool = False) -> str:
        ran.append(f"delete {path}")
        return f"deleted {path}"

    @server.tool(annotations=ToolAnnotations(destructive_hint=True))
    async def wipe(path: str, ok: Annotated[ElicitationResult[Confirm], Resolve(ask_first)]
                   ) -> str:
        if isinstance(ok, AcceptedElicitation) and ok.data.sure:
            ran.append(f"wipe {path}")
            return f"wiped {path}"
        return "kept"

    @server.tool()
    def restart(service: str) -> str:
        ran.append(f"restart {service}")
        return f"restarted {service}"

    return server


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


async def confirm(ctx: Any, params: Any) -> ElicitResult:
    return ElicitResult(action="accept", content={"sure": True})


def text(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def test_annotations_become_hints() -> None:
    assert hints_from_annotations(None) == ToolHints()
    assert hints_from_annotations(ToolAnnotations(read_only_hint=True, open_world_hint=False)
                                  ) == ToolHints(read_only=True, open_world=False)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_guarded_server_refuses_held_calls_on_both_eras(
    make_guard: Any, mode: str,
) -> None:
    channel = RecordingChannel()
    guard = make_guard(channel, POLICY)
    server = guard_server(build_server(), guard=guard,
                          run=RunContext(principal="agent:desktop", session_id="s1"))
    assert guard_server(server, guard=guard) is server  # guarding twice changes nothing
    async with Client(server, mode=mode, elicitation_callback=confirm) as client:
        refused = await client.call_tool("delete", {"path": "/etc"})
        allowed = await client.call_tool("delete", {"path": "/tmp/a"})
        read = await client.call_tool("peek", {"path": "/a"})
        wiped = await client.call_tool("wipe", {"path": "/tmp/w"})
    assert refused.is_error and text(refused).startswith("agentguard refused 'delete'")
    assert not allowed.is_error and text(allowed) == "deleted /tmp/a"
    assert text(read) == "contents of /a" and text(wiped) == "wiped /tmp/w"
    assert ran == ["delete /tmp/a", "peek /a", "wipe /tmp/w"]
    # The destructive hint made delete and wipe need approval; the read-only one did not;
    # a tool that asks its client for input is still approved once, not once per round.
    assert [(r.call["tool"], r.call["args"]) for r in channel.asked] == [
        ("delete", {"path": "/etc", "recursive": False}),
        ("delete", {"path": "/tmp/a", "recursive": False}),
        ("wipe", {"path": "/tmp/w"})]
    assert {(e["principal"], e["session_id"], e["origin"]) for e in events(guard)} == {
        ("agent:desktop", "s1", "mcp")}
    # Each further round of wipe ran on a single-use grant in the store, audited.
    wipes = [e["type"] for e in events(guard) if e["tool"] == "wipe"]
    if mode == "auto":  # 2026-07-28: the tool's question is a round trip
        assert "grant.created" in wipes and "grant.used" in wipes
    assert wipes.count("challenge.created") == 1


async def test_tools_registered_after_guarding_are_guarded(make_guard: Any) -> None:
    guard = make_guard(RecordingChannel(), POLICY)
    server = guard_server(build_server(), guard=guard)

    @server.tool(annotations=ToolAnnotations(destructive_hint=True))
    def shred(path: str) -> str:
        ran.append(f"shred {path}")
        return "shredded"

    async with Client(server) as client:
        result = await client.call_tool("shred", {"path": "/etc"})
    assert result.is_error and ran == []


async def test_a_middleware_added_after_the_guard_fails_closed(make_guard: Any) -> None:
    guard = make_guard(RecordingChannel(), POLICY)
    server = guard_server(build_server(), guard=guard)

    async def rewrite(ctx: Any, call_next: Any) -> Any:  # runs between decision and tool
        if ctx.method == "tools/call":
            ctx = replace(ctx, params={**ctx.params, "arguments": {"path": "/etc"}})
        return await call_next(ctx)

    server.middleware.append(rewrite)
    async with Client(server) as client:
        result = await client.call_tool("delete", {"path": "/tmp/ok"})
    assert result.is_error and "middleware added after guard_server()" in text(result)
    assert ran == []


async def test_the_caller_comes_from_the_request(make_guard: Any) -> None:
    guard = make_guard(RecordingChannel(), POLICY)
    seen: list[Any] = []

    def caller(ctx: Any) -> RunContext:
        seen.append(ctx.method)
        return RunContext(principal="user:token-holder", claims={"scope": "ops"})

    server = guard_server(build_server(), guard=guard, context_from=caller,
                          hints={"restart": ToolHints(destructive=True)})
    async with Client(server) as client:
        result = await client.call_tool("restart", {"service": "api"})
    assert seen == ["tools/call"]
    assert result.is_error and "denied by alice" in text(result)
    assert events(guard)[0]["principal"] == "user:token-holder"


async def test_a_low_level_server_can_be_guarded(make_guard: Any) -> None:
    guard = make_guard(RecordingChannel(), POLICY)

    async def list_tools(ctx: Any, params: Any) -> ListToolsResult:
        return ListToolsResult(tools=[Tool(name="delete", input_schema={"type": "object"})])

    async def call_tool(ctx: Any, params: CallToolRequestParams) -> CallToolResult:
        ran.append(f"{params.name} {params.arguments}")
        return CallToolResult(content=[TextContent(type="text", text="done")])

    server = guard_server(Server("low", on_list_tools=list_tools, on_call_tool=call_tool),
                          guard=guard, hints={"delete": ToolHints(destructive=True)})
    async with Client(server) as client:
        refused = await client.call_tool("delete", {"path": "/etc"})
        allowed = await client.call_tool("delete", {"path": "/tmp/l"})
    assert refused.is_error and not allowed.is_error
    assert ran == ["delete {'path': '/tmp/l'}"]
    with pytest.raises(TypeError, match="expected an MCPServer"):
        guard_server(object(), guard=guard)  # type: ignore[arg-type]


def free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_over_http_the_client_address_is_the_source_ip(make_guard: Any) -> None:
    guard = make_guard(RecordingChannel(), POLICY)
    server = guard_server(build_server(), guard=guard)
    sock = free_socket()
    http = uvicorn.Server(uvicorn.Config(server.streamable_http_app(), log_level="warning",
                                         lifespan="on"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: http.serve(sockets=[sock]))
        while not http.started:
            await anyio.sleep(0.01)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        async with Client(url) as client:
            result = await client.call_tool("restart", {"service": "api"})
            held = await client.call_tool("delete", {"path": "/tmp/h"})
        http.should_exit = True
    # From 127.0.0.1 the restart rule's step-up does not fire: it runs without anyone asked.
    assert not result.is_error and not held.is_error
    assert ran == ["restart api", "delete /tmp/h"]
    assert {e["source_ip"] for e in events(guard)} == {"127.0.0.1"}


async def test_annotations_of_an_untrusted_server_cannot_lower_the_class(
    make_guard: Any,
) -> None:
    policy = POLICY + "servers: {local: {trust: trusted}, '*': {trust: untrusted}}\n"
    guard = make_guard(RecordingChannel(), policy)
    trusted = guard_server(build_server(), guard=guard)
    untrusted = guard_server(build_server(), guard=guard, server_name="thirdparty")
    async with Client(trusted) as a, Client(untrusted) as b:
        assert not (await a.call_tool("peek", {"path": "/a"})).is_error  # read-only: trusted
        held = await b.call_tool("peek", {"path": "/a"})  # an unknown tool: held, denied
    assert held.is_error and "denied by alice" in text(held)
    assert ran == ["peek /a"]
    (asked,) = events(guard, "challenge.created")
    assert asked["server"] == "thirdparty" and asked["privilege"] == "unknown"
