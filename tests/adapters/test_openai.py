"""OpenAI: the dispatcher with the real ``openai`` client (Chat Completions and Responses)
against a scripted model server on 127.0.0.1, and a real Agents SDK run."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool
from openai import AsyncOpenAI, OpenAI

from agentguard import ConfigError, Guard, guarded
from agentguard.adapters.openai import (
    RunContext,
    ToolDispatcher,
    guard_function_tool,
    guard_function_tools,
    resolve_interruptions,
    run_guarded,
)
from agentguard.channels.base import ChannelAnswer
from agentguard.channels.scripted import ScriptedChannel

from .conftest import RecordingChannel, events, scripted_llm

pytestmark = pytest.mark.anyio

ran: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


def delete(path: str, recursive: bool = False) -> str:
    """Delete a file.

    More text that is not part of the description.
    """
    ran.append(f"delete {path}")
    return f"deleted {path}"


async def get_user(user_id: int) -> dict[str, Any]:
    """Look a user up."""
    ran.append(f"get_user {user_id}")
    return {"id": user_id, "name": "Ada"}


def get_boom(reason: str) -> str:
    """Always fails."""
    ran.append("get_boom")
    raise RuntimeError(reason)


def test_tool_definitions_come_from_signatures() -> None:
    tools = ToolDispatcher([delete, get_user])
    (chat_delete, _) = tools.chat_tools()
    assert chat_delete["function"]["name"] == "delete"
    assert chat_delete["function"]["description"] == "Delete a file."
    params = chat_delete["function"]["parameters"]
    assert params["required"] == ["path"]
    assert params["properties"]["recursive"]["default"] is False
    assert tools.responses_tools()[1]["name"] == "get_user"
    with pytest.raises(ConfigError, match="already @guarded"):
        ToolDispatcher([guarded(delete)])
    with pytest.raises(ConfigError, match="two tools are named 'delete'"):
        ToolDispatcher([delete, delete])


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_chat_completions_loop_with_the_real_client(guard: Guard, mode: str) -> None:
    tools = ToolDispatcher([delete, get_user], guard=guard,
                           run=RunContext(principal="agent:chat", session_id="s1"))
    replies = [scripted_llm.chat_tool_calls(("delete", {"path": "/etc"}),
                                            ("delete", {"path": "/tmp/a"}),
                                            ("get_user", {"user_id": 7})),
               scripted_llm.chat_text("all done")]
    with scripted_llm.ScriptedLLM(replies) as llm:
        messages: list[Any] = [{"role": "user", "content": "tidy up"}]
        if mode == "sync":
            def loop() -> str:
                client = OpenAI(base_url=llm.openai_url, api_key="offline", max_retries=0)
                while True:
                    msg = client.chat.completions.create(
                        model="m", messages=messages, tools=tools.chat_tools()
                    ).choices[0].message
                    messages.append(msg.model_dump(exclude_none=True))
                    if not msg.tool_calls:
                        return msg.content or ""
                    messages.extend(tools.chat_sync(msg))
            final = await anyio.to_thread.run_sync(loop)
        else:
            client = AsyncOpenAI(base_url=llm.openai_url, api_key="offline", max_retries=0)
            while True:
                msg = (await client.chat.completions.create(
                    model="m", messages=messages, tools=tools.chat_tools())).choices[0].message
                messages.append(msg.model_dump(exclude_none=True))
                if not msg.tool_calls:
                    final = msg.content
                    break
                messages.extend(await tools.chat(msg))
        sent = llm.requests[1][1]["messages"]
    assert final == "all done"
    assert ran == ["delete /tmp/a", "get_user 7"]
    tool_msgs = [m for m in sent if m["role"] == "tool"]
    assert tool_msgs[0]["content"].startswith("agentguard refused 'delete' (denied)")
    assert tool_msgs[1]["content"] == "deleted /tmp/a"
    assert json.loads(tool_msgs[2]["content"]) == {"id": 7, "name": "Ada"}
    assert {(e["principal"], e["origin"]) for e in events(guard)} == {("agent:chat", "openai")}


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_responses_loop_with_the_real_client(guard: Guard, mode: str) -> None:
    tools = ToolDispatcher([delete], guard=guard)
    replies = [scripted_llm.responses_calls(("delete", {"path": "/etc"}),
                                            ("drop", {"table": "t"})),
               scripted_llm.responses_text("ok")]
    run = RunContext(principal="agent:resp", source_ip="192.0.2.1")
    with scripted_llm.ScriptedLLM(replies) as llm:
        if mode == "sync":
            def loop() -> list[dict[str, Any]]:
                client = OpenAI(base_url=llm.openai_url, api_key="offline", max_retries=0)
                resp = client.responses.create(model="m", input="go",
                                               tools=tools.responses_tools())
                outputs = tools.responses_sync(resp, run=run)
                client.responses.create(model="m", input=outputs, previous_response_id=resp.id)
                return outputs
            outputs = await anyio.to_thread.run_sync(loop)
        else:
            client = AsyncOpenAI(base_url=llm.openai_url, api_key="offline", max_retries=0)
            resp = await client.responses.create(model="m", input="go",
                                                 tools=tools.responses_tools())
            outputs = await tools.responses(resp, run=run)
            await client.responses.create(model="m", input=outputs,
                                          previous_response_id=resp.id)
        sent = llm.requests[1][1]["input"]
    assert ran == []
    assert [o["type"] for o in sent] == ["function_call_output"] * 2
    assert "denied by alice: not under /tmp" in sent[0]["output"]
    assert sent[1]["output"].startswith("error: there is no tool named 'drop'")
    assert events(guard, "challenge.denied")[0]["source_ip"] == "192.0.2.1"


async def test_calls_that_cannot_run_are_answered_without_running(guard: Guard) -> None:
    tools = ToolDispatcher([delete, get_boom], guard=guard)
    calls = [{"id": "1", "function": {"name": "delete", "arguments": "{not json"}},
             {"id": "2", "function": {"name": "delete", "arguments": '{"path": 1, "path": 2}'}},
             {"id": "3", "function": {"name": "delete", "arguments": "[1]"}},
             {"id": "4", "function": {"name": "delete", "arguments": '{"nope": 1}'}},
             {"id": "5", "type": "custom", "custom": {"name": "delete", "input": "x"}},
             {"id": "6", "function": {"name": "get_boom", "arguments": '{"reason": "boom"}'}}]
    out = [m["content"] for m in await tools.chat(calls)]
    assert "not valid JSON" in out[0] and "duplicate key" in out[1]
    assert "must be a JSON object" in out[2] and "invalid arguments" in out[3]
    assert "custom tool calls are not supported" in out[4]
    assert out[5] == "error: RuntimeError: boom"
    assert ran == ["get_boom"]
    # Arguments that are not a JSON object, or do not fit the function, are refused as
    # invalid (audited) before any rule reads them; unknown tools and kinds never get there.
    assert [(e["type"], e["outcome"], e["args"]) for e in events(guard)] == [
        ("call.invalid", "invalid", {}), ("call.invalid", "invalid", {}),
        ("call.invalid", "invalid", {}), ("call.invalid", "invalid", {"nope": 1})]
    raising = ToolDispatcher([get_boom], guard=guard, on_error="raise")
    with pytest.raises(RuntimeError, match="boom"):
        await raising.chat(calls[5:])


def responses_model(llm: Any) -> OpenAIResponsesModel:
    return OpenAIResponsesModel(model="m", openai_client=AsyncOpenAI(
        base_url=llm.openai_url, api_key="offline", max_retries=0))


async def test_an_agents_sdk_run_with_guarded_function_tools(guard: Guard) -> None:
    tools = guard_function_tools([function_tool(delete), get_user], guard=guard)
    assert [t.name for t in tools] == ["delete", "get_user"]
    assert tools[0].params_json_schema == function_tool(delete).params_json_schema
    assert guard_function_tool(tools[0]) is tools[0]
    replies = [scripted_llm.responses_calls(("delete", {"path": "/etc", "recursive": True})),
               scripted_llm.responses_calls(("delete", {"path": "/tmp/b", "recursive": False})),
               scripted_llm.responses_text("done")]
    with scripted_llm.ScriptedLLM(replies) as llm:
        agent = Agent(name="ops", model=responses_model(llm), tools=tools)
        result = await Runner.run(agent, "tidy", context=RunContext(principal="agent:sdk"))
        sent = [i for _, body in llm.requests[1:] for i in body["input"]
                if i.get("type") == "function_call_output"]
    assert result.final_output == "done"
    assert ran == ["delete /tmp/b"]
    assert "refused 'delete'" in sent[0]["output"]
    assert [e["type"] for e in events(guard)] == [
        "challenge.created", "challenge.denied", "challenge.created", "call.executed"]
    assert {(e["principal"], e["origin"]) for e in events(guard)} == {
        ("agent:sdk", "openai-agents")}


async def test_approval_interruptions_are_answered_by_the_guard(
    guard: Guard, channel: RecordingChannel,
) -> None:
    plain = function_tool(delete, needs_approval=True)
    replies = [scripted_llm.responses_calls(("delete", {"path": "/etc", "recursive": False})),
               scripted_llm.responses_calls(("delete", {"path": "/tmp/c", "recursive": False})),
               scripted_llm.responses_text("done")]
    with scripted_llm.ScriptedLLM(replies) as llm:
        agent = Agent(name="ops", model=responses_model(llm), tools=[plain])
        first = await Runner.run(agent, "tidy", context=RunContext(principal="agent:hitl"))
        assert [i.name for i in first.interruptions] == ["delete"] and ran == []
        state = await resolve_interruptions(first, guard=guard)
        second = await Runner.run(agent, state)
        assert ran == [] and [i.name for i in second.interruptions] == ["delete"]
        final = await run_guarded(agent, await resolve_interruptions(second, guard=guard),
                                  guard=guard)
        rejected = [i for _, body in llm.requests[1:2] for i in body["input"]
                    if i.get("type") == "function_call_output"]
    assert final.final_output == "done" and ran == ["delete /tmp/c"]
    assert "denied by alice: not under /tmp" in rejected[0]["output"]
    assert [r.call["args"]["path"] for r in channel.asked] == ["/etc", "/tmp/c"]
    assert {e["principal"] for e in events(guard)} == {"agent:hitl"}


async def test_a_guarded_tool_approved_at_the_interruption_is_not_asked_again(
    guard: Guard, channel: RecordingChannel,
) -> None:
    tools = guard_function_tools([function_tool(delete, needs_approval=True)], guard=guard)
    replies = [scripted_llm.responses_calls(("delete", {"path": "/tmp/d", "recursive": False})),
               scripted_llm.responses_text("done")]
    with scripted_llm.ScriptedLLM(replies) as llm:
        agent = Agent(name="ops", model=responses_model(llm), tools=tools)
        result = await run_guarded(agent, "go", guard=guard,
                                   context=RunContext(principal="agent:once"))
    assert result.final_output == "done" and ran == ["delete /tmp/d"]
    assert len(channel.asked) == 1
    # The approval became a single-use grant in the store, which the tool's run used.
    assert [e["type"] for e in events(guard)] == [
        "challenge.created", "challenge.approved", "grant.used", "call.executed"]


def editing_channel() -> ScriptedChannel:
    """Alice narrows deletions outside /tmp to /tmp/narrowed, and approves /tmp ones."""

    def script(request: Any) -> list[ChannelAnswer]:
        if request.call["args"]["path"].startswith("/tmp"):
            return [ScriptedChannel.vote("alice")]
        return [ChannelAnswer(kind="vote", channel="scripted", approver="alice",
                              approve=False, edited_args={"path": "/tmp/narrowed"})]

    return ScriptedChannel(script)


@pytest.mark.parametrize("guarded_tool", [True, False])
async def test_arguments_an_approver_edits_at_an_interruption(
    make_guard: Any, guarded_tool: bool,
) -> None:
    guard = make_guard(editing_channel())
    tool = function_tool(delete, needs_approval=True)
    tools = guard_function_tools([tool], guard=guard) if guarded_tool else [tool]
    replies = [scripted_llm.responses_calls(("delete", {"path": "/home", "recursive": True})),
               scripted_llm.responses_text("done")]
    with scripted_llm.ScriptedLLM(replies) as llm:
        agent = Agent(name="ops", model=responses_model(llm), tools=tools)
        result = await run_guarded(agent, "go", guard=guard)
        (output,) = [i["output"] for i in llm.requests[1][1]["input"]
                     if i.get("type") == "function_call_output"]
    assert result.final_output == "done"
    # The SDK can only run the call as the model made it: nothing runs, and the model is
    # told which arguments were approved instead.
    assert ran == [] and "replaced the arguments of 'delete'" in output
    assert '"path": "/tmp/narrowed"' in output
    # A guarded tool's edited call was approved ahead, as a single-use grant in the store
    # (the model's next call with exactly those arguments runs on it); an unguarded tool's
    # approval was claimed at once.
    last = "challenge.approved" if guarded_tool else "call.executed"
    assert [e["type"] for e in events(guard)] == [
        "challenge.created", "challenge.edited", "challenge.created", last]
