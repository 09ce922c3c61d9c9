"""The handshake-era HTTP relay answers exactly as the SDK's stateful app it skips.

Two proxy processes run side by side, one relaying and one with ``--no-relay``; raw
handshake-era POSTs (sessions missing, unknown, deleted or never initialized, version header
mismatches, bad ``Accept``/``Content-Type``/``Host``/``Origin``, allowed calls, upstream
errors, unknown tools, held calls) get the same status, content type and JSON-RPC message
from both. The relaying proxy's debug log shows exactly which calls it relayed.

The session book (:mod:`agentguard.proxy.sessions`) is also tested on its own, with the ASGI
messages the SDK's app sends.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from agentguard.proxy.sessions import SessionBook
from tests.proxy.conftest import OPS_SERVER, PYTHON, ProxyUnderTest, free_port, running

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

HANDSHAKE = "2025-11-25"
RELAYED = "is relayed on HTTP (handshake-era session)"
DIRECT = "takes the listener's direct route (handshake-era session)"


def proxy_argv(proxy: ProxyUnderTest, *extra: str, fast: bool) -> list[str]:
    argv = [PYTHON, "-m", "agentguard.proxy", "--policy", str(proxy.policy), "--store",
            proxy.store_url, "--audit", str(proxy.audit), "--name", "ops",
            "--log-level", "DEBUG" if fast else "WARNING"]
    return [*argv, *(() if fast else ("--no-relay",)), *extra]


def legacy_call(rid: Any = 1, name: str = "get_status", arguments: Any = None,
                **params: Any) -> bytes:
    body = {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {
        "name": name, "arguments": {"service": "api"} if arguments is None else arguments,
        **params}}
    return json.dumps(body).encode()


# (label, header overrides — None removes one, a <name> session id is replaced —, body,
#  whether the relay answers it)
HANDSHAKE_CASES: list[tuple[str, dict[str, str | None], bytes, bool]] = [
    ("allowed", {}, legacy_call(), True),
    ("string id", {}, legacy_call(rid="abc"), True),
    ("no version header", {"mcp-protocol-version": None}, legacy_call(), True),
    ("charset content type", {"content-type": "application/json; charset=utf-8"},
     legacy_call(), True),
    ("upstream error", {}, legacy_call(arguments={"service": "nope"}), True),
    ("wrong argument type", {}, legacy_call(arguments={"service": 7}), True),
    ("arguments not an object", {}, legacy_call(arguments=[1, 2]), False),
    ("unknown tool", {}, legacy_call(name="no_such_tool"), False),
    ("extra parameter", {}, legacy_call(task={"ttl": 1000}), False),
    ("progress token", {}, legacy_call(_meta={"progressToken": "p1"}), False),
    ("2026 envelope in a session", {},
     legacy_call(_meta={"io.modelcontextprotocol/protocolVersion": "2026-07-28"}), False),
    ("held call", {}, legacy_call(name="read_secret", arguments={"path": "prod/db"}), False),
    ("no session", {"mcp-session-id": None}, legacy_call(), False),
    ("unknown session", {"mcp-session-id": "0" * 32}, legacy_call(), False),
    ("deleted session", {"mcp-session-id": "<deleted>"}, legacy_call(), False),
    ("before initialized", {"mcp-session-id": "<uninitialized>"}, legacy_call(), False),
    ("version header mismatch", {"mcp-protocol-version": "2025-06-18"}, legacy_call(), False),
    ("2026 version header", {"mcp-protocol-version": "2026-07-28"}, legacy_call(), False),
    ("foreign host", {"host": "evil.example:80"}, legacy_call(), False),
    ("foreign origin", {"origin": "http://evil.example"}, legacy_call(), False),
    ("json-only accept", {"accept": "application/json"}, legacy_call(), False),
    ("sse-only accept", {"accept": "text/event-stream"}, legacy_call(), False),
    ("text content type", {"content-type": "text/plain"}, legacy_call(), False),
    ("mixed-case content type", {"content-type": "Application/JSON"}, legacy_call(), False),
    ("not JSON-RPC 2.0", {}, legacy_call().replace(b'"2.0"', b'"1.0"'), False),
]


def rpc(response: httpx2.Response) -> tuple[int, str, Any]:
    """Status, content type and the JSON-RPC messages (from JSON or the event stream)."""
    kind = response.headers.get("content-type", "").split(";")[0]
    if kind == "text/event-stream":
        data = [line[5:].strip() for line in response.text.splitlines()
                if line.startswith("data:") and line[5:].strip()]
        return response.status_code, kind, [json.loads(d) for d in data]
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return response.status_code, kind, body


async def open_session(http: httpx2.AsyncClient, url: str, *, initialized: bool = True,
                       headers: dict[str, str] | None = None) -> dict[str, str]:
    """Initialize a handshake-era session; the headers to use it with."""
    base = {"content-type": "application/json",
            "accept": "application/json, text/event-stream", **(headers or {})}
    init = await http.post(url, headers=base, content=json.dumps({
        "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": HANDSHAKE, "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}}}).encode())
    assert init.status_code == 200, init.text
    session = {**base, "mcp-session-id": init.headers["mcp-session-id"],
               "mcp-protocol-version": HANDSHAKE}
    if initialized:
        done = await http.post(url, headers=session, content=json.dumps({
            "jsonrpc": "2.0", "method": "notifications/initialized"}).encode())
        assert done.status_code == 202, done.text
    return session


async def test_the_handshake_era_answers_as_the_sdk_with_or_without_the_relay(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    fast_port, full_port = free_port(), free_port()
    upstream = ("--", PYTHON, OPS_SERVER, "--root", str(proxy.sandbox))
    log = tmp_path / "fast.log"
    fast = proxy_argv(proxy, "--listen", f"127.0.0.1:{fast_port}", *upstream, fast=True)
    full = proxy_argv(proxy, "--listen", f"127.0.0.1:{full_port}", *upstream, fast=False)
    async with running(fast, proxy.env(), fast_port, log=log), \
            running(full, proxy.env(), full_port), httpx2.AsyncClient(timeout=30) as http:
        urls = [f"http://127.0.0.1:{port}/mcp" for port in (fast_port, full_port)]
        sessions = []
        for url in urls:
            ids = {"<uninitialized>": (await open_session(http, url, initialized=False))[
                "mcp-session-id"]}
            gone = await open_session(http, url)
            deleted = await http.delete(url, headers=gone)
            assert deleted.status_code == 200, deleted.text
            ids["<deleted>"] = gone["mcp-session-id"]
            sessions.append((await open_session(http, url), ids))
        # Twice: the second pass meets the relay's memory of the checks it passed.
        for label, over, body, _ in HANDSHAKE_CASES + HANDSHAKE_CASES:
            got = []
            for url, (session, ids) in zip(urls, sessions, strict=True):
                headers = {k: ids.get(v, v) for k, v in {**session, **over}.items()
                           if v is not None}
                if label == "held call":
                    box: list[Any] = []

                    async def post(url: str = url, headers: dict[str, str] = headers,
                                   box: list[Any] = box, body: bytes = body) -> None:
                        box.append(await http.post(url, content=body, headers=headers))

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(post)
                        await proxy.decide(False, approver="carol")
                    got.append(rpc(box[0]))
                    continue
                got.append(rpc(await http.post(url, content=body, headers=headers)))
            assert got[0] == got[1], label
            if label == "allowed":
                assert got[0][:2] == (200, "text/event-stream")
                assert got[0][2][-1]["result"]["content"][0]["text"].startswith("api: running")
    relayed = sum(case[3] for case in HANDSHAKE_CASES)
    assert log.read_text().count(RELAYED) == 2 * relayed, log.read_text()[-3000:]
    # Without OAuth, every one of them on the listener's direct route (no ASGI, no task).
    assert log.read_text().count(DIRECT) == 2 * relayed, log.read_text()[-3000:]


async def test_a_relayed_answer_is_the_sdks_event_stream_byte_for_byte(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    """Head (status, headers in order, the session id) and body of the relayed answer."""
    fast_port, full_port = free_port(), free_port()
    upstream = ("--", PYTHON, OPS_SERVER, "--root", str(proxy.sandbox))
    log = tmp_path / "fast.log"
    fast = proxy_argv(proxy, "--listen", f"127.0.0.1:{fast_port}", *upstream, fast=True)
    full = proxy_argv(proxy, "--listen", f"127.0.0.1:{full_port}", *upstream, fast=False)
    async with running(fast, proxy.env(), fast_port, log=log), \
            running(full, proxy.env(), full_port), httpx2.AsyncClient(timeout=30) as http:
        answers = []
        for port in (fast_port, full_port):
            url = f"http://127.0.0.1:{port}/mcp"
            session = await open_session(http, url)
            response = await http.post(url, headers=session, content=legacy_call())
            head = [(k, v) for k, v in response.headers.items() if k not in ("date",)]
            answers.append((response.status_code, head, response.content,
                            session["mcp-session-id"]))
        for _, head, _, session_id in answers:
            assert ("mcp-session-id", session_id) in head
        strip = [(s, [h for h in head if h[0] != "mcp-session-id"], c)
                 for s, head, c, _ in answers]
        assert strip[0] == strip[1]
    assert log.read_text().count(RELAYED) == 1
    assert log.read_text().count(DIRECT) == 1


# ---------------------------------------------------------------------- the book on its own


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scope(method: str = "POST", session: str | None = None, version: str | None = HANDSHAKE,
          user: Any = None) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    if session is not None:
        headers.append((b"mcp-session-id", session.encode()))
    if version is not None:
        headers.append((b"mcp-protocol-version", version.encode()))
    out: dict[str, Any] = {"type": "http", "method": method, "path": "/mcp", "headers": headers}
    if user is not None:
        out["user"] = user
    return out


async def answer(send: Any, status: int, headers: list[tuple[bytes, bytes]] | None = None,
                 body: bytes = b"") -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


async def sink(message: Any) -> None:
    return None


INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def init_answer(version: str = HANDSHAKE) -> bytes:
    result = {"jsonrpc": "2.0", "id": 0, "result": {"protocolVersion": version}}
    return b"event: message\r\ndata: " + json.dumps(result).encode() + b"\r\n\r\n"


SSE = [(b"content-type", b"text/event-stream"), (b"mcp-session-id", b"s1")]


async def booked(book: SessionBook, session: str = "s1", *, ready: bool = True) -> None:
    await answer(book.watch(scope(version=None), INIT, sink), 200,
                 [(b"content-type", b"text/event-stream"),
                  (b"mcp-session-id", session.encode())], init_answer())
    if ready:
        await answer(book.watch(scope(session=session), INITIALIZED, sink), 202)


async def test_a_session_is_relayable_once_the_sdk_created_it_and_it_was_initialized() -> None:
    book = SessionBook(1800)
    await booked(book, ready=False)
    assert book.relayable("s1", None) is None  # not initialized yet
    await answer(book.watch(scope(session="s1"), INITIALIZED, sink), 202)
    assert book.relayable("s1", None) == HANDSHAKE
    assert book.relayable("s2", None) is None


@pytest.mark.parametrize(("status", "headers", "body"), [
    (400, SSE, init_answer()),
    (200, [(b"content-type", b"text/event-stream")], init_answer()),  # no session id
    (200, SSE, init_answer("2026-07-28")),
    (200, SSE, b"event: message\r\ndata: not json\r\n\r\n"),
])
async def test_only_a_handshake_session_the_sdk_opened_is_booked(
        status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    book = SessionBook(1800)
    await answer(book.watch(scope(version=None), INIT, sink), status, headers, body)
    assert len(book) == 0


def user(subject: str) -> Any:
    from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
    from mcp.server.auth.provider import AccessToken

    return AuthenticatedUser(AccessToken(token="t", client_id="agent", scopes=[],
                                         subject=subject))


async def test_a_session_is_relayed_only_for_the_credential_that_created_it() -> None:
    book = SessionBook(1800)
    await answer(book.watch(scope(version=None, user=user("alice")), INIT, sink), 200, SSE,
                 init_answer())
    await answer(book.watch(scope(session="s1", user=user("alice")), INITIALIZED, sink), 202)
    assert book.relayable("s1", None) is None
    assert book.relayable("s1", {"client_id": "agent", "issuer": None,
                                 "subject": "mallory"}) is None
    alice = {"client_id": "agent", "issuer": None, "subject": "alice"}
    assert book.relayable("s1", alice) == HANDSHAKE
    # The SDK refuses another credential with a 404: that does not end alice's session.
    await answer(book.watch(scope(session="s1", user=user("mallory")), {"id": 2}, sink), 404)
    assert book.relayable("s1", alice) == HANDSHAKE


async def test_delete_and_404_drop_a_session() -> None:
    book = SessionBook(1800)
    await booked(book)
    await answer(book.watch(scope("GET", session="s1"), None, sink), 200)
    assert book.relayable("s1", None) == HANDSHAKE
    await booked(book, "s2")
    await answer(book.watch(scope(session="s2"), {"jsonrpc": "2.0", "id": 3}, sink), 404)
    assert book.relayable("s2", None) is None  # the SDK no longer knows it
    book.watch(scope("DELETE", session="s1", user=user("mallory")), None, sink)
    assert book.relayable("s1", None) == HANDSHAKE  # not hers to end (the SDK says 404)
    book.watch(scope("DELETE", session="s1"), None, sink)
    assert book.relayable("s1", None) is None  # dropped before the SDK even answers
    await booked(book, "s3")
    book.watch(scope(session="s3"), INIT, sink)
    assert book.relayable("s3", None) is None  # negotiating again: the SDK's business


async def test_a_session_not_seen_by_the_sdk_for_half_its_idle_timeout_is_not_relayed() -> None:
    clock = Clock()
    book = SessionBook(10, clock=clock)
    await booked(book)
    clock.now += 4.9
    assert book.relayable("s1", None) == HANDSHAKE
    clock.now += 0.2
    assert book.relayable("s1", None) is None  # the SDK's own timer may be close
    await answer(book.watch(scope(session="s1"), {"jsonrpc": "2.0", "id": 9}, sink), 200)
    assert book.relayable("s1", None) == HANDSHAKE  # the SDK served a request: fresh again


async def test_a_2026_request_naming_a_session_neither_books_nor_refreshes() -> None:
    clock = Clock()
    book = SessionBook(10, clock=clock)
    await answer(book.watch(scope(version="2026-07-28"), INIT, sink), 200, SSE,
                 init_answer())
    assert len(book) == 0
    await booked(book)
    clock.now += 6
    await answer(book.watch(scope(session="s1", version="2026-07-28"), {"id": 1}, sink), 200)
    assert book.relayable("s1", None) is None


async def test_the_book_is_bounded() -> None:
    book = SessionBook(1800, limit=2)
    for name in ("a", "b", "c"):
        await booked(book, name)
    assert len(book) == 2 and book.relayable("c", None) is None


async def test_a_cancelled_relayed_call_is_answered_and_cancelled_as_the_sdk_does(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    """``notifications/cancelled`` for a call in flight: the SDK cancels the handler and ends
    the call's stream with ``Request cancelled``; the relay does the same."""
    fast_port, full_port = free_port(), free_port()
    upstream = ("--", PYTHON, OPS_SERVER, "--root", str(proxy.sandbox))
    log = tmp_path / "fast.log"
    fast = proxy_argv(proxy, "--listen", f"127.0.0.1:{fast_port}", *upstream, fast=True)
    full = proxy_argv(proxy, "--listen", f"127.0.0.1:{full_port}", *upstream, fast=False)
    slow = legacy_call(rid=7, name="count_to", arguments={"n": 600})
    cancel = json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled",
                         "params": {"requestId": 7, "reason": "enough"}}).encode()
    outcomes = []
    async with running(fast, proxy.env(), fast_port, log=log), \
            running(full, proxy.env(), full_port), httpx2.AsyncClient(timeout=60) as http:
        for port in (fast_port, full_port):
            url = f"http://127.0.0.1:{port}/mcp"
            session = await open_session(http, url)
            box: list[Any] = []

            async def call(url: str = url, session: dict[str, str] = session,
                           box: list[Any] = box) -> None:
                box.append(rpc(await http.post(url, headers=session, content=slow)))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await anyio.sleep(1.5)  # the call is in flight (it counts for 30 s)
                done = await http.post(url, headers=session, content=cancel)
                assert done.status_code == 202
            outcomes.append(box[0])
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][2][-1]["error"]["code"] == -32800, outcomes
    assert log.read_text().count(RELAYED) == 1
    assert log.read_text().count(DIRECT) == 1


