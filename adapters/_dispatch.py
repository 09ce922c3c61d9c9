"""Running a model's tool calls against plain Python functions, through the guard.

Shared by the OpenAI (Chat Completions, Responses) and Anthropic (Messages) dispatchers: they
differ only in how a call arrives and how its result is written back.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import anyio

from agentguard.adapters._common import Edge, ModelArguments, RunContext, refusal_text
from agentguard.canonical import CanonicalizationError, loads_strict
from agentguard.errors import ArgumentValidationError, ConfigError

if TYPE_CHECKING:
    from agentguard.guard import Guard
    from agentguard.types import Authorization, ToolHints

__all__ = ["Dispatcher", "FunctionSpec", "ToolOutcome"]

OnError = Literal["return", "raise"]


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """A registered tool function.

    Attributes:
        name: Tool name the model uses.
        fn: The function (sync or async).
        description: Shown to the model (first paragraph of the docstring by default).
        parameters: JSON schema of the arguments (from the signature, via pydantic).
        arguments: Strict JSON validation of what a model sends against the signature
            (the guard validates with it before any rule reads the arguments).
    """

    name: str
    fn: Callable[..., Any]
    description: str
    parameters: dict[str, Any]
    arguments: ModelArguments

    @classmethod
    def of(cls, fn: Callable[..., Any], name: str | None = None) -> FunctionSpec:
        """Describe ``fn`` (its signature and docstring)."""
        if hasattr(fn, "__agentguard__"):
            raise ConfigError(
                f"{getattr(fn, '__name__', fn)!r} is already @guarded: register the undecorated "
                "function (the dispatcher asks the guard itself), or the call is checked twice"
            )
        import pydantic

        schema = pydantic.TypeAdapter(pydantic.validate_call(fn)).json_schema()  # type: ignore[arg-type]
        schema.pop("additionalProperties", None)
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        doc = inspect.getdoc(fn) or ""
        return cls(name or fn.__name__, fn, doc.split("\n\n", 1)[0].strip(), schema,
                   ModelArguments(fn))


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What happened to one tool call.

    Attributes:
        call_id: The framework's id of the call (to pair the result with it).
        name: Tool name.
        output: Text for the model: the tool's result, or why it did not run.
        is_error: The tool did not produce a result (refused, unknown, bad arguments, raised).
        ran: The tool function was called.
        authorization: The guard's answer (``None`` when it was not asked: the policy allows
            every call to the tool, or the call could not be run at all).
    """

    call_id: str
    name: str
    output: str
    is_error: bool
    ran: bool
    authorization: Authorization | None = None
    pending: bool = False
    request_id: str | None = None

    @property
    def refused(self) -> bool:
        """True when the guard refused the call (a pending call is not refused yet)."""
        return (self.authorization is not None and not self.authorization.allowed
                and not self.pending)

    @classmethod
    def of(cls, call_id: str, name: str, output: str, is_error: bool, ran: bool,
           auth: Authorization | None) -> ToolOutcome:
        """An outcome carrying the guard's answer (pending flag and request id from it)."""
        return cls(call_id, name, output, is_error, ran, auth,
                   pending=auth is not None and auth.outcome == "pending",
                   request_id=auth.request_id if auth is not None else None)

    def to_dict(self) -> dict[str, Any]:
        """JSON data to keep with a held turn (the guard's full answer is not kept)."""
        return {"call_id": self.call_id, "name": self.name, "output": self.output,
                "is_error": self.is_error, "ran": self.ran, "pending": self.pending,
                "request_id": self.request_id}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolOutcome:
        """An outcome kept with :meth:`to_dict`."""
        return cls(str(data["call_id"]), str(data["name"]), str(data["output"]),
                   bool(data["is_error"]), bool(data["ran"]), None,
                   pending=bool(data.get("pending")), request_id=data.get("request_id"))


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def field_of(obj: Any, key: str) -> Any:
    """``obj[key]`` for dicts, ``obj.key`` for SDK objects: tool calls arrive as either."""
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


