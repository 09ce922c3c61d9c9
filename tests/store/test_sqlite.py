"""SQLiteStore against the store contract, plus what only a file shared by processes can show."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from agentguard.errors import ConfigError, ConflictError, StoreError
from agentguard.store import MemoryStore, SQLiteStore, open_store
from agentguard.store.sqlite import SCHEMA_VERSION
from agentguard.testing import ManualClock
from agentguard.testing.store_conformance import StoreConformance
from agentguard.testing.store_samples import race, sample_request, vote
from agentguard.types import ApprovalRequest

CHILD = Path(__file__).with_name("sqlite_child.py")
REPO = Path(__file__).resolve().parents[2]


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    async def store(self, clock: ManualClock, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
        async with SQLiteStore(tmp_path / "state.db", clock=clock) as store:
            yield store


def start_child(*args: str) -> subprocess.Popen[str]:
    """Start ``sqlite_child.py`` in a fresh interpreter: a separate OS process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )


async def finish(process: subprocess.Popen[str]) -> dict[str, str]:
    out, err = await anyio.to_thread.run_sync(lambda: process.communicate(timeout=60))
    assert process.returncode == 0, err
    return json.loads(out)


@pytest.mark.anyio
async def test_two_processes_racing_approve_and_deny_have_one_winner(tmp_path: Path) -> None:
    db, go = tmp_path / "state.db", tmp_path / "go"
    async with SQLiteStore(db) as store:
        requests = [sample_request(time.time) for _ in range(40)]
        for request in requests:
            await store.create_request(request)
        ids = ",".join(r.id for r in requests)
        approver = start_child("race", str(db), str(go), "approve", ids)
        denier = start_child("race", str(db), str(go), "deny", ids)
        # both processes have the file open before either votes
        with anyio.fail_after(30):
            while not all(Path(f"{go}.ready-{c}").exists() for c in ("approve", "deny")):
                await anyio.sleep(0.005)
        go.touch()
        approved, denied = await finish(approver), await finish(denier)
        for request in requests:
            outcomes = {approved[request.id], denied[request.id]}
            assert "conflict" in outcomes and len(outcomes) == 2, outcomes
            final = await store.get_request(request.id)
            assert final is not None and final.status in outcomes and len(final.votes) == 1


@pytest.mark.anyio
async def test_waiter_wakes_when_another_process_votes(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    async with SQLiteStore(db) as store:
        request = sample_request(time.time)
        await store.create_request(request)
        # Opening and closing another store object on the file in this process must not drop
        # this process's POSIX locks (closing any descriptor of a file does that), or the
        # other process would believe it is alone and this connection would stop seeing it.
        async with SQLiteStore(db) as other:
            assert await other.get_request(request.id) == request
        decoy = sample_request(time.time)
        await store.create_request(decoy)
        assert await finish(start_child("vote", str(db), decoy.id)) == {decoy.id: "approved"}
        seen: list[ApprovalRequest | None] = []

        async def waiter() -> None:
            seen.append(await store.wait_for_change(request.id, timeout=60))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.05)
            assert await finish(start_child("vote", str(db), request.id)) == {
                request.id: "approved"
            }
    assert seen[0] is not None and seen[0].status == "approved"
    assert seen[0].decided_by == (seen[0].votes[0].approver,)


@pytest.mark.anyio
async def test_two_store_objects_on_one_file(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    async with SQLiteStore(db) as one, SQLiteStore(db) as two:
        request = sample_request(time.time)
        await one.create_request(request)
        results = await race(
            [lambda i=i: (one, two)[i % 2].record_vote(request.id, vote(f"u{i}", i % 3 == 0))
             for i in range(16)]
        )
        assert sum(1 for r in results if not isinstance(r, ConflictError)) == 1
        # a waiter on one object is woken by a decision through the other (by polling)
        second = sample_request(time.time)
        await one.create_request(second)
        seen: list[ApprovalRequest | None] = []

        async def waiter() -> None:
            seen.append(await one.wait_for_change(second.id, timeout=60))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.05)
            assert await two.cancel(second.id)
    assert seen[0] is not None and seen[0].status == "cancelled"


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Let the process umask allow everything, so only the store's own mode protects it."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.anyio
@pytest.mark.usefixtures("open_umask")
async def test_database_and_wal_files_are_private(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    async with SQLiteStore(db) as store:
        await store.set_secret("totp:alice", "JBSWY3DPEHPK3PXP")
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.anyio
async def test_schema_version_is_written_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    async with SQLiteStore(db):
        pass
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await SQLiteStore(db).open()


@pytest.mark.anyio
async def test_a_version_1_file_is_upgraded_in_place_keeping_its_requests(
    tmp_path: Path
) -> None:
    from agentguard.store._sqlite_schema import _SCHEMA

    db = tmp_path / "state.db"
    request = sample_request(time.time, call_hash="h-1")
    async with SQLiteStore(db) as store:
        await store.create_request(request)
    with sqlite3.connect(db) as conn:  # back to what agentguard 0.1 wrote
        conn.execute("DROP INDEX requests_by_hash")
        conn.execute("DROP TABLE definitions")
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    assert "definitions" not in _SCHEMA
    async with SQLiteStore(db) as store:
        assert [r.id for r in await store.list_requests(call_hash="h-1")] == [request.id]
        await store.put_definition("d", "{}")
        assert await store.get_definition("d") == "{}"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    conn.close()


@pytest.mark.anyio
async def test_record_from_a_newer_version_is_refused_not_truncated(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    async with SQLiteStore(db) as store:
        request = sample_request(time.time)
        await store.create_request(request)
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE requests SET doc = json_set(doc, '$.approval.min_age', 5)")
        conn.close()
        with pytest.raises(StoreError, match="unknown fields"):
            await store.get_request(request.id)
        with pytest.raises(StoreError):
            await store.record_vote(request.id, vote("alice"))


@pytest.mark.anyio
async def test_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        await SQLiteStore(tmp_path / "absent" / "state.db").open()


@pytest.mark.anyio
async def test_data_survives_reopening(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    request = sample_request(time.time)
    async with SQLiteStore(db) as store:
        await store.create_request(request)
        await store.record_vote(request.id, vote("alice"))
    async with SQLiteStore(db) as store:
        assert await store.consume(request.id, request.call_hash)


def test_open_store_maps_urls_to_backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert isinstance(open_store("memory://"), MemoryStore)
    absolute = tmp_path / "abs.db"
    cases = {
        "sqlite:///relative.db": "relative.db",
        "sqlite:///sub/dir.db": "sub/dir.db",
        f"sqlite:///{absolute}": str(absolute),
        "bare.db": "bare.db",
        str(absolute): str(absolute),
    }
    for url, path in cases.items():
        store = open_store(url)
        assert isinstance(store, SQLiteStore) and store.path == path, url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost", "memory://, sqlite:///PATH"),
        ("sqlite://", "no path"),
        ("sqlite:///", "no path"),
        ("memory://somewhere", "no path"),
        ("", "empty"),
        (":memory:", "memory://"),
    ],
)
def test_open_store_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_store(url)
