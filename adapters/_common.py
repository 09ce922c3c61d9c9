"""What every adapter shares: who is calling, and how a framework's tool call becomes a
:class:`~agentguard.types.ToolCall`.

Adapters never decide. Each builds the same ``ToolCall`` the ``@guarded`` decorator would
build for the same call (tool name, arguments with declared defaults filled in, principal,
session, source address, the human the agent acts for), awaits the guard, then runs the tool
or renders the refusal in its framework's idiom.

Who is calling can be given at several levels; for each fact the first level that sets it
wins:

1. per call (``run=`` on a dispatcher call),
2. per agent run, through the framework's own run context (LangChain ``context=`` or
   ``config["configurable"]["agentguard"]``, the Agents SDK's ``context=``, an MCP
   request's transport),
3. the ambient caller set with :func:`agentguard.acting_as`,
4. the adapter's defaults (``run=`` when the adapter was built).

A principal's claims travel with it: they come from the same level as the principal.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any

from agentguard.arguments import fill_schema_defaults
from agentguard.canonical import FrozenDict, freeze, thaw
from agentguard.context import CallerInfo, current_caller, current_guard
from agentguard.errors import ArgumentValidationError, ConfigError
from agentguard.types import ANONYMOUS, Authorization, CallContext, Principal, ToolCall, ToolHints
from agentguard.validation import ArgumentValidator, FunctionArguments, JsonSchemaArguments

if TYPE_CHECKING:
    from agentguard.guard import Guard

__all__ = [
    "RUN_CONTEXT_KEY",
    "Edge",
    "ModelArguments",
    "RunContext",
    "SchemaArguments",
    "args_to_run",
    "fill_schema_defaults",
    "principal_from",
    "refusal_text",
    "require",
    "run_context_from",
]

#: Key under which a :class:`RunContext` may ride in a framework's context or config.
RUN_CONTEXT_KEY = "agentguard"

_KINDS = {"svc": "service", "user": "user", "agent": "agent", "ci": "pipeline"}


def require(module: str, extra: str) -> ModuleType:
    """Import an optional framework or fail with an install hint.

    Raises:
        ConfigError: the module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"this agentguard adapter needs {module!r}, which is not installed: "
            f"pip install 'agentguard[{extra}]'"
        ) from exc


def principal_from(value: Principal | str, claims: Mapping[str, Any] | None = None) -> Principal:
    """A :class:`Principal` from a principal or an id, read like :func:`agentguard.acting_as`
    reads it (``svc:`` is a service, ``user:`` a user, ``ci:`` a pipeline, else an agent).

    Args:
        value: The principal, or its id.
        claims: Claims to add (they override the principal's own claims of the same name).
    """
    if isinstance(value, str):
        kind = _KINDS.get(value.split(":", 1)[0], "agent") if ":" in value else "agent"
        value = Principal(id=value, kind=kind)
    if claims:
        value = replace(value, claims={**value.claims, **claims})
    return value


@dataclass(frozen=True, slots=True)
class RunContext:
    """Who is calling and from where, for one call or one agent run.

    Every field is optional: an unset field is taken from the next level (see the module
    docstring), and facts nobody sets stay unknown (an anonymous principal, no source
    address), exactly as for the decorator.

    Attributes:
        principal: The caller, or its id (``agent:support-bot``, ``svc:deploy``, ``user:bob``).
        claims: Verified attributes of the principal (team, token claims). Only valid with
            ``principal``: claims are never attached to a principal set elsewhere.
        session_id: Session the call belongs to (session-scoped grants use it).
        source_ip: Address the request came from (``cidr`` signals use it).
        acting_for: The human the agent acts for (separation of duties uses it).
        extra: Free-form facts shown to approvers (ticket id, user agent...).
    """

    principal: Principal | str | None = None
    claims: Mapping[str, Any] | None = None
    session_id: str | None = None
    source_ip: str | None = None
    acting_for: str | None = None
    extra: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.claims is not None and self.principal is None:
            raise ConfigError("RunContext(claims=...) needs the principal the claims belong to")

    @classmethod
    def coerce(cls, value: Any) -> RunContext | None:
        """Read a run context from a ``RunContext``, a mapping of its fields, or
        :class:`~agentguard.context.CallerInfo`; ``None`` stays ``None``.

        Raises:
            ConfigError: the value is none of these, or a mapping names unknown fields.
        """
        if value is None or isinstance(value, RunContext):
            return value
        if isinstance(value, CallerInfo):
            return cls.from_caller(value)
        if isinstance(value, Mapping):
            unknown = set(value) - {f.name for f in fields(cls)}
            if unknown:
                raise ConfigError(f"unknown RunContext fields: {', '.join(sorted(unknown))}")
            return cls(**value)
        raise ConfigError(f"expected a RunContext or a mapping, got {type(value).__name__}")

    @classmethod
    def from_caller(cls, info: CallerInfo) -> RunContext:
        """The facts an :func:`agentguard.acting_as` block set (anonymous means unset)."""
        principal = None if info.principal == ANONYMOUS else info.principal
        ctx = info.context
        return cls(principal=principal, session_id=info.session_id,
                   source_ip=ctx.source_ip, acting_for=ctx.acting_for,
                   extra=dict(ctx.extra) or None)

    @classmethod
    def ambient(cls) -> RunContext:
        """The caller set by the innermost :func:`agentguard.acting_as` block."""
        return cls.from_caller(current_caller())


