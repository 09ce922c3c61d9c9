"""The report's charts: sensible time buckets, no bar cut at the axis edge, a latency median
that says which calls it counts and agrees with the tables, and no matplotlib warnings."""

from __future__ import annotations

import io
import statistics
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from matplotlib.patches import Rectangle
from rich.console import Console
from typer.testing import CliRunner

from agentguard.audit import JsonlAuditLog, read_events, verify_log
from agentguard.audit._report_chart import bucket_seconds, figure
from agentguard.audit.report import load_report, median_wait, render_tables, summarise, write_chart
from agentguard.testing import ManualClock
from tests.audit.test_report import _cli, generate

HOUR, DAY, WEEK = 3600, 86400, 7 * 86400
MONDAY = datetime(2026, 1, 12, tzinfo=UTC).timestamp()


@pytest.fixture
async def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    with anyio.fail_after(30):
        await generate(path, tmp_path)
    return path


@pytest.fixture
def no_warnings() -> Iterator[None]:
    """Any warning while drawing (matplotlib's UserWarnings included) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _held(i: int, at: float, outcome: str, waited_s: float, rule: str = "r") -> list[dict]:
    call = {"call_id": f"c{i}", "tool": f"tool-{rule}", "rule_id": rule, "privilege": "write",
            "at": datetime.fromtimestamp(at, UTC).isoformat()}
    settle = ({"type": "call.executed", "approvers": ["alice"]} if outcome == "approved"
              else {"type": f"challenge.{outcome}"})
    return [{**call, "type": "challenge.created"},
            {**call, **settle, "at": datetime.fromtimestamp(at + waited_s, UTC).isoformat(),
             "waited_ms": waited_s * 1000}]


def _svg_text(report, tmp_path: Path, name: str = "r.svg") -> str:
    return write_chart(report, tmp_path / name).read_text()


@pytest.mark.parametrize(("span", "step"), [
    (0, 60), (2, 60), (40 * 60, 60), (2 * HOUR, 300), (6 * HOUR, 900), (DAY, HOUR),
    (3 * DAY, 3 * HOUR), (WEEK, 6 * HOUR), (2 * WEEK, 12 * HOUR), (30 * DAY, DAY),
    (365 * DAY, WEEK)])
def test_bucket_choice(span: float, step: int) -> None:
    assert bucket_seconds(span) == step


def test_a_week_long_log_written_on_the_guards_clock_is_drawn_per_6_hours(
        tmp_path: Path, no_warnings: None) -> None:
    clock = ManualClock(MONDAY)
    sink = JsonlAuditLog(tmp_path / "audit.jsonl", clock=clock)
    for i, (offset, outcome) in enumerate([(0, "approved"), (DAY + 5 * HOUR, "denied"),
                                           (3 * DAY, "expired"), (WEEK - HOUR, "approved")]):
        clock.set(MONDAY + offset)
        for event in _held(i, clock(), outcome, 30):
            sink.append(event)
    sink.close()
    records = list(read_events(tmp_path / "audit.jsonl"))
    assert records[0]["at"] == "2026-01-12T00:00:00.000000Z"  # the sink's clock, not the wall's
    assert records[-1]["at"] == "2026-01-18T23:00:00.000000Z"
    assert verify_log(tmp_path / "audit.jsonl").ok
    # `agentguard audit report`, as a reader would run it on that log
    out = tmp_path / "chart.svg"
    result = CliRunner().invoke(_cli(), ["report", str(tmp_path / "audit.jsonl"), "--out",
                                         str(out)])
    assert result.exit_code == 0, result.output
    assert "2026-01-12 00:00:00 → 2026-01-18 23:00:00 UTC" in result.output
    assert "interruptions over time (per 6 h, UTC)" in out.read_text()


def test_a_log_written_in_one_burst_is_one_minute_not_per_second(
        tmp_path: Path, no_warnings: None) -> None:
    report = summarise(e for i in range(5) for e in _held(i, MONDAY + i * 0.2, "approved", 0.1))
    text = _svg_text(report, tmp_path)
    assert "(per min, UTC)" in text and "per 1 s" not in text


def _bar_ends(ax) -> list[float]:
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    return [p.get_x() + p.get_width() for p in bars]


async def test_no_bar_reaches_past_its_axis(log: Path, no_warnings: None) -> None:
    fig = figure(load_report(log))
    by_rule, by_tool, by_class, over_time, _latency, shadow = fig.axes[:6]
    for ax in (by_rule, by_tool, by_class, shadow):
        ends = _bar_ends(ax)
        assert ends and max(ends) < ax.get_xlim()[1]  # room after the longest bar
    tops = [p.get_y() + p.get_height() for p in over_time.patches]
    assert tops and max(tops) < over_time.get_ylim()[1]


def test_the_longest_bar_is_not_cut_when_its_last_outcomes_are_empty(
        tmp_path: Path, no_warnings: None) -> None:
    # The notebook's case: the longest bar ends in an outcome other bars do not have, so the
    # later (empty) segments of that bar would stack at its very end.
    events = [e for i in range(50) for e in _held(i, MONDAY + i * 60, "approved", 20, "big")]
    events += [e for i in range(3) for e in _held(100 + i, MONDAY + i, "denied", 5, "small")]
    fig = figure(summarise(events))
    by_rule = fig.axes[0]
    assert max(_bar_ends(by_rule)) == 50 and by_rule.get_xlim()[1] > 50


async def test_the_latency_median_is_over_approved_calls_and_agrees_everywhere(
        log: Path, tmp_path: Path, no_warnings: None) -> None:
    records = list(read_events(log))
    # Independently of the report: the waits of held calls a human approved, from the
    # settling records (a re-authentication alone is not an approval).
    held = {e["call_id"] for e in records if e["type"] == "challenge.created"}
    approved = [e["waited_ms"] for e in records
                if e["type"] == "call.executed" and e["call_id"] in held]
    assert sorted(approved) == [12_000, 30_000, 60_000, 240_000]
    expected = statistics.median(approved)  # 45 s; over every held call it would be 60 s
    report = load_report(log)
    which, stats = median_wait(report)
    assert which == "approved calls" and stats["p50"] == expected
    assert report.latency_stats()["all"]["p50"] != expected  # a different population
    svg = _svg_text(report, tmp_path)
    assert "median 45.0 s" in svg and "(approved calls, n=4)" in svg
    buffer = io.StringIO()
    render_tables(report, Console(file=buffer, width=200, color_system=None))
    rows = [line for line in buffer.getvalue().splitlines() if "│" in line]
    approved_row = next(r for r in rows if r.split("│")[1].strip() == "approved"
                        and "45.0 s" in r)
    assert approved_row
    assert any(r.split("│")[1].strip() == "all held" for r in rows)


def test_without_approvals_the_median_says_it_is_over_all_held_calls(tmp_path: Path) -> None:
    report = summarise([*_held(1, MONDAY, "denied", 10), *_held(2, MONDAY + 5, "expired", 300)])
    which, stats = median_wait(report)
    assert which == "all held calls" and stats["p50"] == 155_000
    assert "(all held calls, n=2)" in _svg_text(report, tmp_path)


@pytest.mark.parametrize("suffix", [".png", ".svg", ".html"])
async def test_drawing_warns_about_nothing(log: Path, tmp_path: Path, suffix: str,
                                           no_warnings: None) -> None:
    write_chart(load_report(log), tmp_path / f"report{suffix}")
    write_chart(summarise([]), tmp_path / f"empty{suffix}")
    write_chart(summarise(_held(1, MONDAY, "approved", 3)), tmp_path / f"one{suffix}")
    many = [e for i in range(30) for e in _held(i, MONDAY + i * 900, "approved", 30, f"r{i}")]
    write_chart(summarise(many), tmp_path / f"many{suffix}")


pytestmark = pytest.mark.anyio
