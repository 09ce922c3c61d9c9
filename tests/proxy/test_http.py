"""The proxy over Streamable HTTP: serving it (``--listen``) and fronting it
(``--upstream-url``), with the real MCP client in both protocol eras."""

from __future__ import annotations

import anyio
import httpx2
import pytest
from mcp.types import ElicitResult

from tests.proxy.conftest import (
    MODES,
    OPS_SERVER,
    PYTHON,
    Elicitations,
    ProxyUnderTest,
    free_port,
    running,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


@pytest.mark.parametrize("mode", MODES)
async def test_serving_streamable_http(proxy: ProxyUnderTest, mode: str) -> None:
    port = free_port()
    argv = [PYTHON, *proxy.params(PYTHON, OPS_SERVER, "--root", str(proxy.sandbox), name="ops",
                                  extra=("--listen", f"127.0.0.1:{port}")).args]
    url = f"http://127.0.0.1:{port}/mcp"
    answers = Elicitations([ElicitResult(action="accept", content={"approve": True})])
    seen: list[float] = []

    async def progress(p: float, total: float | None, message: str | None) -> None:
        seen.append(p)

    async with running(argv, proxy.env(), port), \
            proxy.client(url, mode, elicitation_callback=answers) as client:
        assert client.protocol_version == ("2025-11-25" if mode == "legacy"
                                           else "2026-07-28")
        assert "get_status" in {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("count_to", {"n": 2}, progress_callback=progress)
        assert result.content[0].text == "counted to 2" and seen == [1.0, 2.0]
        result = await client.call_tool("restart_service", {"service": "api"})
        assert result.content[0].text == "restarted api (1 restarts)"
        assert len(answers.messages) == 1  # elicitation: pushed (legacy) or MRTR (2026)
        outcome: dict = {}

        async def deploy() -> None:
            outcome["r"] = await client.call_tool("deploy", {
                "env": "production", "service": "api", "version": "3"})

        async with anyio.create_task_group() as tg:
            tg.start_soon(deploy)
            request = await proxy.decide(True, approver="bob")
        assert outcome["r"].content[0].text == "deployed api 3 to production"
        assert request.call["context"]["source_ip"] == "127.0.0.1"


async def test_bad_http_bodies_get_json_rpc_errors(proxy: ProxyUnderTest) -> None:
    port = free_port()
    argv = [PYTHON, *proxy.params(PYTHON, OPS_SERVER, name="ops",
                                  extra=("--listen", f"127.0.0.1:{port}")).args]
    url = f"http://127.0.0.1:{port}/mcp"
    headers = {"content-type": "application/json",
               "accept": "application/json, text/event-stream"}
    async with running(argv, proxy.env(), port), httpx2.AsyncClient(timeout=20) as http:
        for body, code in ((b"{not json", -32700), (b"42", -32600),
                           (b"[" * 10_000 + b"]" * 10_000, -32600),
                           (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', -32600),
                           (b"\xff\xfe", -32700), (b'{"a":1,"a":2}', -32700),
                           (b'{"jsonrpc":"2.0","id":9,"method":"ping","params":[]}', -32600)):
            response = await http.post(url, content=body, headers=headers)
            assert response.status_code == 400
            assert response.json()["error"]["code"] == code, body[:40]
        async with proxy.client(url, "auto") as client:
            result = await client.call_tool("get_status", {"service": "api"})
            assert result.content[0].text.startswith("api: running")


@pytest.mark.parametrize("mode", MODES)
async def test_fronting_a_streamable_http_upstream(proxy: ProxyUnderTest, mode: str) -> None:
    port = free_port()
    upstream = [PYTHON, OPS_SERVER, "--http", str(port), "--root", str(proxy.sandbox)]
    params = proxy.params(name="ops", extra=("--upstream-url", f"http://127.0.0.1:{port}/mcp"))
    victim = proxy.sandbox / "old.log"
    victim.write_text("x")
    async with running(upstream, proxy.env(), port), proxy.client(params, mode) as client:
        result = await client.call_tool("get_status", {"service": "search"})
        assert result.content[0].text.startswith("search: degraded")
        outcome: dict = {}

        async def delete() -> None:
            outcome["r"] = await client.call_tool("delete_file", {"path": "old.log"})

        async with anyio.create_task_group() as tg:
            tg.start_soon(delete)
            await proxy.decide(False, approver="alice")
        assert outcome["r"].is_error and victim.exists()


@pytest.mark.parametrize("trusted", [False, True])
async def test_x_forwarded_for_names_the_caller_only_from_a_trusted_proxy(
        proxy: ProxyUnderTest, trusted: bool) -> None:
    """A local process claims a corporate address with X-Forwarded-For: by default the proxy
    keeps the TCP peer as the source (network signals cannot be talked round); with
    ``--trusted-proxy 127.0.0.1`` (a reverse proxy on this host) the header is believed."""
    from mcp.client.streamable_http import streamable_http_client

    port = free_port()
    extra = ("--listen", f"127.0.0.1:{port}", *(("--trusted-proxy", "127.0.0.1")
                                                  if trusted else ()))
    argv = [PYTHON, *proxy.params(PYTHON, OPS_SERVER, "--root", str(proxy.sandbox), name="ops",
                                  extra=extra).args]
    url = f"http://127.0.0.1:{port}/mcp"
    spoof = {"x-forwarded-for": "10.1.2.3"}
    async with running(argv, proxy.env(), port), \
            httpx2.AsyncClient(headers=spoof, timeout=30) as http, \
            proxy.client(streamable_http_client(url, http_client=http), "auto") as client, \
            anyio.create_task_group() as tg:
        tg.start_soon(client.call_tool, "deploy",
                      {"env": "production", "service": "api", "version": "4"})
        request = await proxy.decide(False, approver="bob")
    assert request.call["context"]["source_ip"] == ("10.1.2.3" if trusted else "127.0.0.1")


@pytest.mark.timeout(120)
async def test_calls_after_an_idle_spell_of_a_keep_alive_timeout(proxy: ProxyUnderTest) -> None:
    """httpx (the SDK's client) reuses an idle connection for 5 s, and uvicorn closes one after
    5 s: a request sent just then is lost and takes the SDK session down. The proxy keeps its
    clients' idle connections longer than that and drops its own to the upstream sooner."""
    up, port = free_port(), free_port()
    upstream = [PYTHON, OPS_SERVER, "--http", str(up), "--root", str(proxy.sandbox)]
    argv = [PYTHON, *proxy.params(name="ops", extra=(
        "--upstream-url", f"http://127.0.0.1:{up}/mcp", "--listen", f"127.0.0.1:{port}")).args]
    async with running(upstream, proxy.env(), up), running(argv, proxy.env(), port), \
            proxy.client(f"http://127.0.0.1:{port}/mcp", "auto") as client:
        for idle in (4.975, 4.99):  # just inside httpx's 5 s, where the close races a request
            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(client.call_tool, "get_status", {"service": "api"})
            await anyio.sleep(idle)
        result = await client.call_tool("get_status", {"service": "api"})
        assert result.content[0].text.startswith("api: running")
