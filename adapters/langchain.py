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

Who is calling is read per run from ``context=`` (a :class:`RunContext`, or your context
object with an ``agentguard`` attribute or key) or ``config={"configurable": {"agentguard":
RunContext(...)}}``, then from :func:`agentguard.acting_as`, then from ``run=``.

Needs ``pip install 'agentguard[langchain]'``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from agentguard.adapters._common import (
    RUN_CONTEXT_KEY,
    Edge,
    RunContext,
    SchemaArguments,
    args_to_run,
    fill_schema_defaults,
    refusal_text,
    require,
    run_context_from,
)
from agentguard.canonical import FrozenDict, freeze
from agentguard.errors import ArgumentValidationError

require("langchain_core", "langchain")

from langchain_core.runnables import RunnableConfig  # noqa: E402
from langchain_core.tools import BaseTool, StructuredTool, ToolException  # noqa: E402
from langchain_core.tools.base import _get_runnable_config_param  # noqa: E402
from pydantic import ValidationError  # noqa: E402

if TYPE_CHECKING:
    from agentguard.adapters._langchain_middleware import (
        GuardMiddleware,
    )
    from agentguard.guard import Guard
    from agentguard.types import ToolHints

__all__ = ["GuardMiddleware", "GuardedTool", "RunContext", "ToolArguments", "guard_tool",
           "guard_tools", "tool_call_args"]

ORIGIN = "langchain"
_RUNTIME_KEY = "__pregel_runtime"  # where LangGraph keeps the run's Runtime in a config


