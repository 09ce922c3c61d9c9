"""Shared fixtures. Package-specific fixtures live in each tests/<part>/conftest.py."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (the backend the MCP SDK and our edges use)."""
    return "asyncio"


def services_required() -> bool:
    """CI sets AGENTGUARD_REQUIRE_SERVICES=1: a missing PostgreSQL is then a failure, not a skip."""
    return os.environ.get("AGENTGUARD_REQUIRE_SERVICES") == "1"
