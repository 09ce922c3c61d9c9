"""A stdio proxy connects its ``auto`` upstreams in its client's era, once the client's first
message says which: a handshake-era client gets a handshake-era upstream (which the relay
carries on the wire), a 2026-07-28 client a 2026-07-28 one; an explicit mode stays."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError
from mcp.types import PARSE_ERROR

from tests.proxy.conftest import OPS_SERVER, PYTHON, ROOT, WEATHER_SERVER, ProxyUnderTest

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

MODERN_ONLY = str(Path(__file__).parent / "servers" / "modern_only.py")


def _debug(params: StdioServerParameters) -> StdioServerParameters:
    args = params.args
    args[args.index("WARNING")] = "DEBUG"
    return params


def _eras(text: str, name: str) -> list[str]:
    return re.findall(rf"upstream '{name}' connected \(([0-9-]+),", text)


@pytest.mark.parametrize(("client_mode", "extra", "era"), [
    ("legacy", (), "2025-11-25"),
    ("auto", (), "2026-07-28"),
    ("legacy", ("--upstream-mode", "2026-07-28"), "2026-07-28"),
    ("auto", ("--upstream-mode", "legacy"), "2025-11-25"),
])
async def test_the_upstream_connects_in_the_clients_era_unless_told(
        proxy: ProxyUnderTest, tmp_path: Path, client_mode: str, extra: tuple[str, ...],
        era: str) -> None:
    log = tmp_path / "proxy.log"
    with log.open("w") as errlog:
        async with Client(stdio_client(_debug(proxy.ops(extra)), errlog=errlog),
                          mode=client_mode, cache=None) as client:
            for _ in range(2):
                result = await client.call_tool("get_status", {"service": "api"})
                assert result.content[0].text.startswith("api: running")
    text = log.read_text()
    assert _eras(text, "ops") == [era], text
    assert text.count("started early") == 1, text  # the process started early all the same
    if era == "2025-11-25" or client_mode == "auto":
        # Era matched, or a 2026-07-28 client in front of a handshake-era upstream (promoted
        # into a round trip should the upstream ask): allowed calls are relayed on the wire.
        assert "relayed tools/call get_status to 'ops' on the wire" in text, text


async def test_a_restart_reconnects_in_the_era_chosen(proxy: ProxyUnderTest,
                                                      tmp_path: Path) -> None:
    log = tmp_path / "proxy.log"
    params = _debug(proxy.params(PYTHON, WEATHER_SERVER, name="weather"))
    with log.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog),
                          mode="legacy", cache=None) as client:
            assert (await client.call_tool("echo", {"value": "a"})).content[0].text == "a"
            with pytest.raises(MCPError):
                await client.call_tool("crash", {})
            assert (await client.call_tool("echo", {"value": "b"})).content[0].text == "b"
    text = log.read_text()
    assert _eras(text, "weather") == ["2025-11-25", "2025-11-25"], text


def test_garbage_before_the_first_request_is_answered_and_the_era_still_read(
        proxy: ProxyUnderTest) -> None:
    """A bad line is answered by the transport; the next real request decides the era."""
    params = _debug(proxy.ops())
    initialize = (b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":'
                  b'"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}\n')
    done = subprocess.run([PYTHON, *params.args], env=proxy.env(),
                          cwd=ROOT, input=b"not json\n" + initialize, capture_output=True,
                          timeout=60)
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 2, done
    assert f'"code":{PARSE_ERROR}' in lines[0].replace(" ", "")
    assert '"id":1' in lines[1].replace(" ", "") and "serverInfo" in lines[1]
    assert _eras(done.stderr.decode(), "ops") == ["2025-11-25"], done.stderr


async def test_an_upstream_refusing_the_handshake_era_is_connected_in_auto_mode(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    log = tmp_path / "proxy.log"
    params = _debug(proxy.params(PYTHON, MODERN_ONLY, PYTHON, OPS_SERVER, "--root",
                                 str(proxy.sandbox), name="ops"))
    with log.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="legacy",
                          cache=None) as client:
            result = await client.call_tool("get_status", {"service": "api"})
            assert result.content[0].text.startswith("api: running")
    text = log.read_text()
    assert "upstream 'ops' refused the handshake era" in text, text
    assert _eras(text, "ops") == ["2026-07-28"], text
    assert "restarting upstream" not in text, text  # a refusal is no crash
