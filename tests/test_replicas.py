"""Several agentguard replicas on one PostgreSQL schema, each in its own OS process.

The replicas are ``tests/replica_child.py`` run in fresh interpreters: a Guard holding a call on
one, the decision arriving through ``cast_vote`` on another; claims raced by processes; a
thousand waiting calls released at once; a replica killed with SIGKILL while its call waits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentguard.audit.postgres import verify_postgres_log
from agentguard.errors import ConflictError
from agentguard.store.postgres import PostgresStore
from agentguard.testing.store_samples import sample_grant, sample_request, vote
from agentguard.types import ApprovalRequest
from tests.pg_support import fresh_schema, reachable_dsn

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

CHILD = Path(__file__).with_name("replica_child.py")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def pg() -> str:
    return reachable_dsn()


@pytest.fixture
def schema(pg: str) -> Iterator[str]:
    with fresh_schema(pg) as name:
        yield name


def start(*args: str) -> subprocess.Popen[str]:
    """Start a replica in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(CHILD), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


async def finish(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = await anyio.to_thread.run_sync(lambda: process.communicate(timeout=90))
    assert process.returncode == 0, err
    return json.loads(out)


async def pending_request(
    store: PostgresStore, replica: subprocess.Popen[str],
    wanted: Callable[[ApprovalRequest], bool] = lambda r: True,
) -> ApprovalRequest:
    """The request a replica's call is waiting on, once it is in the store."""
    with anyio.fail_after(30):
        while True:
            found = [r for r in await store.list_requests("pending") if wanted(r)]
            if found:
                assert len(found) == 1
                return found[0]
            if replica.poll() is not None:
                pytest.fail(f"replica exited early: {replica.communicate()}")
            await anyio.sleep(0.02)


def audit_types(pg: str, schema: str) -> list[str]:
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg) as conn:
        rows = conn.execute(sql.SQL("SELECT line FROM {} ORDER BY seq").format(
            sql.Identifier(schema, "audit_log"))).fetchall()
    return [json.loads(line)["type"] for (line,) in rows]


