"""LangChain / LangGraph: step-up authentication for tools and for ``create_agent``.

Guard tools you already have (``@tool`` functions, ``StructuredTool``, any ``BaseTool``);
name, description, argument schema and sync/async support are kept::

    from agentguard.adapters.langchain import guard_tools

    tools = guard_tools([search, delete_file], guard=guard)
    agent = create_agent(model, tools)

or route every tool call of an agent through the guard with a middleware::

    from agentguard.adapters.langchain import GuardMiddleware

    agent = create_agent(model, [search, delete_file],
                         middleware=[GuardMiddleware(guard=guard)])
    agent.invoke({"messages": [...]},
                 context=RunContext(principal="agent:helper", session_id="s1"))

A refused call does not run: the agent gets a ``ToolMessage`` with ``status="error"``
saying what happened, which rule decided, and that retrying will not help. Async agents
(``ainvoke``/``astream``) await approvals without blocking the event loop; sync agents run
tools on worker threads, where the wait blocks only that thread.

A held call waits inside the tool by default (``hold="block"``, for scripts). With
``hold="interrupt"`` it pauses the LangGraph run instead (a HITL-shaped ``interrupt`` per held
call, kept by your checkpointer), and :func:`resume_from_store` later builds the
``Command(resume=...)`` from the verdicts in the store, in any process::

    agent = create_agent(model, tools, checkpointer=saver,
                         middleware=[GuardMiddleware(guard=guard, hold="interrupt")])
    out = agent.invoke({"messages": [...]}, config, version="v2")   # out.interrupts: held
    ...  # later, anywhere: agentguard approvals approve ID
    command = resume_from_store(agent.get_state(config).interrupts, guard=guard)

Only public LangChain and LangGraph API is used: the wrapped tool's ``invoke``/``ainvoke``,
``tool_call_schema``, the ``wrap_tool_call`` middleware hooks, ``get_runtime`` and
``interrupt``.

Who is calling is read per run from ``context=`` (a :class:`RunContext`, or your context
object with an ``agentguard`` attribute or key) or ``config={"configurable": {"agentguard":
RunContext(...)}}``, then from :func:`agentguard.acting_as`, then from ``run=``.

Needs ``pip install 'agentguard[langchain]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentguard.adapters._common import RunContext
from agentguard.adapters._langchain_holds import (
    HoldMode,
    aresume_from_store,
    decision_for,
    resume_from_store,
)
from agentguard.adapters._langchain_tools import (
    GuardedTool,
    ToolArguments,
    approved_args,
    config_layers,
    guard_tool,
    guard_tools,
    tool_call_args,
)

if TYPE_CHECKING:
    from agentguard.adapters._langchain_middleware import GuardMiddleware

__all__ = [
    "GuardMiddleware",
    "GuardedTool",
    "HoldMode",
    "RunContext",
    "ToolArguments",
    "approved_args",
    "aresume_from_store",
    "config_layers",
    "decision_for",
    "guard_tool",
    "guard_tools",
    "resume_from_store",
    "tool_call_args",
]


def __getattr__(name: str) -> Any:
    # The middleware needs the full ``langchain`` package; plain tools need only the core.
    if name == "GuardMiddleware":
        from agentguard.adapters._langchain_middleware import GuardMiddleware

        return GuardMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
