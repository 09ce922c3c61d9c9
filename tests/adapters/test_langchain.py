"""LangChain / LangGraph: guarded tools and the create_agent middleware, with a real agent
loop driven by a scripted chat model."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import pytest
from langchain.agents import create_agent
from langchain.tools import ToolRuntime
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import InjectedToolCallId, StructuredTool, ToolException, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from agentguard import Guard, acting_as
from agentguard.adapters.langchain import (
    GuardedTool,
    GuardMiddleware,
    RunContext,
    guard_tool,
    guard_tools,
)

from .conftest import RecordingChannel, events

pytestmark = pytest.mark.anyio

ran: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


@tool
def delete(path: str, recursive: bool = False) -> str:
    """Delete a file.

    Args:
        path: What to delete.
        recursive: Also delete what is inside.
    """
    ran.append(f"delete {path}")
    return f"deleted {path}"


@tool
async def adelete(path: str) -> str:
    """Delete a file (async only)."""
    ran.append(f"adelete {path}")
    return f"deleted {path}"


@tool
def peek(path: str) -> str:
    """Read a file."""
    ran.append(f"peek {path}")
    return f"contents of {path}"


class ScriptedChat(GenericFakeChatModel):
    """A chat model that plays scripted replies and remembers what it was sent."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChat:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def model_calling(*calls: tuple[str, dict[str, Any]]) -> ScriptedChat:
    tool_calls = [{"name": n, "args": a, "id": f"call-{i}"} for i, (n, a) in enumerate(calls)]
    return ScriptedChat(messages=iter([AIMessage(content="", tool_calls=tool_calls),
                                       AIMessage(content="done")]))


def tool_messages(out: dict[str, Any]) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in out["messages"] if isinstance(m, ToolMessage)}


def test_a_guarded_tool_looks_the_same_to_the_model(guard: Guard) -> None:
    guarded = guard_tool(delete, guard=guard)
    assert isinstance(guarded, GuardedTool)
    assert convert_to_openai_tool(guarded) == convert_to_openai_tool(delete)
    assert (guarded.name, guarded.description, guarded.args) == (
        delete.name, delete.description, delete.args)
    assert guard_tool(guarded) is guarded
    assert guard_tools([delete, {"type": "web_search"}], guard=guard)[1] == {
        "type": "web_search"}


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_refusal_is_an_error_tool_message_and_nothing_runs(
    guard: Guard, mode: str,
) -> None:
    guarded = guard_tool(delete, guard=guard)
    call = {"type": "tool_call", "name": "delete", "args": {"path": "/etc"}, "id": "c1"}
    if mode == "sync":
        msg = await anyio.to_thread.run_sync(guarded.invoke, call)
    else:
        msg = await guarded.ainvoke(call)
    assert isinstance(msg, ToolMessage) and msg.status == "error" and msg.tool_call_id == "c1"
    assert msg.content.startswith("agentguard refused 'delete' (denied) by rule 'deletes'")
    assert ran == []
    (denied,) = events(guard, "challenge.denied")
    assert denied["origin"] == "langchain"
    assert denied["args"] == {"path": "/etc", "recursive": False}


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_an_agent_loop_with_guarded_tools(guard: Guard, mode: str) -> None:
    model = model_calling(("delete", {"path": "/etc"}), ("delete", {"path": "/tmp/x"}),
                          ("peek", {"path": "/a"}))
    agent = create_agent(model, guard_tools([delete, peek], guard=guard),
                         context_schema=RunContext)
    request = {"messages": [("user", "tidy up")]}
    run = RunContext(principal="agent:tidy", session_id="s1", acting_for="user:carol")
    if mode == "sync":
        out = await anyio.to_thread.run_sync(lambda: agent.invoke(request, context=run))
    else:
        out = await agent.ainvoke(request, context=run)
    results = tool_messages(out)
    assert results["call-0"].status == "error" and "Nothing ran" in results["call-0"].content
    assert results["call-1"].content == "deleted /tmp/x" and results["call-2"].status != "error"
    assert sorted(ran) == ["delete /tmp/x", "peek /a"]
    # The model's next turn was shown the refusal.
    shown = [m for m in model.seen[1] if isinstance(m, ToolMessage)]
    assert any(m.status == "error" and "refused 'delete'" in m.content for m in shown)
    for event in events(guard):
        assert (event["principal"], event["session_id"], event["acting_for"]) == (
            "agent:tidy", "s1", "user:carol")


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_the_middleware_guards_every_tool_call(guard: Guard, mode: str) -> None:
    model = model_calling(("delete", {"path": "/etc"}), ("adelete", {"path": "/tmp/y"}),
                          ("drop", {"table": "t"}))
    agent = create_agent(model, [delete, adelete], middleware=[GuardMiddleware(guard=guard)])
    config = {"configurable": {"agentguard": RunContext(principal="agent:mw")}}
    request = {"messages": [("user", "go")]}
    if mode == "sync":
        # An async-only tool cannot run in a sync agent; leave it out there.
        model = model_calling(("delete", {"path": "/etc"}), ("drop", {"table": "t"}))
        agent = create_agent(model, [delete], middleware=[GuardMiddleware(guard=guard)])
        out = await anyio.to_thread.run_sync(lambda: agent.invoke(request, config))
    else:
        out = await agent.ainvoke(request, config)
    results = tool_messages(out)
    assert results["call-0"].status == "error"
    # A tool the agent does not have is still asked about (policy deny), never run.
    drop_id = "call-1" if mode == "sync" else "call-2"
    assert "by rule 'no-drops'" in results[drop_id].content
    assert results[drop_id].status == "error"
    assert ran == ([] if mode == "sync" else ["adelete /tmp/y"])
    assert {e["principal"] for e in events(guard)} == {"agent:mw"}
    assert {e["origin"] for e in events(guard)} == {"langchain"}


