"""The ``--listen`` HTTP/1.1 listener over real sockets: framing, limits, attacks.

An echo ASGI app stands behind the listener (the proxy's own routes are covered through it by
``test_http.py`` and ``test_http_fastpath.py``); each limit is exercised as an attack: the
request is refused, the connection closed, and the app never sees it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard.proxy.http_connection import ClientConnection
from agentguard.proxy.http_listener import Limits, Listener, forwarded_client
from agentguard.store import SQLiteStore
from tests.proxy.conftest import OPS_SERVER, PYTHON, ProxyUnderTest, free_port, running

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


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
    return await asyncio.wait_for(reader.read(), 10) == b""


async def test_pipelined_requests_are_answered_in_order() -> None:
    app = Echo()
    async with serving(app) as (reader, writer):
        writer.write(request("/slow", b"one") + request("/echo", b"two") +
                     request("/q?x=1", b"three"))
        bodies = [json.loads((await response(reader))[2]) for _ in range(3)]
        assert [(b["path"], b["body"]) for b in bodies] == \
            [("/slow", "one"), ("/echo", "two"), ("/q", "three")]
        assert bodies[2]["query"] == "x=1"


async def test_a_pipelining_flood_is_read_as_it_is_answered() -> None:
    app = Echo()
    async with serving(app, max_queued=2) as (reader, writer):
        writer.write(b"".join(request(f"/n{i}", b"%d" % i) for i in range(40)))
        paths = [json.loads((await response(reader))[2])["path"] for _ in range(40)]
        assert paths == [f"/n{i}" for i in range(40)]


async def test_a_large_streamed_answer_waits_for_a_slow_reader() -> None:
    async with serving(Echo()) as (reader, writer):
        writer.write(request("/big", method="GET") + request("/after"))
        await asyncio.sleep(0.3)  # not reading: the server's buffer fills and it pauses
        status, headers, body = await response(reader)
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        assert len(body) == 256 * 65536 + 3 and body.endswith(b"end")
        assert body[65536 * 5:65536 * 5 + 1] == b"F"
        assert json.loads((await response(reader))[2])["path"] == "/after"


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    async with serving(Echo()) as (reader, writer):
        writer.write(request(body=b"x" * 10, expect="100-continue")[:-10])
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == \
            b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"x" * 10)
        assert json.loads((await response(reader))[2])["body"] == "x" * 10


async def test_a_body_over_the_limit_is_refused_before_100_continue() -> None:
    app = Echo()
    async with serving(app) as (reader, writer):
        writer.write(request(body=b"x" * 5000, expect="100-continue")[:-5000])
        status, headers, body = await response(reader)
        assert status == 413 and headers["connection"] == "close"
        assert json.loads(body)["error"]["code"] == -32600  # the JSON-RPC error, as ASGI's
        assert await closed(reader) and app.seen == []


@pytest.mark.parametrize("attack", ["long header", "many headers", "long url"])
async def test_an_oversized_head_is_refused_431(attack: str) -> None:
    app = Echo()
    async with serving(app, max_head_bytes=2048, max_headers=20) as (reader, writer):
        if attack == "long header":
            writer.write(request(x_pad="a" * 4000))
        elif attack == "many headers":
            writer.write(request("/echo", b"", "POST", **{f"x_{i}": "1" for i in range(30)}))
        else:
            writer.write(request("/" + "a" * 4000))
        assert (await response(reader))[0] == 431
        assert await closed(reader) and app.seen == []


async def test_a_chunked_body_over_the_limit_is_refused_413() -> None:
    app = Echo()
    async with serving(app) as (reader, writer):
        head = request(content_length="", transfer_encoding="chunked")
        writer.write(head + b"".join(b"400\r\n" + b"x" * 1024 + b"\r\n" for _ in range(5)))
        assert (await response(reader))[0] == 413
        assert await closed(reader) and app.seen == []


async def test_chunked_request_bodies_with_extensions_and_trailers() -> None:
    async with serving(Echo()) as (reader, writer):
        head = request(content_length="", transfer_encoding="chunked")
        writer.write(head + b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-trailer: t\r\n\r\n")
        assert json.loads((await response(reader))[2])["body"] == "abcde"


async def test_slow_headers_are_cut_off() -> None:
    async with serving(Echo(), read_timeout=0.3) as (reader, writer):
        writer.write(b"POST /echo HTTP/1.1\r\nhost: exa")

        async def drip() -> None:  # a slow drip does not extend the allowance
            for _ in range(500):
                writer.write(b"m")
                await asyncio.sleep(0.02)

        dripping = asyncio.ensure_future(drip())
        try:
            assert (await response(reader))[0] == 408
            assert await closed(reader)
        finally:
            dripping.cancel()


async def test_a_connection_that_never_sends_a_request_is_closed() -> None:
    """Holding a connection slot by connecting and staying silent lasts ``read_timeout``."""
    async with serving(Echo(), read_timeout=0.2) as (reader, _):
        assert await closed(reader)


async def test_an_idle_connection_is_closed_after_keep_alive() -> None:
    async with serving(Echo(), keep_alive=0.2) as (reader, writer):
        writer.write(request())
        assert (await response(reader))[0] == 200
        assert await closed(reader)


SMUGGLING = {
    "CL+TE": b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n"
             b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE+CL": b"POST /echo HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n"
             b"content-length: 5\r\n\r\n0\r\n\r\n",
    "duplicate CL": b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n"
                    b"content-length: 2\r\n\r\nhi",
    "conflicting CL": b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n"
                      b"content-length: 7\r\n\r\nhi",
    "signed CL": b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: +2\r\n\r\nhi",
    "obs-fold": b"POST /echo HTTP/1.1\r\nhost: a\r\nx-a: b\r\n c\r\ncontent-length: 2\r\n\r\nhi",
    "TE gzip, chunked": b"POST /echo HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked"
                        b"\r\n\r\n0\r\n\r\n",
    "TE identity": b"POST /echo HTTP/1.1\r\nhost: a\r\ntransfer-encoding: identity\r\n\r\nhi",
    "TE on HTTP/1.0": b"POST /echo HTTP/1.0\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
                      b"0\r\n\r\n",
    "space before colon": b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length : 2\r\n\r\nhi",
    "bare LF": b"POST /echo HTTP/1.1\nhost: a\ncontent-length: 2\n\nhi",
    "NUL in header": b"POST /echo HTTP/1.1\r\nhost: a\x00b\r\ncontent-length: 2\r\n\r\nhi",
    "two Host": b"GET /echo HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
    "no Host": b"GET /echo HTTP/1.1\r\n\r\n",
    "upgrade": b"GET /echo HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n",
    "CONNECT": b"CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "HTTP/0.9": b"GET /echo\r\n\r\n",
    "unknown expectation": b"POST /echo HTTP/1.1\r\nhost: a\r\nexpect: 200-ok\r\n"
                           b"content-length: 2\r\n\r\nhi",
}


@pytest.mark.parametrize("attack", list(SMUGGLING))
async def test_smuggling_shapes_are_refused_and_the_connection_closed(attack: str) -> None:
    app = Echo()
    async with serving(app) as (reader, writer):
        writer.write(request(body=b"first") + SMUGGLING[attack] + request("/after"))
        status, _, body = await response(reader)
        assert status == 200 and json.loads(body)["body"] == "first"
        status, headers, _ = await response(reader)
        assert status in (400, 417) and headers["connection"] == "close"
        assert await closed(reader)
    assert app.seen == ["/echo"]  # neither the smuggled request nor what follows it


async def test_connection_close_and_http10_end_the_connection() -> None:
    async with serving(Echo()) as (reader, writer):
        writer.write(request(connection="close") + request("/never"))
        status, headers, _ = await response(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await closed(reader)
    async with serving(Echo()) as (reader, writer):
        writer.write(b"GET /echo HTTP/1.0\r\n\r\n")
        status, headers, _ = await response(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await closed(reader)


async def test_the_apps_own_content_length_is_written_once() -> None:
    async with serving(Echo()) as (reader, writer):
        writer.write(request("/accepted") + request("/next"))
        status, headers, body = await response(reader)
        assert (status, headers["content-length"], body) == (202, "0", b"")
        assert json.loads((await response(reader))[2])["path"] == "/next"


async def test_head_gets_the_headers_only() -> None:
    async with serving(Echo()) as (reader, writer):
        writer.write(request(method="HEAD") + request("/next", b"n"))
        status, headers, _ = await response(reader, head_only=True)
        assert status == 200 and int(headers["content-length"]) > 0
        _, _, body = await response(reader)  # directly after the head: no body was sent
        assert json.loads(body)["path"] == "/next"


async def test_a_streaming_answer_is_chunked_and_a_hang_up_reaches_the_app() -> None:
    app = Echo()
    async with serving(app) as (reader, writer):
        writer.write(request("/stream", method="GET"))
        status, headers, _ = await response(reader, head_only=True)
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        assert b": ping" in await asyncio.wait_for(reader.readuntil(b": ping"), 10)
        writer.close()
        await asyncio.wait_for(app.hung_up.wait(), 10)


@pytest.mark.parametrize("path", ["/boom", "/silent"])
async def test_an_app_that_fails_gets_a_500_and_the_connection_closed(path: str) -> None:
    async with serving(Echo()) as (reader, writer):
        writer.write(request(path))
        assert (await response(reader))[0] == 500
        assert await closed(reader)


@pytest.mark.parametrize("trusted", [(), ("127.0.0.1",), ("10.0.0.0/8",)])
async def test_x_forwarded_for_is_believed_only_from_a_trusted_peer(
        trusted: tuple[str, ...]) -> None:
    async with serving(Echo(), trusted) as (reader, writer):
        writer.write(request(x_forwarded_for="10.1.2.3", x_forwarded_proto="https"))
        seen = json.loads((await response(reader))[2])
        if trusted == ("127.0.0.1",):
            assert seen["client"] == ["10.1.2.3", 0] and seen["scheme"] == "https"
        else:
            assert seen["client"][0] == "127.0.0.1" and seen["scheme"] == "http"


def test_the_caller_is_the_rightmost_untrusted_hop() -> None:
    import ipaddress

    nets = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1")]
    peer = ("127.0.0.1", 5000)

    def client(*values: bytes) -> Any:
        return forwarded_client(peer, [(b"x-forwarded-for", v) for v in values], nets)[0]

    # The agent writes the left part; the proxies append what they saw.
    assert client(b"1.1.1.1, 8.8.8.8, 10.0.0.2") == ("8.8.8.8", 0)
    assert client(b"1.1.1.1", b"8.8.8.8") == ("8.8.8.8", 0)
    assert client(b"10.0.0.1, 10.0.0.2") == ("10.0.0.1", 0)
    assert client(b"") == peer
    assert forwarded_client(("192.0.2.1", 1), [(b"x-forwarded-for", b"10.0.0.9")],
                            nets)[0] == ("192.0.2.1", 1)


PIPELINE = (request("/a", b'{"n": 1}') + request("/b", method="GET") +
            request("/c", b"x" * 700, content_length="", transfer_encoding="chunked")
            .replace(b"\r\n\r\n" + b"x" * 700, b"\r\n\r\n2bc\r\n" + b"x" * 700 + b"\r\n0\r\n\r\n")
            + request("/d", b"", method="HEAD"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=len(PIPELINE) - 1), max_size=12))
def test_any_split_of_pipelined_requests_gives_the_same_answers(cuts: list[int]) -> None:
    asyncio.run(_split_run(sorted(set(cuts))))


async def _split_run(cuts: list[int]) -> None:
    app = Echo()
    async with serving(app) as (reader, writer):
        pieces = [PIPELINE[a:b] for a, b in zip([0, *cuts], [*cuts, len(PIPELINE)], strict=True)]
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(random.Random(len(piece)).choice([0, 0.001]))
        answers = [await response(reader) for _ in range(3)]
        head = await response(reader, head_only=True)
    assert [json.loads(a[2])["path"] for a in answers] == ["/a", "/b", "/c"]
    assert json.loads(answers[2][2])["body"] == "x" * 700
    assert head[0] == 200 and app.seen == ["/a", "/b", "/c", "/d"]


async def test_a_held_call_whose_client_hangs_up_is_cancelled(proxy: ProxyUnderTest) -> None:
    """A handshake-era session's held ``tools/call``: the client closes the connection while
    it waits; the hold ends ``cancelled`` (as over stdio), not pending and approvable."""
    port = free_port()
    argv = [PYTHON, *proxy.params(PYTHON, OPS_SERVER, "--root", str(proxy.sandbox), name="ops",
                                  extra=("--listen", f"127.0.0.1:{port}")).args]
    version = "2025-11-25"
    base = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    async with running(argv, proxy.env(), port), httpx2.AsyncClient(timeout=30) as http:
        url = f"http://127.0.0.1:{port}/mcp"
        init = await http.post(url, headers=base, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": version, "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"}}})
        session = {"mcp-session-id": init.headers["mcp-session-id"],
                   "mcp-protocol-version": version}
        done = await http.post(url, headers={**base, **session},
                               json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert done.status_code == 202
        call = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "deploy", "arguments": {"env": "production", "service": "api",
                                            "version": "9"}}}).encode()
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("/mcp", call, host=f"127.0.0.1:{port}", **{
            k.replace("-", "_"): v for k, v in {**base, **session}.items()}))
        store = SQLiteStore(str(proxy.db))
        await store.open()
        try:
            with anyio.fail_after(30):
                while not await store.list_requests(status="pending"):
                    await anyio.sleep(0.05)
                writer.close()  # the client gives up
                while not await store.list_requests(status="cancelled"):
                    await anyio.sleep(0.05)
            assert not await store.list_requests(status="pending")
        finally:
            await store.close()


class _Plan:
    def __init__(self, answer_now: bool) -> None:
        self.answer_now = answer_now
        self.abandoned: list[str] = []

    def relay(self, params: Any, on_answer: Any) -> str:
        if self.answer_now:
            on_answer({"result": {"content": []}})
        return "lane-1"

    def abandon(self, sent: str) -> None:
        self.abandoned.append(sent)


class _Fast:
    """The relay's interface, failing where ``fail`` says."""

    window = None

    def __init__(self, fail: str) -> None:
        self.fail = fail
        self.plans: list[_Plan] = []

    def plan(self, scope: Any, value: Any) -> _Plan:
        if self.fail == "plan":
            raise RuntimeError("planning failed")
        self.plans.append(_Plan(self.fail != "never answers"))
        return self.plans[-1]

    def reply(self, plan: Any, rid: Any, answer: Any) -> tuple[int, dict[str, Any]]:
        if self.fail == "reply":
            raise RuntimeError("shaping failed")
        return 200, {"jsonrpc": "2.0", "id": rid, "result": answer["result"]}


