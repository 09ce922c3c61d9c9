"""Fixtures for the proxy tests: a real ``agentguard proxy`` process in front of real servers.

Nothing here stands in for our own code: the proxy runs as a subprocess (``python -m
agentguard.proxy``), upstreams are the example servers in ``examples/servers`` and the
third-party ``mcp-server-git``, approvals are votes written into the same SQLite file the
proxy uses (what ``agentguard approvals approve`` does from another terminal).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import ElicitResult

from agentguard.approvals import cast_vote
from agentguard.audit import MemoryAuditLog
from agentguard.store import SQLiteStore
from agentguard.types import ApprovalRequest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
OPS_SERVER = str(ROOT / "examples" / "servers" / "ops_server.py")
WEATHER_SERVER = str(ROOT / "examples" / "servers" / "misbehaving_server.py")
GIT_SERVER = str(Path(sys.executable).parent / "mcp-server-git")
POLICY_TEMPLATE = Path(__file__).with_name("policy.yaml")
MODES = ["legacy", "auto"]
"""Downstream eras: handshake (``initialize``) and 2026-07-28 (``auto`` lands there)."""


@dataclass
class Elicitations:
    """A client-side elicitation callback that answers from a script and records questions."""

    answers: list[ElicitResult] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    default: ElicitResult = field(default_factory=lambda: ElicitResult(action="cancel"))

    async def __call__(self, ctx: Any, params: Any) -> ElicitResult:
        self.messages.append(params.message)
        return self.answers.pop(0) if self.answers else self.default


@dataclass
class ProxyUnderTest:
    """Files and command line of one proxy process under test."""

    home: Path
    policy: Path
    db: Path
    audit: Path
    sandbox: Path

    @property
    def store_url(self) -> str:
        return f"sqlite:///{self.db}"

    def env(self) -> dict[str, str]:
        return {"AGENTGUARD_HOME": str(self.home), "PATH": os.environ.get("PATH", ""),
                "HOME": str(self.home), "PYTHONUNBUFFERED": "1"}

    def args(self, *upstream: str, name: str | None = None, extra: tuple[str, ...] = ()
             ) -> list[str]:
        out = ["-m", "agentguard.proxy", "--policy", str(self.policy), "--store",
               self.store_url, "--audit", str(self.audit), "--log-level", "WARNING"]
        if name:
            out += ["--name", name]
        out += list(extra)
        if upstream:
            out += ["--", *upstream]
        return out

    def params(self, *upstream: str, name: str | None = None,
               extra: tuple[str, ...] = ()) -> StdioServerParameters:
        return StdioServerParameters(command=PYTHON, args=self.args(*upstream, name=name,
                                                                    extra=extra),
                                     env=self.env(), cwd=str(ROOT))

    def ops(self, extra: tuple[str, ...] = ()) -> StdioServerParameters:
        """The proxy in front of the example ops server (server name ``ops``)."""
        return self.params(PYTHON, OPS_SERVER, "--root", str(self.sandbox), name="ops",
                           extra=extra)

    def weather(self, extra: tuple[str, ...] = ()) -> StdioServerParameters:
        """The proxy in front of the misbehaving server (server name ``weather``)."""
        return self.params(PYTHON, WEATHER_SERVER, name="weather", extra=extra)

    @asynccontextmanager
    async def client(self, params: StdioServerParameters | str, mode: str, **kw: Any
                     ) -> AsyncIterator[Client]:
        async with Client(params, mode=mode, cache=None, **kw) as client:
            yield client

    async def decide(self, approve: bool, *, approver: str = "alice", timeout: float = 30.0,
                     reason: str = "") -> ApprovalRequest:
        """Wait for the proxy to hold a call, then vote on it through the shared store."""
        store = SQLiteStore(str(self.db))
        await store.open()
        try:
            with anyio.fail_after(timeout):
                while True:
                    pending = await store.list_requests(status="pending")
                    if pending:
                        break
                    await anyio.sleep(0.05)
            request = pending[0]
            _, problem = await cast_vote(store=store, audit=MemoryAuditLog(),
                                         request_id=request.id, approver=approver,
                                         approve=approve, channel="cli", reason=reason)
            assert problem is None, problem
            return request
        finally:
            await store.close()

    def audit_events(self, type_: str | None = None) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        events = [json.loads(line) for line in self.audit.read_text().splitlines() if line]
        return [e for e in events if type_ is None or e.get("type") == type_]


def make_proxy(tmp_path: Path, timeout: str = "30s") -> ProxyUnderTest:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir(exist_ok=True)
    policy = tmp_path / f"policy-{timeout}.yaml"
    policy.write_text(POLICY_TEMPLATE.read_text().replace("TIMEOUT", timeout))
    return ProxyUnderTest(home=home, policy=policy, db=home / "agentguard.db",
                          audit=home / "audit.jsonl", sandbox=sandbox)


@pytest.fixture
def proxy(tmp_path: Path) -> ProxyUnderTest:
    """A proxy set-up (policy, store, audit, sandbox) in a fresh temporary directory."""
    return make_proxy(tmp_path)


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A temporary git repository with one commit and one staged change."""
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (repo / "README.md").write_text("hello\n")
    git("add", "README.md")
    git("commit", "-q", "-m", "first")
    (repo / "README.md").write_text("hello again\n")
    git("add", "README.md")
    return repo


def git_log(repo: Path) -> list[str]:
    out = subprocess.run(["git", "log", "--format=%s"], cwd=repo, capture_output=True,
                         text=True, check=True)
    return out.stdout.split()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_port(port: int, timeout: float = 30.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    with anyio.fail_after(timeout):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.05)
                continue
            await stream.aclose()
            return


@asynccontextmanager
async def running(argv: list[str], env: dict[str, str], port: int, *, log: Path | None = None,
                  new_session: bool = False) -> AsyncIterator[anyio.abc.Process]:
    """Run a server process until the block ends (it is yielded); wait for it to listen on
    ``port``.

    ``log`` receives its stdout and stderr (default: the test's own); ``new_session`` starts
    it without a controlling terminal.
    """
    with open(log, "wb") if log else nullcontext() as sink:
        async with await anyio.open_process(argv, env=env, cwd=str(ROOT),
                                            stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                                            start_new_session=new_session) as proc:
            try:
                await wait_port(port)
                yield proc
            finally:
                proc.terminate()
                with anyio.move_on_after(10):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
