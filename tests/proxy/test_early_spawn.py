"""The stdio upstream started before the proxy's imports: started exactly as the transport
would start it, adopted once, killed when nobody adopts it, never adopted by a restart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from mcp import Client
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError
from typer.testing import CliRunner

from agentguard.proxy import early_spawn
from agentguard.proxy.config import ProxyConfig
from agentguard.proxy.early_spawn import Launch, claim, discard, plan, spawn, upstream_env
from agentguard.proxy.upstream import Upstream
from tests.proxy.conftest import PYTHON, ROOT, WEATHER_SERVER, ProxyUnderTest

SLEEPER = ("-c", "import sys; sys.stdin.read()")


def _normal_path(args: list[str], monkeypatch: pytest.MonkeyPatch) -> list[Launch]:
    """What the proxy's transports would start for ``agentguard proxy ARGS``: the command
    line parsed by the real CLI, each stdio server's transport built by its Upstream."""
    from agentguard.cli import app

    configs: list[ProxyConfig] = []

    async def serve(config: ProxyConfig, **_: Any) -> None:
        configs.append(config)

    monkeypatch.setattr("agentguard.proxy.runner.run_proxy", serve)
    result = CliRunner().invoke(app, ["proxy", *args])
    assert result.exit_code == 0, result.output
    launches = []
    for server in configs[0].servers:
        if server.command is not None:
            upstream = Upstream(server, events=None)  # type: ignore[arg-type]
            launches.append(upstream._transport().launch)  # type: ignore[attr-defined]
    return launches


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment with what the upstream inherits, what it must not, and a function."""
    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin")
    monkeypatch.setenv("SHELL", "() { :; }")  # a shell function: never inherited
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("LOGNAME", raising=False)
    monkeypatch.setenv("AGENTGUARD_STORE", "sqlite:////tmp/not-for-the-upstream.db")
    monkeypatch.setenv("SECRET_TOKEN", "the proxy's, not the upstream's")


@pytest.mark.usefixtures("environment")
def test_a_command_line_upstream_starts_exactly_as_its_transport_would(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["--policy", "p.yaml", "--name", "up", "--env", "A=1", "--env=B=x=y",
            "--log-level=DEBUG", "--no-fast-path", "--", "python", "server.py", "--flag", "-v"]
    early = plan(args)
    assert early == _normal_path(args, monkeypatch)
    assert early[0].env["A"] == "1" and early[0].env["B"] == "x=y"
    assert "SECRET_TOKEN" not in early[0].env and "SHELL" not in early[0].env
    assert early[0].cwd == str(tmp_path)


@pytest.mark.usefixtures("environment")
def test_config_file_upstreams_start_exactly_as_their_transports_would(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "conf"
    (folder / "sub").mkdir(parents=True)
    path = folder / "proxy.yaml"
    path.write_text(yaml.safe_dump({"policy": "policy.yaml", "servers": {
        "git": {"command": "mcp-server-git", "args": ["--repository", "../.."]},
        "tool": {"command": "./bin/tool", "cwd": "sub", "env": {"K": "${config_dir}/k"}},
        "wiki": {"url": "http://127.0.0.1:9/mcp"},
    }}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for args in (["--config", str(path)],
                 ["--config", str(path), "--principal", "agent:ci", "--", "node", "x.js"]):
        early = plan(args)
        assert early == _normal_path(args, monkeypatch)
    assert [launch.cwd for launch in early] == [str(folder), str(folder / "sub"),
                                                str(elsewhere)]
    assert early[1].argv[0] == str(folder / "sub" / "bin" / "tool")
    assert early[1].env["K"] == f"{folder}/k"


def test_the_inherited_environment_is_the_sdks() -> None:
    from mcp.client.stdio import get_default_environment

    assert upstream_env({}) == get_default_environment() | {"PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("args", [
    [],
    ["--help"],
    ["python", "server.py"],                                  # no `--`: left to the CLI
    ["--policy", "p.yaml", "--bogus", "--", "python", "s.py"],  # an option it does not know
    ["--upstream-url", "http://127.0.0.1:9/mcp", "--", "python", "s.py"],
    ["--env", "NOEQUALS", "--", "python", "s.py"],
    ["--config", "/nonexistent/proxy.yaml", "--", "python", "s.py"],
    ["--policy"],
])
def test_what_it_does_not_plainly_understand_starts_nothing(args: list[str]) -> None:
    assert plan(args) == []


def test_a_process_is_adopted_only_on_an_exact_match_and_once(tmp_path: Path) -> None:
    launch = Launch((PYTHON, *SLEEPER), upstream_env({"A": "1"}), str(tmp_path))
    started = spawn(launch)
    assert started is not None
    try:
        assert claim(launch._replace(env=upstream_env({"A": "2"}))) is None
        assert claim(launch._replace(cwd=str(ROOT))) is None
        assert claim(launch._replace(argv=(PYTHON, "-c", "pass"))) is None
        assert claim(launch) is started
        assert claim(launch) is None  # a restart spawns its own
    finally:
        os.close(started.to_child)
        os.close(started.from_child)
        started.process.kill()
        started.process.wait()
    assert discard() == 0


def test_an_early_process_nobody_adopts_is_killed(tmp_path: Path) -> None:
    started = spawn(Launch((PYTHON, *SLEEPER), upstream_env({}), str(tmp_path)))
    assert started is not None
    assert discard() == 1
    assert started.process.poll() is not None
    for fd in (started.to_child, started.from_child):
        with pytest.raises(OSError):
            os.fstat(fd)
    assert early_spawn.claim(started.launch) is None


def _alive_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if token.encode() in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.timeout(60)
def test_a_proxy_that_fails_to_start_kills_its_early_upstream(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    os.mkfifo(policy)  # the proxy blocks reading it until the upstream is known to run
    marker = tmp_path / "started"
    token = f"early-spawn-token-{os.getpid()}"
    child = (f"import pathlib, sys, time; pathlib.Path({str(marker)!r}).touch(); "
             f"time.sleep(120)  # {token}")
    proxy = subprocess.Popen(
        [PYTHON, "-m", "agentguard.proxy", "--policy", str(policy), "--store",
         f"sqlite:///{tmp_path / 's.db'}", "--audit", str(tmp_path / "a.jsonl"),
         "--", PYTHON, "-c", child], cwd=ROOT, stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            if marker.exists():
                break
            assert proxy.poll() is None
            anyio.run(anyio.sleep, 0.05)
        assert marker.exists()  # started before the policy was even read
        assert _alive_with(token)
        policy.write_text("version: [not a policy\n")
        _, err = proxy.communicate(timeout=30)
    finally:
        proxy.kill()
        proxy.wait()
    assert proxy.returncode != 0, err
    assert _alive_with(token) == []


@pytest.mark.anyio
@pytest.mark.timeout(90)
async def test_the_early_upstream_is_adopted_and_a_crash_respawns_normally(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    params = proxy.params(PYTHON, WEATHER_SERVER, name="weather")
    params.args[params.args.index("WARNING")] = "DEBUG"
    log = tmp_path / "proxy.log"
    with log.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="auto",
                          cache=None) as client:
            assert (await client.call_tool("echo", {"value": "a"})).content[0].text == "a"
            with pytest.raises(MCPError):
                await client.call_tool("crash", {})
            assert (await client.call_tool("echo", {"value": "b"})).content[0].text == "b"
    text = log.read_text()
    assert text.count("started early") == 1, text
    assert "restarting upstream 'weather'" in text


def test_the_entry_points_start_it_before_the_heavy_imports() -> None:
    probe = ("import sys; import agentguard.cli, agentguard.proxy.__main__; "
             "print(sorted(m for m in ('mcp', 'typer', 'pydantic', 'agentguard.guard') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.timeout(60)
def test_an_upstream_that_dies_at_once_runs_as_often_as_without_early_start(
        tmp_path: Path, proxy: ProxyUnderTest) -> None:
    """The early process is that start, not an extra one: with one restart allowed, the
    upstream runs twice, as it did when the transport spawned every time."""
    runs = tmp_path / "runs"
    child = (f"import pathlib; f = pathlib.Path({str(runs)!r}); "
             "f.write_text(f.read_text() + 'x' if f.exists() else 'x'); raise SystemExit(3)")
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump({
        "policy": str(proxy.policy), "store": proxy.store_url, "audit": str(proxy.audit),
        "servers": {"dies": {"command": PYTHON, "args": ["-c", child], "max_restarts": 1}}}))
    done = subprocess.run([PYTHON, "-m", "agentguard.proxy", "--config", str(path)],
                          cwd=ROOT, env=proxy.env(), input=b"", capture_output=True,
                          timeout=50)
    assert done.returncode != 0
    assert b"no upstream server could be started" in done.stderr, done.stderr
    assert runs.read_text() == "xx"
