"""The OpenAI Agents SDK side of :mod:`agentguard.adapters.openai` (loaded on first use)."""

from __future__ import annotations

import inspect
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

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
from agentguard.canonical import CanonicalizationError, call_hash, loads_strict
from agentguard.errors import UsageError
from agentguard.types import Authorization, ToolHints

require("agents", "openai")

from agents import FunctionTool, function_tool  # noqa: E402

if TYPE_CHECKING:

    from agentguard.guard import Guard
    from agentguard.types import ToolCall

__all__ = ["Hold", "guard_function_tool", "guard_function_tools"]

ORIGIN = "openai-agents"

#: How a guarded tool holds a call: ``block``: wait inside the tool call for the verdict
#: (scripts); ``interrupt``: the call becomes one of the run's approval interruptions, the
#: run's state can be saved, and the verdict is applied later, in any process.
Hold = Literal["block", "interrupt"]

_MEMOS = 1024


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
               ahead: bool, wait: float | None = None) -> Authorization | None:
    """The guard's answer for ``call`` (``None``: the policy allows every call to the
    tool). ``ahead``: approved before the run, as a single-use grant in the store.
    ``wait``: seconds to wait for a human (``None``: until the request expires; ``0``: a
    durable hold, answered ``pending`` at once when nobody has decided yet)."""
    guard = edge.guard()
    if guard.static_allow(call.server, call.tool, call.hints):
        return None
    if ahead:
        return await guard.preapprove(call, validator=validator, wait=wait)
    return await guard.authorize(call, validator=validator, wait=wait)


def _edit_refusal(name: str, auth: Authorization | None, asked: ToolCall) -> str | None:
    """The SDK can only run a paused call as the model made it: when an approver replaced
    the arguments (the guard decided a new call), this call does not run."""
    if auth is None or not auth.allowed or auth.call.id == asked.id:
        return None
    return (f"agentguard: an approver replaced the arguments of {name!r} with "
            f"{json.dumps(args_to_run(auth, {}))}; this call did not run. Make the call again "
            "with those arguments if they still serve the task.")


@dataclass(frozen=True, slots=True)
class _Memo:
    """What the approval check decided for one tool call, for the run that follows at once
    (so the call is neither decided nor counted twice)."""

    digest: str | None
    answer: Authorization | str | None
    asked: bool


class _GuardedInvoker:
    """``on_invoke_tool`` that asks the guard before handing the call to the tool's own.

    The arguments are checked against the tool's ``params_json_schema`` (strict JSON
    Schema) before any rule reads them, and the tool gets the validated snapshot. A call
    someone asked a human about (the tool's own ``needs_approval``, or an approval recorded
    in the run) needs an approval from the guard too: the stricter of the two wins.
    """

    def __init__(self, inner: Callable[..., Any], edge: Edge, schema: Mapping[str, Any],
                 needs_approval: Any = False, hold: Hold = "block") -> None:
        self.inner = inner
        self.edge = edge
        self.schema = schema
        self.validator = SchemaArguments(schema)
        self.needs_approval = needs_approval
        self.hold = hold
        self._memos: OrderedDict[str, _Memo] = OrderedDict()

    def call(self, tool: str, arguments: str | None, context: Any, *,
             asked: bool = False) -> ToolCall | str:
        args = _parse(arguments, self.schema)
        if isinstance(args, str):
            return _refuse_unparsed(self.edge, tool, args, context)
        hints = ToolHints(requires_approval=True) if asked else None
        return self.edge.build_call(tool, args, run_context_from(context), hints=hints)

    def remember(self, call_id: str, memo: _Memo) -> None:
        self._memos[call_id] = memo
        while len(self._memos) > _MEMOS:
            self._memos.popitem(last=False)

    def just_held(self, call_id: str, call: ToolCall) -> Authorization | None:
        """The pending answer the approval check gave this very call, once."""
        memo = self._memos.get(call_id)
        if (memo is None or not isinstance(memo.answer, Authorization)
                or memo.answer.outcome != "pending" or memo.digest != _digest(call)):
            return None
        del self._memos[call_id]
        return memo.answer

    def _asked(self, ctx: Any, memo: _Memo | None) -> bool:
        if self.needs_approval is True or (memo is not None and memo.asked):
            return True
        try:
            return ctx.is_tool_approved(ctx.tool_name, ctx.tool_call_id) is True
        except Exception:
            return True

    async def __call__(self, ctx: Any, input: str) -> Any:
        memo = self._memos.pop(getattr(ctx, "tool_call_id", "") or "", None)
        decided = memo.answer if memo is not None else None
        if isinstance(decided, str):
            return decided  # refused by the approval check (already audited)
        call = self.call(ctx.tool_name, input, ctx.context, asked=self._asked(ctx, memo))
        if isinstance(call, str):
            return call
        auth: Authorization | None
        if (memo is not None and decided is not None and memo.digest == _digest(call)
                and decided.outcome != "pending"):
            auth = decided  # decided by the approval check
        else:
            # A call approved while answering an interruption runs on the single-use grant
            # the guard stored for exactly this call (audited grant.used, then
            # call.executed). Holding by interruption, a call never blocks here.
            auth = await _ask(self.edge, call, self.validator, ahead=False,
                              wait=0.0 if self.hold == "interrupt" else None)
        refusal = refusal_text(auth)
        if refusal is not None:
            return refusal
        return await self.inner(ctx, json.dumps(args_to_run(auth, call.args)))


