"""Summarise an audit log: who was challenged for what, outcomes, shadow mode and latency.

:func:`summarise` folds the records of a log into one :class:`CallSummary` per tool call
(the last outcome an event reports wins), from which :class:`AuditReport` counts
interruptions per rule, tool, class, principal and outcome, the calls shadow mode *would*
have challenged, and how long held calls waited for a human. :func:`render_tables` prints
it with rich; :func:`write_chart` draws it to a PNG, an SVG or a self-contained HTML page.

Every string shown comes from the log, i.e. ultimately from an agent or a tool server, so it
is escaped with :func:`agentguard.sanitize.escape_text` and never interpreted as markup.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentguard.audit._report_basics import OUTCOMES, median_wait, parse_at, show
from agentguard.audit.reader import read_events
from agentguard.audit.verify import VerifyReport, verify_log

__all__ = [
    "OUTCOMES",
    "AuditReport",
    "CallSummary",
    "load_report",
    "median_wait",
    "parse_at",
    "render_tables",
    "show",
    "summarise",
    "write_chart",
]

_REFUSED = frozenset({"denied", "expired", "unreachable", "reauth_failed", "invalid",
                      "cancelled"})
# Events that settle a call, and the outcome they mean when they carry none themselves.
_SETTLING = {
    "call.allowed": "allowed", "call.denied": "denied", "call.shadow": "shadow",
    "call.executed": "approved", "challenge.denied": "denied", "challenge.expired": "expired",
    "challenge.unreachable": "unreachable", "challenge.edited": "edited",
    "reauth.failed": "reauth_failed", "reauth.locked": "reauth_failed",
    "call.invalid": "invalid", "challenge.cancelled": "cancelled",
}

Via = Literal["policy", "approval", "reauth", "grant", "shadow"]
GroupBy = Literal["rule", "tool", "class", "principal", "outcome"]


@dataclass(slots=True)
class CallSummary:
    """Everything the log says about one tool call (its events share a ``call_id``)."""

    call_id: str
    at: str | None = None
    """Time of the call's first event (RFC 3339 UTC)."""
    principal: str | None = None
    acting_for: str | None = None
    """The human the principal acts for, when the call said so."""
    server: str | None = None
    tool: str | None = None
    privilege: str | None = None
    labels: tuple[str, ...] = ()
    rule_id: str | None = None
    signals: tuple[str, ...] = ()
    """Signals that fired for this call (``outside_change_window``, ``secret_burst``...)."""
    requirement: str | None = None
    standards: tuple[str, ...] = ()
    outcome: str = "pending"
    """``allowed``, ``approved``, ``denied``, ``expired``, ``unreachable``,
    ``reauth_failed``, ``edited`` (an approver proposed other arguments), ``shadow`` or
    ``pending`` (held, no outcome logged yet)."""
    via: Via = "policy"
    """How it was settled: by the policy alone, a human approval, a re-authentication only,
    a standing grant, or shadow mode (nothing enforced)."""
    decided_by: tuple[str, ...] = ()
    waited_ms: float | None = None
    """How long the call was held, when it was held."""
    would_be: str | None = None
    """Shadow mode: the decision that was not enforced (``require_approval``...)."""
    rejected_votes: int = 0
    """Votes refused because the voter was not an authorised approver."""

    @property
    def interrupted(self) -> bool:
        """True when the call did not simply pass: held for a human, or refused."""
        return self.outcome not in ("allowed", "shadow") or self.via in ("approval", "reauth")

    @property
    def would_challenge(self) -> bool:
        """Shadow mode: True when enforcing the policy would have held or refused the call."""
        return self.outcome == "shadow" and self.would_be not in (None, "allow")


def _tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    return () if value in (None, "") else (str(value),)


def _fold(call: CallSummary, event: Mapping[str, Any]) -> None:
    kind = str(event.get("type", ""))
    if call.at is None:
        call.at = event.get("at")
    for attr, key in (("principal", "principal"), ("acting_for", "acting_for"),
                      ("server", "server"), ("tool", "tool"), ("privilege", "privilege"),
                      ("rule_id", "rule_id"), ("requirement", "requirement")):
        value = event.get(key)
        if value is not None and getattr(call, attr) is None:
            setattr(call, attr, value["id"] if isinstance(value, Mapping) else str(value))
    for attr in ("labels", "signals", "standards"):
        if not getattr(call, attr) and event.get(attr):
            setattr(call, attr, _tuple(event[attr]))
    if kind == "challenge.created":
        call.via = "approval"
    elif kind.startswith("reauth.") and call.via == "policy":
        call.via = "reauth"
    elif kind == "grant.used":
        call.via = "grant"
        call.decided_by = _tuple(event.get("granted_by"))
    elif kind == "call.shadow":
        call.via = "shadow"
        call.would_be = event.get("would_be")
    elif kind == "vote.rejected":
        call.rejected_votes += 1
    if kind in _SETTLING:
        outcome = event.get("outcome") or _SETTLING[kind]
        call.outcome = "shadow" if kind == "call.shadow" else str(outcome)
        if kind == "call.executed":
            call.decided_by = _tuple(event.get("approvers")) or call.decided_by
        elif kind == "challenge.denied":
            call.decided_by = _tuple(event.get("approver"))
        if isinstance(event.get("waited_ms"), int | float) and call.via != "policy":
            call.waited_ms = float(event["waited_ms"])


