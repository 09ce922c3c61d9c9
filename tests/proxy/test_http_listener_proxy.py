"""The ``--listen`` listener in front of the real proxy and its relay, as attacks: a client
that hangs up on a held or relayed call, a relay that fails, a call without a bearer token
when OAuth is configured, and a flood of connections past ``--max-connections``."""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import anyio
import httpx2
import pytest

from agentguard.proxy.http_connection import ClientConnection
from agentguard.proxy.http_listener import DirectRelay, Limits, Listener
from agentguard.store import SQLiteStore
from tests.proxy.conftest import OPS_SERVER, PYTHON, ProxyUnderTest, free_port, running
from tests.proxy.raw_http import Echo, closed, request, response

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


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
    session = None  # a 2026-07-28 call
    promotes = False  # to a 2026-07-28 upstream

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

    def plan(self, scope: Any, value: Any, *, promotes: bool = False) -> _Plan:
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
