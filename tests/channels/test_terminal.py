"""The approver terminal's "decide with" hint: pasteable, and never a database password."""

from __future__ import annotations

import logging

import anyio
import pytest

from agentguard.channels.terminal import TerminalChannel, without_password
from agentguard.types import ApprovalRequest, ApprovalSpec


def _request() -> ApprovalRequest:
    return ApprovalRequest(id="req-1", call={"tool": "deploy", "server": "ops"}, call_hash="h",
                           created_at=0.0, expires_at=60.0, rule_id="r", reason="test",
                           privilege="admin", labels=(), approval=ApprovalSpec())


@pytest.mark.parametrize(("url", "shown", "withheld"), [
    ("postgresql://agent:s3cret@db.internal:5432/guard",
     "postgresql://agent@db.internal:5432/guard", True),
    ("postgresql://:s3cret@db/guard", "postgresql://db/guard", True),
    ("postgresql://agent@db/guard", "postgresql://agent@db/guard", False),
    ("sqlite:////home/a/.agentguard/agentguard.db", "sqlite:////home/a/.agentguard/agentguard.db",
     False),
    ("/tmp/audit.jsonl", "/tmp/audit.jsonl", False),
    ("postgresql://a:b@[::1", "postgresql://a:b@[::1", False),  # unparsable: left to the store
])
def test_without_password(url: str, shown: str, withheld: bool) -> None:
    assert without_password(url) == (shown, withheld)


@pytest.mark.anyio
async def test_a_held_call_never_logs_the_store_password(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    channel = TerminalChannel("postgresql://agent:s3cret@db/guard",
                              audit_hint="postgresql://agent:s3cret@db/guard")
    request = _request()
    assert "s3cret" not in channel.decide_command(request)
    with caplog.at_level(logging.WARNING, "agentguard.channels.terminal"):
        answers = channel.ask(request)
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.05):
                await answers.__anext__()
    text = caplog.text
    assert "s3cret" not in text
    assert "approvals approve req-1 --store postgresql://agent@db/guard" in text
    assert "PGPASSWORD" in text
