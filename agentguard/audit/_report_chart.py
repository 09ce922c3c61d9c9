"""Charts for :mod:`agentguard.audit.report`: PNG, SVG, or a self-contained HTML page.

matplotlib is optional (the ``notebooks`` extra) and imported here only. The figure is built
on an explicit Agg canvas, never through pyplot, so drawing a report changes no global
backend state (a notebook's inline plots keep working).
"""

from __future__ import annotations

import html
import io
import math
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agentguard.audit._report_basics import OUTCOMES, median_wait, parse_at, show
from agentguard.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from agentguard.audit.report import AuditReport

__all__ = ["OUTCOME_COLOURS", "bucket_seconds", "figure", "write"]

OUTCOME_COLOURS = {"approved": "#2e9e44", "allowed": "#98d8a0", "denied": "#d62728",
                   "expired": "#ff9f1c", "unreachable": "#9467bd", "reauth_failed": "#8c1c13",
                   "invalid": "#6b4226", "cancelled": "#7f7f7f",
                   "edited": "#1f77b4", "pending": "#aaaaaa", "shadow": "#4c78a8"}
_WOULD_COLOURS = {"require_approval": "#ff9f1c", "require_reauth": "#9467bd",
                  "deny": "#d62728", "allow": "#dddddd"}
# Bucket widths for "over time", in seconds. No bucket under a minute: a log written in a
# burst (a test, a replay) is one moment to a reader, not forty one-second bars.
_STEPS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
_MAX_BUCKETS = 40
# Room above the longest bar, so its end (and the legend) is never cut at the axis edge.
_HEADROOM = 1.08
_TOP = 10
# Text as <text> (small, searchable); no mathtext, so a "$" in a tool name stays a "$";
# a fixed hash salt so the same report gives the same SVG.
_RC: Any = {"svg.fonttype": "none", "text.parse_math": False,
                       "svg.hashsalt": "agentguard", "font.size": 9}


def _matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ConfigError("charts need matplotlib: pip install 'agentguard[charts]'") from exc


def _empty(ax: Axes, title: str, message: str) -> None:
    ax.set_title(title, loc="left", fontweight="bold")
    ax.text(0.5, 0.5, message, ha="center", va="center", color="#777777",
            transform=ax.transAxes)
    ax.set_axis_off()


def _stacked_barh(ax: Axes, groups: dict[str, Counter[str]], title: str) -> None:
    if not groups:
        _empty(ax, title, "no interruptions")
        return
    items = list(groups.items())
    if len(items) > _TOP:
        rest: Counter[str] = sum((c for _, c in items[_TOP - 1:]), Counter())
        items = [*items[: _TOP - 1], (f"other ({len(items) - _TOP + 1})", rest)]
    labels = [show(name, 36) for name, _ in items][::-1]
    _stack(ax, labels, [(o, OUTCOME_COLOURS.get(o), o) for o in OUTCOMES],
           [counts for _, counts in items][::-1])
    ax.set_title(title, loc="left", fontweight="bold")
    ax.set_xlabel("calls")
    ax.legend(fontsize=7, loc="lower right", frameon=False)


def _stack(ax: Axes, labels: list[str], series: list[tuple[str, str | None, str]],
           rows: list[Counter[str]]) -> None:
    """Horizontal stacked bars, one row per label, one segment per (key, colour, legend)."""
    # A zero-width segment is not drawn: matplotlib makes every bar's base a "sticky" limit,
    # so an empty segment stacked at the end of the longest bar pinned the axis to that
    # bar's end and cut it off.
    ax.set_yticks(range(len(labels)), labels)
    left = [0] * len(rows)
    for key, colour, legend in series:
        widths = [counts[key] for counts in rows]
        if any(widths):
            drawn = [i for i, w in enumerate(widths) if w]
            ax.barh(drawn, [widths[i] for i in drawn], left=[left[i] for i in drawn],
                    label=legend, color=colour)
            left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlim(0, max(max(left), 1) * _HEADROOM)
    ax.set_ylim(-0.6, len(labels) - 0.4)
    _integer_ticks(ax.xaxis)


