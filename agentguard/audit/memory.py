"""In-memory audit sink with the same redaction and hash chain as the JSONL log."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

from agentguard.audit._chain import GENESIS_HASH, seal
from agentguard.audit._group import AuditLedger
from agentguard.audit.redact import Redactor
from agentguard.errors import AuditError

__all__ = ["MemoryAuditLog"]


class MemoryAuditLog:
    """An :class:`~agentguard.audit.base.AuditSink` keeping records in a list (tests, demo).

    Records are chained exactly like :class:`~agentguard.audit.jsonl.JsonlAuditLog` writes
    them, so :func:`~agentguard.audit.verify.verify_records` checks ``events``. Nothing
    survives the process.

    Args:
        redactor: Replaces secrets; defaults to a :class:`Redactor` with a random key.

    Attributes:
        events: The stored records, oldest first (with ``seq``, ``at``, ``prev_hash``,
            ``hash``). Treat them as read-only: editing one breaks the chain, as it should.
    """

    def __init__(self, *, redactor: Redactor | None = None) -> None:
        self._redactor = redactor if redactor is not None else Redactor.ephemeral()
        self._lock = threading.Lock()
        self._closed = False
        self.events: list[dict[str, Any]] = []

    def append(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Redact and chain one event; return the stored record.

        Raises:
            AuditError: the event is not a mapping with a string ``type``, or the log is closed.
        """
        data = self._redactor.prepare(event)
        with self._lock:
            if self._closed:
                raise AuditError("the in-memory audit log is closed")
            last = self.events[-1] if self.events else None
            seq, prev = (last["seq"], last["hash"]) if last else (0, GENESIS_HASH)
            record, _ = seal(data, seq + 1, prev)
            self.events.append(record)
        return record

    def submit(self, event: Mapping[str, Any], ledger: AuditLedger, *,
               written: Callable[[dict[str, Any]], object] | None = None) -> None:
        """Store ``event`` at once (memory needs no group commit) and count it in ``ledger``.

        Raises:
            AuditError: as :meth:`append`, or an earlier record of ``ledger`` failed.
        """
        if ledger.error is not None:
            raise AuditError(f"an earlier audit record of this call was not written "
                             f"({ledger.error}): nothing more is recorded for it")
        record = self.append(event)
        if written is not None:
            with contextlib.suppress(Exception):
                written(record)

    async def append_async(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`append`, for callers of the asynchronous sink interface."""
        return self.append(event)

    def close(self) -> None:
        """Refuse further appends; the records stay readable."""
        with self._lock:
            self._closed = True

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        """The stored records of one ``type``, oldest first."""
        return [e for e in self.events if e.get("type") == event_type]
