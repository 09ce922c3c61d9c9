"""The relay's HTTP/1.1 client against a real TCP server that answers from a script."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from agentguard.proxy.http1 import Http1Pool, UnsafeHeader, check_header

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

Script = Callable[[bytes], list[bytes | None]]
"""Request bytes -> what to write back (None: close the connection there)."""


@dataclass
class Server:
    port: int
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[Server]:
    server_state = Server(0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_state.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                request = head + await reader.readexactly(length)
                server_state.requests.append(request)
                for part in script(request):
                    if part is None:
                        writer.close()
                        return
                    writer.write(part)
                    await writer.drain()
                    await asyncio.sleep(0.01)  # separate TCP segments
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    server_state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield server_state


class Sink:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.data = b""
        self.error: tuple[BaseException, bool] | None = None
        self.done = asyncio.Event()

    def started(self, status: int, headers: dict[str, str]) -> None:
        self.status, self.headers = status, headers

    def body(self, chunk: bytes) -> None:
        self.data += chunk

    def finished(self) -> None:
        self.done.set()

    def failed(self, error: BaseException, sent: bool) -> None:
        self.error = (error, sent)
        self.done.set()


def _pool(port: int, spawn: Callable, **options: float) -> Http1Pool:
    return Http1Pool("127.0.0.1", port, "/mcp", {"content-type": "application/json"},
                     spawn=lambda f: spawn(f()), **options)


async def _post(pool: Http1Pool, body: bytes = b"{}") -> Sink:
    sink = Sink()
    pool.post(body, {"mcp-method": "tools/call"}, sink)
    await asyncio.wait_for(sink.done.wait(), 10)
    return sink


def _json(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % len(body)) + body


async def test_requests_reuse_one_keep_alive_connection() -> None:
    async with scripted(lambda req: [_json(b'{"n":1}')]) as server:
        tasks: set = set()
        pool = _pool(server.port, lambda c: tasks.add(asyncio.ensure_future(c)))
        for _ in range(3):
            sink = await _post(pool, b'{"x":1}')
            assert (sink.status, sink.data, sink.error) == (200, b'{"n":1}', None)
        pool.close()
    assert server.connections == 1
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"mcp-method: tools/call" in head and b"content-length: 7" in head
    assert body == b'{"x":1}'


async def test_a_connection_idle_past_its_expiry_is_closed_not_reused() -> None:
    """A server closing an idle connection must never race a request sent on it."""
    async with scripted(lambda req: [_json(b'{"n":1}')]) as server:
        tasks: set = set()
        pool = _pool(server.port, lambda c: tasks.add(asyncio.ensure_future(c)),
                     idle_expiry=0.05)
        await _post(pool)
        await asyncio.sleep(0.1)
        sink = await _post(pool)
        assert (sink.status, sink.error) == (200, None)
        pool.close()
    assert server.connections == 2


async def test_chunked_and_close_delimited_bodies() -> None:
    chunked = [b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
               b"transfer-encoding: chunked\r\n\r\n", b"5\r\nhello\r\n", b"6\r\n world\r\n",
               b"0\r\n\r\n"]
    async with scripted(lambda req: chunked) as server:
        pool = _pool(server.port, lambda c: asyncio.ensure_future(c))
        sink = await _post(pool)
        assert (sink.data, sink.headers["content-type"]) == (b"hello world", "text/event-stream")
        pool.close()
    unframed = [b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n", b'{"a":', b"1}",
                None]
    async with scripted(lambda req: unframed) as server:
        pool = _pool(server.port, lambda c: asyncio.ensure_future(c))
        sink = await _post(pool)
        assert (sink.data, sink.error) == (b'{"a":1}', None)
        sink = await _post(pool)  # that connection is gone: a new one is opened
        assert sink.data == b'{"a":1}' and server.connections == 2
        pool.close()


async def test_failures_say_whether_the_request_may_have_reached_the_server() -> None:
    async with scripted(lambda req: [b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", None]
                        ) as server:
        pool = _pool(server.port, lambda c: asyncio.ensure_future(c))
        sink = await _post(pool)
        assert sink.error is not None and sink.error[1] is True
        pool.close()
    async with scripted(lambda req: [b"NOT HTTP AT ALL\r\n\r\n"]) as server:
        pool = _pool(server.port, lambda c: asyncio.ensure_future(c))
        sink = await _post(pool)
        assert sink.error is not None and "malformed" in str(sink.error[0])
        pool.close()
    async with scripted(lambda req: []) as server:
        port = server.port
    pool = _pool(port, lambda c: asyncio.ensure_future(c))  # nobody listens there any more
    sink = await _post(pool)
    assert sink.error is not None and sink.error[1] is False
    assert "could not connect" in str(sink.error[0])


async def test_an_aborted_exchange_hears_nothing_more_and_its_connection_closes() -> None:
    def slow(req: bytes) -> list[bytes | None]:
        return [b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"]

    async with scripted(slow) as server:
        pool = _pool(server.port, lambda c: asyncio.ensure_future(c))
        sink = Sink()
        exchange = pool.post(b"{}", {}, sink)
        while sink.status == 0:
            await asyncio.sleep(0.01)
        exchange.abort()
        await asyncio.sleep(0.1)
        assert not sink.done.is_set() and exchange.connection is not None
        assert exchange.connection.closed
        pool.close()


@pytest.mark.parametrize(("name", "value"), [
    ("x-evil", "a\r\nx-injected: 1"), ("x-evil", "nul\x00"), ("bad name", "v"),
    ("x:colon", "v"), ("x-uni", "\u2028"), ("", "v"),
])
def test_headers_that_could_split_a_request_are_refused(name: str, value: str) -> None:
    with pytest.raises(UnsafeHeader):
        check_header(name, value)
    with pytest.raises(UnsafeHeader):
        Http1Pool("127.0.0.1", 1, "/", {name: value}, spawn=lambda f: None)


def test_ordinary_headers_pass() -> None:
    check_header("authorization", "Bearer abc.def-ghi_jkl")
    check_header("mcp-name", "=?base64?Zm9v?=")
    check_header("x-latin", "caf\u00e9\tau lait")
