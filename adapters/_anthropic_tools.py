"""The tool-runner side of :mod:`agentguard.adapters.anthropic` (loaded on first use)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from agentguard.adapters._common import (
    Edge,
    RunContext,
    SchemaArguments,
    args_to_run,
    fill_schema_defaults,
    refusal_text,
    require,
)

require("anthropic", "anthropic")

from anthropic.lib.tools import (  # noqa: E402
    BetaAsyncBuiltinFunctionTool,
    BetaAsyncFunctionTool,
    BetaBuiltinFunctionTool,
    BetaFunctionTool,
    ToolError,
)

if TYPE_CHECKING:
    from agentguard.guard import Guard
    from agentguard.types import ToolHints

__all__ = ["guard_beta_tool", "guard_beta_tools"]

ORIGIN = "anthropic"


def _args(tool: Any, input: object) -> dict[str, Any]:
    if not isinstance(input, Mapping):
        # The tool itself refuses non-object input; the guard must not see a made-up call.
        raise ToolError("agentguard: the tool input must be a JSON object; nothing ran.")
    return fill_schema_defaults(input, getattr(tool, "input_schema", None))


def _to_run(auth: Any, sent: dict[str, Any]) -> dict[str, Any]:
    """The input to run: the snapshot the guard validated and approved (raises ToolError
    when refused)."""
    refusal = refusal_text(auth)
    if refusal is not None:
        raise ToolError(refusal)
    return args_to_run(auth, sent)


def _check_sync(tool: Any, input: object) -> dict[str, Any]:
    """The input to run (raises ToolError when refused)."""
    sent = _args(tool, input)
    return _to_run(tool.edge.authorize_sync(tool.name, sent, validator=tool.validator,
                                            wait=tool.wait), sent)


async def _check(tool: Any, input: object) -> dict[str, Any]:
    """The input to run (raises ToolError when refused)."""
    sent = _args(tool, input)
    return _to_run(await tool.edge.authorize(tool.name, sent, validator=tool.validator,
                                             wait=tool.wait), sent)


def _adopt(wrapper: Any, inner: Any) -> None:
    wrapper.inner = inner
    wrapper.wait = None  # seconds a held call waits for a verdict (None: until it expires)
    for attr in ("close", "_context_manager"):
        if getattr(inner, attr, None) is not None:
            setattr(wrapper, attr, getattr(inner, attr))


class _Guarded:
    """What the sync and async guarded tools share: wrapping, and the unchanged definition."""

    inner: Any
    wait: float | None
    edge: Edge
    validator: Any

    def __init__(self, inner: Any, edge: Edge) -> None:
        super().__init__(inner.func, name=inner.name, description=inner.description,  # type: ignore[call-arg]
                         input_schema=inner.input_schema)
        _adopt(self, inner)
        self.edge = edge
        # Strict JSON Schema, compiled once: the runner's own pydantic validation is lax
        # ("true" is a bool to it), so the policy must see what survives a strict check.
        self.validator = SchemaArguments(inner.input_schema)

    def to_dict(self) -> Any:
        """The wrapped tool's definition, unchanged."""
        return self.inner.to_dict()


class GuardedBetaTool(_Guarded, BetaFunctionTool[Any]):
    """A sync function tool that asks the guard before each call."""

    def call(self, input: object) -> Any:
        """Authorize, then run the wrapped tool (raises ToolError when refused)."""
        return self.inner.call(_check_sync(self, input))


class GuardedAsyncBetaTool(_Guarded, BetaAsyncFunctionTool[Any]):
    """An async function tool that asks the guard before each call."""

    async def call(self, input: object) -> Any:
        """Authorize, then run the wrapped tool (raises ToolError when refused)."""
        return await self.inner.call(await _check(self, input))


