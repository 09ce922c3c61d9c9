"""Ambient facts for edges that cannot pass them per call: the guard in use, and who is
calling (principal, session, source address, the human an agent acts for)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentguard.errors import ConfigError
from agentguard.types import ANONYMOUS, CallContext, Principal

if TYPE_CHECKING:
    from agentguard.guard import Guard

__all__ = ["CallerInfo", "acting_as", "current_caller", "current_guard", "set_default_guard",
           "using_guard"]


@dataclass(frozen=True, slots=True)
class CallerInfo:
    """Who is calling, as seen by decorators and adapters."""

    principal: Principal = ANONYMOUS
    session_id: str | None = None
    context: CallContext = field(default_factory=CallContext)


_guard: ContextVar[Guard | None] = ContextVar("agentguard_guard", default=None)
_ANONYMOUS_CALLER = CallerInfo()
_caller: ContextVar[CallerInfo] = ContextVar("agentguard_caller", default=_ANONYMOUS_CALLER)
_default_guard: list[Guard | None] = [None]


def set_default_guard(guard: Guard | None) -> None:
    """Set the process-wide guard used when no :func:`using_guard` block is active."""
    _default_guard[0] = guard


def current_guard() -> Guard:
    """The guard in effect. Raises ConfigError when none is configured (fail closed)."""
    guard = _guard.get() or _default_guard[0]
    if guard is None:
        raise ConfigError(
            "no agentguard Guard is configured: call agentguard.set_default_guard(guard), use "
            "`with agentguard.using_guard(guard):`, or pass guard= to the decorator"
        )
    return guard


@contextmanager
def using_guard(guard: Guard) -> Iterator[Guard]:
    """Use ``guard`` for guarded calls made inside the block (task- and thread-local)."""
    token = _guard.set(guard)
    try:
        yield guard
    finally:
        _guard.reset(token)


def current_caller() -> CallerInfo:
    """The caller in effect (anonymous by default)."""
    return _caller.get()


@contextmanager
def acting_as(
    principal: Principal | str,
    *,
    session_id: str | None = None,
    source_ip: str | None = None,
    acting_for: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Iterator[CallerInfo]:
    """Attribute guarded calls inside the block to ``principal`` (per agent run or request)."""
    if isinstance(principal, str):
        kind = principal.split(":", 1)[0] if ":" in principal else "agent"
        kind = {"svc": "service", "user": "user", "agent": "agent", "ci": "pipeline"}.get(
            kind, "agent")
        principal = Principal(id=principal, kind=kind)
    info = CallerInfo(principal, session_id,
                      CallContext(source_ip=source_ip, acting_for=acting_for, extra=extra or {}))
    token = _caller.set(info)
    try:
        yield info
    finally:
        _caller.reset(token)
