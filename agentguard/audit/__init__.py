"""Tamper-evident audit: a hash-chained log of every interruption, with secrets redacted.

Sinks (:class:`JsonlAuditLog`, :class:`MemoryAuditLog`) implement :class:`AuditSink`: each
event is redacted by a :class:`Redactor`, chained to the previous record by SHA-256 and
written; a failure raises :class:`~agentguard.errors.AuditError`. Sinks that also implement
:class:`GroupCommitSink` make the records of many concurrent calls durable with one sync;
an :class:`AuditLedger` tells a call when all of its records are. :func:`verify_log` finds
edits, deletions, reordering and a cut tail; :func:`read_events`, :func:`tail` and
:func:`format_event` show a log to a human, escaped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentguard._lazy import lazy_getattr

if TYPE_CHECKING:
    from agentguard.audit._chain import GENESIS_HASH
    from agentguard.audit._group import AuditLedger
    from agentguard.audit.base import EVENT_TYPES, AuditSink, GroupCommitSink
    from agentguard.audit.jsonl import JsonlAuditLog
    from agentguard.audit.memory import MemoryAuditLog
    from agentguard.audit.reader import format_event, read_events, tail
    from agentguard.audit.redact import (
        DEFAULT_VALUE_PATTERNS,
        Redactor,
        is_secret_key,
        load_or_create_key,
    )
    from agentguard.audit.verify import (
        Problem,
        VerifyReport,
        repair_head,
        verify_log,
        verify_records,
    )

# What each name is imported from, on first use: a process that only writes the log (the
# proxy) never loads the verifier or the reader.
_SOURCES = {
    "GENESIS_HASH": "agentguard.audit._chain",
    "AuditLedger": "agentguard.audit._group",
    **dict.fromkeys(("EVENT_TYPES", "AuditSink", "GroupCommitSink"), "agentguard.audit.base"),
    "JsonlAuditLog": "agentguard.audit.jsonl",
    "MemoryAuditLog": "agentguard.audit.memory",
    **dict.fromkeys(("format_event", "read_events", "tail"), "agentguard.audit.reader"),
    **dict.fromkeys(("DEFAULT_VALUE_PATTERNS", "Redactor", "is_secret_key",
                     "load_or_create_key"), "agentguard.audit.redact"),
    **dict.fromkeys(("Problem", "VerifyReport", "repair_head", "verify_log", "verify_records"),
                    "agentguard.audit.verify"),
}

__all__ = [
    "DEFAULT_VALUE_PATTERNS",
    "EVENT_TYPES",
    "GENESIS_HASH",
    "AuditLedger",
    "AuditSink",
    "GroupCommitSink",
    "JsonlAuditLog",
    "MemoryAuditLog",
    "Problem",
    "Redactor",
    "VerifyReport",
    "format_event",
    "is_secret_key",
    "load_or_create_key",
    "read_events",
    "repair_head",
    "tail",
    "verify_log",
    "verify_records",
]


__getattr__ = lazy_getattr(__name__, _SOURCES, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
