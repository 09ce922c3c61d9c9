"""The ``--listen`` HTTP/1.1 listener over real sockets: framing, limits, attacks.

An echo ASGI app stands behind the listener (the proxy's own routes are covered through it by
``test_http.py``, ``test_http_relay.py`` and ``test_http_listener_proxy.py``); each limit
is exercised as an attack: the request is refused, the connection closed, and the app never
sees it.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard.proxy.http_listener import Limits, Listener, forwarded_client
from tests.proxy.raw_http import Echo, closed, request, response, serving

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


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


async def test_pipelined_large_bodies_are_read_as_they_are_answered() -> None:
    """Twenty bodies near the limit pipelined behind a slow request: the connection holds
    about two bodies' worth at a time (plus what one socket read brings, 256 KiB at most),
    not the whole pipeline."""
    app, limit = Echo(), 65536
    listener = Listener(app, limits=Limits(max_body_bytes=limit))
    port = (await listener.start("127.0.0.1", 0)).sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("/slow", b"s") + b"".join(
            request(f"/n{i}", b"%02d" % i * 30000) for i in range(20)))
        held = []
        for _ in range(21):
            held.append(sum(r.size for c in listener.conns for r in c.queue))
            await response(reader)
        assert 0 < max(held) <= 2 * limit + 256 * 1024 < 20 * 60000
        assert app.seen == ["/slow", *(f"/n{i}" for i in range(20))]
        writer.close()
    finally:
        await listener.close()


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