@pytest.mark.parametrize("fail", ["plan", "reply", "never answers", "nothing"])
async def test_the_direct_route_fails_closed_and_abandons_on_hang_up(fail: str) -> None:
    from agentguard.proxy.http_listener import DirectRelay

    app, fast = Echo(), _Fast(fail)
    listener = Listener(app, relay=DirectRelay(fast, app, max_depth=32),
                        limits=Limits(max_body_bytes=4096))
    port = (await listener.start("127.0.0.1", 0)).sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        call = b'{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {}}'
        writer.write(request("/mcp", call))
        if fail == "plan":  # the ASGI app serves what the relay could not plan
            assert json.loads((await response(reader))[2])["path"] == "/mcp"
        elif fail == "reply":  # nothing half-written: the connection is closed
            assert await closed(reader)
        elif fail == "never answers":
            with anyio.fail_after(10):
                while not fast.plans:
                    await asyncio.sleep(0.01)
                writer.close()  # the client gives up: the upstream call is abandoned
                while not fast.plans[0].abandoned:
                    await asyncio.sleep(0.01)
        else:
            status, _, body = await response(reader)
            assert status == 200 and json.loads(body) == {"jsonrpc": "2.0", "id": 7,
                                                          "result": {"content": []}}
        writer.close()
    finally:
        await listener.close()