def __getattr__(name: str) -> Any:
    # The middleware needs the full ``langchain`` package; plain tools need only the core.
    if name == "GuardMiddleware":
        from agentguard.adapters._langchain_middleware import GuardMiddleware

        return GuardMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tool_call_args(tool: BaseTool | None, args: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments the guard sees for a call of ``tool``: the ones the model fills in
    (injected state, runtime and ids are left out), validated, with defaults filled in,
    as JSON data — so a guarded tool and the middleware show the policy the same call.
    Arguments that fail validation, or hold NaN or an infinity (which JSON data would turn
    into ``null``), are given as they came: the guard refuses them as invalid."""
    if tool is None:
        return dict(args)
    schema = tool.tool_call_schema
    if isinstance(schema, Mapping):
        keys = (schema.get("properties") or {}).keys()
        return fill_schema_defaults({k: v for k, v in args.items() if k in keys}, schema)
    fields = getattr(schema, "model_fields", None)
    if fields is None:
        return dict(args)
    given = {k: v for k, v in args.items() if k in fields}
    try:
        model = schema.model_validate(given)
        freeze(model.model_dump())  # NaN, infinity, unsafe integers anywhere
    except (ValidationError, ValueError):
        return given
    return model.model_dump(mode="json")


class ToolArguments:
    """The guard's validator for a LangChain tool: the arguments must fit the tool's
    ``tool_call_schema`` (as LangChain validates them) and be plain JSON; the snapshot is
    the validated values as JSON data, which is what the tool then runs with.

    Args:
        tool: The tool (``None``: any JSON object).
    """

    def __init__(self, tool: BaseTool | None) -> None:
        schema = tool.tool_call_schema if tool is not None else None
        self._model = schema if hasattr(schema, "model_validate") else None
        self._schema = SchemaArguments(schema if isinstance(schema, Mapping) else None)

    def validate(self, args: Mapping[str, Any]) -> FrozenDict:
        """The validated arguments as a frozen snapshot.

        Raises:
            ArgumentValidationError: they do not fit the tool's schema or are not JSON.
        """
        freeze(args)  # before pydantic's JSON dump, which writes NaN under Any as null
        if self._model is None:
            return self._schema.validate(args)
        try:
            return freeze(self._model.model_validate(dict(args)).model_dump(mode="json"))
        except ValidationError as exc:
            raise ArgumentValidationError(str(exc).replace("\n", "; ")[:300]) from None


def _edited_kwargs(tool: BaseTool, kwargs: Mapping[str, Any],
                  edited: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the model-visible arguments replaced by an approver's edit (validated
    like the tool validates its input; injected arguments are kept)."""
    schema = tool.tool_call_schema
    fields = getattr(schema, "model_fields", None)
    if fields is None:
        keys = (schema.get("properties") or {}).keys() if isinstance(schema, Mapping) else ()
        visible = dict(edited)
    else:
        keys = fields.keys()
        model = schema.model_validate(dict(edited))
        visible = {k: getattr(model, k) for k in edited if k in fields}
    return {**{k: v for k, v in kwargs.items() if k not in keys}, **visible}


def _config_layers(config: Mapping[str, Any] | None) -> tuple[RunContext | None, ...]:
    """Run contexts carried by a runnable config: ``configurable["agentguard"]``, then
    the LangGraph run's ``context=``."""
    configurable = (config or {}).get("configurable") or {}
    runtime = configurable.get(_RUNTIME_KEY)
    return (RunContext.coerce(configurable.get(RUN_CONTEXT_KEY)),
            run_context_from(getattr(runtime, "context", None)))


class _Refused(ToolException):
    """The guard refused the call (handled into an error ToolMessage, never raised out)."""


def _signature_has(func: Any, name: str) -> bool:
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


class GuardedTool(BaseTool):
    """A tool that asks the guard before each call of the tool it wraps.

    Build with :func:`guard_tool`. Everything the model and the agent see (name,
    description, argument schema, ``return_direct``, ``response_format``) is the wrapped
    tool's. The wrapped tool's own ``ToolException`` handling is kept.
    """

    inner: BaseTool
    edge: Any
    validator: Any = None

    def __init__(self, inner: BaseTool, edge: Edge) -> None:
        super().__init__(
            inner=inner, edge=edge, name=inner.name, description=inner.description,
            args_schema=inner.args_schema, return_direct=inner.return_direct,
            response_format=inner.response_format, tags=inner.tags, metadata=inner.metadata,
            extras=inner.extras, verbose=inner.verbose, callbacks=inner.callbacks,
            handle_validation_error=inner.handle_validation_error,
        )
        # Set after construction: the handler needs the instance (refusals always become
        # an error result; the wrapped tool's errors follow its own setting).
        self.handle_tool_error = self._handle_tool_error
        self.validator = ToolArguments(inner)

    def _handle_tool_error(self, exc: ToolException) -> Any:
        if isinstance(exc, _Refused):
            return str(exc)
        flag = self.inner.handle_tool_error
        if not flag:
            raise exc
        if isinstance(flag, str):
            return flag
        if callable(flag) and not isinstance(flag, bool):
            return flag(exc)
        return exc.args[0] if exc.args else "Tool execution error"

    def _approved(self, auth: Any, sent: dict[str, Any], kwargs: dict[str, Any]
                  ) -> dict[str, Any]:
        """The keyword arguments to run the wrapped tool with (raises when refused)."""
        refusal = refusal_text(auth)
        if refusal is not None:
            raise _Refused(refusal)
        if auth is None:  # the policy allows every call: nothing was decided on them
            return kwargs
        # The snapshot the guard validated, showed and approved runs; never the objects
        # the call arrived with (injected arguments are kept).
        return _edited_kwargs(self.inner, kwargs, args_to_run(auth, sent))

    def _inner_kwargs(self, func: Any, kwargs: dict[str, Any], config: RunnableConfig,
                      run_manager: Any) -> dict[str, Any]:
        kw = dict(kwargs)
        if run_manager is not None and _signature_has(func, "run_manager"):
            kw["run_manager"] = run_manager
        if config_param := _get_runnable_config_param(func):
            kw[config_param] = config
        return kw

    def _run(self, *args: Any, config: RunnableConfig, run_manager: Any = None,
             **kwargs: Any) -> Any:
        if isinstance(self.inner, StructuredTool) and self.inner.func is None:
            # Fail before asking anyone: an approval for a call that cannot run is wasted.
            raise NotImplementedError("StructuredTool does not support sync invocation.")
        sent = tool_call_args(self.inner, kwargs)
        auth = self.edge.authorize_sync(self.name, sent, *_config_layers(config),
                                        validator=self.validator)
        kwargs = self._approved(auth, sent, kwargs)
        inner_run = self.inner._run
        return inner_run(*args, **self._inner_kwargs(inner_run, kwargs, config, run_manager))

    async def _arun(self, *args: Any, config: RunnableConfig, run_manager: Any = None,
                    **kwargs: Any) -> Any:
        sent = tool_call_args(self.inner, kwargs)
        auth = await self.edge.authorize(self.name, sent, *_config_layers(config),
                                         validator=self.validator)
        kwargs = self._approved(auth, sent, kwargs)
        inner = self.inner
        # Same choice BaseTool.arun makes: a tool without its own _arun runs _run on a
        # worker thread, and takes what _run's signature asks for.
        func = inner._run if type(inner)._arun is BaseTool._arun else inner._arun
        return await inner._arun(*args, **self._inner_kwargs(func, kwargs, config,
                                                             run_manager))


def guard_tool(
    tool: BaseTool, *, guard: Guard | None = None, server: str = "local",
    run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None,
) -> GuardedTool:
    """Wrap a LangChain tool so that every call is authorized by the guard first.

    Args:
        tool: Any ``BaseTool`` (``@tool`` functions, ``StructuredTool``...).
        guard: The guard (default: the one in effect at call time).
        server: Server name the policy sees (default ``local``, like the decorator).
        run: Default facts about the caller.
        hints: Hints for the tool (``privilege``, ``labels``, ``destructive``...).
    """
    if isinstance(tool, GuardedTool):
        return tool
    return GuardedTool(tool, Edge(ORIGIN, guard=guard, server=server, run=run, hints=hints))


def guard_tools(
    tools: Iterable[BaseTool], *, guard: Guard | None = None, server: str = "local",
    run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None,
) -> list[BaseTool]:
    """:func:`guard_tool` on every tool (``hints`` may map tool names to hints); other
    entries (provider tool dicts the model's API runs) are returned unchanged."""
    return [guard_tool(t, guard=guard, server=server, run=run, hints=hints)
            if isinstance(t, BaseTool) else t for t in tools]
