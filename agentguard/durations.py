"""Human durations: ``90s``, ``15m``, ``1h30m``, ``2d`` and bare seconds.

One parser for the policy file, the CLI and the console prompt, so that "approve for 15m"
means the same everywhere.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["format_duration", "parse_duration"]

_UNITS: dict[str, float] = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_ALIASES: dict[str, str] = {
    "s": "s", "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "m": "m", "min": "m", "mins": "m", "minute": "m", "minutes": "m",
    "h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "d": "d", "day": "d", "days": "d",
}  # fmt: skip
_NUMBER = r"\d+(?:\.\d+)?|\.\d+"
_BARE = re.compile(rf"(?:{_NUMBER})")
_PART = re.compile(rf"\s*({_NUMBER})\s*([a-z]+)\s*")
_HINT = "use e.g. 90s, 15m, 1h30m, 2d or a number of seconds"


def _check_seconds(value: float, shown: Any) -> float:
    if not math.isfinite(value):
        raise ValueError(f"duration {shown!r} is not a finite number; {_HINT}")
    if value < 0:
        raise ValueError(f"duration {shown!r} is negative; {_HINT}")
    return float(value)


def parse_duration(text: str | int | float) -> float:
    """Parse a duration into seconds.

    Accepts a bare number of seconds (``900``, ``"900"``, ``1.5``) or a sequence of
    ``<number><unit>`` parts, largest unit first, each unit at most once (``"1h30m"``,
    ``"1h 30m"``, ``"2d"``, ``"90s"``). Units: ``s``, ``m``, ``h``, ``d`` and their long
    forms (``sec``, ``min``, ``hours``...). Case and surrounding spaces are ignored.

    Args:
        text: The duration.

    Returns:
        The duration in seconds (``>= 0``).

    Raises:
        ValueError: the value is empty, negative, not finite or not a duration. ``ValueError``
            (never ``TypeError``) so that pydantic validators report it against the field.
    """
    if isinstance(text, bool):
        raise ValueError(f"duration {text!r} is a boolean, not a duration; {_HINT}")
    if isinstance(text, int | float):
        return _check_seconds(float(text), text)
    if not isinstance(text, str):
        raise ValueError(f"duration must be a string or a number, not {type(text).__name__}")
    value = text.strip().lower()
    if not value:
        raise ValueError(f"duration is empty; {_HINT}")
    if value.startswith("-"):
        raise ValueError(f"duration {text!r} is negative; {_HINT}")
    if _BARE.fullmatch(value):
        return _check_seconds(float(value), text)
    total = 0.0
    seen: list[str] = []
    pos = 0
    while pos < len(value):
        match = _PART.match(value, pos)
        if match is None:
            raise ValueError(f"cannot read duration {text!r}; {_HINT}")
        unit = _ALIASES.get(match.group(2))
        if unit is None:
            raise ValueError(
                f"unknown unit {match.group(2)!r} in duration {text!r}; units are s, m, h, d"
            )
        if seen and _UNITS[unit] >= _UNITS[seen[-1]]:
            raise ValueError(
                f"duration {text!r} must list each unit once, largest first (like 1h30m)"
            )
        seen.append(unit)
        total += float(match.group(1)) * _UNITS[unit]
        pos = match.end()
    return _check_seconds(total, text)


def format_duration(seconds: float) -> str:
    """Format seconds compactly, in a form :func:`parse_duration` reads back.

    Whole seconds are shown as ``2d3h``, ``1h30m``, ``15m``, ``1m30s``, ``45s``, ``0s``;
    durations under a minute keep one decimal when they are not whole (``0.5s``); longer
    ones are rounded to the second.

    Raises:
        ValueError: ``seconds`` is negative or not finite.
    """
    value = _check_seconds(float(seconds), seconds)
    if value < 60 and value != int(value):
        return f"{round(value, 1):g}s"
    remaining = round(value)
    parts: list[str] = []
    for unit, size in _UNITS.items():
        count, remaining = divmod(remaining, int(size))
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
