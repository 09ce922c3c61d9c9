"""Store contract, part 2: one suite per narrow protocol but requests (grants,
re-authentication state, counters, pins). Public through
:mod:`agentguard.testing.store_conformance`.
"""

from __future__ import annotations

from typing import Any

import pytest

from agentguard.errors import StoreError
from agentguard.store.base import CounterStore, CredentialStore, GrantStore, PinStore
from agentguard.testing.clock import ManualClock
from agentguard.testing.store_samples import RACERS, race, sample_grant, use_args
from agentguard.types import Grant

__all__ = [
    "ContractBase",
    "CounterStoreConformance",
    "CredentialStoreConformance",
    "GrantStoreConformance",
    "PinStoreConformance",
]


class ContractBase:
    """What every suite shares: anyio tests and the clock the ``store`` fixture must use."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def clock(self) -> ManualClock:
        """The clock the ``store`` fixture must hand to the backend."""
        return ManualClock()


class GrantStoreConformance(ContractBase):
    """The :class:`~agentguard.store.base.GrantStore` contract."""

    async def test_satisfies_grant_store_and_open_is_idempotent(
        self, store: GrantStore
    ) -> None:
        assert isinstance(store, GrantStore)
        await store.open()
        await store.open()

    async def test_once_grant_is_used_exactly_once(
        self, store: GrantStore, clock: ManualClock
    ) -> None:
        grant = sample_grant(clock, scope="once", call_hash="hash-1")
        await store.add_grant(grant)
        assert await store.use_grant(**use_args(clock, call_hash="hash-2")) is None
        used = await store.use_grant(**use_args(clock))
        assert used is not None and used.id == grant.id and used.uses == 1
        assert await store.use_grant(**use_args(clock)) is None
        assert await store.list_grants() == []

    async def test_once_grant_racing_users_have_exactly_one_winner(
        self, store: GrantStore, clock: ManualClock
    ) -> None:
        await store.add_grant(sample_grant(clock, scope="once"))
        results = await race([lambda: store.use_grant(**use_args(clock))] * RACERS)
        assert sum(1 for r in results if isinstance(r, Grant)) == 1
        assert results.count(None) == RACERS - 1

    async def test_session_grant_needs_the_same_session(
        self, store: GrantStore, clock: ManualClock
    ) -> None:
        grant = sample_grant(clock, scope="session", session_id="s-1")
        await store.add_grant(grant)
        assert await store.use_grant(**use_args(clock, session_id=None)) is None
        assert await store.use_grant(**use_args(clock, session_id="s-2")) is None
        first = await store.use_grant(**use_args(clock, session_id="s-1"))
        second = await store.use_grant(**use_args(clock, session_id="s-1", call_hash="other"))
        assert first is not None and second is not None
        assert (first.id, first.uses, second.uses) == (grant.id, 1, 2)

    async def test_session_grant_without_a_session_covers_nothing(
        self, store: GrantStore, clock: ManualClock
    ) -> None:
        await store.add_grant(sample_grant(clock, scope="session", session_id=None))
        assert await store.use_grant(**use_args(clock, session_id=None)) is None

    async def test_ttl_grant_covers_until_it_expires(
        self, store: GrantStore, clock: ManualClock
    ) -> None:
        grant = sample_grant(clock, ttl=600)
        await store.add_grant(grant)
        for _ in range(3):
            assert await store.use_grant(**use_args(clock)) is not None
        clock.advance(599)
        assert await store.use_grant(**use_args(clock)) is not None
        assert [g.id for g in await store.list_grants()] == [grant.id]
        clock.advance(1)
        assert await store.use_grant(**use_args(clock)) is None
        assert await store.list_grants() == []
        assert [g.id for g in await store.list_grants(now=clock() - 10)] == [grant.id]

    async def test_grant_never_covers_a_higher_rank(
        self, store: GrantStore, clock: ManualClock
    ) -> None:
        await store.add_grant(sample_grant(clock, max_rank=2))
        assert await store.use_grant(**use_args(clock, rank=3)) is None
        assert await store.use_grant(**use_args(clock, rank=2)) is not None
        assert await store.use_grant(**use_args(clock, rank=0)) is not None

    async def test_grant_matches_principal_kind_and_server_tool_globs(
        self, store: GrantStore, clock: ManualClock
    ) -> None:
        await store.add_grant(sample_grant(clock, server="prod-*", tool="secrets.*"))
        await store.add_grant(sample_grant(clock, server="git", tool="push", kind="reauth"))
        ok = use_args(clock, server="prod-eu", tool="secrets.read")
        assert await store.use_grant(**ok) is not None
        for miss in (
            {"server": "staging", "tool": "secrets.read"},
            {"server": "prod-eu", "tool": "secretsXread"},
            {"server": "prod-eu", "tool": "secrets.read", "principal": "agent:other"},
            {"server": "prod-eu", "tool": "secrets.read", "kind": "reauth"},
            {"server": "git", "tool": "push", "kind": "approval"},
            {"server": "PROD-eu", "tool": "secrets.read"},
        ):
            assert await store.use_grant(**use_args(clock, **miss)) is None, miss
        assert await store.use_grant(**use_args(clock, kind="reauth")) is not None

    async def test_grant_covers_only_its_rule_settings_and_human(
        self, store: GrantStore, clock: ManualClock
    ) -> None:
        bound: dict[str, Any] = {
            "rule_id": "staging-deploy", "settings_hash": "s-1", "acting_for": "alice"}
        await store.add_grant(sample_grant(clock, **bound))
        for miss in (
            {**bound, "rule_id": "prod-deploy"},
            {**bound, "rule_id": None},
            {**bound, "settings_hash": "s-2"},
            {**bound, "settings_hash": ""},
            {**bound, "acting_for": "dave"},
            {**bound, "acting_for": None},
        ):
            assert await store.use_grant(**use_args(clock, **miss)) is None, miss
        assert await store.use_grant(**use_args(clock, **bound)) is not None

    async def test_grant_bound_to_a_call_hash_covers_only_that_call(
        self, store: GrantStore, clock: ManualClock
    ) -> None:
        await store.add_grant(sample_grant(clock, call_hash="hash-1"))
        assert await store.use_grant(**use_args(clock, call_hash="hash-2")) is None
        assert await store.use_grant(**use_args(clock, call_hash="hash-1")) is not None

    async def test_revoked_grant_covers_nothing(
        self, store: GrantStore, clock: ManualClock
    ) -> None:
        grant = sample_grant(clock)
        await store.add_grant(grant)
        assert await store.revoke_grant(grant.id)
        assert not await store.revoke_grant(grant.id)
        assert await store.use_grant(**use_args(clock)) is None
        assert await store.list_grants() == []

    async def test_grant_round_trips_and_duplicate_id_is_refused(
        self, store: GrantStore, clock: ManualClock
    ) -> None:
        grant = sample_grant(clock, scope="session", session_id="s", kind="reauth",
                             call_hash="h")
        await store.add_grant(grant)
        assert list(await store.list_grants()) == [grant]
        with pytest.raises(StoreError):
            await store.add_grant(grant)


class CredentialStoreConformance(ContractBase):
    """The :class:`~agentguard.store.base.CredentialStore` contract."""

    async def test_satisfies_credential_store_and_open_is_idempotent(
        self, store: CredentialStore
    ) -> None:
        assert isinstance(store, CredentialStore)
        await store.open()
        await store.open()

    async def test_last_reauth_keeps_the_latest_time_per_method(
        self, store: CredentialStore, clock: ManualClock
    ) -> None:
        assert await store.last_reauth("alice", "totp") is None
        await store.record_reauth("alice", "totp", clock())
        await store.record_reauth("alice", "totp", clock() - 100)
        assert await store.last_reauth("alice", "totp") == clock()
        await store.record_reauth("alice", "totp", clock() + 5)
        assert await store.last_reauth("alice", "totp") == clock() + 5
        assert await store.last_reauth("alice", "oauth") is None
        assert await store.last_reauth("bob", "totp") is None

    async def test_secrets_are_stored_and_replaced(self, store: CredentialStore) -> None:
        assert await store.get_secret("totp:alice") is None
        await store.set_secret("totp:alice", "SECRET1")
        await store.set_secret("totp:alice", "SECRET2")
        assert await store.get_secret("totp:alice") == "SECRET2"
        assert await store.get_secret("totp:bob") is None

    async def test_otp_time_step_is_single_use(self, store: CredentialStore) -> None:
        assert await store.use_otp("totp:alice", 1000)
        assert not await store.use_otp("totp:alice", 1000)
        assert await store.use_otp("totp:alice", 1001)
        assert await store.use_otp("totp:bob", 1000)
        results = await race([lambda: store.use_otp("totp:carol", 7)] * RACERS)
        assert results.count(True) == 1

    async def test_failures_count_in_a_sliding_window_and_clear(
        self, store: CredentialStore, clock: ManualClock
    ) -> None:
        t = clock()
        assert await store.record_failure("alice", t, 900) == 1
        assert await store.record_failure("alice", t + 100, 900) == 2
        assert await store.record_failure("alice", t + 899, 900) == 3
        assert await store.record_failure("alice", t + 950, 900) == 3  # the first fell out
        assert await store.record_failure("bob", t, 900) == 1
        await store.clear_failures("alice")
        assert await store.record_failure("alice", t + 951, 900) == 1
        assert await store.record_failure("bob", t + 1, 900) == 2

    async def test_lockout_is_stored_and_replaced(
        self, store: CredentialStore, clock: ManualClock
    ) -> None:
        assert await store.lockout_until("alice") is None
        await store.set_lockout("alice", clock() + 900)
        assert await store.lockout_until("alice") == clock() + 900
        await store.set_lockout("alice", clock() + 60)
        assert await store.lockout_until("alice") == clock() + 60
        assert await store.lockout_until("bob") is None


class CounterStoreConformance(ContractBase):
    """The :class:`~agentguard.store.base.CounterStore` contract."""

    async def test_satisfies_counter_store_and_open_is_idempotent(
        self, store: CounterStore
    ) -> None:
        assert isinstance(store, CounterStore)
        await store.open()
        await store.open()

    async def test_events_are_counted_in_a_sliding_window(
        self, store: CounterStore, clock: ManualClock
    ) -> None:
        t = clock()
        for offset in (0, 10, 20, 30):
            await store.record_event("agent:bot|secret", t + offset)
        await store.record_event("agent:bot|deploy", t + 30)
        assert await store.count_events("agent:bot|secret", t) == 4
        assert await store.count_events("agent:bot|secret", t + 10) == 3
        assert await store.count_events("agent:bot|secret", t + 31) == 0
        assert await store.count_events("agent:bot|deploy", t) == 1
        assert await store.count_events("nobody", t) == 0

    async def test_first_use_is_true_exactly_once(self, store: CounterStore) -> None:
        assert await store.first_use("agent:bot", "git", "push")
        assert not await store.first_use("agent:bot", "git", "push")
        assert await store.first_use("agent:bot", "git", "pull")
        assert await store.first_use("agent:other", "git", "push")
        results = await race([lambda: store.first_use("agent:x", "s", "t")] * RACERS)
        assert results.count(True) == 1

    async def test_cooldown_is_active_until_its_end(
        self, store: CounterStore, clock: ManualClock
    ) -> None:
        assert await store.get_cooldown("hash-1", clock()) is None
        await store.set_cooldown("hash-1", clock() + 60, "denied by alice")
        assert await store.get_cooldown("hash-1", clock()) == "denied by alice"
        assert await store.get_cooldown("hash-1", clock() + 60) is None
        await store.set_cooldown("hash-1", clock() + 120, "denied by bob")
        assert await store.get_cooldown("hash-1", clock() + 60) == "denied by bob"
        assert await store.get_cooldown("hash-2", clock()) is None


class PinStoreConformance(ContractBase):
    """The :class:`~agentguard.store.base.PinStore` contract."""

    async def test_satisfies_pin_store_and_open_is_idempotent(
        self, store: PinStore
    ) -> None:
        assert isinstance(store, PinStore)
        await store.open()
        await store.open()

    async def test_definitions_are_kept_by_hash_and_never_replaced(self, store: PinStore) -> None:
        assert await store.get_definition("h1") is None
        await store.put_definition("h1", '{"name":"push"}')
        await store.put_definition("h1", '{"name":"other"}')
        await store.put_definition("h2", '{"name":"\u202e"}')
        assert await store.get_definition("h1") == '{"name":"push"}'
        assert await store.get_definition("h2") == '{"name":"\u202e"}'

    async def test_pins_are_stored_replaced_and_listed(self, store: PinStore) -> None:
        assert await store.get_pin("git", "push") is None
        await store.set_pin("git", "push", "h1")
        await store.set_pin("git", "status", "h2")
        await store.set_pin("git", "push", "h3")
        assert await store.get_pin("git", "push") == "h3"
        assert await store.get_pin("other", "push") is None
        assert sorted(await store.list_pins()) == [("git", "push", "h3"), ("git", "status", "h2")]