def run_context_from(carrier: Any) -> RunContext | None:
    """Find a run context in a framework's context object.

    Accepts a :class:`RunContext` itself, a mapping with an ``"agentguard"`` key, or an
    object with an ``agentguard`` attribute (a dataclass you already pass as the agent's
    context, say). Anything else carries none.
    """
    if carrier is None:
        return None
    if isinstance(carrier, RunContext):
        return carrier
    if isinstance(carrier, Mapping):
        return RunContext.coerce(carrier.get(RUN_CONTEXT_KEY))
    return RunContext.coerce(getattr(carrier, RUN_CONTEXT_KEY, None))


@dataclass(frozen=True, slots=True)
class _Facts:
    principal: Principal
    session_id: str | None
    context: CallContext


def _resolve(layers: Sequence[RunContext | None]) -> _Facts:
    present = [layer for layer in layers if layer is not None]

    def first(name: str) -> Any:
        return next((v for layer in present if (v := getattr(layer, name)) is not None), None)

    owner = next((layer for layer in present if layer.principal is not None), None)
    principal = (ANONYMOUS if owner is None or owner.principal is None
                 else principal_from(owner.principal, owner.claims))
    extra = first("extra")
    return _Facts(principal, first("session_id"),
                  CallContext(source_ip=first("source_ip"), acting_for=first("acting_for"),
                              extra=dict(extra) if extra else {}))


def merge_hints(base: ToolHints, override: ToolHints | None) -> ToolHints:
    """``base`` with every field ``override`` sets replaced; labels are united."""
    if override is None:
        return base
    changes = {f.name: getattr(override, f.name) for f in fields(ToolHints)
               if f.name not in ("labels", "unpinned", "requires_approval")
               and getattr(override, f.name) is not None}
    return replace(base, **changes, labels=base.labels | override.labels,
                   unpinned=base.unpinned or override.unpinned,
                   requires_approval=base.requires_approval or override.requires_approval)