async def test_a_cancelled_relayed_call_is_abandoned_upstream(proxy: ProxyUnderTest) -> None:
    from tests.proxy.test_http_relay import in_process_proxy

    async with in_process_proxy(proxy, 30.0) as (url, core), \
            httpx2.AsyncClient(timeout=60) as http:
        lane = core.upstreams["ops"].lane
        session = await open_session(http, url)
        box: list[Any] = []

        async def call() -> None:
            box.append(rpc(await http.post(url, headers=session, content=legacy_call(
                rid="c1", name="count_to", arguments={"n": 600}))))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            with anyio.fail_after(10):
                while not lane.pending():  # in flight upstream
                    await anyio.sleep(0.02)
            await http.post(url, headers=session, content=json.dumps({
                "jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": "c1"}}).encode())
        assert box[0][2][-1] == {"jsonrpc": "2.0", "id": "c1", "error": {
            "code": -32800, "message": "Request cancelled"}}
        assert not lane.pending()


# ---------------------------------------------------------------------- the direct route


class _Conn:
    """What an ASGI cycle needs of a connection: the bytes it writes."""

    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    def drain(self) -> None:
        return None


@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize("pings", [0, 1, 3])
async def test_the_direct_routes_session_answer_is_the_asgi_routes_byte_for_byte(
        keep_alive: bool, pings: int) -> None:
    """A session's answer written straight to the connection (the listener's direct route)
    against the same answer through the ASGI route (``with_sse_head`` over ``AsgiAnswer`` or
    the relay's own frames, through the listener's ASGI bridge): the same bytes."""
    from agentguard.proxy.asgi_bridge import AsgiCycle
    from agentguard.proxy.http_frames import AsgiAnswer, TransportAnswer, stream_head
    from agentguard.proxy.http_relay import HttpRelay, Plan
    from agentguard.proxy.sessions import sse_head, with_sse_head

    session = "9f" * 16
    body = {"jsonrpc": "2.0", "id": 5, "result": {"content": [], "isError": False}}
    direct = bytearray()
    answer = TransportAnswer(direct.extend, keep_alive=keep_alive,
                             stream_head=stream_head(sse_head(session)))
    for _ in range(pings):
        answer.ping()
    answer.finish(200, body)

    conn = _Conn()
    cycle = AsgiCycle(conn, b"", http10=False, head=False, keep_alive=keep_alive,
                      gone=asyncio.get_running_loop().create_future())  # client stays
    send = with_sse_head(cycle.send, session)
    if pings:
        stream = AsgiAnswer(send)
        for _ in range(pings):
            await stream.ping()
        await stream.finish(200, body)
    else:  # HttpRelay.offer's answer within the window
        plan = Plan(route=None, version=HANDSHAKE,  # type: ignore[arg-type]
                    upstream_modern=True, session=session)
        status, head, data = HttpRelay.framed(plan, 200, body)
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    assert bytes(direct) == bytes(conn.out)
    assert f"mcp-session-id: {session}\r\n".encode() in direct


