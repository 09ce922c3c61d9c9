"""A Streamable HTTP client that disconnects from a call it is waiting for cancels that call.

Over stdio a client that gives up sends ``notifications/cancelled`` and the SDK cancels the
handler, so a held call ends ``cancelled`` in the store. Over HTTP a client may just close the
connection: the SDK's app stops streaming the answer but the handler (and the guard's hold
inside it) would live on, pending and approvable, holding the caller's flood-control slot.

:func:`serve_cancelling` serves one POSTed request and, when the connection ends before its
answer was sent, tells the SDK's app — through its own ASGI interface, on the same session —
that the client cancelled it, exactly as a client would.
"""

from __future__ import annotations

import json
from typing import Any

import anyio

__all__ = ["cancellable", "serve_cancelling"]

_CANCELLABLE = frozenset({"tools/call"})


def cancellable(scope: dict[str, Any], value: Any) -> Any | None:
    """The request id of a handshake-era (session) request worth cancelling, else None."""
    if not isinstance(value, dict) or value.get("method") not in _CANCELLABLE:
        return None
    rid = value.get("id")
    if rid is None or isinstance(rid, bool) or not isinstance(rid, str | int):
        return None
    if not any(name == b"mcp-session-id" for name, _ in scope.get("headers", ())):
        return None  # no session to address a cancellation to
    return rid


async def serve_cancelling(app: Any, scope: dict[str, Any], body: bytes, receive: Any,
                           send: Any, request_id: Any) -> None:
    """Run ``app`` for one POST whose ``body`` was already read, cancelling the request
    (``notifications/cancelled``) if the client disconnects before the answer completes."""
    complete = False
    disconnected = anyio.Event()
    replayed = False

    async def app_receive() -> dict[str, Any]:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def app_send(message: dict[str, Any]) -> None:
        nonlocal complete
        if message.get("type") == "http.response.body" and not message.get("more_body"):
            complete = True
        await send(message)

    async def watch() -> None:
        while (await receive()).get("type") != "http.disconnect":
            pass
        disconnected.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            try:
                await app(scope, app_receive, app_send)
            finally:
                tg.cancel_scope.cancel()
    finally:
        if not complete:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await _cancel(app, scope, request_id)


async def _cancel(app: Any, scope: dict[str, Any], request_id: Any) -> None:
    body = json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {
        "requestId": request_id, "reason": "the client disconnected"}}).encode()
    headers = [(k, v) for k, v in scope.get("headers", ())
               if k not in (b"content-length", b"content-type")]
    headers += [(b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())]
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}  # nobody reads the answer to this one

    async def discard(message: dict[str, Any]) -> None:
        return None

    await app({**scope, "headers": headers}, receive, discard)
