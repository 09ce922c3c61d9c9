"""Upstreams that crash or hang: reported, restarted or cleanly refused; cancellation reaches
the upstream."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
import yaml
from mcp import StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR

from tests.proxy.conftest import MODES, PYTHON, ROOT, WEATHER_SERVER, ProxyUnderTest

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


def _config(proxy: ProxyUnderTest, tmp_path: Path, **server: object) -> StdioServerParameters:
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump({
        "policy": str(proxy.policy), "store": proxy.store_url, "audit": str(proxy.audit),
        "servers": {"weather": {"command": PYTHON, "args": [WEATHER_SERVER], **server}},
    }))
    return StdioServerParameters(command=PYTHON, args=[
        "-m", "agentguard.proxy", "--config", str(path), "--log-level", "WARNING"],
        env=proxy.env(), cwd=str(ROOT))


@pytest.mark.parametrize("mode", MODES)
async def test_a_crashed_upstream_is_reported_and_restarted(proxy: ProxyUnderTest,
                                                            mode: str) -> None:
    async with proxy.client(proxy.weather(), mode) as client:
        assert (await client.call_tool("echo", {"value": "before"})).content[0].text == "before"
        with pytest.raises(MCPError) as err:
            await client.call_tool("crash", {})
        assert err.value.error.code == INTERNAL_ERROR
        assert "closed the connection" in err.value.error.message
        assert "may or may not have taken effect" in err.value.error.message
        result = await client.call_tool("echo", {"value": "after"})
        assert result.content[0].text == "after"


async def test_an_upstream_out_of_restarts_is_cleanly_refused(proxy: ProxyUnderTest,
                                                              tmp_path: Path) -> None:
    async with proxy.client(_config(proxy, tmp_path, max_restarts=0), "auto") as client:
        with pytest.raises(MCPError):
            await client.call_tool("crash", {})
        with pytest.raises(MCPError) as err:
            await client.call_tool("echo", {"value": "x"})
        assert "unavailable" in err.value.error.message
        assert "weather" in err.value.error.message
        tools = await client.list_tools()  # the proxy itself is still serving
        assert "echo" in {t.name for t in tools.tools}


@pytest.mark.parametrize("mode", MODES)
async def test_cancellation_reaches_the_upstream(proxy: ProxyUnderTest, tmp_path: Path,
                                                 mode: str) -> None:
    log = tmp_path / "cancelled.log"
    params = proxy.params(PYTHON, WEATHER_SERVER, "--cancel-log", str(log), name="weather")
    async with proxy.client(params, mode) as client:
        with anyio.move_on_after(1.0) as scope:
            await client.call_tool("hang", {"seconds": 60})
        assert scope.cancelled_caught
        with anyio.fail_after(20):
            while not (log.exists() and "hang cancelled" in log.read_text()):
                await anyio.sleep(0.05)
        assert (await client.call_tool("echo", {"value": "still here"})).content[0].text \
            == "still here"


async def test_a_request_timeout_towards_the_upstream_is_an_error_not_a_hang(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    async with proxy.client(_config(proxy, tmp_path, request_timeout=0.5), "legacy") as client:
        with pytest.raises(MCPError) as err:
            await client.call_tool("hang", {"seconds": 30})
        assert "imed out" in err.value.error.message or err.value.error.code == -32001
        assert (await client.call_tool("echo", {"value": "ok"})).content[0].text == "ok"
