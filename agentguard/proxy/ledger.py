"""Multi-round trips (SEP-2322) towards 2026-07-28 clients, with a server-side ledger.

A 2026 client cannot be sent requests. When a request's work (the guard holding a call for
an elicitation answer, or an upstream that asks for input) needs the client, the work keeps
running in the background as a :class:`RoundTrip`; the handler answers ``InputRequiredResult``
carrying the questions and a fresh ``requestState``. The client's retry carries the answers
and that state, which is only a key into the :class:`Ledger`:

- 192 random bits, single use (every round gets a new key);
- bound to the request that opened it (method, target, argument digest, session); a retry
  that differs is refused with ``-32602``;
- forgotten after ``idle_timeout`` without a retry, which also cancels the work.

A call the stdio relay carries on the wire enters the ledger only when its (handshake-era)
upstream asks mid-call: :mod:`agentguard.proxy.promote` opens the round trip then
(:meth:`Ledger.open`) and answers the first round (:meth:`Ledger.round`) itself; the retry
comes here like any other.

The client writes the answers themselves (that is what elicitation is), so the approval
channel built on this is unverified; the guard only uses it where a rule says so.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import anyio
import anyio.abc
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    ClientCapabilities,
    ErrorData,
    InputRequest,
    InputRequiredResult,
    InputResponse,
    InputResponses,
)

from agentguard.canonical import CanonicalizationError, canonical_bytes
from agentguard.proxy.askers import RequestContext, client_name_of, missing_capability
from agentguard.types import new_request_id

__all__ = ["Binding", "Ledger", "RoundAsker", "RoundTrip", "binding_for"]

logger = logging.getLogger(__name__)

Work = Callable[["RoundAsker"], Awaitable[object]]
"""The request's work: its result (whatever its method returns), asking through the asker."""


@dataclass(frozen=True, slots=True)
class Binding:
    """What a ``requestState`` is bound to."""

    method: str
    target: str
    args_digest: str
    session: str | None


def binding_for(method: str, target: str, args: Mapping[str, object] | None,
                session: str | None) -> Binding:
    """The binding of a request (arguments by canonical hash)."""
    try:
        data = canonical_bytes(dict(args or {}))
    except CanonicalizationError:
        data = repr(sorted((args or {}).items())).encode()
    return Binding(method, target, hashlib.sha256(data).hexdigest(), session)


@dataclass
class _Question:
    request: InputRequest
    answered: anyio.Event = field(default_factory=anyio.Event)
    answer: InputResponse | ErrorData | None = None


class RoundTrip:
    """One downstream request whose work spans several round trips."""

    def __init__(self, binding: Binding, work: Work) -> None:
        self.binding = binding
        self._work = work
        self._ctx: RequestContext | None = None
        self._questions: dict[str, _Question] = {}
        self._counter = 0
        self._changed = anyio.Event()
        self._done = anyio.Event()
        self._result: object = None
        self._error: BaseException | None = None
        self._scope = anyio.CancelScope()
        self.idle_since: float | None = None
        self.capabilities: ClientCapabilities | None = None
        self.client_name = "mcp-client"

    # -- used by the work, through RoundAsker
    async def ask(self, request: InputRequest) -> InputResponse | ErrorData:
        self._counter += 1
        key = f"agentguard-{self._counter}"
        question = _Question(request)
        self._questions[key] = question
        self._changed.set()
        await question.answered.wait()
        assert question.answer is not None
        return question.answer

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        ctx = self._ctx
        if ctx is None:
            return
        try:
            await ctx.session.report_progress(progress, total, message)
        except Exception:
            logger.debug("progress notification dropped", exc_info=True)

    # -- used by the ledger and the handler
    async def run(self) -> None:
        with self._scope:
            try:
                self._result = await self._work(RoundAsker(self))
            except Exception as exc:
                self._error = exc
        if self._scope.cancelled_caught and self._error is None:
            self._error = MCPError(code=INVALID_PARAMS, message="request abandoned")
        self._done.set()
        self._changed.set()

    def cancel(self) -> None:
        """Stop the work (the client went away or never came back)."""
        self._scope.cancel()

    def deliver(self, responses: InputResponses | None) -> None:
        """Hand the client's answers to the questions they answer."""
        for key, value in (responses or {}).items():
            question = self._questions.get(key)
            if question is None or question.answered.is_set():
                continue
            question.answer = value
            question.answered.set()
        self._questions = {k: q for k, q in self._questions.items() if not q.answered.is_set()}

    async def next_round(self, ctx: RequestContext | None) -> bool:
        """Wait until the work finishes (True) or has questions for the client (False).

        ``ctx`` is the round's request (None: a round the stdio relay answers on the wire,
        with :attr:`capabilities` and :attr:`client_name` set from the request's envelope).
        """
        self._ctx = ctx
        if ctx is not None:
            self.capabilities = ctx.session.client_capabilities
            self.client_name = client_name_of(ctx)
        try:
            while not self._done.is_set() and not self._questions:
                self._changed = anyio.Event()
                await self._changed.wait()
        finally:
            self._ctx = None
        return self._done.is_set()

    def outcome(self) -> object:
        """The work's result (re-raising its error)."""
        if self._error is not None:
            raise self._error
        return self._result

    def questions(self) -> dict[str, InputRequest]:
        """Questions waiting for the client."""
        return {k: q.request for k, q in self._questions.items()}


