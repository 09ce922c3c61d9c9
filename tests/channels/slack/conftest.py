"""Fixtures for the Slack channel tests: a fake Slack Web API on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.channels.slack.fake_slack import FakeSlack


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    """The Slack Web API methods agentguard uses, on 127.0.0.1, recording every call."""
    with FakeSlack() as fake:
        yield fake