class Dispatcher:
    """Runs tool calls against registered functions, each after the guard allows it.

    Subclasses set :attr:`origin` (the edge name in the audit log) and read their framework's
    tool calls; running, guarding and rendering results is shared here.

    Args:
        tools: Functions (named by ``__name__``) or a mapping from tool name to function;
            sync or async. Do not also decorate them with ``@guarded``.
        guard: The guard (default: the one in effect at call time).
        server: Server name the policy sees (default ``local``, like the decorator).
        run: Default facts about the caller (principal, session, source address...).
        hints: Hints for every tool, or per tool name (``privilege``, ``labels``...).
        on_error: When a tool raises: ``return`` the error to the model (default) or
            ``raise`` it to your code.
    """

    origin: str = "dispatcher"

    def __init__(
        self, tools: Iterable[Callable[..., Any]] | Mapping[str, Callable[..., Any]], *,
        guard: Guard | None = None, server: str = "local",
        run: RunContext | Mapping[str, Any] | None = None,
        hints: ToolHints | Mapping[str, ToolHints] | None = None, on_error: OnError = "return",
    ) -> None:
        items = tools.items() if isinstance(tools, Mapping) else ((None, f) for f in tools)
        self.functions: dict[str, FunctionSpec] = {}
        for name, fn in items:
            spec = FunctionSpec.of(fn, name)
            if spec.name in self.functions:
                raise ConfigError(f"two tools are named {spec.name!r}")
            self.functions[spec.name] = spec
        self.edge = Edge(self.origin, guard=guard, server=server, run=run, hints=hints)
        self.on_error = on_error

    # ------------------------------------------------------------------ one call
    def _prepare(
        self, call_id: str, name: str, arguments: str | Mapping[str, Any] | None,
        run: RunContext | Mapping[str, Any] | None,
    ) -> tuple[FunctionSpec, dict[str, Any]] | ToolOutcome:
        spec = self.functions.get(name)
        if spec is None:
            return ToolOutcome(call_id, name, f"error: there is no tool named {name!r}; "
                               f"available: {', '.join(sorted(self.functions))}", True, False)
        if arguments is None or arguments == "":
            arguments = {}
        problem = None
        if isinstance(arguments, str):
            try:
                # Strict: duplicate keys, NaN, infinities and overflowing literals could make
                # what the guard sees differ from what a lenient parser hands the tool.
                arguments = loads_strict(arguments)
            except CanonicalizationError as exc:
                problem = f"the arguments are not valid JSON ({exc})"
        if problem is None and not isinstance(arguments, Mapping):
            problem = "the arguments must be a JSON object"
        if problem is not None:
            # Refused like any call whose arguments do not fit the tool: invalid, audited.
            call = self.edge.build_call(name, {}, RunContext.coerce(run))
            auth = self.edge.guard().refuse(call, f"{problem}; nothing ran", outcome="invalid",
                                            event="call.invalid")
            return ToolOutcome.of(call_id, name, f"error: {problem}; nothing ran", True, False,
                                  auth)
        assert isinstance(arguments, Mapping)
        return spec, dict(arguments)

    @staticmethod
    def _to_run(
        call_id: str, spec: FunctionSpec, sent: dict[str, Any], auth: Authorization | None,
    ) -> tuple[list[Any], dict[str, Any]] | ToolOutcome:
        """The positional and keyword arguments to run: rebuilt from the snapshot the guard
        validated and approved (an approver's edit included), never the objects sent."""
        refusal = refusal_text(auth)
        if refusal is not None:
            return ToolOutcome.of(call_id, spec.name, refusal, True, False, auth)
        try:
            # auth is None only when the policy allows every call to the tool: the guard
            # validated nothing, so validate here (the tool still gets typed values).
            snapshot = auth.call.args if auth is not None else spec.arguments.validate(sent)
            return spec.arguments.rebuild(snapshot)
        except (ArgumentValidationError, CanonicalizationError) as exc:
            return ToolOutcome.of(call_id, spec.name, f"error: invalid arguments for "
                                  f"{spec.name!r}: {exc}; nothing ran", True, False, auth)

    def _finish(
        self, call_id: str, name: str, auth: Authorization | None, result: Any,
        error: Exception | None,
    ) -> ToolOutcome:
        if error is not None:
            if self.on_error == "raise":
                raise error
            return ToolOutcome.of(call_id, name, f"error: {type(error).__name__}: {error}",
                                  True, True, auth)
        return ToolOutcome.of(call_id, name, _render(result), False, True, auth)

    async def call(
        self, call_id: str, name: str, arguments: str | Mapping[str, Any] | None, *,
        run: RunContext | Mapping[str, Any] | None = None, wait: float | None = None,
    ) -> ToolOutcome:
        """Authorize and run one call (async; the event loop stays free while a human is
        asked, and sync tools run on a worker thread).

        ``wait``: seconds to wait for a human's verdict (``None``: until the request
        expires). With ``0`` a held call is answered at once with a *pending* outcome
        (``outcome.pending``, ``outcome.request_id``); asking again with the identical
        call later runs it once approved (see :meth:`turn`)."""
        prepared = self._prepare(call_id, name, arguments, run)
        if isinstance(prepared, ToolOutcome):
            return prepared
        spec, sent = prepared
        auth = await self.edge.authorize(name, sent, RunContext.coerce(run),
                                         validator=spec.arguments, wait=wait)
        to_run = self._to_run(call_id, spec, sent, auth)
        if isinstance(to_run, ToolOutcome):
            return to_run
        args, kwargs = to_run
        result: Any = None
        error: Exception | None = None
        try:
            if inspect.iscoroutinefunction(spec.fn):
                result = await spec.fn(*args, **kwargs)
            else:
                result = await anyio.to_thread.run_sync(
                    functools.partial(spec.fn, *args, **kwargs))
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:
            error = exc
        return self._finish(call_id, name, auth, result, error)

    def call_sync(
        self, call_id: str, name: str, arguments: str | Mapping[str, Any] | None, *,
        run: RunContext | Mapping[str, Any] | None = None, wait: float | None = None,
    ) -> ToolOutcome:
        """Synchronous :meth:`call` (a usage error inside a running event loop; async tools
        are run on a private loop)."""
        prepared = self._prepare(call_id, name, arguments, run)
        if isinstance(prepared, ToolOutcome):
            return prepared
        spec, sent = prepared
        auth = self.edge.authorize_sync(name, sent, RunContext.coerce(run),
                                        validator=spec.arguments, wait=wait)
        to_run = self._to_run(call_id, spec, sent, auth)
        if isinstance(to_run, ToolOutcome):
            return to_run
        args, kwargs = to_run
        result: Any = None
        error: Exception | None = None
        try:
            if inspect.iscoroutinefunction(spec.fn):
                result = anyio.run(functools.partial(spec.fn, *args, **kwargs))
            else:
                result = spec.fn(*args, **kwargs)
        except Exception as exc:
            error = exc
        return self._finish(call_id, name, auth, result, error)

    # ------------------------------------------------------------------ turns
    async def turn(
        self, calls: Iterable[tuple[str, str, Any]], *,
        run: RunContext | Mapping[str, Any] | None = None, wait: float | None = None,
        settled: Iterable[ToolOutcome] = (),
    ) -> list[ToolOutcome]:
        """Authorize and run the calls of one model turn, in order: ``(call_id, name,
        arguments)`` each.

        With ``wait=0`` a turn can end with held calls marked pending: keep the
        conversation and the outcomes (:meth:`ToolOutcome.to_dict`), and call again later,
        in any process, with the same calls and ``settled=`` the kept outcomes. Settled
        calls are not run again; each pending one is asked again and answered from the
        store: approved, it runs once with the approved arguments; denied, the refusal
        says why; undecided, it is still pending. Identical held calls in one turn share
        one request, one decision and one run (the duplicates are answered, not run).
        """
        turn = _Turn(settled)
        for call_id, name, arguments in calls:
            outcome = turn.answered(call_id, name, arguments)
            if outcome is None:
                outcome = await self.call(call_id, name, arguments, run=run, wait=wait)
            turn.record(name, arguments, outcome)
        return turn.outcomes

    def turn_sync(
        self, calls: Iterable[tuple[str, str, Any]], *,
        run: RunContext | Mapping[str, Any] | None = None, wait: float | None = None,
        settled: Iterable[ToolOutcome] = (),
    ) -> list[ToolOutcome]:
        """Synchronous :meth:`turn` (a usage error inside a running event loop)."""
        turn = _Turn(settled)
        for call_id, name, arguments in calls:
            outcome = turn.answered(call_id, name, arguments)
            if outcome is None:
                outcome = self.call_sync(call_id, name, arguments, run=run, wait=wait)
            turn.record(name, arguments, outcome)
        return turn.outcomes


