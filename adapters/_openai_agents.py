"""The OpenAI Agents SDK side of :mod:`agentguard.adapters.openai` (loaded on first use)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from agentguard.adapters._common import (
    Edge,
    RunContext,
    SchemaArguments,
    args_to_run,
    fill_schema_defaults,
    refusal_text,
    require,
    run_context_from,
)
from agentguard.canonical import CanonicalizationError, loads_strict
from agentguard.errors import UsageError

require("agents", "openai")

from agents import FunctionTool, Runner, function_tool  # noqa: E402

if TYPE_CHECKING:
    from agents import RunResult, RunState

    from agentguard.guard import Guard
    from agentguard.types import Authorization, ToolCall, ToolHints

__all__ = ["guard_function_tool", "guard_function_tools", "resolve_interruptions",
           "run_guarded"]

ORIGIN = "openai-agents"


def _parse(arguments: str | None, schema: Mapping[str, Any] | None) -> dict[str, Any] | str:
    try:
        args = loads_strict(arguments or "{}")
    except CanonicalizationError as exc:
        return f"agentguard: the tool arguments are not valid JSON ({exc}); nothing ran."
    if not isinstance(args, dict):
        return "agentguard: the tool arguments must be a JSON object; nothing ran."
    return fill_schema_defaults(args, schema)


def _refuse_unparsed(edge: Edge, tool: str, problem: str, context: Any) -> str:
    """Arguments that are not one unambiguous JSON object are refused like any that do not
    fit the tool: invalid, audited, and no rule reads them."""
    call = edge.build_call(tool, {}, run_context_from(context))
    edge.guard().refuse(call, problem, outcome="invalid", event="call.invalid")
    return problem


async def _ask(edge: Edge, call: ToolCall, validator: SchemaArguments | None, *,
               ahead: bool) -> Authorization | None:
    """The guard's answer for ``call`` (``None``: the policy allows every call to the
    tool). ``ahead``: approved before the run, as a single-use grant in the store."""
    guard = edge.guard()
    if guard.static_allow(call.server, call.tool, call.hints):
        return None
    if ahead:
        return await guard.preapprove(call, validator=validator)
    return await guard.authorize(call, validator=validator)


def _edit_refusal(name: str, auth: Authorization | None, asked: ToolCall) -> str | None:
    """The SDK can only run a paused call as the model made it: when an approver replaced
    the arguments (the guard decided a new call), this call does not run."""
    if auth is None or not auth.allowed or auth.call.id == asked.id:
        return None
    return (f"agentguard: an approver replaced the arguments of {name!r} with "
            f"{json.dumps(args_to_run(auth, {}))}; this call did not run. Make the call again "
            "with those arguments if they still serve the task.")


class _GuardedInvoker:
    """``on_invoke_tool`` that asks the guard before handing the call to the tool's own.

    The arguments are checked against the tool's ``params_json_schema`` (strict JSON
    Schema) before any rule reads them, and the tool gets the validated snapshot.
    """

    def __init__(self, inner: Callable[..., Any], edge: Edge, schema: Mapping[str, Any]) -> None:
        self.inner = inner
        self.edge = edge
        self.schema = schema
        self.validator = SchemaArguments(schema)

    def call(self, tool: str, arguments: str | None, context: Any) -> ToolCall | str:
        args = _parse(arguments, self.schema)
        if isinstance(args, str):
            return _refuse_unparsed(self.edge, tool, args, context)
        return self.edge.build_call(tool, args, run_context_from(context))

    async def __call__(self, ctx: Any, input: str) -> Any:
        call = self.call(ctx.tool_name, input, ctx.context)
        if isinstance(call, str):
            return call
        # A call approved while answering an interruption runs on the single-use grant the
        # guard stored for exactly this call (audited grant.used, then call.executed).
        auth = await _ask(self.edge, call, self.validator, ahead=False)
        refusal = refusal_text(auth)
        if refusal is not None:
            return refusal
        return await self.inner(ctx, json.dumps(args_to_run(auth, call.args)))


def guard_function_tool(
    tool: FunctionTool | Callable[..., Any], *, guard: Guard | None = None,
    server: str = "local", run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None,
) -> FunctionTool:
    """A copy of an Agents SDK function tool whose every call goes through the guard.

    Name, description, JSON schema, ``needs_approval``, guardrails and error handling are
    kept. A held call waits for approval inside the tool call without blocking the event
    loop (a ``timeout_seconds`` on the tool includes that wait). A refused call does not
    run; the model gets the refusal as the tool's output. The caller is read from the run's
    ``context=`` (a :class:`RunContext`, or an object with an ``agentguard`` attribute or
    key), then :func:`agentguard.acting_as`, then ``run``.

    Args:
        tool: A ``FunctionTool`` (e.g. from ``@function_tool``) or a plain function.
        guard: The guard (default: the one in effect at call time).
        server: Server name the policy sees (default ``local``).
        run: Default facts about the caller.
        hints: Hints for the tool (``privilege``, ``labels``...).
    """
    if not isinstance(tool, FunctionTool):
        tool = function_tool(tool)
    if isinstance(tool.on_invoke_tool, _GuardedInvoker):
        return tool
    edge = Edge(ORIGIN, guard=guard, server=server, run=run, hints=hints)
    return replace(tool, on_invoke_tool=_GuardedInvoker(tool.on_invoke_tool, edge,
                                                        tool.params_json_schema))


def guard_function_tools(
    tools: Iterable[FunctionTool | Callable[..., Any]], *, guard: Guard | None = None,
    server: str = "local", run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None,
) -> list[Any]:
    """:func:`guard_function_tool` on each function tool; other tools (hosted tools,
    agents as tools...) are returned unchanged."""
    return [guard_function_tool(t, guard=guard, server=server, run=run, hints=hints)
            if isinstance(t, FunctionTool) or inspect.isfunction(t) else t for t in tools]


def _find_tool(agent: Any, name: str | None) -> FunctionTool | None:
    for tool in getattr(agent, "tools", None) or ():
        if isinstance(tool, FunctionTool) and tool.name == name:
            return tool
    return None


async def _decide(item: Any, context: Any, edge: Edge) -> Authorization | str | None:
    tool = _find_tool(getattr(item, "agent", None), item.name)
    invoker = tool.on_invoke_tool if tool is not None else None
    name = item.name or ""
    if isinstance(invoker, _GuardedInvoker):
        # Approved ahead: the guard stores a once grant bound to exactly this call, which
        # the guarded tool (building the call the same way) uses when the SDK runs it.
        call = invoker.call(name, item.arguments, context)
        if isinstance(call, str):
            return call
        auth = await _ask(invoker.edge, call, invoker.validator, ahead=True)
        return _edit_refusal(name, auth, call) or auth
    raw = item.raw_item
    label = raw.get("server_label") if isinstance(raw, Mapping) else getattr(
        raw, "server_label", None)
    if isinstance(label, str) and label:
        edge = Edge(edge.origin, guard=edge._guard, server=label, run=edge.run,
                    hints=edge._hints)
    schema = tool.params_json_schema if tool else None
    args = _parse(item.arguments, schema)
    if isinstance(args, str):
        return _refuse_unparsed(edge, name, args, context)
    # Nothing guards the run itself here: the approval is claimed now, and the SDK runs
    # the call as the model made it (the validated snapshot has the same JSON values).
    call = edge.build_call(name, args, run_context_from(context))
    auth = await _ask(edge, call, SchemaArguments(schema) if tool else None, ahead=False)
    return _edit_refusal(name, auth, call) or auth


async def resolve_interruptions(
    result: RunResult, *, guard: Guard | None = None, server: str = "local",
    run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None,
) -> RunState:
    """Answer a run's approval interruptions with the guard and its channels.

    Each pending ``ToolApprovalItem`` is authorized like any other call (a held call is
    asked of the guard's approval channels; a policy deny is refused at once). Allowed
    calls are approved, refused ones rejected with the guard's one-line reason as the
    message the model sees. Resume with ``Runner.run(agent, state)``.

    Args:
        result: The interrupted run's result (``result.interruptions`` non-empty).
        guard: The guard (default: the one in effect). Guarded tools use their own.
        server: Server name for calls of unguarded tools (hosted MCP approvals use their
            ``server_label``).
        run: Default facts about the caller (the run's ``context=`` comes first).
        hints: Hints for unguarded tools.

    Returns:
        The run state with every interruption decided.
    """
    edge = Edge(ORIGIN, guard=guard, server=server, run=run, hints=hints)
    context = result.context_wrapper.context
    state = result.to_state()
    for item in state.get_interruptions():
        verdict = await _decide(item, context, edge)
        refusal = verdict if isinstance(verdict, str) else refusal_text(verdict)
        if refusal is None:
            state.approve(item)
        else:
            state.reject(item, rejection_message=refusal)
    return state


async def run_guarded(
    agent: Any, input: Any, *, guard: Guard | None = None, server: str = "local",
    run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None, max_rounds: int = 20,
    **runner_kwargs: Any,
) -> RunResult:
    """``Runner.run`` that answers approval interruptions through the guard and resumes,
    until the run finishes.

    Args:
        agent: The starting agent.
        input: The input (or a ``RunState`` to resume).
        guard, server, run, hints: As for :func:`resolve_interruptions`.
        max_rounds: Most interruption rounds before giving up.
        **runner_kwargs: Passed to ``Runner.run`` (``context=``, ``max_turns=``...).

    Raises:
        UsageError: the run was still interrupted after ``max_rounds`` rounds.
    """
    result = await Runner.run(agent, input, **runner_kwargs)
    resume_kwargs = {k: v for k, v in runner_kwargs.items() if k != "context"}
    for _ in range(max_rounds):
        if not result.interruptions:
            return result
        state = await resolve_interruptions(result, guard=guard, server=server, run=run,
                                            hints=hints)
        result = await Runner.run(agent, state, **resume_kwargs)
    if result.interruptions:
        raise UsageError(f"the run was still waiting for approvals after {max_rounds} "
                         "rounds of answering them")
    return result
