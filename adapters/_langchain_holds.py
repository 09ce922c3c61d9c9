"""Durable holds for LangGraph: a held call pauses the run with ``interrupt``.

With ``hold="interrupt"`` a call that needs a human does not block the tool: the guard raises
a durable request (``Guard.authorize(wait=...)``) and the run pauses the framework's way, with
a ``langgraph.types.interrupt`` whose value is shaped like ``HumanInTheLoopMiddleware``'s
per-call ``tool_approval`` request, plus the request id. The app's checkpointer keeps the run;
the humans answer through the store (the approver terminal, Slack...), from any process;
:func:`resume_from_store` then builds the ``Command(resume=...)`` from the stored verdicts.

The resume value is never trusted: on resume the tool node re-runs, asks the guard again, and
the guard finds the request of the identical call in the store. An approved request is
claimed once and the approved snapshot runs; a denial comes back as the refusal the model
reads (the approver's reason, escaped); a call changed since it was held is a new call with
its own request, so it pauses again and nothing runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import anyio

from agentguard.adapters._common import Edge, RunContext
from agentguard.channels.render import render_request
from agentguard.errors import ConfigError
from agentguard.sanitize import escape_text

if TYPE_CHECKING:
    from langgraph.types import Command

    from agentguard.guard import Guard
    from agentguard.types import ApprovalRequest, Authorization
    from agentguard.validation import ArgumentValidator

__all__ = ["HOLD_SOURCE", "Hold", "HoldMode", "aresume_from_store", "decision_for",
           "resume_from_store"]

HoldMode = Literal["block", "interrupt"]
#: ``source`` of the interrupt values agentguard raises (other interrupts are left alone).
HOLD_SOURCE = "agentguard"
#: A request that can no longer run gets this decision with a reason for the UI.
_GONE = {"expired": "no decision before the approval timed out",
         "cancelled": "no approval channel could be reached",
         "consumed": "the approval was already used by an identical call"}


class Hold:
    """How a held call waits: ``block`` (the tool waits for the verdict: scripts) or
    ``interrupt`` (the run pauses with a LangGraph interrupt: apps with a checkpointer).

    Args:
        mode: ``block`` or ``interrupt``.
        wait: With ``interrupt``, seconds to wait for a verdict before pausing the run.

    Raises:
        ConfigError: an unknown mode or a negative wait.
    """

    def __init__(self, mode: HoldMode = "block", wait: float = 0.0) -> None:
        if mode not in ("block", "interrupt"):
            raise ConfigError(f"hold must be 'block' or 'interrupt', not {mode!r}")
        if wait < 0:
            raise ConfigError("wait must be zero or more seconds")
        self.mode = mode
        self.wait = wait

    def authorize_sync(
        self, edge: Edge, tool: str, args: Mapping[str, Any],
        layers: Sequence[RunContext | None], validator: ArgumentValidator | None,
        tool_call_id: str | None,
    ) -> Authorization | None:
        """Ask the guard; pause the run while the call is held (``interrupt``)."""
        if self.mode == "block":
            return edge.authorize_sync(tool, args, *layers, validator=validator)
        auth = edge.authorize_sync(tool, args, *layers, validator=validator, wait=self.wait)
        while auth is not None and auth.outcome == "pending":
            _pause(anyio.run(_payload, edge.guard(), auth, tool_call_id))
            auth = edge.authorize_sync(tool, args, *layers, validator=validator, wait=0)
        return auth

    async def authorize(
        self, edge: Edge, tool: str, args: Mapping[str, Any],
        layers: Sequence[RunContext | None], validator: ArgumentValidator | None,
        tool_call_id: str | None,
    ) -> Authorization | None:
        """Async :meth:`authorize_sync` (never blocks the event loop)."""
        if self.mode == "block":
            return await edge.authorize(tool, args, *layers, validator=validator)
        auth = await edge.authorize(tool, args, *layers, validator=validator, wait=self.wait)
        while auth is not None and auth.outcome == "pending":
            _pause(await _payload(edge.guard(), auth, tool_call_id))
            auth = await edge.authorize(tool, args, *layers, validator=validator, wait=0)
        return auth


def _pause(value: dict[str, Any]) -> None:
    """Pause the run (raises ``GraphInterrupt``); once resumed, return so that the caller
    asks the guard again: the stored verdict decides, never the resume value."""
    from langgraph.types import interrupt

    interrupt(value)


async def _payload(guard: Guard, auth: Authorization, tool_call_id: str | None
                   ) -> dict[str, Any]:
    """The interrupt value: HITL's ``tool_approval`` request, with the request id; the
    arguments as the store keeps them (the policy's redact paths masked), the description
    the approver's escaped rendering of the call and why it was held."""
    request = await guard.store.get_request(auth.request_id) if auth.request_id else None
    args = request.call.get("args") if request is not None else None
    return {
        "type": "tool_approval",
        "source": HOLD_SOURCE,
        "tool_call_id": tool_call_id,
        "name": auth.call.tool,
        "args": dict(args) if isinstance(args, Mapping) else {},
        "description": render_request(request) if request is not None else auth.message(),
        "request_id": auth.request_id,
        "rule": auth.rule_id,
        "reason": escape_text(auth.decision.reason),
        "expires_at": request.expires_at if request is not None else None,
    }


def decision_for(request: ApprovalRequest) -> dict[str, Any] | None:
    """A HITL-shaped decision for a settled request (``None`` while it is pending):
    ``{"type": "approve"}`` or ``{"type": "reject", "message": ...}`` with the
    approver's reason, escaped. Informative only: the guard re-reads the store."""
    if request.status == "pending":
        return None
    if request.status == "approved":
        return {"type": "approve"}
    if request.status == "denied":
        deny = [v for v in request.votes if not v.approve]
        why = deny[-1].reason if deny and deny[-1].reason else "no reason given"
        who = deny[-1].approver if deny else "an approver"
        return {"type": "reject", "message": f"denied by {escape_text(who)}: "
                                             f"{escape_text(why)}"}
    return {"type": "reject", "message": _GONE.get(request.status, request.status)}


def _held_requests(interrupts: Iterable[Any]) -> list[tuple[str, str]]:
    """(interrupt id, request id) of every agentguard hold among ``interrupts``."""
    found = []
    for item in interrupts:
        value = getattr(item, "value", None)
        if (isinstance(value, Mapping) and value.get("source") == HOLD_SOURCE
                and isinstance(value.get("request_id"), str)):
            found.append((item.id, value["request_id"]))
    return found


async def aresume_from_store(interrupts: Iterable[Any], *, guard: Guard) -> Command | None:
    """The ``Command(resume=...)`` that continues a paused run, from the store's verdicts.

    Args:
        interrupts: The run's interrupts (``result.interrupts`` of ``invoke(...,
            version="v2")``, or ``agent.get_state(config).interrupts`` in a new process).
        guard: A guard on the store the requests live in.

    Returns:
        A command resuming every hold that has a verdict (keyed by interrupt id, HITL's
        per-call form), or ``None`` while none has: resume later. Holds still pending when
        the run resumes pause it again.
    """
    from langgraph.types import Command

    await guard.open()
    decisions: dict[str, Any] = {}
    for interrupt_id, request_id in _held_requests(interrupts):
        request = await guard.store.get_request(request_id)
        decision = decision_for(request) if request is not None else {
            "type": "reject", "message": "the approval request no longer exists"}
        if decision is not None:
            decisions[interrupt_id] = decision
    return Command(resume=decisions) if decisions else None


def resume_from_store(interrupts: Iterable[Any], *, guard: Guard) -> Command | None:
    """Synchronous :func:`aresume_from_store` (not inside a running event loop)."""
    return anyio.run(lambda: aresume_from_store(list(interrupts), guard=guard))
