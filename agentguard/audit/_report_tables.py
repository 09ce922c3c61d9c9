"""Rich tables for :mod:`agentguard.audit.report` (terminal output of ``audit report``)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from agentguard.audit._report_basics import OUTCOMES, parse_at, show

if TYPE_CHECKING:
    from agentguard.audit.report import AuditReport

__all__ = ["OUTCOME_STYLE", "outcomes_text", "print_tables"]

OUTCOME_STYLE = {"approved": "green", "allowed": "green", "denied": "red", "expired": "yellow",
                 "unreachable": "magenta", "reauth_failed": "bold red", "edited": "cyan",
                 "invalid": "yellow", "cancelled": "dim",
                 "pending": "dim", "shadow": "blue"}


def _cell(value: Any, limit: int = 48) -> Text:
    # Text, not str: rich would read "[...]" in a tool name as markup.
    return Text(show(value, limit))


def outcomes_text(counts: Counter[str]) -> Text:
    """``approved 3 · denied 1``, each outcome in its colour."""
    text = Text()
    for outcome in sorted(counts, key=lambda o: OUTCOMES.index(o) if o in OUTCOMES else 99):
        if text:
            text.append(" · ", style="dim")
        text.append(f"{show(outcome)} {counts[outcome]}", style=OUTCOME_STYLE.get(outcome, ""))
    return text


def _limit(rows: list[Any], top: int) -> tuple[list[Any], list[Any]]:
    return rows[:top], rows[top:]


def _overview(report: AuditReport) -> Table:
    table = Table(show_header=False, title="audit report", title_justify="left", box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("log", _cell(report.source or "(records)", 100))
    if report.chain is not None:
        chain = (Text(f"intact ({report.chain.records} records)", style="green")
                 if report.chain.ok else
                 Text(f"BROKEN: {len(report.chain.problems)} problem(s); run "
                      "`agentguard audit verify`", style="bold red"))
        table.add_row("chain", chain)
    first, last = parse_at(report.first_at), parse_at(report.last_at)
    span = f"{first:%Y-%m-%d %H:%M:%S} → {last:%Y-%m-%d %H:%M:%S} UTC" if first and last else "-"
    table.add_row("period", span)
    table.add_row("events", str(report.events))
    held = sum(1 for c in report.calls if c.via == "approval")
    table.add_row("calls", f"{len(report.calls)} seen, {len(report.interruptions)} interrupted "
                           f"({held} held for approval), {len(report.shadow_calls)} in shadow mode")
    table.add_row("outcomes", outcomes_text(Counter(c.outcome for c in report.interruptions)))
    return table


def _who(report: AuditReport, top: int) -> Table:
    table = Table("principal", "for", "tool", "rule", "signals", "calls", "outcomes",
                  "decided by", title="who was interrupted, for what", title_justify="left")
    shown, rest = _limit(report.who(), top)
    for row in shown:
        tool = row["tool"] if row["server"] in (None, "local") else f"{row['server']}/{row['tool']}"
        deciders = ", ".join(f"{d} ×{n}" if n > 1 else d for d, n in row["decided_by"].items())
        table.add_row(_cell(row["principal"], 32), _cell(row["acting_for"], 24),
                      _cell(tool, 40), _cell(row["rule"], 32), _cell(row["signals"], 48),
                      str(row["calls"]), outcomes_text(row["outcomes"]),
                      _cell(deciders or None, 40))
    if rest:
        table.add_row(Text(f"… {len(rest)} more", style="dim"), "", "", "", "",
                      str(sum(r["calls"] for r in rest)), "", "")
    return table


def _grouped(report: AuditReport, by: str, title: str, top: int) -> Table:
    groups = list(report.counts(by).items())  # type: ignore[arg-type]
    present = [o for o in OUTCOMES if any(c[o] for _, c in groups)]
    table = Table(by, "total", *present, title=title, title_justify="left")
    for column in table.columns[1:]:
        column.justify = "right"
    shown, rest = _limit(groups, top)
    for name, counts in shown:
        table.add_row(_cell(name), str(counts.total()),
                      *[Text(str(counts[o]) if counts[o] else "·",
                             style=OUTCOME_STYLE.get(o, "") if counts[o] else "dim")
                        for o in present])
    if rest:
        other: Counter[str] = sum((c for _, c in rest), Counter())
        table.add_row(Text(f"other ({len(rest)})", style="dim"), str(other.total()),
                      *[str(other[o]) for o in present])
    return table


def _shadow(report: AuditReport, top: int) -> Table:
    table = Table("rule", "decisions", "would challenge", "need approval", "need re-auth",
                  "would deny", title="shadow mode: what enforcing would have done",
                  title_justify="left")
    for column in table.columns[1:]:
        column.justify = "right"
    shown, rest = _limit(list(report.shadow_counts().items()), top)
    for rule, counts in shown:
        would = counts.total() - counts["allow"]
        table.add_row(_cell(rule), str(counts.total()),
                      Text(str(would), style="bold yellow" if would else "dim"),
                      str(counts["require_approval"]), str(counts["require_reauth"]),
                      str(counts["deny"]))
    if rest:
        table.add_row(Text(f"… {len(rest)} more rules", style="dim"), "", "", "", "", "")
    return table


def _latency(report: AuditReport) -> Table:
    table = Table("outcome", "held", "min", "median", "p90", "max",
                  title="approval latency (held → decided)", title_justify="left")
    for column in table.columns[1:]:
        column.justify = "right"
    for outcome, stats in report.latency_stats().items():
        # "all" is every held call, expiries and unreachable channels included: say so, so
        # its median is not read as the time people take to approve (the "approved" row).
        label = "all held" if outcome == "all" else outcome
        table.add_row(Text(label, style=OUTCOME_STYLE.get(outcome, "bold")),
                      str(int(stats["count"])),
                      *[_duration(stats[k]) for k in ("min", "p50", "p90", "max")])
    return table


def _bursts(report: AuditReport, top: int) -> Table:
    table = Table("principal", "signal", "burst events", title="abnormal rates (signal.burst)",
                  title_justify="left")
    for (principal, signal), count in report.bursts.most_common(top):
        table.add_row(_cell(principal), _cell(signal), str(count))
    return table


def _duration(ms: float) -> str:
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def print_tables(report: AuditReport, console: Console | None = None, *, top: int = 15) -> None:
    """Print every table that has something to say."""
    out = console or Console()
    out.print(_overview(report))
    if report.interruptions:
        out.print(_who(report, top))
        out.print(_grouped(report, "rule", "interruptions by rule", top))
        out.print(_grouped(report, "tool", "interruptions by tool", top))
        out.print(_grouped(report, "class", "interruptions by privilege class", top))
    else:
        out.print(Text("no interruptions in this log", style="dim"))
    if report.shadow_calls:
        out.print(_shadow(report, top))
    if report.latency_stats():
        out.print(_latency(report))
    if report.bursts:
        out.print(_bursts(report, top))
