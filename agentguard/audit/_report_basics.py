"""What the report's tables and charts share with the report itself (kept apart so that
neither imports :mod:`agentguard.audit.report`, which draws with them)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from agentguard.sanitize import escape_text

if TYPE_CHECKING:
    from agentguard.audit.report import AuditReport

__all__ = ["OUTCOMES", "median_wait", "parse_at", "show"]

#: Outcomes in the order tables and charts show them.
OUTCOMES: tuple[str, ...] = ("approved", "denied", "expired", "unreachable", "reauth_failed",
                             "invalid", "cancelled", "edited", "pending", "allowed", "shadow")


def median_wait(report: AuditReport) -> tuple[str, dict[str, float]]:
    """The latency figure the charts quote: ``("approved calls", stats)`` from
    :meth:`AuditReport.latency_stats`, or ``("all held calls", stats)`` when nothing was
    approved. ``stats["p50"]`` is the median in milliseconds.

    Raises:
        KeyError: no call was held for approval.
    """
    stats = report.latency_stats()
    if "approved" in stats:
        return "approved calls", stats["approved"]
    return "all held calls", stats["all"]


def parse_at(value: str | None) -> datetime | None:
    """An RFC 3339 ``at`` as an aware datetime (``None`` when absent or unreadable)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def show(value: Any, limit: int = 48) -> str:
    """A log value made safe and short for a table cell or a chart label."""
    text = escape_text(", ".join(map(str, value)) if isinstance(value, list | tuple)
                       else "-" if value is None else str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"
