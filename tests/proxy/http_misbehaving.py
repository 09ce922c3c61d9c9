"""The example ops server over Streamable HTTP, with HTTP-level misbehaviour on request.

A ``tools/call`` of ``get_status`` whose ``service`` names a trick gets that trick instead of
the server's answer; everything else (discovery, listings, other services) is the real ops
server. Used to check that the relay's raw HTTP lane reads every kind of answer the way
the SDK's transport does.

Run: ``python tests/proxy/http_misbehaving.py PORT``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import uvicorn

TRICKS = ("html", "bad-json", "rpc-404", "plain-500", "sse", "sse-no-answer", "accepted",
          "redirect")
"""In this order on purpose: after a redirect the relay's lane hands over to the SDK transport."""


def _json_line(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def _respond(send: Any, status: int, content_type: str | None, chunks: list[bytes],
                   extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    headers = list(extra)
    if content_type:
        headers.append((b"content-type", content_type.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    for i, chunk in enumerate(chunks):
        await send({"type": "http.response.body", "body": chunk,
                    "more_body": i + 1 < len(chunks)})
    if not chunks:
        await send({"type": "http.response.body", "body": b""})


def misbehaving(app: Any) -> Any:
    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            await app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        value = json.loads(body)
        params = value.get("params") or {}
        trick = (params.get("arguments") or {}).get("service") \
            if value.get("method") == "tools/call" else None
        rid = value.get("id")
        if scope["path"] == "/moved":
            # Where "redirect" sends the caller: the real server, for a real service.
            params["arguments"]["service"] = "api"
            body, trick = _json_line(value), None
            scope = dict(scope, path="/mcp", raw_path=b"/mcp")
        if trick == "redirect":
            await _respond(send, 307, None, [], ((b"location", b"/moved"),))
        elif trick == "html":
            await _respond(send, 200, "text/html", [b"<h1>hello</h1>"])
        elif trick == "bad-json":
            await _respond(send, 200, "application/json", [b"{not json"])
        elif trick == "rpc-404":
            await _respond(send, 404, "application/json", [_json_line({
                "jsonrpc": "2.0", "id": None,
                "error": {"code": -32601, "message": "no such method here", "data": {"x": 1}}})])
        elif trick == "plain-500":
            await _respond(send, 500, "text/plain", [b"boom"])
        elif trick == "accepted":
            await _respond(send, 202, None, [])
        elif trick in ("sse", "sse-no-answer"):
            note = _json_line({"jsonrpc": "2.0", "method": "notifications/message",
                               "params": {"level": "info", "data": "warming up"}})
            answer = _json_line({"jsonrpc": "2.0", "id": rid, "result": {
                "content": [{"type": "text", "text": "answered over sse"}],
                "structuredContent": {"result": "answered over sse"}, "isError": False,
                "resultType": "complete"}})
            stream = b": ping\r\n\r\nevent: message\r\ndata: " + note + b"\r\n\r\n"
            if trick == "sse":
                stream += b"event: message\r\ndata: " + answer + b"\r\n\r\n"
            # Odd-sized pieces: events split across chunks, CRLF split across chunks.
            pieces = [stream[i:i + 7] for i in range(0, len(stream), 7)]
            await _respond(send, 200, "text/event-stream", pieces)
        else:
            sent = False

            async def replay() -> dict[str, Any]:
                nonlocal sent
                if sent:
                    return await receive()
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            await app(scope, replay, send)

    return asgi


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "servers"))
    from ops_server import mcp

    port = int(sys.argv[1])
    app = mcp.streamable_http_app(host="127.0.0.1")
    uvicorn.run(misbehaving(app), host="127.0.0.1", port=port, log_level="warning",
                lifespan="on")


if __name__ == "__main__":
    main()
