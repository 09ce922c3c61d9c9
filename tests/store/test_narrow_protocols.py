"""A backend can implement, and be tested against, one narrow store protocol at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from agentguard.store import MemoryStore
from agentguard.store.base import (
    CounterStore,
    CredentialStore,
    GrantStore,
    PinStore,
    RequestStore,
    Store,
)
from agentguard.testing.store_conformance import PinStoreConformance


class DictPinStore:
    """Pins in two dicts: what a newcomer writes to keep pins somewhere of their own."""

    def __init__(self) -> None:
        self.pins: dict[tuple[str, str], str] = {}
        self.definitions: dict[str, str] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def get_pin(self, server: str, tool: str) -> str | None:
        return self.pins.get((server, tool))

    async def set_pin(self, server: str, tool: str, definition_hash: str) -> None:
        self.pins[(server, tool)] = definition_hash

    async def list_pins(self) -> Sequence[tuple[str, str, str]]:
        return sorted((server, tool, h) for (server, tool), h in self.pins.items())

    async def put_definition(self, definition_hash: str, definition: str) -> None:
        self.definitions.setdefault(definition_hash, definition)

    async def get_definition(self, definition_hash: str) -> str | None:
        return self.definitions.get(definition_hash)


class TestDictPinStore(PinStoreConformance):
    @pytest.fixture
    async def store(self) -> AsyncIterator[DictPinStore]:
        yield DictPinStore()


def test_a_pin_store_is_only_a_pin_store() -> None:
    pins = DictPinStore()
    assert isinstance(pins, PinStore)
    assert not isinstance(pins, RequestStore | GrantStore | CredentialStore | CounterStore)
    assert not isinstance(pins, Store)


def test_the_full_store_is_every_narrow_protocol() -> None:
    store = MemoryStore()
    for protocol in (RequestStore, GrantStore, CredentialStore, CounterStore, PinStore, Store):
        assert isinstance(store, protocol)
