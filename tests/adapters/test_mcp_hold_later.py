"""In-process MCP: a hold longer than the client's patience is answered with "retry later",
and the identical call made again after approval runs exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client
from mcp.server import MCPServer

from agentguard import Guard, Policy
from agentguard.adapters.mcp import guard_server
from agentguard.approvals import cast_vote
from agentguard.audit import MemoryAuditLog
from agentguard.errors import ConfigError
from agentguard.store import SQLiteStore
from tests.test_guard_holds import POLICY, Presenter

pytestmark = pytest.mark.anyio


def serve(guard: Guard, ran: list[str], after: float | None) -> MCPServer:
    server = MCPServer("ops")

    @server.tool()
    def deploy(env: str) -> str:
        """Deploy."""
        ran.append(env)
        return f"deployed {env}"

    return guard_server(server, guard=guard, answer_held_after=after)  # type: ignore[return-value]


async def test_a_held_call_is_answered_before_the_client_gives_up_and_runs_once_approved(
    tmp_path: Path
) -> None:
    audit, ran = MemoryAuditLog(), []
    guard = Guard(Policy.from_yaml(POLICY), store=SQLiteStore(tmp_path / "s.db"), audit=audit,
                  channels=[Presenter()])
    async with Client(serve(guard, ran, 0.2)) as client:
        first = await client.call_tool("deploy", {"env": "production"})
        text = first.content[0].text  # type: ignore[union-attr]
        assert first.is_error and "Retry later" in text and "will not help" not in text
        request_id = next(e["request_id"] for e in audit.events
                          if e["type"] == "challenge.created")
        assert request_id in text
        await cast_vote(store=guard.store, audit=audit, request_id=request_id,
                        approver="alice", approve=True, channel="cli")
        again = await client.call_tool("deploy", {"env": "production"})
        assert not again.is_error and ran == ["production"]
        third = await client.call_tool("deploy", {"env": "production"})
        assert third.is_error and ran == ["production"]  # exactly once: a new hold
    assert [e["type"] for e in audit.events].count("call.executed") == 1


async def test_a_negative_patience_is_a_configuration_error(tmp_path: Path) -> None:
    guard = Guard(Policy.from_yaml(POLICY), store=SQLiteStore(tmp_path / "s.db"))
    with pytest.raises(ConfigError):
        serve(guard, [], -1)
