"""Checks on HTTP bodies before the SDK's Streamable HTTP app sees them."""

from __future__ import annotations

from typing import Any

from mcp.shared.message import SessionMessage
from mcp.types import INVALID_REQUEST, PARSE_ERROR, JSONRPCError

from agentguard.proxy.asgi_bridge import RELAY_DECLINED
from agentguard.proxy.http_cancel import cancellable, serve_cancelling
from agentguard.proxy.http_relay import HttpRelay
from agentguard.proxy.wire import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_MESSAGE_BYTES,
    WireError,
    parse_value,
    serialize,
    to_message,
)

__all__ = ["HardenedASGI"]


class HardenedASGI:
    """ASGI middleware giving HTTP POST bodies the same checks as stdio lines.

    A body that is not one JSON-RPC 2.0 message (a batch, a bare value, too deep, invalid
    UTF-8, duplicate keys...) is answered ``400`` with the same JSON-RPC error the stdio
    transport writes; anything else reaches the SDK's Streamable HTTP app unchanged, unless
    ``relay`` answers it first (a ``tools/call`` the guard may skip, in either era).
    Every request the app serves is shown to the relay's session book, which learns
    the handshake-era sessions from them (:mod:`agentguard.proxy.sessions`). A session's
    ``tools/call`` whose client disconnects before the answer is cancelled
    (:mod:`agentguard.proxy.http_cancel`).
    """

    def __init__(self, app: Any, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 max_depth: int = DEFAULT_MAX_DEPTH, relay: HttpRelay | None = None
                 ) -> None:
        self.app = app
        self.max_message_bytes = max_message_bytes
        self.max_depth = max_depth
        self.relay = relay

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            if self.relay is not None and scope.get("type") == "http":
                send = self.relay.sessions.watch(scope, None, send)
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            event = await receive()
            if event["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnect: let the app see it
                return
            body = event.get("body", b"")
            size += len(body)
            if size > self.max_message_bytes:
                await self._refuse(send, 413, WireError(
                    INVALID_REQUEST,
                    f"Invalid Request: message larger than {self.max_message_bytes} bytes"))
                return
            chunks.append(body)
            more = event.get("more_body", False)
        raw = b"".join(chunks)
        try:
            value = parse_value(raw, max_depth=self.max_depth)
            if value is None:
                raise WireError(PARSE_ERROR, "Parse error: empty body")
        except WireError as exc:
            await self._refuse(send, 400, exc)
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        # The relay takes only well-formed requests it checked itself; the rest are
        # validated as JSON-RPC here before the SDK sees them.
        if self.relay is not None and not scope.get(RELAY_DECLINED) and await self.relay.offer(
                scope, value, receive, send, lambda out: self.app(scope, replay, out)):
            return
        try:
            to_message(value)
        except WireError as exc:
            await self._refuse(send, 400, exc)
            return
        if self.relay is not None:
            send = self.relay.sessions.watch(scope, value, send)
        request_id = cancellable(scope, value)
        if request_id is not None:  # a client that hangs up on a held call cancels it
            await serve_cancelling(self.app, scope, raw, receive, send, request_id)
            return
        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Any, status: int, exc: WireError) -> None:
        body = serialize(SessionMessage(JSONRPCError(jsonrpc="2.0", id=exc.request_id,
                                                     error=exc.error)))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