@dataclass(slots=True)
class AuditReport:
    """A summarised audit log. Build it with :func:`summarise` or :func:`load_report`."""

    calls: list[CallSummary]
    """One entry per tool call, in the order calls first appear in the log."""
    events: int = 0
    event_types: Counter[str] = field(default_factory=Counter)
    first_at: str | None = None
    last_at: str | None = None
    bursts: Counter[tuple[str, str]] = field(default_factory=Counter)
    """``(principal, signal) -> count`` of ``signal.burst`` events (abnormal rates)."""
    chain: VerifyReport | None = None
    """The chain check, when the report was loaded from a file with verification."""
    source: str | None = None

    @property
    def interruptions(self) -> list[CallSummary]:
        """Calls held for a human or refused (shadow-mode calls excluded)."""
        return [c for c in self.calls if c.interrupted]

    @property
    def shadow_calls(self) -> list[CallSummary]:
        """Calls decided in shadow mode."""
        return [c for c in self.calls if c.outcome == "shadow"]

    def counts(self, by: GroupBy) -> dict[str, Counter[str]]:
        """Interruptions grouped by ``rule``, ``tool``, ``class``, ``principal`` or
        ``outcome``: ``{group: Counter(outcome -> calls)}``, largest group first."""
        groups: dict[str, Counter[str]] = {}
        for call in self.interruptions:
            key = _group_key(call, by)
            groups.setdefault(key, Counter())[call.outcome] += 1
        return dict(sorted(groups.items(), key=lambda kv: (-kv[1].total(), kv[0])))

    def shadow_counts(self) -> dict[str, Counter[str]]:
        """Shadow mode, per rule: ``{rule: Counter(would_be -> calls)}`` over every shadow
        decision (``allow`` included, so the share that would have been challenged shows)."""
        groups: dict[str, Counter[str]] = {}
        for call in self.shadow_calls:
            groups.setdefault(call.rule_id or "(defaults)", Counter())[call.would_be or "?"] += 1
        return dict(sorted(groups.items(),
                           key=lambda kv: (-(kv[1].total() - kv[1]["allow"]), kv[0])))

    def latencies_ms(self, outcome: str | None = None) -> list[float]:
        """How long calls held for human approval waited, optionally for one outcome."""
        return [c.waited_ms for c in self.calls
                if c.via == "approval" and c.waited_ms is not None
                and (outcome is None or c.outcome == outcome)]

    def latency_stats(self) -> dict[str, dict[str, float]]:
        """``{outcome: {count, min, p50, p90, max}}`` (milliseconds) plus ``all``."""
        out: dict[str, dict[str, float]] = {}
        outcomes = sorted({c.outcome for c in self.calls if c.via == "approval"},
                          key=_outcome_order)
        for name in [*outcomes, None]:
            values = sorted(self.latencies_ms(name))
            if values:
                out[name or "all"] = {"count": len(values), "min": values[0],
                                      "p50": _quantile(values, 0.5), "p90": _quantile(values, 0.9),
                                      "max": values[-1]}
        return out

    def who(self) -> list[dict[str, Any]]:
        """Who was challenged for what: interruptions grouped by principal, the human it acts
        for, tool, rule and the signals that fired, with outcome counts and deciders."""
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        for c in self.interruptions:
            key = (c.principal, c.acting_for, c.server, c.tool, c.rule_id, c.signals)
            row = rows.setdefault(key, {
                "principal": c.principal, "acting_for": c.acting_for, "server": c.server,
                "tool": c.tool, "rule": c.rule_id, "privilege": c.privilege,
                "signals": list(c.signals), "calls": 0, "outcomes": Counter(),
                "decided_by": Counter()})
            row["calls"] += 1
            row["outcomes"][c.outcome] += 1
            row["decided_by"].update(c.decided_by)
        return sorted(rows.values(), key=lambda r: (-r["calls"], str(r["principal"])))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible summary (``agentguard audit report --json``)."""
        return {
            "source": self.source, "events": self.events, "calls": len(self.calls),
            "interruptions": len(self.interruptions), "first_at": self.first_at,
            "last_at": self.last_at, "event_types": dict(self.event_types),
            "chain": None if self.chain is None else {
                "ok": self.chain.ok, "records": self.chain.records,
                "problems": [f"{p.kind}: {p.detail}" for p in self.chain.problems]},
            "by_rule": _plain(self.counts("rule")), "by_tool": _plain(self.counts("tool")),
            "by_class": _plain(self.counts("class")),
            "by_outcome": dict(Counter(c.outcome for c in self.interruptions)),
            "shadow": _plain(self.shadow_counts()),
            "latency_ms": self.latency_stats(),
            "bursts": [{"principal": p, "signal": s, "count": n}
                       for (p, s), n in self.bursts.items()],
            "who": [r | {"outcomes": dict(r["outcomes"]), "decided_by": dict(r["decided_by"])}
                    for r in self.who()],
        }


def _plain(groups: Mapping[str, Counter[str]]) -> dict[str, dict[str, int]]:
    return {k: dict(v) for k, v in groups.items()}


def _group_key(call: CallSummary, by: GroupBy) -> str:
    value = {"rule": call.rule_id, "tool": call.tool, "class": call.privilege,
             "principal": call.principal, "outcome": call.outcome}[by]
    if by == "tool" and call.server not in (None, "local"):
        value = f"{call.server}/{call.tool}"
    if value is None:
        return "(defaults)" if by == "rule" else "(none)"
    return value


def _outcome_order(outcome: str) -> int:
    return OUTCOMES.index(outcome) if outcome in OUTCOMES else len(OUTCOMES)


def _quantile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def summarise(records: Iterable[Mapping[str, Any]]) -> AuditReport:
    """Fold audit records (oldest first) into a report. Records without a ``call_id``
    (a revoked grant, an approved pin) count only in ``event_types``."""
    calls: dict[str, CallSummary] = {}
    report = AuditReport(calls=[])
    for event in records:
        report.events += 1
        kind = str(event.get("type", "?"))
        report.event_types[kind] += 1
        at = event.get("at")
        if isinstance(at, str):
            report.first_at = report.first_at or at
            report.last_at = at
        if kind == "signal.burst":
            report.bursts[(str(event.get("principal")), str(event.get("signal")))] += 1
        call_id = event.get("call_id")
        if not isinstance(call_id, str):
            continue
        call = calls.get(call_id)
        if call is None:
            call = calls[call_id] = CallSummary(call_id)
            report.calls.append(call)
        _fold(call, event)
    return report


def load_report(path: str | os.PathLike[str], *, verify: bool = True) -> AuditReport:
    """Read and summarise an audit log, checking its hash chain first if ``verify``.

    Args:
        path: A JSONL log, or a ``postgresql://...[?schema=NAME]`` URL of a PostgreSQL log.
        verify: Check the hash chain first.

    Raises:
        AuditError: the log cannot be read or a record is not a JSON object.
    """
    from agentguard.audit._url import is_postgres_url, split_audit_url

    if is_postgres_url(path):
        from agentguard.audit.postgres import read_postgres_events, verify_postgres_log

        dsn, schema = split_audit_url(str(path))
        chain = verify_postgres_log(dsn, schema=schema) if verify else None
        report = summarise(read_postgres_events(dsn, schema=schema))
        source = _describe_url(dsn, schema)
    else:
        chain = verify_log(path) if verify else None
        report = summarise(read_events(path))
        source = os.fspath(path)
    report.chain = chain
    report.source = source
    return report


def _describe_url(dsn: str, schema: str) -> str:
    """A PostgreSQL log named for a human, without its password."""
    from agentguard.store._pg_pool import describe

    return f"{describe(dsn)} schema {schema}"


def render_tables(report: AuditReport, console: Any = None, *, top: int = 15) -> None:
    """Print the report as rich tables (overview, who, by rule/tool/class, shadow, latency).

    Args:
        report: The summarised log.
        console: A ``rich.console.Console`` (default: a new one on stdout).
        top: Rows shown per table; the rest are summed into one "other" line.
    """
    from agentguard.audit._report_tables import print_tables

    print_tables(report, console, top=top)


def write_chart(report: AuditReport, path: str | os.PathLike[str]) -> Path:
    """Draw the report to ``path``; the extension picks the format.

    ``.png``: a raster image. ``.svg``: a vector image. ``.html`` / ``.htm``: one
    self-contained page (no scripts, nothing fetched) with the tables and the charts as
    inline SVG. Needs matplotlib (``pip install 'agentguard[charts]'``).

    Raises:
        ValueError: the extension is none of these.
        ConfigError: matplotlib is not installed.
    """
    from agentguard.audit._report_chart import write

    return write(report, Path(path))
