"""The OpenAI Agents SDK side of :mod:`agentguard.adapters.openai` (loaded on first use)."""

from __future__ import annotations

import inspect
import json
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from agentguard.adapters._common import (
    Edge,
    RunContext,
    edited_args,
    fill_schema_defaults,
    refusal_text,
    require,
    run_context_from,
)
from agentguard.canonical import CanonicalizationError, call_hash, loads_strict
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
_LEDGER_SIZE = 10_000


_Approved = tuple[str, dict[str, Any] | None]  # (call hash, arguments an approver chose)


class _Ledger:
    """Calls the guard already approved while answering an interruption, so the guarded
    tool that then runs does not ask the humans a second time. Keyed by the SDK's call id
    and bound to the exact call (hash); each entry is used once."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, _Approved] = OrderedDict()

    def add(self, call_id: str, digest: str, edited: dict[str, Any] | None) -> None:
        self._entries[call_id] = (digest, edited)
        while len(self._entries) > _LEDGER_SIZE:
            self._entries.popitem(last=False)

    def __contains__(self, call_id: str) -> bool:
        return call_id in self._entries

    def take(self, call_id: str, digest: str) -> _Approved | None:
        """The approval recorded for this exact call, used up; None if there is none."""
        entry = self._entries.pop(call_id, None)
        return entry if entry is not None and entry[0] == digest else None


_ledgers: weakref.WeakKeyDictionary[Guard, _Ledger] = weakref.WeakKeyDictionary()


def _ledger(guard: Guard) -> _Ledger:
    ledger = _ledgers.get(guard)
    if ledger is None:
        ledger = _ledgers[guard] = _Ledger()
    return ledger


def _parse(arguments: str | None, schema: Mapping[str, Any] | None) -> dict[str, Any] | str:
    try:
        args = loads_strict(arguments or "{}")
    except CanonicalizationError as exc:
        return f"agentguard: the tool arguments are not valid JSON ({exc}); nothing ran."
    if not isinstance(args, dict):
        return "agentguard: the tool arguments must be a JSON object; nothing ran."
    return fill_schema_defaults(args, schema)


class _GuardedInvoker:
    """``on_invoke_tool`` that asks the guard before handing the call to the tool's own."""

    def __init__(self, inner: Callable[..., Any], edge: Edge, schema: Mapping[str, Any]) -> None:
        self.inner = inner
        self.edge = edge
        self.schema = schema

    def call(self, tool: str, arguments: str | None, context: Any) -> ToolCall | str:
        args = _parse(arguments, self.schema)
        if isinstance(args, str):
            return args
        return self.edge.build_call(tool, args, run_context_from(context))

    async def __call__(self, ctx: Any, input: str) -> Any:
        tool = ctx.tool_name
        args = _parse(input, self.schema)
        if isinstance(args, str):
            return args
        layer = run_context_from(ctx.context)
        call_id = getattr(ctx, "tool_call_id", None)
        ledger = _ledger(self.edge.guard())
        approved = None
        if call_id and call_id in ledger:
            try:
                approved = ledger.take(call_id, call_hash(self.edge.build_call(tool, args,
                                                                               layer)))
            except CanonicalizationError:
                approved = None  # the guard refuses such arguments itself, below
        if approved is not None:
            edited = approved[1]
        else:
            auth = await self.edge.authorize(tool, args, layer)
            refusal = refusal_text(auth)
            if refusal is not None:
                return refusal
            edited = edited_args(auth, args)
        if edited is not None:
            input = json.dumps(edited)  # the call an approver chose is the one that runs
        return await self.inner(ctx, input)


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
    if isinstance(invoker, _GuardedInvoker):
        # Build the call exactly as the guarded tool will, so its ledger entry matches.
        call = invoker.call(item.name or "", item.arguments, context)
        if isinstance(call, str):
            return call
        auth = await invoker.edge.authorize(call.tool, call.args, run_context_from(context))
        if (auth is None or auth.allowed) and item.call_id:
            try:
                digest = call_hash(call)
            except CanonicalizationError:
                return auth  # not recordable: the tool asks the guard again when it runs
            _ledger(invoker.edge.guard()).add(item.call_id, digest,
                                              edited_args(auth, call.args))
        return auth
    raw = item.raw_item
    label = raw.get("server_label") if isinstance(raw, Mapping) else getattr(
        raw, "server_label", None)
    if isinstance(label, str) and label:
        edge = Edge(edge.origin, guard=edge._guard, server=label, run=edge.run,
                    hints=edge._hints)
    args = _parse(item.arguments, tool.params_json_schema if tool else None)
    if isinstance(args, str):
        return args
    auth = await edge.authorize(item.name or "", args, run_context_from(context))
    edited = edited_args(auth, args)
    if edited is not None:
        # The SDK can only run a paused call as the model made it; guard the tool itself
        # (guard_function_tool) for edited arguments to run.
        return (f"agentguard: an approver replaced the arguments of {item.name!r} with "
                f"{json.dumps(edited)}; this call did not run. Make the call again with "
                "those arguments if they still serve the task.")
    return auth


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
