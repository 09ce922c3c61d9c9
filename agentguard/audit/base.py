"""Audit sink protocol and the event shape every sink receives."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from agentguard.audit._group import AuditLedger

__all__ = ["EVENT_TYPES", "AuditSink", "GroupCommitSink"]

#: Event types written by the guard. ``call.allowed`` only when the policy logs allows.
EVENT_TYPES = frozenset({
    "call.allowed",       # allowed without interruption (only if logging allows)
    "call.denied",        # refused by policy, cooldown, or an error (fail closed)
    "call.invalid",       # arguments did not fit the tool's schema: refused before any rule
    "call.shadow",        # shadow mode: what would have happened
    "challenge.created",  # a call was held: approval and/or reauth required
    "challenge.edited",   # an approver proposed other arguments: a new call, decided afresh
    "challenge.denied",
    "challenge.expired",
    "challenge.unreachable",
    "challenge.cancelled",  # the caller gave up (cancelled, disconnected): no vote revives it
    "challenge.pending",    # a durable hold: the caller stopped waiting, the request lives on
    "challenge.approved",   # approved ahead of its run: a single-use grant for the exact call
    "challenge.unverified",  # the store said approved without enough valid signed votes
    "vote.rejected",      # an approver who is not authorised tried to decide
    "reauth.verified",
    "reauth.failed",
    "reauth.locked",
    "grant.created",
    "grant.used",
    "grant.revoked",
    "call.executed",      # an approved call was claimed and handed to the tool
    "signal.burst",       # abnormal rate of sensitive calls
    "signal.flood",       # approval fatigue: duplicate, too many pending, or too many requests
    "pin.changed",        # an MCP tool definition changed (rug pull)
    "pin.approved",
    "audit.checkpoint",   # a service-key signature over (first, seq, hash) of this chain
    "audit.rotated",      # first record of a chain that continues a rotated log
    "audit.reset",        # first record of a chain that replaced a broken log (documented)
})


@runtime_checkable
class AuditSink(Protocol):
    """Append-only audit log.

    ``append`` receives a flat JSON-compatible mapping (at least ``type``; usually
    ``call_id``, ``principal``, ``server``, ``tool``, ``privilege``, ``labels``, ``rule_id``,
    ``reason``, ``signals``, ``requirement``, ``outcome``, ``approver``, ``request_id``,
    ``args`` and timings). The sink adds ``seq``, ``at``, ``prev_hash`` and ``hash``,
    redacts secrets, and must raise ``AuditError`` when the write fails: the guard then
    refuses privileged calls.

    ``append`` is synchronous: it returns once the record is written (and, for a sink that
    syncs, durable). The guard uses it only for sinks without :class:`GroupCommitSink`.
    """

    def append(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """Write one event; return the stored record (with seq and hash)."""

    def close(self) -> None:
        """Flush and release the log."""


@runtime_checkable
class GroupCommitSink(AuditSink, Protocol):
    """An :class:`AuditSink` that also makes concurrent records durable in groups.

    The guard gives each call an :class:`~agentguard.audit._group.AuditLedger`, queues the
    call's records into it with ``submit`` without waiting, and before the call goes on awaits
    ``ledger.durable()``: one write and one sync (or one transaction) then covers the records
    of many concurrent calls, and a record that was not written refuses its call. After a
    failed group write nothing of the group is in the log, and the sink must refuse further
    records of every ledger that had one in it (see :mod:`agentguard.audit._group`).
    """

    def submit(self, event: Mapping[str, Any], ledger: AuditLedger, *,
               written: Callable[[dict[str, Any]], object] | None = None) -> None:
        """Redact and queue one event for the next group; never wait for I/O. ``written``
        (if given) is called with the stored record once it is durable.

        Raises:
            AuditError: the event is malformed, the sink is closed, or ``ledger`` failed.
        """

    async def append_async(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """Group-commit one event; return the stored record once it is durable."""
