"""Runs of the OpenAI Agents SDK that answer approval interruptions through the guard:
waiting for each verdict (:func:`run_guarded`), or durably (:func:`run_durable`): a held call
leaves the run interrupted, its state is saved wherever the application keeps state, and a
later process (after a restart, hours later) applies the store's verdicts and resumes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentguard.adapters._common import RunContext, require
from agentguard.errors import UsageError

require("agents", "openai")

from agents import Runner, RunState  # noqa: E402

from agentguard.adapters._openai_agents import (  # noqa: E402
    PendingCall,
    answer_interruptions,
    resolve_interruptions,
)

if TYPE_CHECKING:
    from agents import RunResult

    from agentguard.guard import Guard
    from agentguard.types import ToolHints

__all__ = ["DurableRun", "resume_durable", "run_durable", "run_guarded"]


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