async def test_a_slow_session_call_on_the_direct_route_pings_and_is_abandoned_on_hang_up(
        proxy: ProxyUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    """The direct route streams a slow session call with pings under the session's head, and
    a client that hangs up has the upstream call abandoned (as the ASGI route does)."""
    import logging

    from tests.proxy.test_http_relay import in_process_proxy

    caplog.set_level(logging.DEBUG, logger="agentguard.proxy.http_direct")
    async with in_process_proxy(proxy, 0.2) as (url, core), \
            httpx2.AsyncClient(timeout=30) as http:
        lane = core.upstreams["ops"].lane
        session = await open_session(http, url)
        slow = await http.post(url, headers=session, content=legacy_call(
            rid=2, name="count_to", arguments={"n": 12}))
        assert slow.headers["content-type"] == "text/event-stream"
        assert slow.headers["mcp-session-id"] == session["mcp-session-id"]
        assert slow.text.count(": ping\r\n\r\n") >= 2, slow.text
        assert rpc(slow)[2][-1]["result"]["content"][0]["text"] == "counted to 12"
        async with http.stream("POST", url, headers=session, content=legacy_call(
                rid=3, name="count_to", arguments={"n": 400})) as resp:
            async for chunk in resp.aiter_bytes():
                assert b": ping" in chunk
                assert lane.pending()  # the relayed call is in flight
                break
        with anyio.fail_after(10):
            while lane.pending():
                await anyio.sleep(0.05)
        # The hung-up call's id is free again in the session: a new call under it is relayed
        # and answered (and a stale cancel for it would find nothing).
        again = rpc(await http.post(url, headers=session, content=legacy_call(rid=3)))
        assert again[2][-1]["result"]["content"][0]["text"].startswith("api: running")
    assert caplog.text.count(DIRECT) == 3, caplog.text