class GuardedBuiltinTool(BetaBuiltinFunctionTool):
    """A sync built-in tool (memory, ...) that asks the guard before each call."""

    inner: Any
    wait: float | None
    edge: Edge
    validator: Any

    def __init__(self, inner: BetaBuiltinFunctionTool, edge: Edge) -> None:
        _adopt(self, inner)
        self.edge = edge
        self.validator = None  # the API defines a built-in tool's input; no schema here

    def to_dict(self) -> Any:
        """The wrapped tool's definition, unchanged."""
        return self.inner.to_dict()

    def call(self, input: object) -> Any:
        """Authorize, then run the wrapped tool (raises ToolError when refused)."""
        return self.inner.call(_check_sync(self, input))


class GuardedAsyncBuiltinTool(BetaAsyncBuiltinFunctionTool):
    """An async built-in tool that asks the guard before each call."""

    inner: Any
    wait: float | None
    edge: Edge
    validator: Any

    def __init__(self, inner: BetaAsyncBuiltinFunctionTool, edge: Edge) -> None:
        _adopt(self, inner)
        self.edge = edge
        self.validator = None  # the API defines a built-in tool's input; no schema here

    def to_dict(self) -> Any:
        """The wrapped tool's definition, unchanged."""
        return self.inner.to_dict()

    async def call(self, input: object) -> Any:
        """Authorize, then run the wrapped tool (raises ToolError when refused)."""
        return await self.inner.call(await _check(self, input))


_WRAPPERS: tuple[tuple[type, type], ...] = (
    (BetaFunctionTool, GuardedBetaTool),
    (BetaAsyncFunctionTool, GuardedAsyncBetaTool),
    (BetaBuiltinFunctionTool, GuardedBuiltinTool),
    (BetaAsyncBuiltinFunctionTool, GuardedAsyncBuiltinTool),
)
_GUARDED = tuple(w for _, w in _WRAPPERS)


def guard_beta_tool(
    tool: Any, *, guard: Guard | None = None, server: str = "local",
    run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None, wait: float | None = None,
) -> Any:
    """A tool for ``client.beta.messages.tool_runner`` that asks the guard first.

    Accepts what ``@beta_tool`` / ``@beta_async_tool`` return (and built-in runnable
    tools); name, description, schema and the rest of the definition are kept. A refused
    call raises ``ToolError`` before the function runs, which the runner sends back as
    ``is_error: true``. A sync tool used from inside a running event loop is refused with
    a usage error (use the async client and ``@beta_async_tool`` there).

    Args:
        tool: The runnable tool.
        guard: The guard (default: the one in effect at call time).
        server: Server name the policy sees (default ``local``).
        run: Facts about the caller (after :func:`agentguard.acting_as`).
        hints: Hints for the tool (``privilege``, ``labels``...).
        wait: Seconds a held call waits for a human's verdict (``None``: until the request
            expires). With ``0`` a held call is answered at once with an ``is_error``
            result saying it waits for approval under request X and that the same call,
            made again once approved, runs once (the runner's conversation can end there
            and the call be made again later, in any process).

    Raises:
        TypeError: ``tool`` is not a runnable tool (raw tool dicts are not run by the
            runner, so there is nothing to guard).
    """
    if isinstance(tool, _GUARDED):
        return tool
    edge = Edge(ORIGIN, guard=guard, server=server, run=run, hints=hints)
    for kind, wrapper in _WRAPPERS:
        if isinstance(tool, kind):
            guarded = wrapper(tool, edge)
            guarded.wait = wait
            return guarded
    raise TypeError(f"not a runnable Anthropic tool: {type(tool).__name__} (wrap the function "
                    "with anthropic.beta_tool or beta_async_tool first)")


def guard_beta_tools(
    tools: Iterable[Any], *, guard: Guard | None = None, server: str = "local",
    run: RunContext | Mapping[str, Any] | None = None,
    hints: ToolHints | Mapping[str, ToolHints] | None = None, wait: float | None = None,
) -> list[Any]:
    """:func:`guard_beta_tool` on each runnable tool; raw definitions (server tools the API
    runs) are returned unchanged."""
    runnable = tuple(k for k, _ in _WRAPPERS)
    return [guard_beta_tool(t, guard=guard, server=server, run=run, hints=hints, wait=wait)
            if isinstance(t, runnable) else t for t in tools]
