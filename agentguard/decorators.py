"""``@guarded``: step-up authentication on plain Python functions, sync or async."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from agentguard.adapters._common import Edge
from agentguard.types import ToolHints
from agentguard.validation import FunctionArguments

if TYPE_CHECKING:
    from agentguard.guard import Guard

__all__ = ["guarded"]

F = TypeVar("F", bound=Callable[..., Any])


class _WithDefaults(FunctionArguments):
    """The function's arguments, with declared defaults filled in for parameters the
    arguments leave out (an approver's edit names only what it changes, as a model's call
    does): the edited call is decided with the defaults the function would run with."""

    def validate(self, args: Any) -> Any:
        missing = {name: p.default for name, p in self.signature.parameters.items()
                   if name not in args and p.default is not inspect.Parameter.empty}
        return super().validate({**missing, **args} if missing else args)


@overload
def guarded(func: F, /) -> F: ...


@overload
def guarded(
    *, name: str | None = None, server: str = "local", privilege: str | None = None,
    labels: Iterable[str] = (), read_only: bool | None = None,
    destructive: bool | None = None, guard: Guard | None = None,
) -> Callable[[F], F]: ...


def guarded(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    server: str = "local",
    privilege: str | None = None,
    labels: Iterable[str] = (),
    read_only: bool | None = None,
    destructive: bool | None = None,
    guard: Guard | None = None,
) -> Any:
    """Guard a function: each call is classified by the policy and may be held for approval
    or re-authentication. A refused call raises
    :class:`~agentguard.errors.ToolCallRefused` (``kind`` says denied / expired / unreachable
    / reauth_failed / invalid) and the function does not run.

    Unless the policy allows every call to the tool, the arguments are first validated
    against the function's annotations (pydantic; a ``Literal["staging", "production"]``
    refuses ``"production "``), then frozen; the function runs with arguments rebuilt from
    that frozen snapshot, the one the policy classified and the approver saw, so a value the
    caller changes while the call is held cannot reach it. Argument values must therefore be
    representable as JSON (as they must be to be shown and hashed).

    Use bare (``@guarded``) or with arguments. Name, signature, docstring and type hints of
    the function are kept.

    Args:
        func: The function (when used bare).
        name: Tool name the policy sees (default: the function's ``__name__``).
        server: Server name the policy sees (default ``local``, trusted).
        privilege: Class the author declares (rules in the policy take precedence; the
            declared class is used when no rule matches).
        labels: Labels the author declares (``secret``, ``deploy``...).
        read_only: Declared hint, like MCP's ``readOnlyHint``.
        destructive: Declared hint, like MCP's ``destructiveHint``.
        guard: The guard to use (default: the one set with ``using_guard`` /
            ``set_default_guard``, looked up at call time).
    """
    hints = ToolHints(read_only=read_only, destructive=destructive, privilege=privilege,
                      labels=frozenset(labels))

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        tool = name or fn.__name__
        # The same edge as every adapter: who calls (``acting_as``), the call built from it,
        # the guard asked. Only the fast path below is the decorator's own (and it asks
        # the same one rule, ``Policy.static_allow``).
        edge = Edge("decorator", guard=guard, server=server, hints=hints)
        # Compiled on the first call the policy may hold (a tool it always allows never
        # needs it), then kept: validation costs one pydantic pass per held call.
        arguments: list[FunctionArguments] = []

        def validator() -> FunctionArguments:
            if not arguments:
                arguments.append(_WithDefaults(fn))
            return arguments[0]

        def to_run(auth: Any) -> tuple[list[Any], dict[str, Any]]:
            assert auth is not None  # the fast path took every call the policy allows
            auth.raise_for_refusal()
            # What runs is rebuilt from the snapshot that was validated, shown and approved
            # (an approver's edit included), never from the caller's own objects.
            return validator().rebuild(auth.call.args)

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if edge.guard().policy.static_allow(server, tool, hints):
                    return await fn(*args, **kwargs)
                auth = await edge.authorize(tool, validator().bind(args, kwargs),
                                            validator=validator())
                positional, keyword = to_run(auth)
                return await fn(*positional, **keyword)

            async_wrapper.__agentguard__ = {"tool": tool, "server": server}  # type: ignore[attr-defined]
            return async_wrapper

        @functools.wraps(fn)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            if edge.guard().policy.static_allow(server, tool, hints):
                return fn(*args, **kwargs)
            auth = edge.authorize_sync(tool, validator().bind(args, kwargs),
                                       validator=validator())
            positional, keyword = to_run(auth)
            return fn(*positional, **keyword)

        sync_wrapper.__agentguard__ = {"tool": tool, "server": server}  # type: ignore[attr-defined]
        return sync_wrapper

    if func is not None:
        return wrap(func)
    return wrap