async def test_connections_beyond_the_limit_are_refused_and_stop_no_open_client() -> None:
    """A flood of connections: beyond ``max_connections`` each is answered ``503`` (or just
    closed, when the reset overtakes it) and holds nothing; the client already connected
    keeps being served, and a slot freed is a slot given again."""
    app = Echo()
    listener = Listener(app, limits=Limits(max_body_bytes=4096, max_connections=4))
    port = (await listener.start("127.0.0.1", 0)).sockets[0].getsockname()[1]
    flood: list[asyncio.StreamWriter] = []
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("/before"))
        assert json.loads((await response(reader))[2])["path"] == "/before"
        answers: list[bytes] = []
        for _ in range(200):
            flood_reader, flood_writer = await asyncio.open_connection("127.0.0.1", port)
            flood.append(flood_writer)
            if len(flood) > 3:  # the three slots left are taken by the first three
                try:
                    answers.append(await asyncio.wait_for(flood_reader.read(), 10))
                except ConnectionResetError:
                    answers.append(b"")
            assert len(listener.conns) <= 4  # bounded: nothing kept for a refused one
        assert listener.refused == 197 and len(listener.conns) == 4
        await asyncio.sleep(0.05)  # the refused transports finish closing
        gc.collect()
        live = sum(isinstance(o, ClientConnection) for o in gc.get_objects())
        assert live <= 8  # the refused connections' state is gone, not piling up
        assert all(a == b"" or a.startswith(b"HTTP/1.1 503 ") for a in answers)
        assert any(b"retry-after: 1" in a for a in answers)
        for i in range(5):  # the open client is served throughout
            writer.write(request(f"/during{i}"))
            assert json.loads((await response(reader))[2])["path"] == f"/during{i}"
        flood[0].close()
        with anyio.fail_after(10):
            while len(listener.conns) == 4:
                await asyncio.sleep(0.01)
        again_reader, again_writer = await asyncio.open_connection("127.0.0.1", port)
        again_writer.write(request("/again"))
        assert json.loads((await response(again_reader))[2])["path"] == "/again"
        again_writer.close()
        writer.close()
    finally:
        for w in flood:
            w.close()
        await listener.close()
    assert app.seen == ["/before", *(f"/during{i}" for i in range(5)), "/again"]


