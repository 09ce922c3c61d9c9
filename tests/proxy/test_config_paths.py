"""The proxy's configuration behaves like the rest of the CLI: store, audit and home come from
the one resolver in :mod:`agentguard.settings`; paths in a config file are the file's; the
"decide with" hint of a held call is a command that works when pasted."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import anyio
import pytest
import yaml
from mcp import StdioServerParameters

from agentguard.proxy.config import load_config
from tests.proxy.conftest import MODES, OPS_SERVER, PYTHON, ROOT, ProxyUnderTest

EXAMPLE = ROOT / "examples" / "proxy" / "proxy.yaml"
AGENTGUARD = str(Path(PYTHON).parent / "agentguard")


def test_a_config_files_servers_start_in_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "proxy.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"servers": {
        "a": {"command": "python", "args": ["../srv/a.py", "--repository", "../.."]},
        "b": {"command": "bin/server", "cwd": "../work",
              "args": ["--config", "${config_dir}/b.toml"],
              "env": {"B_HOME": "${config_dir}"}},
        "c": {"command": "${config_dir}/c", "cwd": "/srv"},
        "d": {"url": "http://127.0.0.1:9/mcp"}}}))
    a, b, c, d = load_config(path).servers
    folder = str(path.parent.resolve())
    assert (a.command, a.args, a.cwd) == ("python", ["../srv/a.py", "--repository", "../.."],
                                          folder)
    assert b.cwd == str(path.parent.resolve() / "../work")
    assert b.command == f"{b.cwd}/bin/server"
    assert b.args == ["--config", f"{folder}/b.toml"] and b.env == {"B_HOME": folder}
    assert (c.command, c.cwd) == (f"{folder}/c", "/srv")
    assert d.cwd is None


def test_store_and_audit_are_left_to_the_shared_resolver(tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump({"servers": {"a": {"command": "x"}}}))
    config = load_config(path)
    assert config.store is None and config.audit is None


def _env(proxy: ProxyUnderTest, **extra: str) -> dict[str, str]:
    return {**proxy.env(), **extra}


@pytest.mark.anyio
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", MODES)
async def test_the_shipped_example_config_works_from_any_directory(
        proxy: ProxyUnderTest, tmp_path: Path, mode: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    params = StdioServerParameters(
        command=PYTHON, args=["-m", "agentguard.proxy", "--config", str(EXAMPLE),
                              "--log-level", "WARNING"],
        env=_env(proxy), cwd=str(elsewhere))
    async with proxy.client(params, mode) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"ops__get_status", "git__git_status"} <= names
        status = await client.call_tool("git__git_status", {"repo_path": str(ROOT)})
        assert not status.is_error, status.content[0].text
        assert (await client.call_tool("ops__get_status", {"service": "api"})).content[0].text \
            .startswith("api: running")
    # The example names no store: the one in AGENTGUARD_HOME holds its pins.
    assert (proxy.home / "agentguard.db").exists()


def _held_log(log: Path) -> str:
    for line in log.read_text().splitlines():
        if "call held" in line:
            return line
    return ""


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_env_settings_reach_the_proxy_and_the_printed_hint_decides_the_call(
        proxy: ProxyUnderTest, tmp_path: Path) -> None:
    """AGENTGUARD_STORE / AGENTGUARD_AUDIT (no flags): `approvals list` with the same env finds
    the held call, and the printed command, pasted into a terminal that has none of these
    settings, approves it."""
    store = tmp_path / "shared" / "guard.db"
    store.parent.mkdir()
    audit = tmp_path / "shared" / "audit.jsonl"
    env = _env(proxy, AGENTGUARD_STORE=f"sqlite:///{store}", AGENTGUARD_AUDIT=str(audit))
    log = tmp_path / "proxy.log"
    argv = [PYTHON, "-m", "agentguard.proxy", "--policy", str(proxy.policy), "--name", "ops",
            "--log-level", "WARNING", "--", PYTHON, OPS_SERVER, "--root", str(proxy.sandbox)]
    params = StdioServerParameters(command="sh", args=["-c", f"exec {shlex.join(argv)} "
                                                             f"2>>{shlex.quote(str(log))}"],
                                   env=env, cwd=str(tmp_path))
    async with proxy.client(params, "legacy") as client:
        async with anyio.create_task_group() as tg:
            results: list = []

            async def call() -> None:
                results.append(await client.call_tool(
                    "deploy", {"env": "production", "service": "api", "version": "1.2"}))

            tg.start_soon(call)
            with anyio.fail_after(30):
                while not _held_log(log):
                    await anyio.sleep(0.05)
            listed = subprocess.run([AGENTGUARD, "approvals", "list", "--json"], env=env,
                                    capture_output=True, text=True, timeout=60)
            assert listed.returncode == 0, listed.stderr
            requests = json.loads(listed.stdout)["requests"]
            assert [r["call"]["tool"] for r in requests] == ["deploy"]
            held = _held_log(log)
            hint = re.search(r"decide with `([^`]*)`", held)
            assert hint is not None, held
            assert requests[0]["id"] in hint.group(1)
            # Another terminal: none of the proxy's settings, a home of its own.
            other = tmp_path / "approver"
            other.mkdir()
            pasted = subprocess.run(
                ["sh", "-c", hint.group(1)], capture_output=True, text=True, timeout=60,
                env={"PATH": f"{Path(PYTHON).parent}:{os.environ['PATH']}",
                     "HOME": str(other), "AGENTGUARD_APPROVER": "alice"})
            assert pasted.returncode == 0, pasted.stderr
            assert "approved as alice" in pasted.stdout
        assert not results[0].is_error, results[0].content[0].text
    assert not (proxy.home / "agentguard.db").exists()  # nothing went to a private file
    events = [json.loads(line)["type"] for line in audit.read_text().splitlines()]
    assert events == ["challenge.created", "call.executed"]  # in AGENTGUARD_AUDIT
