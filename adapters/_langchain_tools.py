"""LangChain tools behind the guard (the public face is :mod:`agentguard.adapters.langchain`;
the middleware builds on this module, which needs only ``langchain-core``)."""


from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

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
from agentguard.adapters._langchain_holds import (
    Hold,
    HoldMode,
)
from agentguard.canonical import FrozenDict, freeze
from agentguard.errors import ArgumentValidationError

require("langchain_core", "langchain")

from langchain_core.messages import ToolMessage  # noqa: E402
from langchain_core.runnables import RunnableConfig, patch_config  # noqa: E402
from langchain_core.tools import BaseTool, StructuredTool, ToolException  # noqa: E402
from pydantic import ValidationError  # noqa: E402

if TYPE_CHECKING:
    from agentguard.guard import Guard
    from agentguard.types import Authorization, ToolHints

__all__ = [
    "ORIGIN",
    "GuardedTool",
    "ToolArguments",
    "approved_args",
    "config_layers",
    "guard_tool",
    "guard_tools",
    "tool_call_args",
]

ORIGIN = "langchain"


def _visible_keys(tool: BaseTool) -> set[str] | None:
    """The arguments the model fills in (``None``: the schema does not say)."""
    schema = tool.tool_call_schema
    if isinstance(schema, Mapping):
        return set((schema.get("properties") or {}).keys())
    fields = getattr(schema, "model_fields", None)
    return None if fields is None else set(fields)


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
        model = _strict_json(schema, given)
        freeze(model.model_dump())  # NaN, infinity, unsafe integers anywhere
    except (ValidationError, ValueError, TypeError):
        return given
    return model.model_dump(mode="json")


def _strict_json(schema: Any, args: Mapping[str, Any]) -> Any:
    """Validate what a model sent as strict JSON, as every model-facing edge does: no
    ``"true"`` or ``1`` for a boolean, no JSON text for an object (LangChain's own, lax,
    validation would convert them, and the policy must never see a raw value the tool reads
    differently). ``freeze`` first: orjson would write NaN and infinities as null."""
    return schema.model_validate_json(orjson.dumps(freeze(args)), strict=True)


class ToolArguments:
    """The guard's validator for a LangChain tool: the arguments must fit the tool's
    ``tool_call_schema`` as strict JSON (what a model sends) and be plain JSON; the snapshot is
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
            return freeze(_strict_json(self._model, args).model_dump(mode="json"))
        except ValidationError as exc:
            raise ArgumentValidationError(str(exc).replace("\n", "; ")[:300]) from None
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise ArgumentValidationError(f"arguments are not JSON: {exc}") from None


def approved_args(tool: BaseTool | None, args: Mapping[str, Any], auth: Authorization | None,
                  sent: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` with the model-visible arguments replaced by the snapshot the guard
    validated, showed and approved (an approver's edit included), as JSON data for the
    tool to validate like any model output; injected arguments are kept."""
    keys = _visible_keys(tool) if tool is not None else None
    hidden = {} if keys is None else {k: v for k, v in args.items() if k not in keys}
    return {**hidden, **args_to_run(auth, sent)}


def config_layers(config: Mapping[str, Any] | None) -> tuple[RunContext | None, ...]:
    """Run contexts of a call: ``configurable["agentguard"]`` of its runnable config, then
    the LangGraph run's ``context=`` (read with LangGraph's public ``get_runtime``)."""
    configurable = (config or {}).get("configurable") or {}
    return (RunContext.coerce(configurable.get(RUN_CONTEXT_KEY)), _graph_context())


def _graph_context() -> RunContext | None:
    try:
        from langgraph.runtime import get_runtime
    except ImportError:  # pragma: no cover - langchain-core without langgraph
        return None
    try:
        runtime = get_runtime()
    except RuntimeError:  # not inside a runnable
        return None
    return run_context_from(getattr(runtime, "context", None))


class _Refused(ToolException):
    """The guard refused the call (handled into an error result, never raised out)."""


