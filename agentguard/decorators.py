"""``@guarded``: step-up authentication on plain Python functions, sync or async."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from agentguard.context import current_caller, current_guard
from agentguard.types import ToolCall, ToolHints

if TYPE_CHECKING:
    from agentguard.guard import Guard

__all__ = ["guarded"]

F = TypeVar("F", bound=Callable[..., Any])


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
    / reauth_failed) and the function does not run.

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
        signature = inspect.signature(fn)

        def build_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ToolCall:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            caller = current_caller()
            return ToolCall(tool=tool, args=dict(bound.arguments), principal=caller.principal,
                            server=server, session_id=caller.session_id, origin="decorator",
                            hints=hints, context=caller.context)

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                g = guard or current_guard()
                if g.policy.static_allow(server, tool, hints):
                    return await fn(*args, **kwargs)
                call = build_call(args, kwargs)
                auth = await g.authorize(call)
                auth.raise_for_refusal()
                if auth.call is not call:  # an approver edited the arguments
                    return await fn(**auth.call.args)
                return await fn(*args, **kwargs)

            async_wrapper.__agentguard__ = {"tool": tool, "server": server}  # type: ignore[attr-defined]
            return async_wrapper

        @functools.wraps(fn)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            g = guard or current_guard()
            if g.policy.static_allow(server, tool, hints):
                return fn(*args, **kwargs)
            call = build_call(args, kwargs)
            auth = g.authorize_sync(call)
            auth.raise_for_refusal()
            if auth.call is not call:  # an approver edited the arguments
                return fn(**auth.call.args)
            return fn(*args, **kwargs)

        sync_wrapper.__agentguard__ = {"tool": tool, "server": server}  # type: ignore[attr-defined]
        return sync_wrapper

    if func is not None:
        return wrap(func)
    return wrap
