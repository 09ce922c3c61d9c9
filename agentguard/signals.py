"""Risk signals: facts about a call that step its requirement up when they fire.

Cheap signals (time windows, networks, principal) are pure; rate and first-use signals read
the store, so the guard evaluates only the signals a matched rule refers to.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from agentguard.policy.matchers import compile_principal
from agentguard.policy.model import DAYS, ScheduleSpec, SignalSpec
from agentguard.store.base import Store
from agentguard.types import Classification, ToolCall

__all__ = ["SignalEvaluator", "in_schedule"]


def in_schedule(spec: ScheduleSpec, at: float) -> bool:
    """True when Unix time ``at`` falls inside the weekly window, in the window's timezone.

    A window belongs to the day it starts on: ``days: [mon], hours: "22:00-02:00"`` runs from
    Monday 22:00 to Tuesday 02:00. Each day's window is one unbroken stretch of time, from the
    first moment the wall clock reads START to the first moment after it that it reads END:
    when clocks go back, a window ending at 01:30 ends at the first 01:30; when they go
    forward past a time, that time is reached the moment the clock jumps over it.

    Raises:
        ValueError: ``at`` is outside the range the calendar can represent.
    """
    zone = ZoneInfo(spec.tz)
    try:
        return _inside(spec, zone, at)
    except (OverflowError, ValueError, OSError) as exc:
        raise ValueError(f"time {at!r} is outside the calendar's range") from exc


def _inside(spec: ScheduleSpec, zone: ZoneInfo, at: float) -> bool:
    today = datetime.fromtimestamp(at, zone).date()
    start_text, end_text = spec.hours.split("-")
    start, end = _clock(start_text), _clock(end_text)
    for day in (today - timedelta(days=1), today, today + timedelta(days=1)):
        if DAYS[day.weekday()] not in spec.days:
            continue
        end_day = day if start < end else day + timedelta(days=1)
        opens = _first_reading(zone, datetime.combine(day, time()) + start)
        closes = _first_reading(zone, datetime.combine(end_day, time()) + end)
        if opens <= at < closes:
            return True
    return False


def _clock(text: str) -> timedelta:
    hours, minutes = (int(part) for part in text.split(":"))
    return timedelta(hours=hours, minutes=minutes)


def _first_reading(zone: ZoneInfo, wall: datetime) -> float:
    """The first Unix time at which the clock in ``zone`` reads ``wall`` or later."""
    earlier = wall.replace(tzinfo=zone, fold=0).timestamp()
    later = wall.replace(tzinfo=zone, fold=1).timestamp()
    if earlier <= later:
        # Unambiguous, or read twice (clocks went back): the first reading.
        return earlier
    # ``wall`` was skipped (clocks went forward): the clock jumps over it at the transition,
    # which lies in (later, earlier]; find the first second with the new offset.
    before = wall.replace(tzinfo=zone, fold=0).utcoffset()
    low, high = later, earlier
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return high


def _networks(cidrs: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def _in_networks(source: str | None, nets: list[Any]) -> bool | None:
    if not source:
        return None
    try:
        addr = ipaddress.ip_address(source)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr in net for net in nets)


class SignalEvaluator:
    """Evaluates named signals of one policy for a call."""

    def __init__(self, signals: Mapping[str, SignalSpec], clock: Callable[[], float]) -> None:
        self.specs = dict(signals)
        self.clock = clock
        self._nets = {
            name: _networks(spec.cidr or spec.outside_cidr or ())
            for name, spec in self.specs.items() if spec.kind in ("cidr", "outside_cidr")
        }
        self._principal = {
            name: compile_principal(spec.principal)
            for name, spec in self.specs.items() if spec.principal is not None
        }
        #: rate signal name -> labels it counts
        self.rate_labels = {
            name: frozenset(spec.rate.labels)
            for name, spec in self.specs.items() if spec.rate is not None
        }

    @staticmethod
    def rate_key(signal: str, principal: str) -> str:
        """Store key under which a rate signal counts one principal's calls."""
        return f"rate|{signal}|{principal}"

    async def record(self, store: Store, call: ToolCall, classification: Classification) -> None:
        """Count this call for every rate signal whose labels it carries."""
        if not self.rate_labels or not classification.labels:
            return
        now = self.clock()
        for name, labels in self.rate_labels.items():
            if labels & classification.labels:
                await store.record_event(self.rate_key(name, call.principal.id), now)

    async def evaluate(
        self, names: Iterable[str], call: ToolCall, store: Store
    ) -> dict[str, bool]:
        """Evaluate the named signals; unknown names raise KeyError (the loader forbids them)."""
        now = self.clock()
        out: dict[str, bool] = {}
        for name in names:
            if name in out:
                continue
            spec = self.specs[name]
            kind = spec.kind
            if kind == "schedule":
                out[name] = in_schedule(spec.schedule, now)  # type: ignore[arg-type]
            elif kind == "outside_schedule":
                out[name] = not in_schedule(spec.outside_schedule, now)  # type: ignore[arg-type]
            elif kind == "cidr":
                out[name] = _in_networks(call.context.source_ip, self._nets[name]) is True
            elif kind == "outside_cidr":
                # An unknown source address is treated as outside: signals fail closed.
                out[name] = _in_networks(call.context.source_ip, self._nets[name]) is not True
            elif kind == "principal":
                out[name] = self._principal[name](call.principal)  # type: ignore[misc]
            elif kind == "rate":
                rate = spec.rate
                assert rate is not None
                count = await store.count_events(
                    self.rate_key(name, call.principal.id), now - rate.per)
                out[name] = count > rate.max
            elif kind == "first_use":
                out[name] = await store.first_use(call.principal.id, call.server, call.tool)
        return out