def _is_tool_call(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("type") == "tool_call"


class GuardedTool(BaseTool):
    """A tool that asks the guard before each call of the tool it wraps.

    Build with :func:`guard_tool`. Everything the model and the agent see (name,
    description, argument schema, ``return_direct``) is the wrapped tool's. A call that may
    run is handed to the wrapped tool's public ``invoke``/``ainvoke`` with the approved
    arguments, so its own validation, injected arguments, callbacks, error handling and
    ``response_format`` apply unchanged; a refused call answers with an error
    ``ToolMessage`` (or the refusal text when invoked without a tool call id).
    """

    inner: BaseTool
    edge: Any
    validator: Any = None
    hold: Any = None

    def __init__(self, inner: BaseTool, edge: Edge, hold: Hold | None = None) -> None:
        super().__init__(
            inner=inner, edge=edge, hold=hold or Hold(), name=inner.name,
            description=inner.description, args_schema=inner.args_schema,
            return_direct=inner.return_direct, tags=inner.tags, metadata=inner.metadata,
            extras=inner.extras, handle_validation_error=inner.handle_validation_error,
        )
        # Refusals raised through ``run``/``arun`` become their text.
        self.handle_tool_error = True
        self.validator = ToolArguments(inner)

    def _split(self, value: Any) -> tuple[dict[str, Any], str | None]:
        """The arguments of a tool input and its tool call id."""
        if _is_tool_call(value):
            return dict(value.get("args") or {}), value.get("id")
        if isinstance(value, Mapping):
            return dict(value), None
        keys = _visible_keys(self.inner)
        if isinstance(value, str) and keys is not None and len(keys) == 1:
            return {next(iter(keys)): value}, None
        raise ValueError(f"{self.name}: a guarded tool takes a dict of arguments or a "
                         "tool call")

    def _answer(self, value: Any, args: dict[str, Any], call_id: str | None,
                auth: Authorization | None, sent: dict[str, Any]) -> Any:
        """The refusal to answer with, or the input the wrapped tool runs with."""
        refusal = refusal_text(auth)
        if refusal is not None:
            if call_id is None:
                raise _Refused(refusal)
            return ToolMessage(content=refusal, tool_call_id=call_id, name=self.name,
                               status="error")
        if auth is None and not isinstance(value, str):
            return value  # the policy allows every call: nothing was decided on them
        run = approved_args(self.inner, args, auth, sent)
        return {**value, "args": run} if _is_tool_call(value) else run

    def _prepare(self, input: Any, config: RunnableConfig | None) -> Any:
        """Authorize (a held call blocks this thread, or pauses the run); the error
        message or the wrapped tool's input (raises ``_Refused`` without a call id)."""
        inner = self.inner
        if isinstance(inner, StructuredTool) and inner.func is None:
            # Fail before asking anyone: an approval for a call that cannot run is wasted.
            raise NotImplementedError("StructuredTool does not support sync invocation.")
        args, call_id = self._split(input)
        sent = tool_call_args(inner, args)
        auth = self.hold.authorize_sync(self.edge, self.name, sent, config_layers(config),
                                        self.validator, call_id)
        return self._answer(input, args, call_id, auth, sent)

    async def _aprepare(self, input: Any, config: RunnableConfig | None) -> Any:
        args, call_id = self._split(input)
        sent = tool_call_args(self.inner, args)
        auth = await self.hold.authorize(self.edge, self.name, sent, config_layers(config),
                                         self.validator, call_id)
        return self._answer(input, args, call_id, auth, sent)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Authorize (a held call blocks this thread, or pauses the run with
        ``hold="interrupt"``), then run the wrapped tool."""
        try:
            answer = self._prepare(input, config)
        except _Refused as exc:
            return str(exc)
        if isinstance(answer, ToolMessage):
            return answer
        return self.inner.invoke(answer, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> Any:
        """Authorize (awaiting humans without blocking the loop, or pausing the run with
        ``hold="interrupt"``), then run the wrapped tool."""
        try:
            answer = await self._aprepare(input, config)
        except _Refused as exc:
            return str(exc)
        if isinstance(answer, ToolMessage):
            return answer
        return await self.inner.ainvoke(answer, config, **kwargs)

    # ``run``/``arun`` (the older entry points) parse the input, then call these; a
    # refusal raised here is handled into an error result by ``handle_tool_error``.
    def _run(self, *args: Any, config: RunnableConfig, run_manager: Any = None,
             **kwargs: Any) -> Any:
        child = patch_config(config, callbacks=run_manager.get_child() if run_manager else None)
        return _content(self.inner.invoke(self._prepare(kwargs, child), child))

    async def _arun(self, *args: Any, config: RunnableConfig, run_manager: Any = None,
                    **kwargs: Any) -> Any:
        child = patch_config(config, callbacks=run_manager.get_child() if run_manager else None)
        return _content(await self.inner.ainvoke(await self._aprepare(kwargs, child), child))


def _content(output: Any) -> Any:
    return output.content if isinstance(output, ToolMessage) else output


def guard_tool(
    tool: BaseTool, *, guard: Guard | None = None, server: str = "local",
    run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None,
    hold: HoldMode = "block", wait: float = 0.0,
) -> GuardedTool:
    """Wrap a LangChain tool so that every call is authorized by the guard first.

    Args:
        tool: Any ``BaseTool`` (``@tool`` functions, ``StructuredTool``...).
        guard: The guard (default: the one in effect at call time).
        server: Server name the policy sees (default ``local``, like the decorator).
        run: Default facts about the caller.
        hints: Hints for the tool (``privilege``, ``labels``, ``destructive``...).
        hold: What a held call does: ``block`` waits for the verdict inside the tool
            (scripts); ``interrupt`` pauses the LangGraph run (needs a checkpointer; resume
            with :func:`resume_from_store`).
        wait: With ``interrupt``, seconds to wait for a verdict before pausing.
    """
    if isinstance(tool, GuardedTool):
        return tool
    return GuardedTool(tool, Edge(ORIGIN, guard=guard, server=server, run=run, hints=hints),
                       Hold(hold, wait))


def guard_tools(
    tools: Iterable[BaseTool], *, guard: Guard | None = None, server: str = "local",
    run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None,
    hold: HoldMode = "block", wait: float = 0.0,
) -> list[BaseTool]:
    """:func:`guard_tool` on every tool (``hints`` may map tool names to hints); other
    entries (provider tool dicts the model's API runs) are returned unchanged."""
    return [guard_tool(t, guard=guard, server=server, run=run, hints=hints, hold=hold,
                       wait=wait)
            if isinstance(t, BaseTool) else t for t in tools]