async def test_a_call_waiting_on_one_replica_is_released_by_a_vote_on_another(
    pg: str, schema: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    waiter = start("wait", pg, schema, "60", str(marker))
    async with PostgresStore(pg, schema=schema) as store:
        request = await pending_request(store, waiter)
        assert request.call["tool"] == "deploy" and not marker.exists()
        voted = await finish(start("vote", pg, schema, request.id, "alice", "approve"))
        assert voted == {"problem": None, "status": "approved"}
        result = await finish(waiter)
        assert result["outcome"] == "approved" and result["request_id"] == request.id
        assert result["approvers"] == ["alice"]
        assert marker.read_text().split() == [str(result["pid"]), request.id]
        final = await store.get_request(request.id)
        assert final is not None and final.status == "consumed"
    # both replicas wrote to one audit chain, and it is intact
    assert verify_postgres_log(pg, schema=schema).ok
    types = audit_types(pg, schema)
    assert types.index("challenge.created") < types.index("call.executed")


async def test_a_deny_on_another_replica_refuses_and_an_outsider_cannot_decide(
    pg: str, schema: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    waiter = start("wait", pg, schema, "60", str(marker))
    async with PostgresStore(pg, schema=schema) as store:
        request = await pending_request(store, waiter)
        outsider = await finish(start("vote", pg, schema, request.id, "mallory", "approve"))
        assert "not an approver" in outsider["problem"] and outsider["status"] == "pending"
        denied = await finish(start("vote", pg, schema, request.id, "bob", "deny"))
        assert denied == {"problem": None, "status": "denied"}
        result = await finish(waiter)
    assert result["outcome"] == "denied" and not marker.exists()
    assert "vote.rejected" in audit_types(pg, schema)
    assert verify_postgres_log(pg, schema=schema).ok


async def test_claims_raced_by_replica_processes_have_exactly_one_winner(
    pg: str, schema: str, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    async with PostgresStore(pg, schema=schema) as store:
        requests = [sample_request(time.time) for _ in range(30)]
        for request in requests:
            await store.create_request(request)
        hashes = [f"hash-{i}" for i in range(30)]
        for digest in hashes:
            await store.add_grant(sample_grant(time.time, scope="once", call_hash=digest))
        subjects = [f"totp:user{i}" for i in range(30)]
        # Approved beforehand: the consume round races on these whoever wins the votes.
        approved = [sample_request(time.time) for _ in range(10)]
        for request in approved:
            await store.create_request(request)
            await store.record_vote(request.id, vote("alice"))
        ids = [r.id for r in requests + approved]
        replicas = [start("race", pg, schema, role, str(go), ",".join(ids), ",".join(hashes),
                          ",".join(subjects)) for role in ("approve", "deny") * 2]
        # Each round starts in every replica at once, after all of them finished the last.
        for name in ("vote", "consume", "grant", "otp"):
            with anyio.fail_after(60):
                while len(list(tmp_path.glob(f"go.{name}.ready-*"))) < len(replicas):
                    for replica in replicas:
                        if replica.poll() is not None:
                            pytest.fail(f"replica exited early: {replica.communicate()}")
                    await anyio.sleep(0.005)
            (tmp_path / f"go.{name}").touch()
        results = [await finish(replica) for replica in replicas]

        for request in requests + approved:
            outcomes = [result["vote"][request.id] for result in results]
            winners = [o for o in outcomes if o != "conflict"]
            if request in approved:
                assert winners == []  # already decided before the race
            else:
                assert len(winners) == 1, outcomes
            final = await store.get_request(request.id)
            assert final is not None and len(final.votes) == 1
            claims = [result["consume"][request.id] for result in results]
            if final.votes[0].approve:
                assert claims.count(True) == 1 and final.status == "consumed"
            else:
                assert claims.count(True) == 0 and final.status == "denied"
        for digest in hashes:
            assert sum(1 for result in results if result["grant"][digest] is not None) == 1
        assert await store.list_grants() == []
        for subject in subjects:
            assert [result["otp"][subject] for result in results].count(True) == 1


async def test_a_thousand_waiting_calls_are_all_released_by_another_replica(
    pg: str, schema: str
) -> None:
    count = 1000
    # poll=3600: every waiter must be woken by its notification; polling cannot rescue one.
    async with PostgresStore(pg, schema=schema, poll=3600) as store:
        requests = [sample_request(time.time, timeout=600) for _ in range(count)]
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for request in requests:
                    tg.start_soon(store.create_request, request)
        seen: dict[str, str] = {}

        async def wait(request_id: str) -> None:
            got = await store.wait_for_change(request_id, timeout=600)
            seen[request_id] = got.status if got else "missing"

        approver = start("approve-all", pg, schema, str(count))
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for request in requests:
                    tg.start_soon(wait, request.id)
            assert await finish(approver) == {"approved": count}
    assert len(seen) == count and set(seen.values()) == {"approved"}


async def test_a_replica_killed_while_its_call_waits_never_approves_it_and_a_restart_runs_once(
    pg: str, schema: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    first = start("wait", pg, schema, "4", str(marker))
    async with PostgresStore(pg, schema=schema) as store:
        old = await pending_request(store, first)
        first.send_signal(signal.SIGKILL)
        await anyio.to_thread.run_sync(first.communicate)
        assert first.returncode == -signal.SIGKILL

        # The request stays visibly pending, with no vote: dying approves nothing. Past its
        # deadline it reads as expired, and nobody can approve or claim it any more.
        async with PostgresStore(pg, schema=schema, clock=lambda: old.created_at + 1) as before:
            got = await before.get_request(old.id)
            assert got is not None and got.status == "pending" and got.votes == ()
            assert [r.id for r in await before.list_requests("pending")] == [old.id]
        async with PostgresStore(pg, schema=schema, clock=lambda: old.expires_at) as later:
            got = await later.get_request(old.id)
            assert got is not None and got.status == "expired" and got.votes == ()
            assert [r.id for r in await later.list_requests("expired")] == [old.id]
            with pytest.raises(ConflictError):
                await later.record_vote(old.id, vote("alice"))
            assert not await later.consume(old.id, old.call_hash)

        # Restarted after that deadline (until then the identical call is refused as a
        # duplicate of the stale request), the replica makes the same call: a new request.
        await anyio.sleep(max(0.0, old.expires_at - time.time()) + 0.1)
        second = start("wait", pg, schema, "60", str(marker))
        new = await pending_request(store, second, lambda r: r.id != old.id)
        assert new.call_hash == old.call_hash
        voted = await finish(start("vote", pg, schema, new.id, "alice", "approve"))
        assert voted["status"] == "approved"
        result = await finish(second)
        assert result["outcome"] == "approved" and result["request_id"] == new.id
        # The approval was claimed once; replaying the claim after the fact gets nothing.
        assert not await store.consume(new.id, new.call_hash)
        assert not await store.consume(old.id, old.call_hash)
        got = await store.get_request(old.id)
        assert got is not None and got.status == "expired" and got.votes == ()
    assert marker.read_text().splitlines() == [f"{result['pid']} {new.id}"]
    assert verify_postgres_log(pg, schema=schema).ok