class Edge:
    """One adapter's link to the guard: builds calls and asks the guard about them.

    Args:
        origin: Which edge this is (``langchain``, ``openai``...), written to the audit log.
        guard: The guard (default: the one in effect at call time, as for the decorator).
        server: Server name the policy sees (default ``local``, like the decorator).
        run: Default facts about the caller (lowest precedence).
        hints: What tools say about themselves: one :class:`ToolHints` for every tool,
            or a mapping from tool name to hints.
    """

    def __init__(
        self, origin: str, *, guard: Guard | None = None, server: str = "local",
        run: RunContext | Mapping[str, Any] | None = None,
        hints: ToolHints | Mapping[str, ToolHints] | None = None,
    ) -> None:
        self.origin = origin
        self._guard = guard
        self.server = server
        self.run = RunContext.coerce(run)
        self._hints = hints

    def guard(self) -> Guard:
        """The guard to ask (fails closed with ConfigError when none is configured)."""
        return self._guard or current_guard()

    def hints_for(self, tool: str, base: ToolHints | None = None) -> ToolHints:
        """Hints for ``tool``: what the framework reports (``base``), then what was
        configured for the adapter."""
        configured = self._hints
        if isinstance(configured, Mapping):
            configured = configured.get(tool)
        return merge_hints(base or ToolHints(), configured)

    def build_call(
        self, tool: str, args: Mapping[str, Any], *layers: RunContext | None,
        hints: ToolHints | None = None,
    ) -> ToolCall:
        """The call the guard sees. ``layers`` are run contexts, most specific first."""
        facts = _resolve([*layers, RunContext.ambient(), self.run])
        return ToolCall(tool=tool, args=dict(args), principal=facts.principal,
                        server=self.server, session_id=facts.session_id, origin=self.origin,
                        hints=self.hints_for(tool, hints), context=facts.context)

    async def authorize(
        self, tool: str, args: Mapping[str, Any], *layers: RunContext | None,
        hints: ToolHints | None = None, validator: ArgumentValidator | None = None,
        wait: float | None = None,
    ) -> Authorization | None:
        """Ask the guard. ``None`` means the policy allows every call to this tool (the
        decorator's fast path: nothing is built, validated or audited); otherwise the
        answer, whose ``call`` is the validated, frozen call to run (see :func:`args_to_run`).

        ``validator`` checks the arguments against the tool's schema before any rule reads
        them; ``wait`` makes the call a durable hold (see :meth:`Guard.authorize`).
        """
        guard = self.guard()
        tool_hints = self.hints_for(tool, hints)
        if guard.static_allow(self.server, tool, tool_hints):
            return None
        return await guard.authorize(self.build_call(tool, args, *layers, hints=hints),
                                     validator=validator, wait=wait)

    def authorize_sync(
        self, tool: str, args: Mapping[str, Any], *layers: RunContext | None,
        hints: ToolHints | None = None, validator: ArgumentValidator | None = None,
        wait: float | None = None,
    ) -> Authorization | None:
        """Synchronous :meth:`authorize`; a usage error inside a running event loop."""
        guard = self.guard()
        tool_hints = self.hints_for(tool, hints)
        if guard.static_allow(self.server, tool, tool_hints):
            return None
        return guard.authorize_sync(self.build_call(tool, args, *layers, hints=hints),
                                    validator=validator, wait=wait)


def args_to_run(auth: Authorization | None, sent: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments the tool runs with: a fresh copy of the frozen snapshot the guard
    validated, showed and approved (an approver's edit included), never the objects the call
    arrived with; ``sent`` only when the policy allows every call to the tool (``auth`` is
    ``None``: nothing was decided on the arguments)."""
    if auth is None:
        return dict(sent)
    return thaw(auth.call.args)


def refusal_text(auth: Authorization | None) -> str | None:
    """``None`` when the call may run; otherwise the one line the model is shown."""
    if auth is None or auth.allowed:
        return None
    return auth.message()


class ModelArguments:
    """What a model sent for a Python function, checked as strict JSON before any rule reads
    it: bound to parameter names (defaults filled in; a missing or unknown argument is
    refused), then validated against the annotations (no ``"true"`` or ``1`` for a
    ``bool``, no JSON text for an object, no NaN or infinity anywhere).

    Args:
        fn: The tool function (compiled once, when the tool is registered).

    Raises:
        ConfigError: an annotation cannot be turned into a validator.
    """

    def __init__(self, fn: Any) -> None:
        self.function = FunctionArguments(fn, json=True)

    def validate(self, args: Mapping[str, Any]) -> FrozenDict:
        """The validated arguments, keyed by parameter name, as a frozen snapshot.

        Raises:
            ArgumentValidationError: they do not fit the function.
        """
        # Before pydantic: its JSON mode writes NaN and infinities as null where a value
        # is typed Any, so a non-finite number would pass as None.
        freeze(args)
        return self.function.validate(self.function.named(args))

    def rebuild(self, snapshot: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments to call the function with, made from the
        snapshot (see :meth:`FunctionArguments.rebuild`)."""
        return self.function.rebuild(snapshot)


class SchemaArguments:
    """A tool's JSON Schema as a validator: declared defaults filled in, then strict JSON
    Schema validation (see :class:`~agentguard.validation.JsonSchemaArguments`). A schema
    that is not a valid JSON Schema refuses every call (they cannot be checked).

    Args:
        schema: The tool's input schema (``None``: any JSON object).
    """

    def __init__(self, schema: Mapping[str, Any] | None) -> None:
        self.schema = schema
        self._problem: str | None = None
        self._validator: JsonSchemaArguments | None = None
        try:
            self._validator = JsonSchemaArguments(schema if schema is not None else {})
        except ConfigError as exc:
            self._problem = str(exc)

    def validate(self, args: Mapping[str, Any]) -> FrozenDict:
        """The arguments, defaults filled in, as a frozen snapshot once they fit.

        Raises:
            ArgumentValidationError: they do not fit, or the schema is unusable.
        """
        if self._validator is None:
            raise ArgumentValidationError(self._problem or "the tool has no usable schema")
        return self._validator.validate(fill_schema_defaults(args, self.schema))
