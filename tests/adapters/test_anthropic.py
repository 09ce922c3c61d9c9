"""Anthropic: the dispatcher and guarded tool-runner tools with the real ``anthropic``
client against a scripted model server on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from anthropic import Anthropic, AsyncAnthropic, beta_async_tool, beta_tool

from agentguard import Guard, acting_as
from agentguard.adapters.anthropic import (
    RunContext,
    ToolDispatcher,
    guard_beta_tool,
    guard_beta_tools,
)

from .conftest import RecordingChannel, events, scripted_llm

pytestmark = pytest.mark.anyio

ran: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


def delete(path: str, recursive: bool = False) -> str:
    """Delete a file.

    Args:
        path: What to delete.
        recursive: Also delete what is inside.
    """
    ran.append(f"delete {path}")
    return f"deleted {path}"


async def adelete(path: str) -> str:
    """Delete a file (async)."""
    ran.append(f"adelete {path}")
    return f"deleted {path}"


def client_kwargs(llm: Any) -> dict[str, Any]:
    return {"base_url": llm.url, "api_key": "offline", "max_retries": 0}


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in body["messages"][-1]["content"] if b.get("type") == "tool_result"]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_dispatching_tool_use_blocks_with_the_real_client(guard: Guard, mode: str) -> None:
    tools = ToolDispatcher([delete], guard=guard,
                           run=RunContext(principal="agent:claude", session_id="s1"))
    assert tools.tools()[0]["input_schema"]["properties"]["path"]["type"] == "string"
    replies = [scripted_llm.anthropic_tool_uses(("delete", {"path": "/etc"}),
                                                ("delete", {"path": "/tmp/a"})),
               scripted_llm.anthropic_text("done")]
    with scripted_llm.ScriptedLLM(replies) as llm:
        messages: list[Any] = [{"role": "user", "content": "tidy up"}]
        if mode == "sync":
            def loop() -> None:
                client = Anthropic(**client_kwargs(llm))
                msg = client.messages.create(model="m", max_tokens=64, messages=messages,
                                             tools=tools.tools())
                messages.extend([{"role": "assistant", "content": msg.content},
                                 tools.reply_sync(msg)])
                client.messages.create(model="m", max_tokens=64, messages=messages)
            await anyio.to_thread.run_sync(loop)
        else:
            client = AsyncAnthropic(**client_kwargs(llm))
            msg = await client.messages.create(model="m", max_tokens=64, messages=messages,
                                               tools=tools.tools())
            messages.extend([{"role": "assistant", "content": msg.content},
                             await tools.reply(msg)])
            await client.messages.create(model="m", max_tokens=64, messages=messages)
        refused, done = tool_results(llm.requests[1][1])
    assert refused["is_error"] is True and "refused 'delete'" in refused["content"]
    assert done == {"type": "tool_result", "tool_use_id": done["tool_use_id"],
                    "content": "deleted /tmp/a"}
    assert ran == ["delete /tmp/a"]
    assert {(e["principal"], e["origin"]) for e in events(guard)} == {
        ("agent:claude", "anthropic")}


def test_guarded_runner_tools_keep_their_definition(guard: Guard) -> None:
    plain = beta_tool(delete, strict=True)
    guarded = guard_beta_tool(plain, guard=guard)
    assert guarded.to_dict() == plain.to_dict()
    assert guarded.name == "delete" and guard_beta_tool(guarded) is guarded
    raw = {"name": "web", "type": "web_search_20250305"}
    assert guard_beta_tools([raw], guard=guard) == [raw]
    with pytest.raises(TypeError, match="not a runnable Anthropic tool"):
        guard_beta_tool(raw)


def test_the_sync_tool_runner_never_runs_a_refused_tool(
    guard: Guard, channel: RecordingChannel,
) -> None:
    replies = [scripted_llm.anthropic_tool_uses(("delete", {"path": "/etc"}),
                                                ("delete", {"path": "/tmp/r"})),
               scripted_llm.anthropic_text("done")]
    with scripted_llm.ScriptedLLM(replies) as llm:
        client = Anthropic(**client_kwargs(llm))
        runner = client.beta.messages.tool_runner(
            model="m", max_tokens=64, messages=[{"role": "user", "content": "go"}],
            tools=guard_beta_tools([beta_tool(delete)], guard=guard))
        with acting_as("agent:runner", session_id="s2"):
            last = runner.until_done()
        refused, done = tool_results(llm.requests[1][1])
    assert last.content[0].text == "done"
    assert ran == ["delete /tmp/r"]
    assert refused["is_error"] is True and "denied by alice" in refused["content"]
    assert done["content"] == "deleted /tmp/r" and not done.get("is_error")
    assert [r.call["args"] for r in channel.asked] == [
        {"path": "/etc", "recursive": False}, {"path": "/tmp/r", "recursive": False}]
    assert {e["principal"] for e in events(guard)} == {"agent:runner"}


async def test_the_async_tool_runner_never_runs_a_refused_tool(guard: Guard) -> None:
    replies = [scripted_llm.anthropic_tool_uses(("adelete", {"path": "/etc"}),
                                                ("adelete", {"path": "/tmp/s"})),
               scripted_llm.anthropic_text("done")]
    with scripted_llm.ScriptedLLM(replies) as llm:
        client = AsyncAnthropic(**client_kwargs(llm))
        runner = client.beta.messages.tool_runner(
            model="m", max_tokens=64, messages=[{"role": "user", "content": "go"}],
            tools=guard_beta_tools([beta_async_tool(adelete)], guard=guard,
                                   run=RunContext(principal="agent:async-runner")))
        last = await runner.until_done()
        refused, done = tool_results(llm.requests[1][1])
    assert last.content[0].text == "done"
    assert ran == ["adelete /tmp/s"]
    assert refused["is_error"] is True and done["content"] == "deleted /tmp/s"
    assert {e["principal"] for e in events(guard)} == {"agent:async-runner"}


async def test_a_sync_runner_tool_inside_an_event_loop_refuses(guard: Guard) -> None:
    from anthropic.lib.tools import ToolError

    guarded = guard_beta_tool(beta_tool(delete), guard=guard)
    with pytest.raises(Exception, match="running event loop") as info:
        guarded.call({"path": "/tmp/t"})
    assert not isinstance(info.value, ToolError)  # a usage error, not a policy refusal
    assert ran == []
