"""What is approved is exactly what runs, at the framework adapters (issue 13).

Each test is an attack that worked against the adapters before they validated and froze the
arguments: a boolean sent as ``"true"``, ``1`` or ``"yes"`` (or an object sent as JSON text)
slipped past a rule the policy reads on the typed value, while the tool ran the coerced,
privileged variant; NaN and infinities ran on an allow rule; an object the caller still
held was changed while a human read it and the changed value ran; an Agents SDK approval
was remembered in an edge-local ledger instead of the store. Real frameworks throughout
(their own tool objects, the Agents SDK against the scripted model server, an MCP client
talking to an in-process ``MCPServer``).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from agents import Agent, OpenAIResponsesModel, function_tool
from anthropic import beta_async_tool
from langchain_core.tools import StructuredTool
from mcp import Client
from mcp.server import MCPServer
from mcp.types import TextContent
from openai import AsyncOpenAI
from typing_extensions import TypedDict

from agentguard import Guard, Policy
from agentguard.adapters import _openai_agents
from agentguard.adapters.anthropic import ToolDispatcher as AnthropicDispatcher
from agentguard.adapters.anthropic import guard_beta_tool
from agentguard.adapters.langchain import guard_tool
from agentguard.adapters.mcp import guard_server
from agentguard.adapters.openai import RunContext, guard_function_tool, run_guarded
from agentguard.adapters.openai import ToolDispatcher as OpenAIDispatcher
from agentguard.audit import MemoryAuditLog
from agentguard.channels.base import ChannelAnswer
from agentguard.channels.scripted import ScriptedChannel
from agentguard.store import MemoryStore
from agentguard.types import ApprovalRequest
from tests.adapters.conftest import scripted_llm

pytestmark = pytest.mark.anyio

#: ``deploy`` is routine unless forced or aimed at production, which a human must approve.
POLICY = """
version: 1
defaults: {unknown_tool: approve, timeout: 30s, deny_cooldown: 0s}
groups: {oncall: [alice, bob]}
classes:
  write: {require: allow}
  destructive: {require: approve, approvers: [group:oncall]}
rules:
  - {id: forced, match: {tool: deploy, args: {force: true}}, class: destructive}
  - {id: prod, match: {tool: deploy, args: {change.env: production}}, class: destructive}
  - {id: deploys, match: {tool: deploy}, class: write}
  - {id: deletes, match: {tool: delete}, class: destructive}
