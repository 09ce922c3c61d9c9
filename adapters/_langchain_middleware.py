"""The ``create_agent`` middleware of :mod:`agentguard.adapters.langchain` (needs the full
``langchain`` package, loaded on first use). Built on the public middleware hooks
``wrap_tool_call``/``awrap_tool_call`` and the public ``ToolCallRequest`` fields."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from agentguard.adapters._common import (
    Edge,
    RunContext,
    args_to_run,
    refusal_text,
    require,
    run_context_from,
)
from agentguard.adapters._langchain_holds import Hold, HoldMode
from agentguard.adapters._langchain_tools import (
    ORIGIN,
    GuardedTool,
    ToolArguments,
    config_layers,
    tool_call_args,
)

require("langchain.agents.middleware", "langchain")

from langchain.agents.middleware import AgentMiddleware, ToolCallRequest  # noqa: E402
from langchain_core.messages import ToolMessage  # noqa: E402

if TYPE_CHECKING:
    from agentguard.guard import Guard
    from agentguard.types import Authorization, ToolHints

__all__ = ["GuardMiddleware"]


class GuardMiddleware(AgentMiddleware):
    """Routes every tool call of a ``create_agent`` agent through the guard.

    Calls of tools already wrapped with :func:`~agentguard.adapters.langchain.guard_tool`
    pass straight through (they ask the guard themselves). Calls of tools the agent does
    not know are asked about too: a later middleware might run them.

    With ``hold="interrupt"`` a held call pauses the run with a LangGraph ``interrupt``
    (one per held call, shaped like ``HumanInTheLoopMiddleware``'s per-call
    ``tool_approval`` request, with the request id); the app's checkpointer keeps the run,
    and :func:`~agentguard.adapters.langchain.resume_from_store` resumes it, in any
    process, once the humans have answered through the store. Several held calls of one
    model turn pause together and are decided one by one.

    Args:
        guard: The guard (default: the one in effect at call time).
        server: Server name the policy sees (default ``local``, like the decorator).
        run: Default facts about the caller; per run, pass ``context=`` to the agent
            (a :class:`RunContext`, or your context object with an ``agentguard``
            attribute or key).
        hints: Hints for every tool, or per tool name.
        hold: ``block`` (default: the tool waits for the verdict; for scripts) or
            ``interrupt`` (the run pauses; needs a checkpointer).
        wait: With ``interrupt``, seconds to wait for a verdict before pausing.
    """

    def __init__(
        self, *, guard: Guard | None = None, server: str = "local",
        run: RunContext | Mapping[str, Any] | None = None,
        hints: ToolHints | Mapping[str, ToolHints] | None = None,
        hold: HoldMode = "block", wait: float = 0.0,
    ) -> None:
        super().__init__()
        self.edge = Edge(ORIGIN, guard=guard, server=server, run=run, hints=hints)
        self.hold = Hold(hold, wait)

    @staticmethod
    def _call(request: ToolCallRequest) -> tuple[str, dict[str, Any], tuple[RunContext | None,
                                                                             ...]]:
        call = request.tool_call
        runtime = request.runtime
        layers = (*config_layers(getattr(runtime, "config", None)),
                  run_context_from(getattr(runtime, "context", None)))
        return call["name"], tool_call_args(request.tool, call.get("args") or {}), layers

    @staticmethod
    def _decide(request: ToolCallRequest, auth: Authorization | None, sent: dict[str, Any]
                ) -> ToolMessage | ToolCallRequest:
        """The refusal to answer with, or the request to run (edited by an approver?)."""
        call = request.tool_call
        refusal = refusal_text(auth)
        if refusal is not None:
            return ToolMessage(content=refusal, tool_call_id=call["id"], name=call["name"],
                               status="error")
        if auth is None:  # the policy allows every call: nothing was decided on them
            return request
        # The snapshot the guard validated and approved runs (injected arguments are
        # added by the tool node afterwards); never the objects the call arrived with.
        return request.override(tool_call={**call, "args": args_to_run(auth, sent)})

    def wrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Any],
    ) -> Any:
        """Authorize (blocking this worker thread while humans are asked, or pausing the
        run), then run."""
        if isinstance(request.tool, GuardedTool):
            return handler(request)
        name, args, layers = self._call(request)
        auth = self.hold.authorize_sync(self.edge, name, args, layers,
                                        ToolArguments(request.tool),
                                        request.tool_call.get("id"))
        decided = self._decide(request, auth, args)
        return decided if isinstance(decided, ToolMessage) else handler(decided)

    async def awrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Awaitable[Any]],
    ) -> Any:
        """Authorize (awaiting humans without blocking the loop, or pausing the run), then
        run."""
        if isinstance(request.tool, GuardedTool):
            return await handler(request)
        name, args, layers = self._call(request)
        auth = await self.hold.authorize(self.edge, name, args, layers,
                                         ToolArguments(request.tool),
                                         request.tool_call.get("id"))
        decided = self._decide(request, auth, args)
        return decided if isinstance(decided, ToolMessage) else await handler(decided)
