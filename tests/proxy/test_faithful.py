"""Faithful from the first message: through the proxy a server gets the client's roots during
its own start, logging passes through both ways, capabilities are declared as the upstream
declares them, and the server's own name (serverInfo.name) is its default name."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import StdioServerParameters
from mcp.types import ListRootsResult, Root

from tests.proxy.conftest import PYTHON, ROOT, ProxyUnderTest

SERVER = str(Path(__file__).with_name("servers") / "faithful_server.py")
ROOTS = ListRootsResult(roots=[Root(uri="file:///work/project", name="project")])


async def _roots(ctx: Any) -> ListRootsResult:
    return ROOTS


class Logs:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    async def __call__(self, params: Any) -> None:
        self.seen.append((params.level, params.data))


def _target(proxy: ProxyUnderTest, via: str, *server_args: str) -> StdioServerParameters:
    if via == "direct":
        return StdioServerParameters(command=PYTHON, args=[SERVER, *server_args],
                                     env=proxy.env(), cwd=str(ROOT))
    # A handshake-era upstream: `initialized`, roots at start and logging/setLevel are that
    # era's (a 2026-07-28 upstream has none of them).
    return proxy.params(PYTHON, SERVER, *server_args, extra=("--upstream-mode", "legacy"))


@pytest.mark.anyio
@pytest.mark.timeout(120)
@pytest.mark.parametrize("via", ["direct", "proxy"])
async def test_roots_asked_during_the_servers_start_reach_the_client(
        proxy: ProxyUnderTest, via: str) -> None:
    async with proxy.client(_target(proxy, via), "legacy", list_roots_callback=_roots) as client:
        report = await client.call_tool("report", {})
        assert "roots at start: file:///work/project" in report.content[0].text, \
            report.content[0].text


@pytest.mark.anyio
@pytest.mark.timeout(120)
@pytest.mark.parametrize("via", ["direct", "proxy"])
async def test_logging_passes_through(proxy: ProxyUnderTest, via: str) -> None:
    logs = Logs()
    async with proxy.client(_target(proxy, via), "legacy", logging_callback=logs) as client:
        assert client.server_capabilities.logging is not None
        await client.set_logging_level("warning")
        result = await client.call_tool("chatty", {"text": "hello"})
        assert "chatty done at level warning" in result.content[0].text
        assert ("warning", {"said": "hello", "at": "warning"}) in logs.seen
        report = await client.call_tool("report", {})
        assert "level: warning" in report.content[0].text


@pytest.mark.anyio
@pytest.mark.timeout(120)
@pytest.mark.parametrize("via", ["direct", "proxy"])
@pytest.mark.parametrize("server_args", [(), ("--no-logging", "--list-changed")])
async def test_capabilities_are_declared_as_the_upstream_declares_them(
        proxy: ProxyUnderTest, via: str, server_args: tuple[str, ...]) -> None:
    async with proxy.client(_target(proxy, via, *server_args), "legacy") as client:
        caps = client.server_capabilities
        assert (caps.logging is not None) == ("--no-logging" not in server_args)
        assert caps.tools is not None
        assert bool(caps.tools.list_changed) == ("--list-changed" in server_args)


def _run_proxy(proxy: ProxyUnderTest, *extra: str) -> subprocess.CompletedProcess[str]:
    """Start the proxy, list the tools once through it (or see it refuse to start)."""
    argv = list(proxy.args(PYTHON, SERVER, extra=extra))
    script = "\n".join([
        "import anyio, json, sys",
        "from mcp import Client, StdioServerParameters",
        "async def main():",
        "    argv, env = json.loads(sys.argv[1]), json.loads(sys.argv[2])",
        "    params = StdioServerParameters(command=sys.executable, args=argv, env=env)",
        "    async with Client(params, mode='legacy') as c:",
        "        print(sorted(t.name for t in (await c.list_tools()).tools))",
        "anyio.run(main)"])
    return subprocess.run([PYTHON, "-c", script, json.dumps(argv), json.dumps(proxy.env())],
                          capture_output=True, text=True, timeout=90, cwd=str(ROOT))


def _pinned_servers(proxy: ProxyUnderTest) -> set[str]:
    done = subprocess.run([str(Path(PYTHON).parent / "agentguard"), "pins", "list", "--json",
                           "--store", proxy.store_url], capture_output=True, text=True,
                          env=proxy.env(), timeout=60)
    return {row["server"] for row in json.loads(done.stdout)["pins"]}


@pytest.mark.timeout(200)
def test_a_server_is_named_after_its_server_info_and_keeps_that_name(
        proxy: ProxyUnderTest) -> None:
    first = _run_proxy(proxy)
    assert "report" in first.stdout, first.stderr
    assert _pinned_servers(proxy) == {"faithful-demo"}
    # The same command now calls itself something else: it keeps its name (and its pins).
    renamed = _run_proxy(proxy, "--env", "FAITHFUL_NAME=fresh-start")
    assert "report" in renamed.stdout, renamed.stderr
    assert "keeping its name 'faithful-demo'" in renamed.stderr
    assert _pinned_servers(proxy) == {"faithful-demo"}


@pytest.mark.timeout(120)
def test_a_server_cannot_name_itself_into_trust(proxy: ProxyUnderTest) -> None:
    done = _run_proxy(proxy, "--env", "FAITHFUL_NAME=ops")  # the test policy trusts `ops`
    assert "a server cannot name itself into trust" in done.stderr
    assert "--name ops" in done.stderr
    assert _pinned_servers(proxy) == set()


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_over_streamable_http_roots_and_logging_reach_the_first_client(
        proxy: ProxyUnderTest) -> None:
    from tests.proxy.conftest import free_port, running

    port = free_port()
    argv = [PYTHON, *proxy.params(PYTHON, SERVER, extra=(
        "--upstream-mode", "legacy", "--listen", f"127.0.0.1:{port}")).args]
    logs = Logs()
    async with running(argv, proxy.env(), port), \
            proxy.client(f"http://127.0.0.1:{port}/mcp", "legacy", list_roots_callback=_roots,
                         logging_callback=logs) as client:
        report = await client.call_tool("report", {})
        assert "roots at start: file:///work/project" in report.content[0].text, \
            report.content[0].text
        await client.set_logging_level("warning")
        await client.call_tool("chatty", {"text": "over http"})
        with anyio.fail_after(10):
            while ("warning", {"said": "over http", "at": "warning"}) not in logs.seen:
                await anyio.sleep(0.05)
