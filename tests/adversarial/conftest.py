"""Fixtures of the adversarial suite: the policy under attack, both stores, a real pty."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentguard import Policy
from agentguard.store import MemoryStore, SQLiteStore
from tests.adversarial.helpers import POLICY
from tests.channels.test_console import Pty


@pytest.fixture
def policy() -> Policy:
    """The compiled policy every adversarial test attacks."""
    return Policy.from_yaml(POLICY)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> MemoryStore | SQLiteStore:
    """Each attack runs against the in-memory store and a real SQLite file."""
    return MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "state.db")


@pytest.fixture
def pty() -> Iterator[Pty]:
    """A real pseudo-terminal: the approver's side types into it and reads the screen."""
    term = Pty()
    yield term
    term.close()
