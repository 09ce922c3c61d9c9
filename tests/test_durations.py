"""Durations: one parser for policy files, the CLI and the console prompt."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("15m", 900),
        ("1h", 3600),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("2d", 172800),
        ("1d2h3m4s", 93784),
        ("1.5h", 5400),
        ("900", 900),
        (" 15M ", 900),
        ("10 minutes", 600),
        ("2 hours", 7200),
        ("0", 0),
        (900, 900),
        (2.5, 2.5),
    ],
)
def test_parse_duration_accepts(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("-5m", "negative"),
        (-1, "negative"),
        (-0.5, "negative"),
        ("5x", "unknown unit"),
        ("15ms", "unknown unit"),
        ("1h30", "cannot read"),
        ("m", "cannot read"),
        ("30m1h", "largest first"),
        ("1h1h", "largest first"),
        ("abc", "cannot read"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        ("inf", "cannot read"),
        (True, "boolean"),
        (None, "string or a number"),
        ([5], "string or a number"),
    ],
)
def test_parse_duration_rejects_with_clear_message(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (90, "1m30s"),
        (900, "15m"),
        (3600, "1h"),
        (5400, "1h30m"),
        (172800, "2d"),
        (93784, "1d2h3m4s"),
        (0.5, "0.5s"),
        (59.4, "59.4s"),
        (90.4, "1m30s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf])
def test_format_duration_rejects(bad: float) -> None:
    with pytest.raises(ValueError):
        format_duration(bad)


@given(st.integers(min_value=0, max_value=10**9))
def test_format_then_parse_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