async def test_middleware_and_guarded_tools_ask_only_once(
    guard: Guard, channel: RecordingChannel,
) -> None:
    agent = create_agent(model_calling(("delete", {"path": "/tmp/z"})),
                         guard_tools([delete], guard=guard),
                         middleware=[GuardMiddleware(guard=guard)])
    await agent.ainvoke({"messages": [("user", "go")]})
    assert len(channel.asked) == 1 and ran == ["delete /tmp/z"]


async def test_a_slow_approval_leaves_the_event_loop_free(make_guard: Any) -> None:
    guard = make_guard(RecordingChannel(delay=0.3))
    agent = create_agent(model_calling(("delete", {"path": "/tmp/slow"})), [delete],
                         middleware=[GuardMiddleware(guard=guard)])
    ticks: list[int] = []
    finished = anyio.Event()

    async def ticker() -> None:
        while not finished.is_set():
            ticks.append(len(ran))  # how many tools had run at each tick
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await agent.ainvoke({"messages": [("user", "go")]})
        finished.set()
    assert ran == ["delete /tmp/slow"]
    assert ticks.count(0) > 1  # the loop kept ticking while the approval was pending


async def test_the_wrapped_tools_own_errors_keep_their_handling(guard: Guard) -> None:
    def fail(path: str) -> str:
        raise ToolException(f"cannot touch {path}")

    strict = StructuredTool.from_function(fail, name="peek", description="Fails.")
    lenient = StructuredTool.from_function(fail, name="peek", description="Fails.",
                                           handle_tool_error="it failed")
    call = {"type": "tool_call", "name": "peek", "args": {"path": "/a"}, "id": "c1"}
    with pytest.raises(ToolException, match="cannot touch /a"):
        await guard_tool(strict, guard=guard).ainvoke(call)
    msg = await guard_tool(lenient, guard=guard).ainvoke(call)
    assert (msg.status, msg.content) == ("error", "it failed")


async def test_injected_arguments_reach_the_tool_but_not_the_guard(guard: Guard) -> None:
    @tool
    def delete(path: str, tool_call_id: Annotated[str, InjectedToolCallId],
               runtime: ToolRuntime) -> str:
        """Delete with the ids the runtime injects."""
        ran.append(f"{path} {tool_call_id} {runtime.tool_call_id}")
        return "ok"

    agent = create_agent(model_calling(("delete", {"path": "/tmp/i"})),
                         guard_tools([delete], guard=guard))
    out = await agent.ainvoke({"messages": [("user", "go")]})
    assert tool_messages(out)["call-0"].content == "ok"
    assert ran == ["/tmp/i call-0 call-0"]
    assert events(guard, "call.executed")[0]["args"] == {"path": "/tmp/i"}


async def test_content_and_artifact_tools_keep_their_artifact(guard: Guard) -> None:
    @tool(response_format="content_and_artifact")
    def peek(path: str) -> tuple[str, dict[str, Any]]:
        """Read a file with metadata."""
        return f"contents of {path}", {"size": 3}

    msg = await guard_tool(peek, guard=guard).ainvoke(
        {"type": "tool_call", "name": "peek", "args": {"path": "/a"}, "id": "c1"})
    assert (msg.content, msg.artifact) == ("contents of /a", {"size": 3})


async def test_the_ambient_caller_is_used_when_the_run_names_none(guard: Guard) -> None:
    guarded = guard_tool(delete, guard=guard, run=RunContext(principal="agent:default"))
    call = {"type": "tool_call", "name": "delete", "args": {"path": "/tmp/q"}, "id": "c1"}
    with acting_as("user:bob", session_id="s7"):
        await guarded.ainvoke(call)
    await guarded.ainvoke(call)
    assert [(e["principal"], e["session_id"]) for e in events(guard, "call.executed")] == [
        ("user:bob", "s7"), ("agent:default", None)]


def test_an_async_only_tool_called_synchronously_asks_nobody(guard: Guard,
                                                              channel: RecordingChannel) -> None:
    with pytest.raises(NotImplementedError, match="does not support sync invocation"):
        guard_tool(adelete, guard=guard).invoke({"path": "/tmp/n"})
    assert channel.asked == [] and ran == []


async def test_parallel_held_calls_meet_approval_flood_control(make_guard: Any) -> None:
    from .conftest import POLICY

    strict = POLICY.replace("pending_per_class: 5", "pending_per_class: 1")
    channel = RecordingChannel(delay=0.2)
    guard = make_guard(channel, strict)
    agent = create_agent(model_calling(("delete", {"path": "/tmp/1"}),
                                       ("delete", {"path": "/tmp/2"})),
                         guard_tools([delete], guard=guard))
    out = await agent.ainvoke({"messages": [("user", "go")]})
    statuses = sorted(m.status for m in tool_messages(out).values())
    assert statuses == ["error", "success"] and len(ran) == 1 and len(channel.asked) == 1
    (flood,) = [m for m in tool_messages(out).values() if m.status == "error"]
    assert "approval flood control" in flood.content
