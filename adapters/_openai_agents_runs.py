"""Agents SDK approval interruptions answered through the guard (:func:`answer_interruptions`,
:func:`resolve_interruptions`), and runs built on them: waiting for each verdict
(:func:`run_guarded`), or durably (:func:`run_durable`): a held call leaves the run
interrupted, its state is saved wherever the application keeps state, and a later process
(after a restart, hours later) applies the store's verdicts and resumes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from agentguard.adapters._common import (
    Edge,
    RunContext,
    refusal_text,
    require,
    run_context_from,
)
from agentguard.canonical import CanonicalizationError, loads_strict
from agentguard.errors import UsageError
from agentguard.types import ToolHints

require("agents", "openai")

from agents import FunctionTool, Runner, RunState  # noqa: E402

from agentguard.adapters._openai_agents import (  # noqa: E402
    ORIGIN,
    SchemaArguments,
    _ask,
    _edit_refusal,
    _GuardedInvoker,
    _parse,
    _refuse_unparsed,
)

if TYPE_CHECKING:
    from agents import RunResult

    from agentguard.guard import Guard
    from agentguard.types import Authorization

__all__ = ["DurableRun", "PendingCall", "answer_interruptions", "resolve_interruptions",
           "resume_durable", "run_durable", "run_guarded"]


def _find_tool(agent: Any, name: str | None) -> FunctionTool | None:
    for tool in getattr(agent, "tools", None) or ():
        if isinstance(tool, FunctionTool) and tool.name == name:
            return tool
    return None


async def _decide(item: Any, context: Any, edge: Edge,
                  wait: float | None) -> Authorization | str | None:
    """The guard's verdict on one interruption. The run stopped to ask a human (the tool's
    ``needs_approval``, an MCP server's ``require_approval``, or the guard's hold), so the
    call needs an approval from the guard, whatever the policy says of it alone."""
    tool = _find_tool(getattr(item, "agent", None), item.name)
    invoker = tool.on_invoke_tool if tool is not None else None
    name = item.name or ""
    if isinstance(invoker, _GuardedInvoker):
        # Approved ahead: the guard stores a once grant bound to exactly this call, which
        # the guarded tool (building the call the same way) uses when the SDK runs it.
        call = invoker.call(name, item.arguments, context, asked=True)
        if isinstance(call, str):
            return call
        held = invoker.just_held(item.call_id or "", call)
        if held is not None and wait is not None and wait <= 0:
            return held  # held a moment ago by the approval check: no verdict to look for
        auth = await _ask(invoker.edge, call, invoker.validator, ahead=True, wait=wait)
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
    call = edge.build_call(name, args, run_context_from(context),
                           hints=ToolHints(requires_approval=True))
    auth = await _ask(edge, call, SchemaArguments(schema) if tool else None, ahead=False,
                      wait=wait)
    return _edit_refusal(name, auth, call) or auth


def _same_call(item: Any) -> tuple[str, str] | None:
    """What makes two interruptions of one turn the same call (tool and arguments)."""
    try:
        args = loads_strict(item.arguments or "{}")
        return (item.name or "", json.dumps(args, sort_keys=True))
    except (CanonicalizationError, TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class PendingCall:
    """An interruption no human has decided yet (the run waits for it).

    Attributes:
        call_id: The model's id of the tool call.
        tool: Tool name.
        arguments: The arguments as the model sent them (JSON text).
        request_id: The guard's approval request (``agentguard approvals show ID``).
        message: What the guard says of it (held until when, retry later).
    """

    call_id: str
    tool: str
    arguments: str
    request_id: str | None
    message: str


async def answer_interruptions(
    result: RunResult, *, guard: Guard | None = None, server: str = "local",
    run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None, wait: float | None = None,
) -> tuple[RunState, list[PendingCall]]:
    """Answer a run's approval interruptions with the guard: :func:`resolve_interruptions`
    that also says which calls nobody has decided yet (with ``wait``).

    Returns:
        The run state (allowed calls approved, refused ones rejected with the guard's
        one-line reason, escaped, as the message the model reads) and the calls still
        pending, which stay undecided in the state.
    """
    edge = Edge(ORIGIN, guard=guard, server=server, run=run, hints=hints)
    context = result.context_wrapper.context
    state = result.to_state()
    pending: list[PendingCall] = []
    first: dict[tuple[str, str], PendingCall | str] = {}
    for item in state.get_interruptions():
        key = _same_call(item)
        if key is not None and key in first:
            # Duplicates collapse: one decision, one run, for identical calls in a turn.
            seen = first[key]
            if isinstance(seen, PendingCall):
                pending.append(replace(seen, call_id=item.call_id or ""))
            else:
                state.reject(item, rejection_message=seen)
            continue
        verdict = await _decide(item, context, edge, wait)
        if not isinstance(verdict, str) and verdict is not None and verdict.outcome == "pending":
            held = PendingCall(item.call_id or "", item.name or "", item.arguments or "",
                               verdict.request_id, verdict.message())
            pending.append(held)
            if key is not None:
                first[key] = held
            continue
        refusal = verdict if isinstance(verdict, str) else refusal_text(verdict)
        if refusal is None:
            state.approve(item)
        else:
            state.reject(item, rejection_message=refusal)
        if key is not None:
            # Identical calls share one decision: the same refusal, or one run.
            first[key] = refusal or (
                f"agentguard: an identical call in this turn ({item.call_id}) runs on the "
                "one approval; this duplicate did not run.")
    return state, pending


async def resolve_interruptions(
    result: RunResult, *, guard: Guard | None = None, server: str = "local",
    run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None, wait: float | None = None,
) -> RunState:
    """Answer a run's approval interruptions with the guard and its channels.

    Each pending ``ToolApprovalItem`` is authorized like any other call, and needs a
    human's approval even where the policy alone would allow it (whoever made the run
    stop asked for one: the stricter wins). A held call is asked of the guard's approval
    channels; a policy deny is refused at once. Allowed calls are approved, refused ones
    rejected with the guard's one-line reason as the message the model sees. Resume with
    ``Runner.run(agent, state)``.

    Args:
        result: The interrupted run's result (``result.interruptions`` non-empty).
        guard: The guard (default: the one in effect). Guarded tools use their own.
        server: Server name for calls of unguarded tools (hosted MCP approvals use their
            ``server_label``).
        run: Default facts about the caller (the run's ``context=`` comes first).
        hints: Hints for unguarded tools.
        wait: Seconds to wait for a verdict (``None``: until each request expires). A call
            nobody decided in time stays undecided in the state (see
            :func:`answer_interruptions`, :func:`run_durable`).

    Returns:
        The run state with every decided interruption answered.
    """
    state, _ = await answer_interruptions(result, guard=guard, server=server, run=run,
                                          hints=hints, wait=wait)
    return state


async def run_guarded(
    agent: Any, input: Any, *, guard: Guard | None = None, server: str = "local",
    run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None, max_rounds: int = 20,
    **runner_kwargs: Any,
) -> RunResult:
    """``Runner.run`` that answers approval interruptions through the guard (waiting for
    each verdict) and resumes, until the run finishes. A tool's ``needs_approval`` is
    honoured even where the policy would allow the call: a human approves it, audited.

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


@dataclass(frozen=True, slots=True)
class DurableRun:
    """Where a durable run stands.

    Attributes:
        result: The SDK's result: finished, or interrupted by calls still held.
        pending: The held calls nobody has decided yet (empty when the run finished).
    """

    result: RunResult
    pending: tuple[PendingCall, ...]

    @property
    def finished(self) -> bool:
        """True when the run reached its final output."""
        return not self.result.interruptions

    @property
    def final_output(self) -> Any:
        """The run's final output (``None`` while calls are held)."""
        return self.result.final_output

    def state(self) -> str:
        """The run's state as JSON text, to keep until the verdicts exist; resume it with
        :func:`resume_durable` in any process. Keep it where the agent cannot write: the
        SDK does not authenticate a saved state (guarded tools check their calls with the
        guard again when they run, so an edited state cannot run an unapproved call of a
        guarded tool)."""
        return self.result.to_state().to_string()


async def run_durable(
    agent: Any, input: Any, *, guard: Guard | None = None, server: str = "local",
    run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None, wait: float = 0.0,
    max_rounds: int = 20, **runner_kwargs: Any,
) -> DurableRun:
    """``Runner.run`` whose held calls outlive the process.

    Runs (or resumes) the agent and answers its approval interruptions from the guard's
    store without waiting for a human: approved calls run once (bound to the approved
    call), denied ones are rejected with the approver's reason (escaped) as the tool output
    the model reads, and calls nobody has decided yet stay interrupted. It returns when the
    run finishes or when every remaining interruption is still pending: save
    :meth:`DurableRun.state` and call :func:`resume_durable` later (after
    ``agentguard approvals approve|deny ID``, Slack, the web page...).

    Use tools guarded with ``hold="interrupt"`` (:func:`guard_function_tools`), so held
    calls become interruptions instead of waiting inside the tool; their approvers are told
    when the call is first held. Keep who is calling in ``run=`` or a mapping
    ``context={"agentguard": {...}}``, which the saved state carries.

    Args:
        agent: The starting agent.
        input: The input, or a ``RunState`` to resume.
        guard, server, run, hints: As for :func:`resolve_interruptions`.
        wait: Seconds to wait for a verdict on each held call (default 0: not at all).
        max_rounds: Most rounds of answering interruptions in this call.
        **runner_kwargs: Passed to ``Runner.run`` (``context=``, ``max_turns=``...).

    Raises:
        UsageError: the run was still being answered after ``max_rounds`` rounds.
    """
    result = await Runner.run(agent, input, **runner_kwargs)
    resume_kwargs = {k: v for k, v in runner_kwargs.items() if k != "context"}
    for _ in range(max_rounds):
        if not result.interruptions:
            return DurableRun(result, ())
        state, pending = await answer_interruptions(result, guard=guard, server=server,
                                                    run=run, hints=hints, wait=wait)
        if len(pending) == len(result.interruptions):
            return DurableRun(result, tuple(pending))  # nothing decided: keep the state
        # Some calls were decided: run the approved ones, answer the rejected ones; the
        # SDK interrupts again for those still pending.
        result = await Runner.run(agent, state, **resume_kwargs)
    raise UsageError(f"the run was still being answered after {max_rounds} rounds")


async def resume_durable(
    agent: Any, saved: str, *, guard: Guard | None = None, server: str = "local",
    run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None, wait: float = 0.0,
    max_rounds: int = 20, **runner_kwargs: Any,
) -> DurableRun:
    """Resume a run saved with :meth:`DurableRun.state` (in any process) and apply the
    verdicts that exist now; see :func:`run_durable`.

    Args:
        agent: The same starting agent (same name, same tools) as the saved run.
        saved: The text :meth:`DurableRun.state` returned.
        guard, server, run, hints, wait, max_rounds, runner_kwargs: As for
            :func:`run_durable`.
    """
    state = await RunState.from_string(agent, saved)
    return await run_durable(agent, state, guard=guard, server=server, run=run, hints=hints,
                             wait=wait, max_rounds=max_rounds, **runner_kwargs)
