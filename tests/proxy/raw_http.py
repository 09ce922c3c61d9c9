"""A raw HTTP/1.1 client and an echo ASGI app, for the ``--listen`` listener's tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from agentguard.proxy.http_listener import Limits, Listener

__all__ = ["Echo", "closed", "request", "response", "serving"]


class Echo:
    """Answers with what it was given; ``/slow`` waits first, ``/stream`` streams until the
    client hangs up, ``/boom`` raises, ``/silent`` answers nothing."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.hung_up = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.seen.append(scope["path"])
        event = await receive()
        body = event["body"]
        if scope["path"] == "/slow":
            await asyncio.sleep(0.2)
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        if scope["path"] == "/silent":
            return
        if scope["path"] == "/big":  # more than the transport buffers: flow control
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for i in range(256):
                await send({"type": "http.response.body", "body": bytes([65 + i % 26]) * 65536,
                            "more_body": True})
            await send({"type": "http.response.body", "body": b"end"})
            return
        if scope["path"] == "/accepted":
            await send({"type": "http.response.start", "status": 202,
                        "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            waiting = asyncio.ensure_future(receive())
            while not waiting.done():
                await send({"type": "http.response.body", "body": b": ping\r\n\r\n",
                            "more_body": True})
                await asyncio.wait([waiting], timeout=0.02)
            if waiting.result()["type"] == "http.disconnect":
                self.hung_up.set()
            return
        answer = json.dumps({"method": scope["method"], "path": scope["path"],
                             "query": scope["query_string"].decode(), "body": body.decode(),
                             "client": scope["client"], "scheme": scope["scheme"],
                             "headers": {k.decode(): v.decode() for k, v in scope["headers"]}
                             }).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})


@asynccontextmanager
async def serving(app: Any, trusted: tuple[str, ...] = (), **limits: Any
                  ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A listener in front of ``app`` (4 KB bodies unless ``limits`` say otherwise) and one
    client connection to it."""
    listener = Listener(app, limits=Limits(**{"max_body_bytes": 4096, **limits}),
                        trusted_proxies=trusted)
    server = await listener.start("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        await listener.close()


def request(path: str = "/echo", body: bytes = b"", method: str = "POST",
            **headers: str) -> bytes:
    """One request's bytes (``Host: example`` and its ``Content-Length`` unless overridden;
    an empty value drops a header)."""
    head = {"host": "example", "content-length": str(len(body)), **{
        k.replace("_", "-"): v for k, v in headers.items()}}
    if method in ("GET", "HEAD") and not body:
        head.pop("content-length")
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items() if v)
    return f"{method} {path} HTTP/1.1\r\n{lines}\r\n".encode() + body


async def response(reader: asyncio.StreamReader, *, head_only: bool = False
                   ) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers, body (by Content-Length, chunked, or to EOF)."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = raw.decode("latin-1").split("\r\n")
    pairs = [line.lower().split(": ", 1) for line in lines if line]
    headers = dict(pairs)
    assert len(headers) == len(pairs), f"a repeated header: {pairs}"
    status = int(status_line.split()[1])
    if head_only:
        return status, headers, b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readexactly(2)
    else:
        body = await reader.read()
    return status, headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closes the connection (read to EOF, within 10 s)."""
    return await asyncio.wait_for(reader.read(), 10) == b""