async def test_with_oauth_no_call_is_answered_before_the_bearer_check(
        proxy: ProxyUnderTest) -> None:
    """The relay's cheapest call (allowed, pinned ``get_status``) sent to ``--listen`` with
    OAuth configured, without a token and with a forged one: ``401`` from the bearer check,
    never the relayed answer (the same request without OAuth is answered ``200``)."""
    from agentguard.proxy.config import OAuthConfig, ProxyConfig, UpstreamConfig
    from agentguard.proxy.core import ProxyCore
    from agentguard.proxy.handlers import build_server
    from agentguard.proxy.runner import build_guard, http_stack, listening

    envelope = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"}}
    call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "get_status", "arguments": {"service": "api"}, "_meta": envelope}})
    headers = {"content-type": "application/json", "mcp-protocol-version": "2026-07-28",
               "accept": "application/json, text/event-stream", "mcp-method": "tools/call",
               "mcp-name": "get_status"}
    plain = ProxyConfig(policy=str(proxy.policy), store=proxy.store_url,
                        audit=str(proxy.audit), servers=[UpstreamConfig(
                            name="ops", command=PYTHON, args=[OPS_SERVER])])
    secured = plain.model_copy(update={"oauth": OAuthConfig(
        issuer="https://idp.invalid", jwks_uri="https://idp.invalid/jwks",
        resource="https://proxy.example/mcp")})
    async with build_guard(plain) as guard, ProxyCore(plain, guard) as core:
        await core.started()
        for config, tokens in ((plain, [None]), (secured, [None, "Bearer a.b.c"])):
            server = build_server(core)
            stack = http_stack(server, core, config, "127.0.0.1")
            async with listening(server, stack, config, "127.0.0.1", 0) as bound, \
                    httpx2.AsyncClient(timeout=30) as http:
                url = f"http://127.0.0.1:{bound.sockets[0].getsockname()[1]}/mcp"
                for token in tokens:
                    sent = {**headers, "authorization": token} if token else headers
                    answer = await http.post(url, headers=sent, content=call)
                    if config is plain:
                        assert answer.status_code == 200, answer.text
                        assert answer.json()["result"]["content"][0]["text"].startswith("api")
                    else:
                        assert answer.status_code == 401, answer.text
                        assert "bearer" in answer.headers["www-authenticate"].lower()


async def test_max_connections_from_the_command_line_is_the_limit(proxy: ProxyUnderTest) -> None:
    """``agentguard proxy --listen … --max-connections 2``: a third connection is refused
    ``503`` while two clients hold theirs, and both go on being answered."""
    port = free_port()
    argv = [PYTHON, *proxy.params(PYTHON, OPS_SERVER, "--root", str(proxy.sandbox), name="ops",
                                  extra=("--listen", f"127.0.0.1:{port}",
                                         "--max-connections", "2")).args]
    probe = request("/nothing-here", method="GET", host=f"127.0.0.1:{port}")
    async with running(argv, proxy.env(), port):
        held = []
        with anyio.fail_after(30):
            while len(held) < 2:  # the start-up probe's slot may not be free yet
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(probe)
                status = (await response(reader))[0]
                if status == 503:
                    writer.close()
                    await asyncio.sleep(0.05)
                else:
                    held.append((reader, writer))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            answer = await asyncio.wait_for(reader.read(), 10)
        except ConnectionResetError:
            answer = b""
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503 ")
        writer.close()
        for reader, writer in held:
            writer.write(probe)
            assert (await response(reader))[0] not in (503, 500)
            writer.close()
