"""Weekly windows: crossing midnight, the day a window belongs to, and DST nights."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from agentguard.policy.model import ScheduleSpec
from agentguard.signals import in_schedule

UTC = ZoneInfo("UTC")
LONDON = ZoneInfo("Europe/London")


def at(text: str, zone: ZoneInfo = UTC, fold: int = 0) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone, fold=fold).timestamp()


def window(hours: str, days: list[str] | None = None, tz: str = "UTC") -> ScheduleSpec:
    return ScheduleSpec(tz=tz, hours=hours, **({"days": days} if days else {}))


# 2026-11-30 is a Monday.
@pytest.mark.parametrize(("moment", "inside"), [
    ("2026-11-30T21:59:59", False),   # Monday, before it opens
    ("2026-11-30T22:00:00", True),    # Monday, opens
    ("2026-11-30T23:59:59", True),
    ("2026-12-01T00:00:00", True),    # Tuesday, Monday's window still open
    ("2026-12-01T01:59:59", True),
    ("2026-12-01T02:00:00", False),   # closes at END
    ("2026-12-01T22:30:00", False),   # Tuesday's own window: Tuesday is not a window day
    ("2026-11-30T01:00:00", False),   # Monday morning belongs to Sunday's window (none)
])
def test_window_crossing_midnight_belongs_to_the_day_it_starts(moment: str, inside: bool) -> None:
    assert in_schedule(window("22:00-02:00", ["mon"]), at(moment)) is inside


def test_sunday_window_runs_into_monday_of_the_next_week() -> None:
    spec = window("23:00-01:00", ["sun"])
    assert in_schedule(spec, at("2026-12-07T00:30:00"))      # Monday 00:30, after Sunday 23:00
    assert not in_schedule(spec, at("2026-12-08T00:30:00"))  # Tuesday 00:30


def test_same_day_window_is_unchanged() -> None:
    spec = window("09:00-17:00", ["mon"])
    assert in_schedule(spec, at("2026-11-30T09:00:00"))
    assert not in_schedule(spec, at("2026-11-30T17:00:00"))
    assert not in_schedule(spec, at("2026-11-29T12:00:00"))
    assert in_schedule(window("00:00-24:00", ["mon"]), at("2026-11-30T23:59:59"))
    assert not in_schedule(window("00:00-24:00", ["mon"]), at("2026-12-01T00:00:00"))


@pytest.mark.parametrize("hours", ["22:00-22:00", "24:00-02:00", "25:00-02:00", "10:60-11:00"])
def test_invalid_hours_are_refused(hours: str) -> None:
    with pytest.raises(ValidationError):
        window(hours)


def test_crossing_window_is_accepted_by_the_model() -> None:
    assert window("22:00-02:00").hours == "22:00-02:00"


# Europe/London: clocks go forward 2026-03-29 01:00 GMT -> 02:00 BST (01:00-02:00 never reads)
# and back 2026-10-25 02:00 BST -> 01:00 GMT (01:00-02:00 reads twice). Both are Sundays.

def test_spring_forward_window_starting_in_the_gap_opens_when_the_clock_jumps() -> None:
    spec = window("01:30-03:00", ["sun"], "Europe/London")
    assert not in_schedule(spec, at("2026-03-29T00:59:59", LONDON))
    assert in_schedule(spec, at("2026-03-29T02:00:00", LONDON))    # first moment after the jump
    assert in_schedule(spec, at("2026-03-29T02:59:59", LONDON))
    assert not in_schedule(spec, at("2026-03-29T03:00:00", LONDON))


def test_spring_forward_window_crossing_midnight_ending_in_the_gap() -> None:
    spec = window("23:00-01:30", ["sat"], "Europe/London")
    assert in_schedule(spec, at("2026-03-28T23:00:00", LONDON))
    assert in_schedule(spec, at("2026-03-29T00:59:59", LONDON))
    # The clock never reads 01:30: the window closes as it jumps past it, at 02:00 BST.
    assert not in_schedule(spec, at("2026-03-29T02:00:00", LONDON))
    assert not in_schedule(spec, at("2026-03-29T02:15:00", LONDON))


def test_spring_forward_night_window_is_an_hour_shorter() -> None:
    spec = window("22:00-06:00", ["sat"], "Europe/London")
    opens, closes = at("2026-03-28T22:00:00", LONDON), at("2026-03-29T06:00:00", LONDON)
    assert closes - opens == 7 * 3600
    assert in_schedule(spec, closes - 1) and not in_schedule(spec, closes)
    assert in_schedule(spec, opens) and not in_schedule(spec, opens - 1)


def test_fall_back_window_ending_in_the_fold_ends_at_the_first_reading() -> None:
    spec = window("22:00-01:30", ["sat"], "Europe/London")
    assert in_schedule(spec, at("2026-10-25T01:29:59", LONDON, fold=0))   # BST
    assert not in_schedule(spec, at("2026-10-25T01:30:00", LONDON, fold=0))
    assert not in_schedule(spec, at("2026-10-25T01:59:59", LONDON, fold=0))
    # The clock reads 01:00-01:30 again (GMT): the window has closed and stays closed.
    assert not in_schedule(spec, at("2026-10-25T01:00:00", LONDON, fold=1))
    assert not in_schedule(spec, at("2026-10-25T01:29:59", LONDON, fold=1))


def test_fall_back_window_starting_in_the_fold_is_one_unbroken_stretch() -> None:
    spec = window("01:30-03:00", ["sun"], "Europe/London")
    assert not in_schedule(spec, at("2026-10-25T01:29:59", LONDON, fold=0))
    assert in_schedule(spec, at("2026-10-25T01:30:00", LONDON, fold=0))
    # After the clocks go back it reads 01:00-01:30 again: still inside, no hole.
    assert in_schedule(spec, at("2026-10-25T01:00:00", LONDON, fold=1))
    assert in_schedule(spec, at("2026-10-25T01:29:59", LONDON, fold=1))
    assert in_schedule(spec, at("2026-10-25T02:59:59", LONDON))
    assert not in_schedule(spec, at("2026-10-25T03:00:00", LONDON))


def test_fall_back_night_window_is_an_hour_longer() -> None:
    spec = window("22:00-06:00", ["sat"], "Europe/London")
    opens, closes = at("2026-10-24T22:00:00", LONDON), at("2026-10-25T06:00:00", LONDON)
    assert closes - opens == 9 * 3600
    assert all(in_schedule(spec, t) for t in range(int(opens), int(closes), 600))
    assert not in_schedule(spec, closes)


def test_times_outside_the_calendar_raise_value_error() -> None:
    with pytest.raises(ValueError, match="outside the calendar"):
        in_schedule(window("22:00-02:00"), at("0001-01-01T00:00:00"))
    with pytest.raises(ValueError, match="outside the calendar"):
        in_schedule(window("22:00-02:00"), 1e20)


@pytest.mark.parametrize("moment", ["0001-01-02T00:00:00", "9999-12-31T12:00:00"])
def test_days_at_the_calendar_edges_raise_value_error(moment: str) -> None:
    spec = window("22:00-02:00", tz="America/New_York")
    with pytest.raises(ValueError, match="outside the calendar"):
        in_schedule(spec, at(moment))


def test_a_window_opening_at_a_midnight_the_clocks_skip() -> None:
    # Havana: 2026-03-08 00:00 CST (-05:00) jumps to 01:00 CDT (-04:00); midnight never reads.
    spec = window("00:00-02:00", ["sun"], "America/Havana")
    assert not in_schedule(spec, at("2026-03-08T04:59:59"))   # Saturday 23:59:59 CST
    assert in_schedule(spec, at("2026-03-08T05:00:00"))       # the jump: Sunday 01:00 CDT
    assert in_schedule(spec, at("2026-03-08T05:59:59"))
    assert not in_schedule(spec, at("2026-03-08T06:00:00"))   # 02:00 CDT