"""

ran: list[tuple[str, Any]] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


class Change(TypedDict):
    env: str


def deploy(service: str, force: bool = False, change: Change | None = None,
           weight: float = 1.0) -> str:
    """Deploy a service."""
    ran.append(("deploy", {"service": service, "force": force, "change": change,
                           "weight": weight}))
    return f"deployed {service}" + (" (forced)" if force else "")


async def deploy_async(service: str, force: bool = False, change: Change | None = None,
                       weight: float = 1.0) -> str:
    """Deploy a service."""
    return deploy(service, force, change, weight)


def delete(paths: list[str], options: dict[str, Any]) -> str:
    """Delete files."""
    ran.append(("delete", {"paths": paths, "options": options}))
    return "deleted"


class Approver(ScriptedChannel):
    """Approves after a pause (the hold an attacker uses), recording what it was shown."""

    def __init__(self, *, approve: bool = True, delay: float = 0.3) -> None:
        super().__init__(lambda r: [self.vote("alice", approve, reason="no")], delay=delay)
        self.shown: list[ApprovalRequest] = []

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        self.shown.append(request)
        async for answer in super().ask(request):
            yield answer


def make_guard(channel: ScriptedChannel | None = None) -> Guard:
    return Guard(Policy.from_yaml(POLICY), audit=MemoryAuditLog(), store=MemoryStore(),
                 channels=[channel or Approver(approve=False, delay=0.0)])


def events(guard: Guard, kind: str | None = None) -> list[dict[str, Any]]:
    log = guard.audit
    assert isinstance(log, MemoryAuditLog)
    return [e for e in log.events if kind is None or e["type"] == kind]


# ------------------------------------------------------------------ the edges under attack
#: One guarded call of ``deploy`` with these arguments, as each framework makes it; returns
#: the text the model gets back.
Invoke = Callable[[Guard, dict[str, Any]], Awaitable[str]]


async def via_openai_dispatcher(guard: Guard, args: dict[str, Any]) -> str:
    tools = OpenAIDispatcher([deploy], guard=guard)
    text = json.dumps(args) if all(_finite(v) for v in args.values()) else args
    return (await tools.call("call_1", "deploy", text)).output


async def via_anthropic_dispatcher(guard: Guard, args: dict[str, Any]) -> str:
    tools = AnthropicDispatcher([deploy], guard=guard)
    return (await tools.call("toolu_1", "deploy", args)).output  # tool_use input is an object


async def via_anthropic_beta_tool(guard: Guard, args: dict[str, Any]) -> str:
    from anthropic.lib.tools import ToolError

    tool = guard_beta_tool(beta_async_tool(deploy_async, name="deploy"), guard=guard)
    try:
        return str(await tool.call(args))
    except ToolError as exc:
        return str(exc)


async def via_agents_sdk(guard: Guard, args: dict[str, Any]) -> str:
    tool = guard_function_tool(function_tool(deploy, strict_mode=False), guard=guard)
    replies = [scripted_llm.responses_calls(("deploy", args)), scripted_llm.responses_text("ok")]
    with scripted_llm.ScriptedLLM(replies) as llm:
        model = OpenAIResponsesModel(model="m", openai_client=AsyncOpenAI(
            base_url=llm.openai_url, api_key="offline", max_retries=0))
        await run_guarded(Agent(name="ops", model=model, tools=[tool]), "go", guard=guard)
        (output,) = [i["output"] for i in llm.requests[1][1]["input"]
                     if i.get("type") == "function_call_output"]
    return str(output)


async def via_mcp(guard: Guard, args: dict[str, Any]) -> str:
    server = MCPServer("ops")
    server.tool()(deploy)
    guard_server(server, guard=guard, run=RunContext(principal="agent:desktop"))
    async with Client(server) as client:
        result = await client.call_tool("deploy", args)
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def _finite(value: Any) -> bool:
    return not (isinstance(value, float) and not math.isfinite(value))


EDGES: dict[str, Invoke] = {
    "openai-dispatcher": via_openai_dispatcher,
    "anthropic-dispatcher": via_anthropic_dispatcher,
    "anthropic-beta-tool": via_anthropic_beta_tool,
    "openai-agents": via_agents_sdk,
    "mcp-in-process": via_mcp,
}

#: Values the policy must not read differently from the tool. Each, coerced the way a lax
#: framework coerces it, is the privileged variant a rule holds for a human.
COERCED = {
    "force-string-true": {"service": "api", "force": "true"},
    "force-one": {"service": "api", "force": 1},
    "force-yes": {"service": "api", "force": "yes"},
    "change-as-json-text": {"service": "api", "change": '{"env": "production"}'},
}


@pytest.mark.parametrize("attack", list(COERCED))
@pytest.mark.parametrize("edge", list(EDGES))
async def test_values_the_policy_would_read_differently_are_refused_as_invalid(
    edge: str, attack: str,
) -> None:
    guard = make_guard()
    output = await EDGES[edge](guard, dict(COERCED[attack]))
    assert ran == [], f"{edge} ran the coerced call {COERCED[attack]}: {output}"
    assert "invalid" in output
    # Audited as invalid, and no rule ever saw it: nothing was allowed, held or asked.
    kinds = [e["type"] for e in events(guard)]
    assert kinds == ["call.invalid"], kinds
    assert events(guard)[0]["outcome"] == "invalid"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("edge", ["openai-dispatcher", "anthropic-dispatcher",
                                  "anthropic-beta-tool"])
async def test_numbers_that_are_not_numbers_are_refused_as_invalid(
    edge: str, value: float,
) -> None:
    guard = make_guard()
    output = await EDGES[edge](guard, {"service": "api", "weight": value})
    assert ran == [] and "invalid" in output
    assert [e["type"] for e in events(guard)] == ["call.invalid"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
async def test_non_finite_json_literals_from_a_model_are_refused_as_invalid(
    literal: str,
) -> None:
    """What a model writes as text: a lenient parser reads these as NaN or an infinity (and
    a JSON encoder writes them back as ``null``); refused and audited like any call whose
    arguments do not fit, never silently answered outside the audit log."""
    guard = make_guard()
    text = '{"service": "api", "weight": ' + literal + "}"
    outcome = await OpenAIDispatcher([deploy], guard=guard).call("c1", "deploy", text)
    assert ran == [] and outcome.is_error and not outcome.ran
    assert [(e["type"], e["outcome"]) for e in events(guard)] == [("call.invalid", "invalid")]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
async def test_the_agents_sdk_refuses_non_finite_numbers_as_invalid(value: float) -> None:
    guard = make_guard()
    output = await via_agents_sdk(guard, {"service": "api", "weight": value})
    assert ran == [] and "not valid JSON" in output
    assert [(e["type"], e["outcome"]) for e in events(guard)] == [("call.invalid", "invalid")]


@pytest.mark.parametrize("value", [math.nan, -math.inf])
async def test_langchain_refuses_non_finite_numbers_hidden_under_any(value: float) -> None:
    """LangChain validates first, but its JSON dump writes NaN and infinities under ``Any``
    as ``null``: the policy read ``null`` while the tool ran the non-finite number."""
    guard = make_guard()
    tool = guard_tool(StructuredTool.from_function(delete), guard=guard)
    output = await tool.ainvoke({"paths": ["/data"], "options": {"depth": value}})
    assert ran == [] and "invalid" in str(output)
    assert [e["type"] for e in events(guard)] == ["call.invalid"]


# ------------------------------------------------------------------ changed during the hold
async def _mutate_during_hold(paths: list[str], options: dict[str, Any]) -> None:
    await anyio.sleep(0.15)  # the call is held: the human is reading it now
    paths[0] = "/"
    options["targets"].append("/etc")


HELD = {"paths": ["/data/reports"], "options": {"targets": ["/data/reports"]}}


@pytest.mark.parametrize("edge", ["openai-dispatcher", "anthropic-dispatcher",
                                  "anthropic-beta-tool", "langchain-tool"])
async def test_objects_changed_while_the_human_reads_never_reach_the_tool(edge: str) -> None:
    channel = Approver(delay=0.4)
    guard = make_guard(channel)
    paths, options = ["/data/reports"], {"targets": ["/data/reports"]}
    args = {"paths": paths, "options": options}

    async def call() -> str:
        if edge == "openai-dispatcher":
            return (await OpenAIDispatcher([delete], guard=guard).call("c1", "delete",
                                                                       args)).output
        if edge == "anthropic-dispatcher":
            return (await AnthropicDispatcher([delete], guard=guard).call("t1", "delete",
                                                                          args)).output
        if edge == "anthropic-beta-tool":
            async def delete_async(paths: list[str], options: dict[str, Any]) -> str:
                """Delete files."""
                return delete(paths, options)

            tool = guard_beta_tool(beta_async_tool(delete_async, name="delete"), guard=guard)
            return str(await tool.call(args))
        tool = guard_tool(StructuredTool.from_function(delete), guard=guard)
        return str(await tool.ainvoke(args))

    async with anyio.create_task_group() as tg:
        tg.start_soon(_mutate_during_hold, paths, options)
        output = await call()
    assert paths == ["/"]  # the attacker did change its own objects...
    assert output == "deleted" and ran == [("delete", HELD)]  # ...but they never ran
    assert channel.shown[0].call["args"] == HELD
    (executed,) = events(guard, "call.executed")
    assert executed["args"] == HELD


# ------------------------------------------------------------------ Agents SDK approvals
async def test_an_agents_sdk_approval_is_a_once_grant_in_the_store() -> None:
    """Answering an SDK approval interruption used to record the approval in a ledger in
    this process; now the guard stores a single-use grant bound to the exact call, the
    tool's own guarded run uses it, and both show in the audit log."""
    assert not hasattr(_openai_agents, "_Ledger") and not hasattr(_openai_agents, "_ledgers")
    channel = Approver(delay=0.0)
    store = MemoryStore()
    guard = Guard(Policy.from_yaml(POLICY), audit=MemoryAuditLog(), store=store,
                  channels=[channel])
    tool = guard_function_tool(function_tool(deploy, needs_approval=True, strict_mode=False),
                               guard=guard)
    args = {"service": "api", "force": True}
    replies = [scripted_llm.responses_calls(("deploy", args)), scripted_llm.responses_text("ok")]
    with scripted_llm.ScriptedLLM(replies) as llm:
        model = OpenAIResponsesModel(model="m", openai_client=AsyncOpenAI(
            base_url=llm.openai_url, api_key="offline", max_retries=0))
        result = await run_guarded(Agent(name="ops", model=model, tools=[tool]), "go",
                                   guard=guard, context=RunContext(principal="agent:ops"))
    assert result.final_output == "ok"
    assert ran == [("deploy", {"service": "api", "force": True, "change": None,
                               "weight": 1.0})]
    assert len(channel.shown) == 1  # asked once, at the interruption
    kinds = [e["type"] for e in events(guard)]
    assert kinds == ["challenge.created", "challenge.approved", "grant.used", "call.executed"]
    approved, used, executed = events(guard)[1:]
    assert approved["grant_id"] == used["grant_id"] == executed["grant_id"]
    assert used["call_hash"] == executed["call_hash"] == approved["call_hash"]
    # The grant was single-use: the identical call again is asked about afresh.
    again = await guard.authorize(guard_call(guard, args))
    assert again.outcome == "approved" and len(channel.shown) == 2


def guard_call(guard: Guard, args: dict[str, Any]) -> Any:
    from agentguard.adapters._common import Edge

    edge = Edge("openai-agents", guard=guard)
    return edge.build_call("deploy", {"change": None, "weight": 1.0, **args},
                           RunContext(principal="agent:ops"))
