"""PostgresStore against the store contract, plus what only a shared server can show.

Each test works in its own random schema (dropped afterwards). Without a server the tests skip;
CI sets AGENTGUARD_REQUIRE_SERVICES=1, which turns those skips into failures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import psycopg
import pytest
from anyio.from_thread import start_blocking_portal
from psycopg import sql

from agentguard.errors import ConfigError, ConflictError, StoreError
from agentguard.store import open_store
from agentguard.store.postgres import SCHEMA_VERSION, PostgresStore
from agentguard.testing import ManualClock
from agentguard.testing.store_conformance import StoreConformance
from agentguard.testing.store_samples import race, sample_request, vote
from agentguard.types import ApprovalRequest
from tests.pg_support import fresh_schema, reachable_dsn

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg() -> str:
    return reachable_dsn()


@pytest.fixture
def schema(pg: str) -> Iterator[str]:
    with fresh_schema(pg) as name:
        yield name


class TestPostgresStore(StoreConformance):
    @pytest.fixture
    async def store(
        self, clock: ManualClock, pg: str, schema: str
    ) -> AsyncIterator[PostgresStore]:
        async with PostgresStore(pg, schema=schema, clock=clock, pool_max=4) as store:
            yield store


def raw(dsn: str) -> psycopg.Connection:
    """A plain connection, as an operator (or an attacker with database access) would use."""
    return psycopg.connect(dsn, autocommit=True)


async def wait_in_background(
    store: PostgresStore, request_id: str, seen: list[ApprovalRequest | None]
) -> None:
    seen.append(await store.wait_for_change(request_id, timeout=60))


@pytest.mark.anyio
async def test_a_decision_on_one_replica_wakes_a_waiter_on_another_by_notify(
    pg: str, schema: str
) -> None:
    # poll=3600: the waiter cannot be woken by polling within the test, only by NOTIFY.
    async with PostgresStore(pg, schema=schema, poll=3600) as waiting, \
            PostgresStore(pg, schema=schema) as deciding:
        settled = {"approve": "approved", "deny": "denied", "expire": "expired",
                   "cancel": "cancelled"}
        for settle, status in settled.items():
            request = sample_request(time.time)
            await waiting.create_request(request)
            seen: list[ApprovalRequest | None] = []
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait_in_background, waiting, request.id, seen)
                    await anyio.sleep(0.05)
                    if settle in ("approve", "deny"):
                        await deciding.record_vote(request.id, vote("alice", settle == "approve"))
                    else:
                        assert await getattr(deciding, settle)(request.id)
            assert seen[0] is not None and seen[0].status == status


@pytest.mark.anyio
async def test_notify_is_sent_with_the_decision_and_only_when_it_commits(
    pg: str, schema: str
) -> None:
    async with PostgresStore(pg, schema=schema) as store:
        request = sample_request(time.time, quorum=2)
        await store.create_request(request)
        listener = await psycopg.AsyncConnection.connect(pg, autocommit=True)
        try:
            channel = f"agentguard.{schema}"
            await listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            await store.record_vote(request.id, vote("alice"))  # counted, still pending
            assert [n async for n in listener.notifies(timeout=0.3)] == []
            await store.record_vote(request.id, vote("bob"))  # quorum: approved
            notes = [n async for n in listener.notifies(timeout=5, stop_after=1)]
            assert [(n.channel, n.payload) for n in notes] == [(channel, request.id)]
            assert not await store.expire(request.id)  # lost: nothing to announce
            assert [n async for n in listener.notifies(timeout=0.3)] == []
        finally:
            await listener.close()


@pytest.mark.anyio
async def test_waiters_are_woken_again_after_the_listening_connection_is_killed(
    pg: str, schema: str
) -> None:
    async with PostgresStore(pg, schema=schema, poll=3600) as waiting, \
            PostgresStore(pg, schema=schema) as deciding:
        name = f"agentguard listener {schema}"
        with raw(pg) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s", (name,)).fetchall()
            assert len(killed) == 2  # one listener per store object
            with anyio.fail_after(30):
                while admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    (name,)).fetchone()[0] < 2:
                    await anyio.sleep(0.02)
        request = sample_request(time.time)
        await waiting.create_request(request)
        seen: list[ApprovalRequest | None] = []
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_in_background, waiting, request.id, seen)
                await anyio.sleep(0.05)
                await deciding.record_vote(request.id, vote("alice"))
        assert seen[0] is not None and seen[0].status == "approved"


@pytest.mark.anyio
async def test_two_store_objects_racing_have_one_winner(pg: str, schema: str) -> None:
    async with PostgresStore(pg, schema=schema) as one, PostgresStore(pg, schema=schema) as two:
        for _ in range(5):
            request = sample_request(time.time)
            await one.create_request(request)
            results = await race(
                [lambda i=i, rid=request.id: (one, two)[i % 2].record_vote(
                    rid, vote(f"u{i}", i % 3 == 0)) for i in range(16)]
            )
            winners = [r for r in results if not isinstance(r, ConflictError)]
            assert len(winners) == 1
            final = await two.get_request(request.id)
            assert final == winners[0].request and len(final.votes) == 1
            if final.status == "approved":
                claims = await race([lambda s=s, r=request: s.consume(r.id, r.call_hash)
                                     for s in (one, two) * 8])
                assert claims.count(True) == 1


@pytest.mark.anyio
async def test_schemas_keep_deployments_apart(pg: str) -> None:
    with fresh_schema(pg) as first, fresh_schema(pg) as second:
        async with PostgresStore(pg, schema=first) as a, PostgresStore(pg, schema=second) as b:
            request = sample_request(time.time)
            await a.create_request(request)
            await a.set_secret("totp:alice", "SEED")
            assert await b.get_request(request.id) is None
            assert await b.get_secret("totp:alice") is None
            assert await b.list_requests() == []


@pytest.mark.anyio
async def test_schema_version_is_written_and_a_newer_one_is_refused(
    pg: str, schema: str
) -> None:
    async with PostgresStore(pg, schema=schema):
        pass
    with raw(pg) as conn:
        table = sql.Identifier(schema, "schema_version")
        assert conn.execute(sql.SQL("SELECT version FROM {}").format(table)).fetchone() == (
            SCHEMA_VERSION,)
        conn.execute(sql.SQL("UPDATE {} SET version = version + 1").format(table))
    with pytest.raises(StoreError, match="newer"):
        await PostgresStore(pg, schema=schema).open()


@pytest.mark.anyio
async def test_a_version_1_schema_is_upgraded_in_place_keeping_its_requests(
    pg: str, schema: str
) -> None:
    request = sample_request(time.time, call_hash="h-1")
    async with PostgresStore(pg, schema=schema) as store:
        await store.create_request(request)
    with raw(pg) as conn:  # back to what agentguard 0.1 wrote
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, "requests_by_hash")))
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, "definitions")))
        conn.execute(sql.SQL("UPDATE {} SET version = 1").format(
            sql.Identifier(schema, "schema_version")))
    async with PostgresStore(pg, schema=schema) as store:
        assert [r.id for r in await store.list_requests(call_hash="h-1")] == [request.id]
        await store.put_definition("d", "{}")
        assert await store.get_definition("d") == "{}"
    with raw(pg) as conn:
        table = sql.Identifier(schema, "schema_version")
        assert conn.execute(sql.SQL("SELECT version FROM {}").format(table)).fetchone() == (2,)


@pytest.mark.anyio
async def test_replicas_opening_a_fresh_schema_at_once_all_succeed(pg: str, schema: str) -> None:
    stores = [PostgresStore(pg, schema=schema, pool_max=1) for _ in range(6)]
    try:
        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(store.open)
        request = sample_request(time.time)
        await stores[0].create_request(request)
        assert await stores[-1].get_request(request.id) == request
    finally:
        for store in stores:
            await store.close()


@pytest.mark.anyio
async def test_record_from_a_newer_version_is_refused_not_truncated(
    pg: str, schema: str
) -> None:
    async with PostgresStore(pg, schema=schema) as store:
        request = sample_request(time.time)
        await store.create_request(request)
        doc = json.loads(request_doc(pg, schema, request.id))
        doc["approval"]["min_age"] = 5
        with raw(pg) as conn:
            conn.execute(sql.SQL("UPDATE {} SET doc = %s").format(
                sql.Identifier(schema, "requests")), (json.dumps(doc),))
        with pytest.raises(StoreError, match="unknown fields"):
            await store.get_request(request.id)
        with pytest.raises(StoreError):
            await store.record_vote(request.id, vote("alice"))


def request_doc(dsn: str, schema: str, request_id: str) -> str:
    with raw(dsn) as conn:
        row = conn.execute(sql.SQL("SELECT doc FROM {} WHERE id = %s").format(
            sql.Identifier(schema, "requests")), (request_id,)).fetchone()
    assert row is not None
    return row[0]


@pytest.mark.anyio
async def test_arguments_postgres_json_cannot_hold_round_trip(pg: str, schema: str) -> None:
    async with PostgresStore(pg, schema=schema) as store:
        request = sample_request(time.time)
        call = dict(request.call)
        call["args"] = {"nul": "a\x00b", "surrogate": "\ud800", "big": 2**70, "float": 0.1}
        odd = dataclasses.replace(request, call=call)
        await store.create_request(odd)
        assert await store.get_request(odd.id) == odd


@pytest.mark.anyio
async def test_data_survives_reopening_and_consume_stays_single_use(
    pg: str, schema: str
) -> None:
    request = sample_request(time.time)
    async with PostgresStore(pg, schema=schema) as store:
        await store.create_request(request)
        await store.record_vote(request.id, vote("alice"))
        assert await store.consume(request.id, request.call_hash)
    async with PostgresStore(pg, schema=schema) as store:
        assert not await store.consume(request.id, request.call_hash)
        got = await store.get_request(request.id)
        assert got is not None and got.status == "consumed"


def test_a_store_whose_event_loop_ended_unclosed_reopens_in_the_next_loop(
    pg: str, schema: str
) -> None:
    store = PostgresStore(pg, schema=schema)
    request = sample_request(time.time)
    anyio.run(store.open)  # the loop ends with the store still open in it
    anyio.run(store.create_request, request)
    assert anyio.run(store.get_request, request.id) == request
    result = anyio.run(store.record_vote, request.id, vote("alice"))
    assert result.request.status == "approved"

    async def consume_and_close() -> bool:
        try:
            return await store.consume(request.id, request.call_hash)
        finally:
            await store.close()

    assert anyio.run(consume_and_close)
    assert listeners(pg, schema) == 0  # nothing left open by the ended loops


def listeners(dsn: str, schema: str) -> int:
    with raw(dsn) as admin:
        return admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (f"agentguard listener {schema}",)).fetchone()[0]


def test_one_store_used_from_two_event_loops_keeps_one_pool_and_one_listener(
    pg: str, schema: str
) -> None:
    # An app's loop (async tools) and a guard's portal loop (sync callers) share one store:
    # it lives in the loop that opened it, and the other loop's calls are carried out there.
    store = PostgresStore(pg, schema=schema, poll=3600)
    request = sample_request(time.time)
    with start_blocking_portal("asyncio") as home, start_blocking_portal("asyncio") as other:
        home.call(store.open)
        assert home.call(store.create_request, request) is None
        seen = home.start_task_soon(store.wait_for_change, request.id, 60)
        assert other.call(store.get_request, request.id) == request
        # poll=3600: the waiter in the home loop is woken by the listener's NOTIFY only.
        assert other.call(store.record_vote, request.id, vote("alice")).counted
        got = seen.result(timeout=30)
        assert got is not None and got.status == "approved"
        assert listeners(pg, schema) == 1
        assert other.call(store.consume, request.id, request.call_hash)
        other.call(store.close)  # closed in its home loop, from the other one
        assert listeners(pg, schema) == 0
        # Reopened by whichever loop uses it next.
        assert other.call(store.get_request, request.id) is not None
        home.call(store.close)
    assert listeners(pg, schema) == 0


def test_a_call_from_another_loop_is_cancelled_in_the_home_loop(pg: str, schema: str) -> None:
    store = PostgresStore(pg, schema=schema, poll=3600)
    request = sample_request(time.time)

    async def wait_briefly() -> ApprovalRequest | None:
        with anyio.move_on_after(0.3):
            return await store.wait_for_change(request.id, 60)
        return None

    with start_blocking_portal("asyncio") as home, start_blocking_portal("asyncio") as other:
        home.call(store.create_request, request)
        assert other.call(wait_briefly) is None  # cancelled where it was called...
        assert home.call(store.get_request, request.id) == request  # ...and at home
        home.call(store.close)


def test_a_store_whose_home_loop_is_gone_in_a_forked_child_reopens_there(
    pg: str, schema: str
) -> None:
    store = PostgresStore(pg, schema=schema)
    request = sample_request(time.time)
    with start_blocking_portal("asyncio") as home:
        home.call(store.create_request, request)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            status = b"?"
            try:
                got = anyio.run(store.get_request, request.id)
                status = b"ok" if got == request else b"wrong"
            except BaseException as exc:
                status = repr(exc).encode()
            finally:
                os.write(write, status)
                os._exit(0)
        os.close(write)
        answer = os.read(read, 1000)
        os.waitpid(pid, 0)
        assert answer == b"ok"
        # The parent's connections were left alone by the child.
        assert home.call(store.get_request, request.id) == request
        home.call(store.close)


@pytest.mark.anyio
async def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    store = PostgresStore("postgresql://agent:s3cret-pw@127.0.0.1:1/none", timeout=1)
    with pytest.raises(StoreError, match="cannot be opened") as caught:
        await store.open()
    assert "s3cret-pw" not in str(caught.value) and "s3cret-pw" not in repr(store)


@pytest.mark.anyio
async def test_a_store_that_loses_its_server_fails_closed(pg: str, schema: str) -> None:
    async with PostgresStore(pg, schema=schema, pool_max=1, timeout=2) as store:
        request = sample_request(time.time)
        await store.create_request(request)
        with raw(pg) as conn:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, "requests")))
        with pytest.raises(StoreError):
            await store.record_vote(request.id, vote("alice"))
        with pytest.raises(StoreError):
            await store.consume(request.id, request.call_hash)


def test_open_store_builds_a_postgres_store_with_its_schema() -> None:
    store = open_store("postgresql://agent@db.internal:5432/prod?schema=team_a&sslmode=require")
    assert isinstance(store, PostgresStore) and store.schema == "team_a"
    assert store.dsn == "postgresql://agent@db.internal:5432/prod?sslmode=require"
    default = open_store("postgres://db.internal/prod")
    assert isinstance(default, PostgresStore) and default.schema == "agentguard"
    assert default.dsn == "postgres://db.internal/prod"
    spaced = open_store("postgresql://h/db?options=-c%20lock_timeout%3D5s&schema=x")
    assert isinstance(spaced, PostgresStore)
    assert spaced.dsn == "postgresql://h/db?options=-c%20lock_timeout%3D5s"


@pytest.mark.parametrize("url", [
    "postgresql://h/db?schema=a&schema=b",
    "postgresql://h/db?schema=1abc",
    "postgresql://h/db?schema=a%22b",
    "postgresql://h/db?schema=" + "x" * 64,
])
def test_open_store_rejects_bad_schemas(url: str) -> None:
    with pytest.raises(ConfigError, match="schema"):
        open_store(url)