class _Turn:
    """One model turn's outcomes: calls already settled are not run again, and a held call
    repeated in the turn shares the first one's request (answered, not run)."""

    def __init__(self, settled: Iterable[ToolOutcome]) -> None:
        self.kept = {o.call_id: o for o in settled if not o.pending}
        self.first: dict[str, ToolOutcome] = {}
        self.outcomes: list[ToolOutcome] = []

    def answered(self, call_id: str, name: str, arguments: Any) -> ToolOutcome | None:
        """The outcome this call already has, or None: it must be run."""
        if call_id in self.kept:
            return self.kept[call_id]
        key = _same_call(name, arguments)
        if key is not None and key in self.first and self.first[key].request_id is not None:
            return _duplicate(call_id, self.first[key])
        return None

    def record(self, name: str, arguments: Any, outcome: ToolOutcome) -> None:
        key = _same_call(name, arguments)
        if key is not None:
            self.first.setdefault(key, outcome)
        self.outcomes.append(outcome)


def _same_call(name: str, arguments: Any) -> str | None:
    """What makes two calls of one turn the same call (tool and arguments)."""
    try:
        args = loads_strict(arguments) if isinstance(arguments, str) else arguments
        return json.dumps([name, args], sort_keys=True)
    except (CanonicalizationError, TypeError, ValueError):
        return None


def _duplicate(call_id: str, original: ToolOutcome) -> ToolOutcome:
    """The answer to a held call identical to an earlier one of the same turn: one
    request, one decision, one run."""
    if not original.ran:
        return replace(original, call_id=call_id)  # still pending, or the same refusal
    return ToolOutcome(call_id, original.name,
                       f"agentguard: an identical call in this turn ({original.call_id}) ran "
                       "on the one approval; this duplicate did not run.",
                       True, False, None, request_id=original.request_id)
