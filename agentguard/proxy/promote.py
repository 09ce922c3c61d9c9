"""Promoting a relayed call into a round trip of the ledger, when its upstream asks mid-call.

A 2026-07-28 client cannot be sent requests. When it calls a tool of a handshake-era upstream,
the upstream may send ``elicitation/create``, ``sampling/createMessage`` or ``roots/list`` in
the middle of the call; on the SDK route the call's work runs as a
:class:`~agentguard.proxy.ledger.RoundTrip` from the start, so the question becomes an
``InputRequiredResult`` and the client's retry (which carries ``requestState``) delivers the
answer. Most calls never ask, so the stdio relay (and the HTTP listener's direct route,
:mod:`agentguard.proxy.http_direct`) carries them on the wire like any other, with
a :class:`Promotion` as the call's asker (:meth:`ProxyCore.push_asker
<agentguard.proxy.core.ProxyCore.push_asker>`: the upstream's requests reach it exactly as
they reach the SDK route's asker — with one call in flight, that call's; with several, the
latest). Only when the upstream asks does the promotion take the call over:

- the relay gives up the client's request (it no longer answers it from the wire);
- a round trip opens in the SDK route's own :class:`~agentguard.proxy.ledger.Ledger`, bound as
  the SDK route binds it (``tools/call``, the exposed name, the arguments, the session), whose
  work is waiting for the relayed request's answer;
- the question is asked through that round trip, and its first round answers the client's
  request with the ``InputRequiredResult`` (a fresh ``requestState``) the SDK route would
  give, serialized as the SDK server serializes a handler's result (over HTTP, written as
  the SDK's app writes it: JSON, or the message event of a stream already pinging);
- the upstream's eventual answer finishes the work; the client's retry is not a plain call,
  so it takes the SDK route, whose ledger path serves it (and refuses a tampered state or
  different arguments). A round trip cancelled (a refused retry, the ledger's idle timeout)
  cancels the relayed request upstream, as cancelling the SDK route's work does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import anyio
from mcp.shared.exceptions import MCPError
from mcp.types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    SERVER_INFO_META_KEY,
    ClientCapabilities,
    ErrorData,
    InputRequest,
    InputResponse,
)
from mcp.types import methods as wire_methods
from pydantic import BaseModel, ValidationError

from agentguard.proxy.answers import (
    INVALID_RESULT,
    UpstreamAnswer,
    error_object,
    unstamped_model,
)
from agentguard.proxy.askers import missing_capability
from agentguard.proxy.calls import CALL_RESULT
from agentguard.proxy.jsontypes import JsonObject, JsonValue, RequestId
from agentguard.proxy.lane import Lane
from agentguard.proxy.ledger import RoundAsker, RoundTrip, binding_for

if TYPE_CHECKING:
    from agentguard.proxy.core import ProxyCore
    from agentguard.proxy.upstream import Upstream

__all__ = ["Promotion"]

logger = logging.getLogger(__name__)


def _envelope_client(params: Mapping[str, JsonValue]) -> tuple[ClientCapabilities | None, str]:
    """The capabilities and name a 2026-07-28 request's envelope declares (read as the SDK
    server reads them for ``ctx.session``: a mis-shaped value counts as none)."""
    meta = params.get("_meta")
    if not isinstance(meta, dict):
        return None, "mcp-client"
    try:
        caps = ClientCapabilities.model_validate(meta.get(CLIENT_CAPABILITIES_META_KEY),
                                                 by_name=False)
    except ValidationError:
        caps = None
    info = meta.get(CLIENT_INFO_META_KEY)
    name = info.get("name") if isinstance(info, dict) else None
    return caps, str(name) if name else "mcp-client"


class Promotion:
    """The asker of one relayed call from a 2026-07-28 client to a handshake-era upstream.

    Args:
        core: The proxy core (its ledger, task group and askers).
        upstream: The upstream the call is relayed to.
        rid: The client's request id.
        params: The call's ``params`` as the client sent them (the binding, the envelope).
        version: The client's protocol version.
        server_info: The proxy's ``serverInfo`` stamp.
        reply: Answers the client's request with a JSON-RPC message (a result or an error):
            a line on stdio, the POST's answer over HTTP. Raises ``ValueError`` or
            ``TypeError`` before writing anything when the message cannot be serialized.
        release: Takes the request from the relay; False when it is no longer in flight
            there (answered or cancelled).
        session: The session the SDK route binds the call's round trip to (the core's on
            stdio; none for a 2026-07-28 POST).
    """

    def __init__(self, core: ProxyCore, upstream: Upstream, rid: RequestId,
                 params: Mapping[str, JsonValue], version: str, server_info: JsonObject,
                 reply: Callable[[JsonObject], None], release: Callable[[], bool],
                 session: str | None) -> None:
        self._core = core
        self._upstream = upstream
        self.server = upstream.name
        self._rid = rid
        self._version = version
        self._server_info = server_info
        self._reply = reply
        self._release = release
        self._session = session
        self._params = params  # read only if the upstream asks (most calls never do)
        self.capabilities: ClientCapabilities | None = None
        self.client_name = "mcp-client"
        self._read = False
        self.trip: RoundTrip | None = None
        self._lane: Lane | None = None
        self._sent = ""
        self._answer: UpstreamAnswer | None = None
        self._settled: anyio.Event | None = None  # made in the work's task
        self._first_answered = False

    def attach(self, lane: Lane, sent: str) -> None:
        """The relayed request went out on ``lane`` under ``sent``."""
        self._lane, self._sent = lane, sent

    # ------------------------------------------------------------------ the Asker

    async def ask(self, request: InputRequest) -> InputResponse | ErrorData:
        """Ask the client: the first question promotes the call into a round trip."""
        trip = self.trip
        if trip is None:
            if not self._read:
                self.capabilities, self.client_name = _envelope_client(self._params)
                self._read = True
            why = missing_capability(self.capabilities, request)
            if why is not None:  # what the SDK route's RoundAsker answers, no round needed
                return ErrorData(code=METHOD_NOT_FOUND, message=why)
            promoted = self._promote()
            if isinstance(promoted, ErrorData):
                return promoted
            trip = promoted
        return await RoundAsker(trip).ask(request)

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        """Nothing to report: a relayed call carries no progress token."""

    # ------------------------------------------------------------------ the relay's side

    def hang_up(self) -> None:
        """The client is gone, after promotion: a first round not answered yet ends the round
        trip (as the SDK route's round, cancelled with its request, does); once answered, the
        round trip waits in the ledger for a retry, as on the SDK route."""
        if self.trip is not None and not self._first_answered:
            self.trip.cancel()

    def settle(self, answer: UpstreamAnswer) -> None:
        """The relayed request's answer, after promotion: it finishes the round trip's work."""
        self._answer = answer
        if self._settled is not None:
            self._settled.set()

    # ------------------------------------------------------------------ promotion

    def _promote(self) -> RoundTrip | ErrorData:
        if not self._release():
            return ErrorData(code=METHOD_NOT_FOUND,
                             message="the request that caused this one is over")
        ledger = self._core.ledger
        assert ledger is not None
        params = self._params
        arguments = params.get("arguments")
        binding = binding_for("tools/call", str(params.get("name")),
                              arguments if isinstance(arguments, dict) else None,
                              self._session)  # as the SDK route binds it
        try:
            trip = ledger.open(binding, self._work)
        except MCPError as exc:  # the ledger is full: the call fails as it would have
            self._give_up()
            self._write_error(exc.error.model_dump(by_alias=True, mode="json",
                                                   exclude_none=True))
            return exc.error
        trip.capabilities, trip.client_name = self.capabilities, self.client_name
        self.trip = trip
        self._core.spawn(self._first_round, trip)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("promoted a relayed tools/call to %r into a round trip",
                         self.server)
        return trip

    def _give_up(self) -> None:
        self._core.drop_asker(self.server, self)
        if self._lane is not None and self._sent:
            self._lane.forget(self._sent)  # the upstream is told; a late answer is dropped

    async def _work(self, asker: RoundAsker) -> object:
        """The round trip's work: the relayed request's answer, as the SDK route's
        ``forward_tool`` would return (or raise) it."""
        try:
            if self._answer is None:
                self._settled = anyio.Event()
                await self._settled.wait()
        except BaseException:
            self._give_up()  # cancelled (a refused retry, the idle timeout, shutdown)
            raise
        self._core.drop_asker(self.server, self)
        answer = self._upstream.raise_for(self._answer)
        return unstamped_model(CALL_RESULT.validate_python(answer.body))

    async def _first_round(self, trip: RoundTrip) -> None:
        """Answer the client's request with the first round, as the SDK server would."""
        ledger = self._core.ledger
        assert ledger is not None
        try:
            result = await ledger.round(trip, None)
        except MCPError as exc:
            self._first_answered = True
            self._write_error(exc.error.model_dump(by_alias=True, mode="json",
                                                   exclude_none=True))
            return
        self._first_answered = True
        try:
            self._reply({"jsonrpc": "2.0", "id": self._rid, "result": self._dump(result)})
        except (ValidationError, ValueError, TypeError):
            logger.exception("cannot serialize a tools/call result for the client")
            self._write_error(error_object(INTERNAL_ERROR, INVALID_RESULT))

    def _dump(self, result: object) -> JsonObject:
        """A handler's result as the SDK server writes it for a 2026-07-28 client."""
        if isinstance(result, BaseModel):
            dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        else:
            assert isinstance(result, dict)
            dumped = dict(result)
        dumped = wire_methods.serialize_server_result("tools/call", self._version, dumped)
        if dumped.get("resultType") is None:
            dumped["resultType"] = "complete"
        meta = dumped.get("_meta")
        if meta is None:
            dumped["_meta"] = {SERVER_INFO_META_KEY: self._server_info}
        elif isinstance(meta, dict) and meta.get(SERVER_INFO_META_KEY) is None:
            dumped["_meta"] = {**meta, SERVER_INFO_META_KEY: self._server_info}
        return dumped

    def _write_error(self, error: JsonObject) -> None:
        self._reply({"jsonrpc": "2.0", "id": self._rid, "error": error})
