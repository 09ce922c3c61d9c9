"""Shared fixtures. Package-specific fixtures live in each tests/<part>/conftest.py."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (the backend the MCP SDK and our edges use)."""
    return "asyncio"


def services_required() -> bool:
    """CI sets AGENTGUARD_REQUIRE_SERVICES=1: a missing PostgreSQL or Chromium is then a
    failure, not a skip."""
    return os.environ.get("AGENTGUARD_REQUIRE_SERVICES") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """With AGENTGUARD_REQUIRE_SERVICES=1 (CI), a skipped service test fails instead."""
    outcome = yield
    report = outcome.get_result()
    needs_service = item.get_closest_marker("postgres") or item.get_closest_marker("browser")
    if report.skipped and services_required() and needs_service:
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid}: skipped, but AGENTGUARD_REQUIRE_SERVICES=1 requires it"
