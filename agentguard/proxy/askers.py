"""Asking the downstream client: pushed requests (old era) and multi-round trips (2026-07-28).

Three things need the client's answer mid-request: the MCP elicitation approval channel, an
upstream that asks for input (elicitation, sampling, roots), and progress while a call is
held. An :class:`Asker` hides how the question travels:

- :class:`PushAsker` — a handshake-era client with a back-channel: the proxy sends
  ``elicitation/create`` (or ``sampling/createMessage``, ``roots/list``) and awaits the answer
  inside the same request.
- :class:`RoundAsker` — a 2026-07-28 client, which cannot be sent requests: the request's work
  runs in the background (:class:`~agentguard.proxy.ledger.RoundTrip`), the handler answers
  ``InputRequiredResult`` with the questions, and the client's retry delivers the answers.

A URL-mode elicitation finishes out of band (the user's browser talks to the proxy), so the
spec has the server tell the client with ``notifications/elicitation/complete``. Askers that
can send it implement :class:`CompletionNotifier`: a :class:`PushAsker` whose client speaks a
version that defines it (2025-11-25). The 2026-07-28 protocol has no such notification (the
client learns the outcome from its retry's result), so a ``RoundAsker`` does not implement it.

The ledger of open round trips stays in the proxy. The ``requestState`` a client echoes is only
an unguessable, single-use key into it, bound to the method, target, arguments and session of
the request that opened it; nothing the client writes into it is believed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

import anyio
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp.types import (
    CLIENT_INFO_META_KEY,
    METHOD_NOT_FOUND,
    ClientCapabilities,
    CreateMessageRequest,
    CreateMessageResult,
    CreateMessageResultWithTools,
    ElicitRequest,
    ElicitResult,
    ErrorData,
    InputRequest,
    InputResponse,
    ListRootsRequest,
    ListRootsResult,
)
from mcp.types.methods import SERVER_NOTIFICATIONS

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = [
    "Asker",
    "CompletionNotifier",
    "PushAsker",
    "RequestContext",
    "client_name_of",
    "missing_capability",
    "result_type_for",
]

logger = logging.getLogger(__name__)

RequestContext: TypeAlias = "ServerRequestContext[dict[str, object], Request]"
"""What the SDK server hands a proxy handler: its session, and on HTTP the Starlette request
(None on stdio). The proxy's server keeps the SDK's default lifespan state (a dict)."""

_ELICIT_COMPLETE = "notifications/elicitation/complete"
_NOTIFY_TIMEOUT = 5.0


def result_type_for(request: InputRequest) -> type[InputResponse]:
    """The result model the client answers ``request`` with."""
    if isinstance(request, ElicitRequest):
        return ElicitResult
    if isinstance(request, ListRootsRequest):
        return ListRootsResult
    params = request.params
    wants_tools = params.tools is not None or params.tool_choice is not None
    return CreateMessageResultWithTools if wants_tools else CreateMessageResult


class Asker(Protocol):
    """How the proxy reaches the downstream client during one request."""

    capabilities: ClientCapabilities | None
    client_name: str

    async def ask(self, request: InputRequest) -> InputResponse | ErrorData:
        """Ask the client; an ``ErrorData`` when it cannot or will not answer."""

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        """Report progress on the request (a no-op unless the client asked for it)."""


@runtime_checkable
class CompletionNotifier(Protocol):
    """An asker that can tell its client a URL-mode elicitation finished out of band."""

    async def notify_elicitation_complete(self, elicitation_id: str) -> None:
        """Send ``notifications/elicitation/complete`` (best effort; never raises)."""


def missing_capability(caps: ClientCapabilities | None, request: InputRequest) -> str | None:
    """Why the client cannot be asked this, or None when it declared the capability."""
    if isinstance(request, ElicitRequest):
        if caps is None or caps.elicitation is None:
            return "the MCP client did not declare the elicitation capability"
        mode = getattr(request.params, "mode", "form") or "form"
        sub = getattr(caps.elicitation, mode, None)
        declared_any = caps.elicitation.form is not None or caps.elicitation.url is not None
        if declared_any and sub is None and mode == "url":
            return "the MCP client did not declare URL-mode elicitation"
        return None
    if isinstance(request, CreateMessageRequest):
        return None if caps and caps.sampling is not None else \
            "the MCP client did not declare the sampling capability"
    if isinstance(request, ListRootsRequest):
        return None if caps and caps.roots is not None else \
            "the MCP client did not declare the roots capability"
    return "unknown input request"


def client_name_of(ctx: RequestContext) -> str:
    """The client's self-declared name (display only: it is not an identity)."""
    params = ctx.session.client_params
    if params is not None and params.client_info is not None:
        return params.client_info.name
    meta = dict(ctx.meta) if ctx.meta is not None else {}
    info = meta.get(CLIENT_INFO_META_KEY)
    return str(info.get("name")) if isinstance(info, dict) and info.get("name") else "mcp-client"


class PushAsker:
    """Ask a handshake-era client directly over its back-channel."""

    def __init__(self, ctx: RequestContext) -> None:
        self._ctx = ctx
        self.capabilities = ctx.session.client_capabilities
        self.client_name = client_name_of(ctx)

    async def ask(self, request: InputRequest) -> InputResponse | ErrorData:
        why = missing_capability(self.capabilities, request)
        if why is not None:
            return ErrorData(code=METHOD_NOT_FOUND, message=why)
        if not self._ctx.session.can_send_request:
            return ErrorData(code=METHOD_NOT_FOUND,
                             message="this connection cannot carry requests to the client")
        meta = ServerMessageMetadata(related_request_id=self._ctx.request_id)
        try:
            return await self._ctx.session.send_request(request, result_type_for(request),
                                                        metadata=meta)
        except MCPError as exc:
            return exc.error

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        try:
            await self._ctx.session.report_progress(progress, total, message)
        except Exception:  # progress is best effort; the request goes on
            logger.debug("progress notification dropped", exc_info=True)

    async def notify_elicitation_complete(self, elicitation_id: str) -> None:
        """Tell the client the URL-mode elicitation ``elicitation_id`` finished.

        Sent on the stream of the request that asked (it is still open: the held call waits),
        and only where the negotiated version defines the notification. Best effort: the
        spec tells clients not to rely on it.
        """
        session = self._ctx.session
        if (_ELICIT_COMPLETE, session.protocol_version) not in SERVER_NOTIFICATIONS:
            return
        try:
            # Bounded: a client that stopped reading must not hold up the call's outcome.
            with anyio.move_on_after(_NOTIFY_TIMEOUT):
                await session.send_elicit_complete(elicitation_id,
                                                   related_request_id=self._ctx.request_id)
        except Exception:
            logger.debug("elicitation/complete notification dropped", exc_info=True)