def _digest(call: ToolCall) -> str | None:
    try:
        return call_hash(call)
    except CanonicalizationError:
        return None


class _NeedsApproval:
    """``needs_approval`` of a tool that holds by interruption: the stricter of the
    developer's own setting and the guard's decision. A held call is raised with the guard
    (its approvers are told at once) and becomes one of the run's interruptions; a call the
    guard allows or refuses is answered from this decision when the SDK runs it."""

    def __init__(self, invoker: _GuardedInvoker, name: str) -> None:
        self.invoker = invoker
        self.name = name

    async def __call__(self, ctx: Any, params: dict[str, Any], call_id: str) -> bool:
        own = self.invoker.needs_approval
        if callable(own):
            own = own(ctx, params, call_id)
            if inspect.isawaitable(own):
                own = await own
        asked = bool(own)
        call = self.invoker.call(self.name, json.dumps(params), ctx.context, asked=asked)
        if isinstance(call, str):
            self.invoker.remember(call_id, _Memo(None, call, asked))
            return False
        auth = await _ask(self.invoker.edge, call, self.invoker.validator, ahead=True,
                          wait=0.0)
        if auth is not None and auth.outcome == "pending":
            # Kept for answering the interruption at once without asking the store again.
            self.invoker.remember(call_id, _Memo(_digest(call), auth, asked))
            return True
        # Approved ahead (a grant covers it): the run uses the grant. Allowed or refused:
        # the run answers from this decision.
        answer = auth if auth is None or auth.outcome != "approved" else None
        self.invoker.remember(call_id, _Memo(_digest(call), answer, asked))
        return False


def guard_function_tool(
    tool: FunctionTool | Callable[..., Any], *, guard: Guard | None = None,
    server: str = "local", run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None, hold: Hold = "block",
) -> FunctionTool:
    """A copy of an Agents SDK function tool whose every call goes through the guard.

    Name, description, JSON schema, guardrails and error handling are kept. A refused call
    does not run; the model gets the refusal as the tool's output. The caller is read from
    the run's ``context=`` (a :class:`RunContext`, or an object with an ``agentguard``
    attribute or key), then :func:`agentguard.acting_as`, then ``run``.

    A held call, with ``hold="block"`` (the default, for scripts), waits for approval inside
    the tool call without blocking the event loop (a ``timeout_seconds`` on the tool
    includes that wait). With ``hold="interrupt"`` it becomes one of the run's approval
    interruptions at once (its approvers are told through the guard's channels): save the
    run's state and apply the verdict later, in any process, with :func:`run_durable` /
    :func:`resume_durable`.

    The tool's own ``needs_approval`` is honoured: a call it asks about needs an approval
    from the guard even where the policy would allow it (the stricter of the two wins).

    Args:
        tool: A ``FunctionTool`` (e.g. from ``@function_tool``) or a plain function.
        guard: The guard (default: the one in effect at call time).
        server: Server name the policy sees (default ``local``).
        run: Default facts about the caller.
        hints: Hints for the tool (``privilege``, ``labels``...).
        hold: ``block`` or ``interrupt`` (see above). ``interrupt`` needs channels that
            reach approvers without this process waiting (the approver terminal, Slack, the
            web page): an approver asked in-process (the console) is asked only while the
            call is first held.
    """
    if not isinstance(tool, FunctionTool):
        tool = function_tool(tool)
    if isinstance(tool.on_invoke_tool, _GuardedInvoker):
        return tool
    if hold not in ("block", "interrupt"):
        raise UsageError(f"hold must be 'block' or 'interrupt', not {hold!r}")
    edge = Edge(ORIGIN, guard=guard, server=server, run=run, hints=hints)
    invoker = _GuardedInvoker(tool.on_invoke_tool, edge, tool.params_json_schema,
                              tool.needs_approval, hold)
    needs_approval = _NeedsApproval(invoker, tool.name) if hold == "interrupt" else (
        tool.needs_approval)
    return replace(tool, on_invoke_tool=invoker, needs_approval=needs_approval)


def guard_function_tools(
    tools: Iterable[FunctionTool | Callable[..., Any]], *, guard: Guard | None = None,
    server: str = "local", run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None, hold: Hold = "block",
) -> list[Any]:
    """:func:`guard_function_tool` on each function tool; other tools (hosted tools,
    agents as tools...) are returned unchanged."""
    return [guard_function_tool(t, guard=guard, server=server, run=run, hints=hints,
                                hold=hold)
            if isinstance(t, FunctionTool) or inspect.isfunction(t) else t for t in tools]
