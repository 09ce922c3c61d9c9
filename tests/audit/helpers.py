"""Shared helpers for the audit tests."""

from __future__ import annotations

from pathlib import Path

from agentguard.audit import JsonlAuditLog, Redactor

KEY = b"audit-test-key-0123456789abcdef!"


def event(i: int, **extra: object) -> dict[str, object]:
    """A guard-shaped event."""
    return {
        "type": "challenge.created",
        "call_id": f"c{i}",
        "principal": "agent:support-bot",
        "server": "vault",
        "tool": "secrets.read",
        "privilege": "privileged",
        "rule_id": "prod-secrets",
        "reason": "secrets under prod/** are privileged",
        "outcome": "held",
        "args": {"path": f"prod/db/{i}"},
        **extra,
    }


def write_log(path: Path, n: int) -> list[dict[str, object]]:
    """Append ``n`` events to a fresh JSONL log; return the stored records."""
    with JsonlAuditLog(path, redactor=Redactor(KEY)) as log:
        return [log.append(event(i)) for i in range(n)]


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)
