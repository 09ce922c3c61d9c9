"""A guarded call waits in this process; a second process answers over the shared SQLite store
with the real `agentguard approvals` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from agentguard import Guard, Policy
from agentguard.audit import JsonlAuditLog, verify_log
from agentguard.channels.base import ChannelAnswer
from agentguard.store import SQLiteStore
from agentguard.types import ApprovalRequest, Principal, ToolCall

pytestmark = pytest.mark.anyio

POLICY = """
defaults: {timeout: 20s}
groups: {oncall: [alice, bob]}
classes:
  read: {require: allow}
  write: {require: allow}
  destructive: {require: approve, approvers: [group:oncall], max_grant: 1h}
  privileged: {require: deny}
rules: [{id: restart, match: {tool: restart}, class: destructive}]
"""


class TerminalOnly:
    """The approver-terminal channel: answers arrive through the store, not from here."""

    name = "terminal"
    verified = True

    async def ask(self, request: ApprovalRequest):
        await anyio.sleep_forever()
        yield ChannelAnswer(kind="closed", channel="terminal")  # pragma: no cover

    async def settled(self, request: ApprovalRequest) -> None:
        return None


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, AGENTGUARD_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "agentguard.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)


async def pending_id(store: SQLiteStore) -> str:
    with anyio.fail_after(10):
        while True:
            pending = await store.list_requests("pending")
            if pending:
                return pending[0].id
            await anyio.sleep(0.05)


async def run_held_call(tmp_path: Path, *answer: str) -> tuple[str, list[str]]:
    db = tmp_path / "state.db"
    log = tmp_path / "audit.jsonl"
    store_url = f"sqlite:///{db}"
    outputs: list[str] = []
    guard = Guard(Policy.from_yaml(POLICY), store=SQLiteStore(db), audit=JsonlAuditLog(log),
                  channels=[TerminalOnly()])
    async with guard:
        result: dict[str, str] = {}

        async def held() -> None:
            auth = await guard.authorize(ToolCall(tool="restart", args={"service": "api"},
                                                  principal=Principal("agent:ops")))
            result["outcome"] = auth.outcome

        async with anyio.create_task_group() as tg:
            tg.start_soon(held)
            watcher = SQLiteStore(db)
            await watcher.open()
            rid = await pending_id(watcher)
            await watcher.close()
            shown = await anyio.to_thread.run_sync(
                lambda: cli("approvals", "show", rid, "--store", store_url, home=tmp_path))
            outputs.append(shown.stdout)
            for args in answer:
                proc = await anyio.to_thread.run_sync(lambda a=args: cli(
                    "approvals", *a.split(), rid, "--store", store_url, "--audit", str(log),
                    home=tmp_path))
                outputs.append(proc.stdout + proc.stderr)
    assert verify_log(log).ok
    return result["outcome"], outputs


async def test_second_process_approves(tmp_path: Path) -> None:
    outcome, outputs = await run_held_call(tmp_path, "approve --as alice")
    assert outcome == "approved"
    assert "restart" in outputs[0] and "sha256:" in outputs[0]
    assert "approved as alice" in outputs[1]


async def test_second_process_denies(tmp_path: Path) -> None:
    outcome, outputs = await run_held_call(tmp_path, "deny --as bob --reason not-now")
    assert outcome == "denied"
    assert "denied as bob: request is now denied" in outputs[1]


async def test_unauthorised_terminal_user_cannot_approve(tmp_path: Path) -> None:
    outcome, outputs = await run_held_call(tmp_path, "approve --as mallory", "deny --as alice")
    assert "not an approver" in outputs[1]
    assert outcome == "denied"


async def test_grants_are_listed_and_revocable(tmp_path: Path) -> None:
    outcome, _ = await run_held_call(tmp_path, "approve --as alice --for 15m")
    assert outcome == "approved"
    store_url = f"sqlite:///{tmp_path / 'state.db'}"
    listed = cli("grants", "list", "--store", store_url, home=tmp_path)
    assert "restart" in listed.stdout and "alice" in listed.stdout
    store = SQLiteStore(tmp_path / "state.db")
    await store.open()
    [grant] = await store.list_grants()
    await store.close()
    revoked = cli("grants", "revoke", grant.id, "--store", store_url, "--audit",
                  str(tmp_path / "audit.jsonl"), home=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    again = cli("grants", "list", "--store", store_url, home=tmp_path)
    assert "no live grants" in again.stdout


def test_audit_verify_detects_tampering_through_the_cli(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    sink = JsonlAuditLog(log)
    for i in range(5):
        sink.append({"type": "call.denied", "tool": f"t{i}", "reason": "test"})
    sink.close()
    ok = cli("audit", "verify", str(log), home=tmp_path)
    assert ok.returncode == 0 and "chain intact" in ok.stdout
    tail = cli("audit", "tail", str(log), "-n", "2", home=tmp_path)
    assert "t3" in tail.stdout and "t4" in tail.stdout and "t1" not in tail.stdout
    lines = log.read_text().splitlines()
    lines[2] = lines[2].replace('"t2"', '"t9"')
    log.write_text("\n".join(lines) + "\n")
    bad = cli("audit", "verify", str(log), home=tmp_path)
    assert bad.returncode == 1 and "FAILED" in bad.stderr


def test_reauth_enroll_shows_uri_once_and_stores_secret(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'state.db'}"
    out = cli("reauth", "enroll", "alice", "--store", store_url, home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "otpauth://totp/" in out.stdout and "alice" in out.stdout


async def test_edit_records_a_deny_with_proposed_arguments(tmp_path: Path) -> None:
    import time

    from agentguard.testing.store_samples import consistent, sample_request

    store = SQLiteStore(tmp_path / "state.db")
    await store.open()
    request = consistent(sample_request(time.time))
    await store.create_request(request)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    bad = cli("approvals", "edit", request.id, "--args", "[1]", "--as", "alice", "--store", url,
              home=tmp_path)
    assert bad.returncode == 2 and "JSON object" in bad.stderr
    out = cli("approvals", "edit", request.id, "--args", '{"service": "web"}', "--as", "alice",
              "--store", url, home=tmp_path)
    assert out.returncode == 0, out.stderr
    settled = await store.get_request(request.id)
    await store.close()
    assert settled is not None and settled.status == "denied"
    assert settled.votes[-1].edited_args == {"service": "web"}


@pytest.mark.parametrize(("typed", "status"), [("a\n", "approved"), ("d not now\n", "denied"),
                                                ("s\n", "pending")])
async def test_watch_prompts_for_each_pending_request(tmp_path: Path, typed: str,
                                                      status: str) -> None:
    import time

    from agentguard.testing.store_samples import consistent, sample_request

    store = SQLiteStore(tmp_path / "state.db")
    await store.open()
    request = consistent(sample_request(time.time))
    await store.create_request(request)
    env = dict(os.environ, AGENTGUARD_HOME=str(tmp_path))
    proc = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "agentguard.cli", "approvals", "watch", "--once", "--as", "alice",
         "--store", f"sqlite:///{tmp_path / 'state.db'}", "--audit",
         str(tmp_path / "audit.jsonl")],
        input=typed, env=env, capture_output=True, text=True, timeout=60))
    assert proc.returncode == 0, proc.stderr
    assert request.id in proc.stdout and "sha256:" in proc.stdout
    settled = await store.get_request(request.id)
    await store.close()
    assert settled is not None and settled.status == status
