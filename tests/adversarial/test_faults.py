"""Faults: every broken part ends in a refusal (or a correct resumption), logged, and never a
call run twice or without approval.

Already asserted elsewhere (not repeated): a channel that raises
(tests/test_guard.py::test_failing_channel_is_unreachable_not_allowed), no channel at all
(tests/test_guard.py::test_no_channel_means_unreachable), an audit log on a full disk from the
start and a store that cannot open (tests/test_guard_failures.py), the audit writer's own
failure modes (tests/audit/test_jsonl.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from agentguard import Guard, Policy, ToolCallRefused, guarded
from agentguard.audit import JsonlAuditLog, MemoryAuditLog, read_events, verify_log
from agentguard.canonical import call_hash
from agentguard.channels.base import ChannelAnswer
from agentguard.store import SQLiteStore
from agentguard.types import ApprovalRequest, Principal, ToolCall
from tests.adversarial.helpers import POLICY, Recorder, Silent, cli, vote

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("_worker.py")


def runs(marker: Path) -> list[str]:
    """Each line is one real execution of the tool."""
    return marker.read_text().splitlines() if marker.exists() else []


# ---------------------------------------------------------------------------- channels down


class ApproveThenDrop:
    """Delivers one approval, then the connection drops (e.g. Slack goes away mid-quorum)."""

    name = "flaky"
    verified = True

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        yield vote("dave")
        raise ConnectionError("connection reset by peer")

    async def settled(self, request: ApprovalRequest) -> None:
        return None


class Unreachable:
    name = "slack"
    verified = True

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        yield ChannelAnswer(kind="unreachable", channel=self.name, reason="HTTP 503")

    async def settled(self, request: ApprovalRequest) -> None:
        return None


async def test_channel_dropping_mid_quorum_refuses_and_cancels(store) -> None:
    policy = Policy.from_yaml(POLICY.replace("max_grant: 15m}\nrules", "max_grant: 15m, "
                                             "quorum: 2}\nrules"))
    audit = MemoryAuditLog()
    async with Guard(policy, store=store, audit=audit,
                     channels=[ApproveThenDrop(), Unreachable()]) as guard:
        auth = await guard.authorize(ToolCall(tool="restart", args={"service": "all"},
                                              principal=Principal("agent:ops")))
        stored = await guard.store.get_request(auth.request_id)
    assert auth.outcome == "unreachable" and not auth.allowed
    assert stored is not None and stored.status == "cancelled"
    assert len(stored.votes) == 1  # the one approval that got through did not settle it
    [end] = [e for e in audit.events if e["type"] == "challenge.unreachable"]
    assert "connection reset" in end["detail"] and "HTTP 503" in end["detail"]


async def test_silent_channels_end_expired_never_pending(store, policy: Policy) -> None:
    audit = MemoryAuditLog()
    async with Guard(Policy.from_yaml(POLICY.replace("timeout: 3s", "timeout: 1s")),
                     store=store, audit=audit, channels=[Silent()]) as guard:
        auth = await guard.authorize(ToolCall(tool="restart", args={"service": "api"},
                                              principal=Principal("agent:ops")))
        stored = await guard.store.get_request(auth.request_id)
    assert auth.outcome == "expired" and "timed out" in auth.reason
    assert stored is not None and stored.status == "expired"
    assert [e["type"] for e in audit.events] == ["challenge.created", "challenge.expired"]


# ---------------------------------------------------------------------------- store faults


class Locker:
    """Starts processes that hold the SQLite write lock until released."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def __call__(self, db: Path) -> None:
        proc = subprocess.Popen([sys.executable, "-c", _LOCK_SCRIPT, str(db)],
                                stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()


_LOCK_SCRIPT = (
    "import sqlite3, sys, time\n"
    "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
    "c.execute('BEGIN EXCLUSIVE')\n"
    "c.execute('CREATE TABLE IF NOT EXISTS lock_holder (x)')\n"
    "print('locked', flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def locker() -> Iterator[Locker]:
    """Start a process that holds the SQLite write lock until the test ends. (A WAL database
    is never locked against readers: every open connection holds a shared lock on the file.)"""
    held = Locker()
    yield held
    held.release()


async def held_call(guard: Guard, ran: list[str], service: str = "api") -> str:
    @guarded(guard=guard)
    async def restart(service: str) -> None:
        ran.append(service)

    try:
        await restart(service)
        return "approved"
    except ToolCallRefused as exc:
        return f"{exc.kind}: {exc.reason}"


async def wait_pending(store: SQLiteStore | object) -> ApprovalRequest:
    with anyio.fail_after(10):
        while not (pending := await store.list_requests("pending")):  # type: ignore[attr-defined]
            await anyio.sleep(0.02)
    return pending[0]


async def test_store_locked_by_another_process_mid_wait_refuses(tmp_path: Path, policy: Policy,
                                                                locker: Locker) -> None:
    db = tmp_path / "state.db"
    audit = MemoryAuditLog()

    def lock_then_approve(request: ApprovalRequest) -> list[ChannelAnswer]:
        locker(db)  # another process takes the write lock while the human is deciding
        return [vote("alice")]

    ran: list[str] = []
    async with Guard(policy, store=SQLiteStore(db, busy_timeout=0.2), audit=audit,
                     channels=[Recorder(lock_then_approve)]) as guard:
        result = await held_call(guard, ran)
        request_id = audit.events[0]["request_id"]
    assert ran == []
    assert result.startswith("unreachable: failed closed") and "locked" in result
    assert audit.events[-1]["type"] == "call.denied"
    assert audit.events[-1]["outcome"] == "unreachable"
    # The approval could not be recorded: once the lock is gone the request is found
    # unanswered, never approved.
    locker.release()
    async with SQLiteStore(db, busy_timeout=0.2) as after:
        assert (await after.get_request(request_id)).status == "pending"  # type: ignore[union-attr]


async def test_store_deleted_mid_wait_refuses(tmp_path: Path, policy: Policy) -> None:
    db = tmp_path / "state.db"
    url = f"sqlite:///{db}"
    ran: list[str] = []
    result: list[str] = []
    async with Guard(policy, store=SQLiteStore(db), channels=[Silent()]) as guard:

        async def call() -> None:
            result.append(await held_call(guard, ran))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            request = await wait_pending(guard.store)
            for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                path.unlink(missing_ok=True)
            # The approver's terminal opens the path: the request is gone, nothing to approve.
            late = await anyio.to_thread.run_sync(lambda: cli(
                "approvals", "approve", request.id, "--as", "alice", "--store", url,
                home=tmp_path))
    assert late.returncode != 0 and b"no approval request" in late.stderr
    assert ran == []
    assert result[0].split(":")[0] in ("expired", "unreachable")


# ---------------------------------------------------------------------------- audit faults


def immutable(path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr to make a file read-only for root")
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem does not support chattr +i")


@pytest.mark.parametrize("fault", ["read-only", "disk-full"])
async def test_audit_failing_mid_wait_refuses_the_approved_call(tmp_path: Path, policy: Policy,
                                                                fault: str) -> None:
    log = tmp_path / "audit.jsonl"
    sink = JsonlAuditLog(log)

    def break_audit(request: ApprovalRequest) -> list[ChannelAnswer]:
        # The request is on record; now the log goes bad before the human answers.
        if fault == "read-only":
            immutable(log)
        else:
            log.rename(tmp_path / "audit.old")
            log.symlink_to("/dev/full")
        return [vote("alice")]

    ran: list[str] = []
    try:
        async with Guard(policy, audit=sink, channels=[Recorder(break_audit)]) as guard:
            outcome = await held_call(guard, ran)
    finally:
        if fault == "read-only":
            subprocess.run(["chattr", "-i", str(log)], check=False)
    assert ran == []
    assert outcome.startswith("unreachable: failed closed") and "audit log" in outcome
    if fault == "disk-full":
        log.unlink()
        (tmp_path / "audit.old").rename(log)
    assert [e["type"] for e in read_events(log)] == ["challenge.created"]
    assert verify_log(log).ok  # what was written before the fault is intact


# ---------------------------------------------------------------------------- crashes


def start_worker(mode: str, db: Path, log: Path, marker: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(WORKER), mode, str(db), str(log), str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_worker(mode: str, db: Path, log: Path, marker: Path) -> str:
    proc = start_worker(mode, db, log, marker)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out.strip()


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL


async def test_crash_while_a_call_waits_never_runs_it(tmp_path: Path) -> None:
    db, log, marker = tmp_path / "state.db", tmp_path / "audit.jsonl", tmp_path / "ran"
    waiting = start_worker("wait", db, log, marker)
    try:
        async with SQLiteStore(db) as store:
            orphan = await wait_pending(store)
    finally:
        kill(waiting)
    async with SQLiteStore(db) as store:
        assert (await store.get_request(orphan.id)).status == "pending"  # type: ignore[union-attr]
    assert runs(marker) == [] and verify_log(log).ok
    # An approver answers the orphan after the crash: nobody is left to run it.
    answered = cli("approvals", "approve", orphan.id, "--as", "alice",
                   "--store", f"sqlite:///{db}", home=tmp_path)
    assert answered.returncode == 0, answered.stderr
    assert runs(marker) == []
    # The restarted agent repeats the identical call: it runs once, on that approval, and
    # nobody is asked again (a durable hold outlives the process that raised it).
    again = run_worker("approve", db, log, marker)
    assert again == "outcome=approved asked=0"
    assert runs(marker) == ["ran api"]
    async with SQLiteStore(db) as store:
        left = await store.get_request(orphan.id)
        other = ToolCall(tool="restart", args={"service": "db"}, principal=Principal("anonymous"))
        assert not await store.consume(orphan.id, call_hash(other))
    assert left is not None and left.status == "consumed"  # used once, and only once
    assert verify_log(log).ok
    types = [e["type"] for e in read_events(log)]
    assert types.count("challenge.created") == 1 and types.count("call.executed") == 1


async def test_crash_between_approval_and_execution_never_runs_twice(tmp_path: Path) -> None:
    db, log, marker = tmp_path / "state.db", tmp_path / "audit.jsonl", tmp_path / "ran"
    stalled = start_worker("stall", db, log, marker)
    approved = Path(f"{marker}.approved")
    try:
        with anyio.fail_after(20):
            while not approved.exists():
                await anyio.sleep(0.02)
    finally:
        kill(stalled)
    orphan_id = approved.read_text()
    async with SQLiteStore(db) as store:
        orphan = await store.get_request(orphan_id)
        assert orphan is not None and orphan.status == "approved"
        # Bound to its call: nothing else can consume it.
        other = ToolCall(tool="restart", args={"service": "all"}, principal=Principal("anonymous"))
        assert not await store.consume(orphan_id, call_hash(other))
    assert runs(marker) == []
    # The restarted agent's identical call claims the approval its predecessor never used
    # and runs once: one execution in total, and a second repeat is a new request.
    fresh = run_worker("approve", db, log, marker)
    assert fresh == "outcome=approved asked=0"
    assert runs(marker) == ["ran api"]
    async with SQLiteStore(db) as store:
        left = await store.get_request(orphan_id)
    assert left is not None and left.status == "consumed"
    assert run_worker("approve", db, log, marker) == "outcome=approved asked=1"
    assert runs(marker) == ["ran api", "ran api"]
    assert verify_log(log).ok
    types = [e["type"] for e in read_events(log)]
    assert types.count("challenge.created") == 2 and types.count("call.executed") == 2
