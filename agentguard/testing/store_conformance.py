"""The store contract as reusable pytest suites, one per narrow protocol.

:class:`RequestStoreConformance`, :class:`GrantStoreConformance`,
:class:`CredentialStoreConformance`, :class:`CounterStoreConformance` and
:class:`PinStoreConformance` check one protocol of :mod:`agentguard.store.base` each, so a
backend can be built and tested a protocol at a time; :class:`StoreConformance` is all of them
(a full :class:`~agentguard.store.Store`). A backend passes a suite by subclassing it and
providing a ``store`` fixture that builds the backend with the suite's ``clock``::

    import pytest
    from agentguard.testing.store_conformance import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        async def store(self, clock):
            async with MyStore("dsn", clock=clock) as store:
                yield store

The fixture must hand out an empty store. Tests run on anyio (the ``anyio_backend`` fixture
decides the event loop). Races are real: N tasks hit the same request or grant at once and
exactly one may win.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from agentguard.errors import ConflictError, StoreError
from agentguard.store.base import RequestStore, Store
from agentguard.testing._store_state import (
    ContractBase,
    CounterStoreConformance,
    CredentialStoreConformance,
    GrantStoreConformance,
    PinStoreConformance,
)
from agentguard.testing.clock import ManualClock
from agentguard.testing.store_samples import RACERS, race, sample_request, vote
from agentguard.types import ApprovalRequest, new_request_id

__all__ = [
    "CounterStoreConformance",
    "CredentialStoreConformance",
    "GrantStoreConformance",
    "PinStoreConformance",
    "RequestStoreConformance",
    "StoreConformance",
]


class RequestStoreConformance(ContractBase):
    """The :class:`~agentguard.store.base.RequestStore` contract: requests, votes, waiting."""

    # -- lifecycle ---------------------------------------------------------------------
    async def test_satisfies_request_store_and_open_is_idempotent(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        assert isinstance(store, RequestStore)
        await store.open()
        await store.open()
        await store.create_request(request := sample_request(clock))
        assert await store.get_request(request.id) == request

    # -- requests ----------------------------------------------------------------------
    async def test_create_then_get_round_trips_every_field(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        request = sample_request(clock)
        await store.create_request(request)
        assert await store.get_request(request.id) == request

    async def test_get_unknown_request_is_none(self, store: RequestStore) -> None:
        assert await store.get_request(new_request_id()) is None

    async def test_duplicate_request_id_is_refused(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        request = sample_request(clock)
        await store.create_request(request)
        with pytest.raises(StoreError):
            await store.create_request(sample_request(clock, id=request.id))

    async def test_list_newest_first_with_status_filter_and_limit(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        ids = []
        for _ in range(4):
            request = sample_request(clock)
            await store.create_request(request)
            ids.append(request.id)
            clock.advance(1)
        await store.record_vote(ids[1], vote("alice", False))
        assert [r.id for r in await store.list_requests()] == ids[::-1]
        assert [r.id for r in await store.list_requests(limit=2)] == ids[:1:-1]
        assert [r.id for r in await store.list_requests("denied")] == [ids[1]]
        assert [r.id for r in await store.list_requests("pending")] == [ids[3], ids[2], ids[0]]

    async def test_list_by_call_hash_finds_the_requests_of_one_call(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        first = sample_request(clock, call_hash="h-1")
        other = sample_request(clock, call_hash="h-2")
        await store.create_request(first)
        await store.create_request(other)
        clock.advance(1)
        second = sample_request(clock, call_hash="h-1")
        await store.create_request(second)
        await store.record_vote(first.id, vote("alice", False))
        found = await store.list_requests(call_hash="h-1")
        assert [r.id for r in found] == [second.id, first.id]
        assert [r.id for r in await store.list_requests("pending", call_hash="h-1")] == [
            second.id]
        assert [r.id for r in await store.list_requests("denied", call_hash="h-1")] == [
            first.id]
        assert await store.list_requests(call_hash="h-3") == []
        clock.advance(400)
        assert [r.id for r in await store.list_requests("expired", call_hash="h-1")] == [
            second.id]

    async def test_pending_request_past_its_deadline_reads_as_expired(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        request = sample_request(clock, timeout=60)
        await store.create_request(request)
        clock.advance(60)
        got = await store.get_request(request.id)
        assert got is not None and got.status == "expired"
        assert [r.id for r in await store.list_requests("expired")] == [request.id]
        assert await store.list_requests("pending") == []

    async def test_count_pending_counts_live_requests_of_one_principal_and_class(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        def held(principal: str, privilege: str = "destructive", **kw: Any) -> ApprovalRequest:
            call = {"server": "local", "tool": "deploy", "principal": principal, "args": {}}
            return sample_request(clock, call=call, privilege=privilege, **kw)

        mine = [held("agent:a"), held("agent:a"), held("agent:a", timeout=10.0)]
        others = [held("agent:b"), held("agent:a", "privileged"), held("agent:a")]
        for request in mine + others:
            await store.create_request(request)
        assert await store.count_pending("agent:a", "destructive") == 4
        await store.record_vote(others[2].id, vote("alice", approve=False))
        assert await store.count_pending("agent:a", "destructive") == 3
        clock.advance(11.0)  # the short one expired, though nobody marked it so
        assert await store.count_pending("agent:a", "destructive") == 2
        assert await store.count_pending("agent:b", "destructive") == 1
        assert await store.count_pending("agent:c", "destructive") == 0

    # -- votes -------------------------------------------------------------------------
    async def test_quorum_needs_distinct_approvers(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        request = sample_request(clock, quorum=2)
        await store.create_request(request)
        first = await store.record_vote(request.id, vote("alice"))
        assert first.counted and first.request.status == "pending"
        again = await store.record_vote(request.id, vote("alice"))
        assert not again.counted and again.request.status == "pending"
        assert len(again.request.votes) == 1
        second = await store.record_vote(request.id, vote("bob"))
        assert second.counted and second.request.status == "approved"
        assert second.request.decided_by == ("alice", "bob")
        assert second.request.decided_at == clock()
        assert await store.get_request(request.id) == second.request

    async def test_deny_settles_at_once(self, store: RequestStore, clock: ManualClock) -> None:
        request = sample_request(clock, quorum=2)
        await store.create_request(request)
        result = await store.record_vote(request.id, vote("bob", False, reason="not now"))
        assert result.counted and result.request.status == "denied"
        assert result.request.decided_by == ("bob",)
        assert result.request.votes[-1].reason == "not now"

    async def test_deny_counts_even_after_the_same_approver_approved(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        request = sample_request(clock, quorum=2)
        await store.create_request(request)
        await store.record_vote(request.id, vote("alice"))
        result = await store.record_vote(request.id, vote("alice", False))
        assert result.counted and result.request.status == "denied"

    @pytest.mark.parametrize("settle", ["approve", "deny", "expire", "cancel", "consume"])
    async def test_vote_on_a_settled_request_conflicts(
        self, store: RequestStore, clock: ManualClock, settle: str
    ) -> None:
        request = sample_request(clock)
        await store.create_request(request)
        if settle in ("approve", "consume"):
            await store.record_vote(request.id, vote("alice"))
        if settle == "consume":
            assert await store.consume(request.id, request.call_hash)
        if settle == "deny":
            await store.record_vote(request.id, vote("alice", False))
        if settle == "expire":
            assert await store.expire(request.id)
        if settle == "cancel":
            assert await store.cancel(request.id)
        before = await store.get_request(request.id)
        for late in (vote("bob"), vote("bob", False)):
            with pytest.raises(ConflictError):
                await store.record_vote(request.id, late)
        assert await store.get_request(request.id) == before

    async def test_vote_after_the_deadline_conflicts(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        request = sample_request(clock, timeout=30)
        await store.create_request(request)
        clock.advance(30)
        with pytest.raises(ConflictError):
            await store.record_vote(request.id, vote("alice"))
        got = await store.get_request(request.id)
        assert got is not None and got.status == "expired" and got.votes == ()

    async def test_vote_on_unknown_request_conflicts(self, store: RequestStore) -> None:
        with pytest.raises(ConflictError):
            await store.record_vote(new_request_id(), vote("alice"))

    async def test_approve_and_deny_racing_have_exactly_one_winner(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        request = sample_request(clock)
        await store.create_request(request)
        calls = [
            (lambda i=i: store.record_vote(request.id, vote(f"user{i}", approve=i % 2 == 0)))
            for i in range(RACERS)
        ]
        results = await race(calls)
        winners = [r for r in results if not isinstance(r, ConflictError)]
        assert len(winners) == 1
        final = await store.get_request(request.id)
        assert final is not None and final == winners[0].request
        assert final.status in ("approved", "denied") and len(final.votes) == 1

    async def test_quorum_race_counts_exactly_quorum_votes(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        request = sample_request(clock, quorum=3)
        await store.create_request(request)
        results = await race(
            [functools.partial(store.record_vote, request.id, vote(f"user{i}"))
             for i in range(RACERS)]
        )
        counted = [r for r in results if not isinstance(r, ConflictError)]
        assert len(counted) == 3 and all(r.counted for r in counted)
        final = await store.get_request(request.id)
        assert final is not None and final.status == "approved"
        assert len(final.decided_by) == 3 and len(final.votes) == 3

    async def test_expire_and_approve_racing_have_exactly_one_winner(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        for _ in range(4):
            request = sample_request(clock)
            await store.create_request(request)
            calls: list[Callable[[], Awaitable[object]]] = [
                functools.partial(store.expire, request.id),
                functools.partial(store.record_vote, request.id, vote("alice")),
            ] * (RACERS // 2)
            results = await race(calls)
            expired = sum(1 for r in results if r is True)
            approved = sum(1 for r in results if hasattr(r, "counted"))
            assert expired + approved == 1
            final = await store.get_request(request.id)
            assert final is not None
            assert final.status == ("expired" if expired else "approved")

    # -- transitions -------------------------------------------------------------------
    async def test_consume_once_and_only_with_the_matching_hash(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        request = sample_request(clock)
        await store.create_request(request)
        assert not await store.consume(request.id, request.call_hash)  # still pending
        await store.record_vote(request.id, vote("alice"))
        assert not await store.consume(request.id, "0" * 64)
        assert await store.consume(request.id, request.call_hash)
        assert not await store.consume(request.id, request.call_hash)
        got = await store.get_request(request.id)
        assert got is not None and got.status == "consumed" and got.decided_by == ("alice",)
        assert not await store.consume(new_request_id(), request.call_hash)

    async def test_concurrent_consumers_have_exactly_one_winner(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        request = sample_request(clock)
        await store.create_request(request)
        await store.record_vote(request.id, vote("alice"))
        results = await race(
            [lambda: store.consume(request.id, request.call_hash)] * RACERS
        )
        assert results.count(True) == 1 and results.count(False) == RACERS - 1

    async def test_denied_request_cannot_be_consumed(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        request = sample_request(clock)
        await store.create_request(request)
        await store.record_vote(request.id, vote("alice", False))
        assert not await store.consume(request.id, request.call_hash)

    async def test_expire_and_cancel_only_leave_pending(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        first, second, approved = (sample_request(clock) for _ in range(3))
        for request in (first, second, approved):
            await store.create_request(request)
        await store.record_vote(approved.id, vote("alice"))
        clock.advance(5)
        assert await store.expire(first.id) and not await store.expire(first.id)
        assert not await store.cancel(first.id)
        assert await store.cancel(second.id) and not await store.cancel(second.id)
        assert not await store.expire(approved.id) and not await store.cancel(approved.id)
        got_first, got_second = await store.get_request(first.id), await store.get_request(
            second.id
        )
        assert got_first is not None and got_first.status == "expired"
        assert got_first.decided_at == clock()
        assert got_second is not None and got_second.status == "cancelled"
        assert not await store.expire(new_request_id())
        assert not await store.cancel(new_request_id())

    async def test_expire_persists_a_request_already_past_its_deadline(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        request = sample_request(clock, timeout=10)
        await store.create_request(request)
        clock.advance(11)
        assert await store.expire(request.id)
        assert not await store.expire(request.id)

    # -- waiting -----------------------------------------------------------------------
    async def test_wait_returns_at_once_for_settled_and_unknown_requests(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        request = sample_request(clock)
        await store.create_request(request)
        await store.record_vote(request.id, vote("alice", False))
        with anyio.fail_after(10):
            got = await store.wait_for_change(request.id, timeout=3600)
            assert got is not None and got.status == "denied"
            assert await store.wait_for_change(new_request_id(), timeout=3600) is None

    async def test_wait_times_out_returning_the_pending_request(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        request = sample_request(clock)
        await store.create_request(request)
        got = await store.wait_for_change(request.id, timeout=0.05)
        assert got == request

    async def test_wait_wakes_when_a_vote_settles_the_request(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        request = sample_request(clock)
        await store.create_request(request)
        seen: list[ApprovalRequest | None] = []

        async def waiter() -> None:
            seen.append(await store.wait_for_change(request.id, timeout=30))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await anyio.sleep(0.01)
                await store.record_vote(request.id, vote("alice"))
        assert len(seen) == 1 and seen[0] is not None and seen[0].status == "approved"

    async def test_wait_wakes_on_expire_and_cancel(
        self, store: RequestStore, clock: ManualClock
    ) -> None:
        for settle, status in ((store.expire, "expired"), (store.cancel, "cancelled")):
            request = sample_request(clock)
            await store.create_request(request)
            seen: list[ApprovalRequest | None] = []

            async def waiter(request_id: str = request.id, into: list[Any] = seen) -> None:
                into.append(await store.wait_for_change(request_id, timeout=30))

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(waiter)
                    await anyio.sleep(0.01)
                    assert await settle(request.id)
            assert seen[0] is not None and seen[0].status == status


class StoreConformance(
    RequestStoreConformance, GrantStoreConformance, CredentialStoreConformance,
    CounterStoreConformance, PinStoreConformance,
):
    """The whole :class:`~agentguard.store.Store` contract (every narrow suite)."""

    async def test_satisfies_the_whole_store_protocol(self, store: Store) -> None:
        assert isinstance(store, Store)
