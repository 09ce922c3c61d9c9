"""MemoryStore against the store contract."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentguard.store import MemoryStore
from agentguard.testing import ManualClock
from agentguard.testing.store_conformance import StoreConformance


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    async def store(self, clock: ManualClock) -> AsyncIterator[MemoryStore]:
        async with MemoryStore(clock=clock) as store:
            yield store