class RoundAsker:
    """The :class:`~agentguard.proxy.askers.Asker` of a 2026 client: questions ride rounds."""

    def __init__(self, trip: RoundTrip) -> None:
        self._trip = trip

    @property
    def capabilities(self) -> ClientCapabilities | None:
        """What the client declared on its latest round."""
        return self._trip.capabilities

    @property
    def client_name(self) -> str:
        """The client's self-declared name (display only)."""
        return self._trip.client_name

    async def ask(self, request: InputRequest) -> InputResponse | ErrorData:
        why = missing_capability(self.capabilities, request)
        if why is not None:
            return ErrorData(code=METHOD_NOT_FOUND, message=why)
        return await self._trip.ask(request)

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        await self._trip.progress(progress, total, message)


class Ledger:
    """Open round trips by ``requestState`` key, kept only in this process."""

    def __init__(self, task_group: anyio.abc.TaskGroup, *, idle_timeout: float = 600.0,
                 max_open: int = 1000) -> None:
        self._tg = task_group
        self._open: dict[str, RoundTrip] = {}
        self.idle_timeout = idle_timeout
        self.max_open = max_open

    def __len__(self) -> int:
        return len(self._open)

    async def serve(self, ctx: RequestContext, binding: Binding, request_state: str | None,
                    input_responses: InputResponses | None, work: Work) -> object:
        """Run one round of a request; returns its result or an ``InputRequiredResult``.

        Raises:
            MCPError: ``-32602`` for an unknown, expired, reused or mismatched state, or the
                work's own error.
        """
        trip: RoundTrip | None
        if request_state is None:
            trip = self.open(binding, work)
        else:
            trip = self._open.pop(request_state, None)  # single use
            if trip is None or trip.binding != binding:
                if trip is not None:
                    trip.cancel()
                raise MCPError(code=INVALID_PARAMS, message="Invalid or expired requestState")
            trip.idle_since = None
            trip.deliver(input_responses)
        return await self.round(trip, ctx)

    def open(self, binding: Binding, work: Work) -> RoundTrip:
        """Start a request's work as a round trip (its first round is :meth:`round`).

        Raises:
            MCPError: too many round trips are waiting for their clients.
        """
        if len(self._open) >= self.max_open:
            raise MCPError(code=INTERNAL_ERROR, message=(
                f"{self.max_open} multi-round requests are waiting for their clients; "
                "refusing new ones until some finish or expire"))
        trip = RoundTrip(binding, work)
        self._tg.start_soon(self._run, trip)
        return trip

    def full(self) -> bool:
        """No new round trip may open now (:meth:`open` would refuse)."""
        return len(self._open) >= self.max_open

    async def round(self, trip: RoundTrip, ctx: RequestContext | None) -> object:
        """One round of ``trip``: its result, or an ``InputRequiredResult`` under a fresh
        ``requestState`` (``ctx``: see :meth:`RoundTrip.next_round`).

        Raises:
            MCPError: the work's own error.
        """
        answered = False
        try:
            done = await trip.next_round(ctx)
            answered = True
        finally:
            if not answered:
                trip.cancel()  # the client cancelled or disconnected mid-round
        if done:
            return trip.outcome()
        state = new_request_id()
        trip.idle_since = time.monotonic()
        self._open[state] = trip
        return InputRequiredResult(input_requests=trip.questions(), request_state=state)

    async def _run(self, trip: RoundTrip) -> None:
        await trip.run()

    async def sweep(self) -> None:
        """Forget (and cancel) round trips the client has not come back for; run forever."""
        while True:
            await anyio.sleep(min(5.0, self.idle_timeout / 4))
            now = time.monotonic()
            for key, trip in list(self._open.items()):
                idle = trip.idle_since
                if idle is not None and now - idle > self.idle_timeout:
                    logger.info("abandoned a multi-round request after %.0fs without a retry",
                                self.idle_timeout)
                    self._open.pop(key, None)
                    trip.cancel()