def _integer_ticks(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _over_time(ax: Axes, report: AuditReport) -> None:
    title = "interruptions over time"
    points = [(t, c.outcome) for c in report.interruptions if (t := parse_at(c.at)) is not None]
    if not points:
        _empty(ax, title, "no interruptions")
        return
    start = min(t for t, _ in points)
    step = bucket_seconds((max(t for t, _ in points) - start).total_seconds())
    origin = datetime.fromtimestamp(math.floor(start.timestamp() / step) * step, start.tzinfo)
    buckets: dict[str, Counter[int]] = {}
    for t, outcome in points:
        buckets.setdefault(outcome, Counter())[int((t - origin).total_seconds() // step)] += 1
    count = max(max(b) for b in buckets.values()) + 1
    xs = [origin + timedelta(seconds=i * step) for i in range(count)]
    bottom = [0] * count
    for outcome in OUTCOMES:
        if outcome in buckets:
            heights = [buckets[outcome][i] for i in range(count)]
            drawn = [i for i, h in enumerate(heights) if h]  # see _stack: no empty segments
            # matplotlib's date axis takes datetimes and timedeltas; its stubs say floats.
            ax.bar(cast(Any, [xs[i] for i in drawn]), [heights[i] for i in drawn],
                   bottom=[bottom[i] for i in drawn],
                   width=cast(Any, timedelta(seconds=step * 0.9)),
                   align="edge", label=outcome, color=OUTCOME_COLOURS.get(outcome))
            bottom = [a + b for a, b in zip(bottom, heights, strict=True)]
    ax.set_xlim(cast(Any, xs[0] - timedelta(seconds=step * 0.5)),
                cast(Any, xs[-1] + timedelta(seconds=step * 1.5)))
    ax.set_ylim(0, max(bottom) * _HEADROOM)
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_title(f"{title} (per {_step_name(step)}, {start.tzname() or 'UTC'})", loc="left",
                 fontweight="bold")
    ax.set_ylabel("calls")
    _integer_ticks(ax.yaxis)
    ax.legend(fontsize=7, loc="best", frameon=False)


def bucket_seconds(span: float) -> int:
    """The bucket width (seconds) of the "over time" chart for a log spanning ``span``
    seconds: the narrowest of 1 min, 5 min, 15 min, 1 h, 3 h, 6 h, 12 h, 1 day and 1 week
    that cuts the span into at most 40 buckets (a week: 6 h; a day: 1 h; a burst of
    records written within seconds: one 1-minute bucket)."""
    return next((s for s in _STEPS if span / s <= _MAX_BUCKETS), _STEPS[-1])


def _step_name(seconds: int) -> str:
    for unit, size in (("week", 7 * 86400), ("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}" if seconds // size > 1 else unit
    return f"{seconds} s"


def _latency(ax: Axes, report: AuditReport) -> None:
    title = "approval latency (held → decided)"
    series = [(o, [v / 1000 for v in report.latencies_ms(o)]) for o in OUTCOMES]
    series = [(o, v) for o, v in series if v]
    if not series:
        _empty(ax, title, "no call was held for approval")
        return
    ax.hist([v for _, v in series], bins=20, stacked=True, label=[o for o, _ in series],
            color=[OUTCOME_COLOURS.get(o, "#888888") for o, _ in series])
    # The line marks the median time to *approve* (the number people quote), the same
    # figure as the table's "approved" row and latency_stats(); the label says so, since
    # the median over every held call (expiries at the timeout, unreachable at 0 s) differs.
    which, stats = median_wait(report)
    median = stats["p50"] / 1000
    ax.axvline(median, color="#333333", linestyle="--", linewidth=1)
    ax.annotate(f"median {median:.1f} s\n({which}, n={int(stats['count'])})", (median, 0.97),
                xycoords=("data", "axes fraction"), xytext=(4, 0),
                textcoords="offset points", fontsize=7, va="top")
    ax.set_title(title, loc="left", fontweight="bold")
    ax.set_xlabel("seconds")
    ax.set_ylabel("held calls")
    _integer_ticks(ax.yaxis)
    ax.legend(fontsize=7, loc="upper right", frameon=False)


def _shadow(ax: Axes, report: AuditReport) -> None:
    title = "shadow mode: would have been challenged, per rule"
    groups = list(report.shadow_counts().items())[:_TOP]
    if not groups:
        _empty(ax, title, "no shadow-mode decisions")
        return
    labels = [show(rule, 36) for rule, _ in groups][::-1]
    _stack(ax, labels, [(kind, colour, "passes" if kind == "allow"
                         else f"would {kind.replace('_', ' ')}")
                        for kind, colour in _WOULD_COLOURS.items()],
           [counts for _, counts in groups][::-1])
    ax.set_title(title, loc="left", fontweight="bold")
    ax.set_xlabel("calls")
    ax.legend(fontsize=7, loc="lower right", frameon=False)


def figure(report: AuditReport) -> Figure:
    """The report as one matplotlib figure (six panels), on an Agg canvas."""
    _matplotlib()
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with rc_context(_RC):
        fig = Figure(figsize=(13, 13), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(3, 2)
        _stacked_barh(axes[0][0], report.counts("rule"), "interruptions by rule")
        _stacked_barh(axes[0][1], report.counts("tool"), "interruptions by tool")
        _stacked_barh(axes[1][0], report.counts("class"), "interruptions by privilege class")
        _over_time(axes[1][1], report)
        _latency(axes[2][0], report)
        _shadow(axes[2][1], report)
        fig.suptitle(f"agentguard audit report: {len(report.interruptions)} interruptions among "
                     f"{len(report.calls)} logged calls", fontweight="bold", fontsize=12)
    return fig


def _svg(fig: Figure) -> str:
    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context(_RC):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML declaration and DOCTYPE for inlining


def _table(headers: list[str] | None, rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers or ())
    body = "".join("<tr>" + "".join(f"<td>{html.escape(show(v, 80))}</td>" for v in row)
                   + "</tr>" for row in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _counts_text(counts: Counter[str]) -> str:
    return ", ".join(f"{o} {n}" for o, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _html(report: AuditReport, svg: str) -> str:
    chain = ("not checked" if report.chain is None else
             f"intact ({report.chain.records} records)" if report.chain.ok else
             f"BROKEN: {len(report.chain.problems)} problem(s)")
    overview = _table(None, [
        ["log", report.source or "(records)"], ["chain", chain],
        ["period", f"{report.first_at or '-'} → {report.last_at or '-'}"],
        ["events", report.events],
        ["calls", f"{len(report.calls)} seen, {len(report.interruptions)} interrupted, "
                  f"{len(report.shadow_calls)} in shadow mode"]])
    who = _table(["principal", "for", "tool", "rule", "signals", "calls", "outcomes",
                  "decided by"],
                 [[r["principal"], r["acting_for"], r["tool"], r["rule"], r["signals"],
                   r["calls"], _counts_text(r["outcomes"]), list(r["decided_by"]) or None]
                  for r in report.who()[:50]])
    grouped = "".join(
        f"<h2>interruptions by {by}</h2>" + _table(
            [by, "total", "outcomes"],
            [[name, c.total(), _counts_text(c)] for name, c in report.counts(by).items()])
        for by in ("rule", "tool", "class"))
    shadow = _table(["rule", "decisions", "would challenge", "would be"],
                    [[rule, c.total(), c.total() - c["allow"], _counts_text(c)]
                     for rule, c in report.shadow_counts().items()])
    latency = _table(["outcome", "held", "min ms", "median ms", "p90 ms", "max ms"],
                     [["all held" if o == "all" else o, int(s["count"]),
                       *(f"{s[k]:.0f}" for k in ("min", "p50", "p90", "max"))]
                      for o, s in report.latency_stats().items()])
    style = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0 1.5em}"
             "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.9em}"
             "th{background:#f3f3f3}svg{max-width:100%;height:auto}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" "
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>agentguard audit report</title><style>{style}</style></head><body>"
        f"<h1>agentguard audit report</h1>{overview}"
        f"<h2>charts</h2><figure>{svg}</figure>"
        f"<h2>who was interrupted, for what</h2>{who}{grouped}"
        f"<h2>shadow mode</h2>{shadow}<h2>approval latency</h2>{latency}"
        "</body></html>\n"
    )


def write(report: AuditReport, path: Path) -> Path:
    """Write the chart file; the suffix (``.png``, ``.svg``, ``.html``/``.htm``) picks the
    format."""
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg", ".html", ".htm"):
        raise ValueError(f"{path}: use a .png, .svg or .html file name for the chart")
    fig = figure(report)
    if suffix == ".png":
        from matplotlib import rc_context

        with rc_context(_RC):
            fig.savefig(path, format="png", dpi=100)
    elif suffix == ".svg":
        path.write_text(_svg(fig), encoding="utf-8")
    else:
        path.write_text(_html(report, _svg(fig)), encoding="utf-8")
    return path
