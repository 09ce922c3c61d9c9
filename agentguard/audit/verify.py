"""Verify an audit log's hash chain: edits, deletions, reordering and a truncated tail.

``verify_log`` streams the file (memory stays flat for any size) and does not stop writers:
it reads the head and the log size under a brief shared lock, then checks exactly the bytes
that existed at that moment.

Problem kinds:

* ``malformed`` a line is not a sealed record (not JSON, missing fields, no newline);
* ``edited`` a record's hash does not match its content, or the line was reformatted;
* ``deleted`` ``seq`` jumps forward: records are missing;
* ``reordered`` a record appears after a later one;
* ``duplicate`` a record appears twice in a row;
* ``chain_broken`` ``prev_hash`` is not the previous record's hash (a record was rewritten
  and re-hashed, or one was inserted);
* ``truncated`` the head file says the log had more than it has;
* ``head_mismatch`` the record the head names has a different hash;
* ``head_behind`` the log has records after the one the head names (an append was interrupted
  between log and head, or records were written around the sink);
* ``head_missing`` (warning) there is no head file, so a cut tail cannot be detected;
* ``head_malformed`` the head file is unreadable.
"""

from __future__ import annotations

import fcntl
import os
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentguard.audit._chain import (
    GENESIS_HASH,
    ChainError,
    check_line,
    check_record,
    head_path,
)
from agentguard.audit.jsonl import format_head, parse_head
from agentguard.errors import AuditError

__all__ = ["Problem", "VerifyReport", "repair_head", "verify_log", "verify_records"]

_MAX_GAPS = 64
#: Longest line verify reads whole; longer ones are reported as malformed, not loaded.
MAX_LINE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a log."""

    seq: int | None
    """``seq`` of the record concerned, when known."""
    line: int | None
    """1-based line number in the file (``None`` for the head or in-memory records)."""
    kind: str
    """What is wrong (see the module docstring)."""
    detail: str
    """One sentence for a human."""
    severity: Literal["error", "warning"] = "error"


@dataclass(slots=True)
class VerifyReport:
    """Result of a verification."""

    ok: bool
    """``True`` when no problem (other than an allowed warning) was found."""
    records: int
    """Number of lines that parsed as records."""
    problems: list[Problem] = field(default_factory=list)
    last_seq: int = 0
    """Highest ``seq`` in the chain."""
    last_hash: str = GENESIS_HASH
    """Hash of that record: note it somewhere else to anchor the log."""
    unlisted: int = 0
    """Problems found beyond ``max_problems`` and not listed."""


class _Checker:
    """Feeds records one by one and keeps only what the next check needs."""

    def __init__(self, max_problems: int) -> None:
        self.max_problems = max_problems
        self.problems: list[Problem] = []
        self.unlisted = 0
        self.records = 0
        self.last_seq = 0
        self.last_hash = GENESIS_HASH
        self.watch: int | None = None  # a seq whose hash we must remember (the head's)
        self.watched_hash: str | None = None
        self.expect: dict[int, str] = {}  # anchors kept elsewhere: seq -> hash
        self.expected_seen: set[int] = set()
        self._unparsed = 0  # malformed lines since the last record: they may be the "gap"
        self._gaps: deque[list[Any]] = deque(maxlen=_MAX_GAPS)  # [low, high, problem]

    def add(self, problem: Problem) -> None:
        if len(self.problems) < self.max_problems:
            self.problems.append(problem)
        else:
            self.unlisted += 1

    def bad(self, line: int | None, error: ChainError) -> None:
        """Report a bad record; an edited one still counts for the chain around it."""
        if error.record is None:
            self._unparsed += 1
            self.add(Problem(None, line, error.kind, error.detail))
            return
        self.add(Problem(error.record["seq"], line, error.kind, error.detail))
        self.record(error.record, line)

    def record(self, record: dict[str, Any], line: int | None) -> None:
        self.records += 1
        seq, prev = record["seq"], record["prev_hash"]
        expected = self.last_seq + 1
        if seq == self.watch:
            self.watched_hash = record["hash"]
        anchor = self.expect.get(seq)
        if anchor is not None:
            self.expected_seen.add(seq)
            if record["hash"] != anchor:
                self.add(Problem(seq, line, "anchor_mismatch", (
                    f"record {seq} has hash {record['hash'][:16]}..., not the "
                    f"{anchor[:16]}... noted elsewhere: the log was rewritten")))
        if seq == expected:
            if prev != self.last_hash:
                self.add(Problem(seq, line, "chain_broken", (
                    f"prev_hash is not the hash of record {self.last_seq}: a record was "
                    "rewritten and re-hashed, or this one was inserted")))
        elif seq > expected:
            if seq - expected > self._unparsed:
                problem = Problem(seq, line, "deleted", _missing(expected, seq - 1))
                self.add(problem)
                self._gaps.append([expected, seq - 1, problem])
        elif seq == self.last_seq and record["hash"] == self.last_hash:
            self.add(Problem(seq, line, "duplicate", f"record {seq} appears twice"))
        else:
            self._fill_gap(seq)
            self.add(Problem(seq, line, "reordered",
                             f"record {seq} appears after record {self.last_seq}"))
        self._unparsed = 0
        if seq > self.last_seq:
            self.last_seq, self.last_hash = seq, record["hash"]

    def _fill_gap(self, seq: int) -> None:
        """A record reported missing turned up later: it was moved, not deleted."""
        for gap in self._gaps:
            low, high, problem = gap
            if not low <= seq <= high:
                continue
            if seq == low:
                gap[0] += 1
            elif seq == high:
                gap[1] -= 1
            if gap[0] > gap[1] and problem in self.problems:
                self.problems.remove(problem)
                self._gaps.remove(gap)
            elif problem in self.problems:
                fresh = Problem(problem.seq, problem.line, "deleted", _missing(gap[0], gap[1]))
                self.problems[self.problems.index(problem)] = fresh
                gap[2] = fresh
            return

    def check_anchors(self) -> None:
        """Every anchored record must still be there (a cut or wiped log loses them)."""
        for seq in sorted(set(self.expect) - self.expected_seen):
            self.add(Problem(seq, None, "truncated", (
                f"record {seq}, noted elsewhere with hash {self.expect[seq][:16]}..., is "
                "gone: the log was cut or replaced")))

    def report(self, *, allow_warnings: bool = False) -> VerifyReport:
        bad = [p for p in self.problems if p.severity == "error" or not allow_warnings]
        return VerifyReport(
            ok=not bad and not self.unlisted, records=self.records, problems=self.problems,
            last_seq=self.last_seq, last_hash=self.last_hash, unlisted=self.unlisted,
        )


def _missing(low: int, high: int) -> str:
    if low == high:
        return f"record {low} is missing"
    return f"records {low} to {high} are missing"


def verify_records(
    records: Iterable[Mapping[str, Any]], *, max_problems: int = 1000,
) -> VerifyReport:
    """Verify records held in memory (``MemoryAuditLog.events``, or parsed elsewhere)."""
    checker = _Checker(max_problems)
    for record in records:
        try:
            checked, _ = check_record(dict(record) if isinstance(record, Mapping) else record)
        except ChainError as error:
            checker.bad(None, error)
        else:
            checker.record(checked, None)
    return checker.report()


def _snapshot(path: str, *, lock: bool) -> tuple[bytes | None, int]:
    """Read the head file and the log size together, under a shared lock unless ``lock``
    is false (the caller holds the writers' lock already)."""
    with open(path, "rb") as log:
        if lock:
            fcntl.flock(log.fileno(), fcntl.LOCK_SH)
        try:
            with open(head_path(path), "rb") as head:
                data: bytes | None = head.read(200)
        except FileNotFoundError:
            data = None
        # Closing the log releases the shared lock.
        return data, os.fstat(log.fileno()).st_size


def verify_log(
    path: str | os.PathLike[str], *, allow_missing_head: bool = False, max_problems: int = 1000,
    expect: Mapping[int, str] | None = None,
) -> VerifyReport:
    """Verify a JSONL audit log and its head file, streaming.

    Args:
        path: The log.
        allow_missing_head: Accept a log without a head file (``head_missing`` is still
            listed, as a warning). A cut tail cannot be detected then.
        max_problems: List at most this many problems; the rest are counted in ``unlisted``.
        expect: Anchors noted outside the log (``seq -> hash``, e.g. from an earlier
            ``audit verify`` shipped elsewhere): each record must still be there with that
            hash. This catches what the chain alone cannot: a tail cut together with its
            head file, or a log wiped and started again.

    Raises:
        AuditError: neither the log nor its head exists, or the log cannot be read.
    """
    return _verify(os.fspath(path), allow_missing_head, max_problems, lock=True,
                   expect=expect)


def _verify(target: str, allow_missing_head: bool, max_problems: int, *, lock: bool,
            expect: Mapping[int, str] | None = None) -> VerifyReport:
    checker = _Checker(max_problems)
    checker.expect = dict(expect or {})
    try:
        try:
            head_data, size = _snapshot(target, lock=lock)
        except FileNotFoundError:
            if not os.path.exists(head_path(target)):
                raise
            checker.add(Problem(None, None, "truncated", "the log file is gone; its head remains"))
            return checker.report()
        head = _head(checker, head_data, size)
        if head is not None:
            checker.watch = head[0]
        with open(target, "rb") as log:
            _scan(checker, log, size)
    except OSError as exc:
        raise AuditError(f"cannot read audit log {target}: {exc}") from exc
    if head is not None:
        _compare_head(checker, head, size)
    checker.check_anchors()
    return checker.report(allow_warnings=allow_missing_head)


def _head(checker: _Checker, data: bytes | None, size: int) -> tuple[int, str, int] | None:
    if data is None or (not data and size):
        checker.add(Problem(None, None, "head_missing", (
            "no head file: a cut tail cannot be detected (repair_head writes one after a "
            "clean verify)"), severity="warning"))
        return None
    try:
        return parse_head(data) or (0, GENESIS_HASH, 0)
    except ValueError as exc:
        checker.add(Problem(None, None, "head_malformed", str(exc)))
        return None


def _scan(checker: _Checker, log: Any, size: int) -> None:
    """Check each line among the first ``size`` bytes, holding one line at a time."""
    consumed = number = 0
    while consumed < size:
        raw = log.readline(min(MAX_LINE + 1, size - consumed))
        if not raw:
            break  # the file shrank under us; the head comparison reports it
        consumed += len(raw)
        number += 1
        if len(raw) > MAX_LINE:
            while raw and not raw.endswith(b"\n") and consumed < size:  # skip the rest
                raw = log.readline(min(MAX_LINE, size - consumed))
                consumed += len(raw)
            checker.bad(number, ChainError("malformed", f"line longer than {MAX_LINE} bytes"))
            continue
        try:
            record = check_line(raw)
        except ChainError as error:
            checker.bad(number, error)
        else:
            checker.record(record, number)


def _compare_head(checker: _Checker, head: tuple[int, str, int], size: int) -> None:
    seq, digest, head_size = head
    if checker.last_seq < seq:
        checker.add(Problem(checker.last_seq or None, None, "truncated", (
            f"the head says the log ends at record {seq} ({head_size} bytes); it ends at "
            f"record {checker.last_seq} ({size} bytes)")))
    elif checker.watched_hash is not None and checker.watched_hash != digest:
        checker.add(Problem(seq, None, "head_mismatch",
                            f"record {seq} does not have the hash the head file holds"))
    elif checker.last_seq > seq:
        checker.add(Problem(seq, None, "head_behind", (
            f"the log continues after record {seq}, where the head says it ends: an append "
            "was interrupted, or records were written around the sink")))
    elif size != head_size and not checker.problems:
        # Any edit of a line is reported above; a size alone differing is still a change.
        checker.add(Problem(seq, None, "head_mismatch",
                            f"the log is {size} bytes; the head says {head_size}"))


def repair_head(path: str | os.PathLike[str]) -> VerifyReport:
    """Rewrite a missing or lagging head file after checking the whole chain.

    Holds the writers' lock throughout. The head is written only if the chain has no problem
    other than ``head_missing`` or ``head_behind``; a truncated log is never "repaired".

    Returns:
        The verification report (``ok`` is ``True`` when the head was written).

    Raises:
        AuditError: the log cannot be read or the head cannot be written.
    """
    target = os.fspath(path)
    try:
        with open(target, "rb") as log:
            fcntl.flock(log.fileno(), fcntl.LOCK_EX)
            report = _verify(target, True, 1000, lock=False)
            fixable = {"head_missing", "head_behind"}
            if report.unlisted or any(p.kind not in fixable for p in report.problems):
                report.ok = False
                return report
            if report.last_seq:
                size = os.fstat(log.fileno()).st_size
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                fd = os.open(head_path(target), flags, 0o600)
                try:
                    os.write(fd, format_head(report.last_seq, report.last_hash, size))
                finally:
                    os.close(fd)
            report.ok = True
            return report
    except OSError as exc:
        raise AuditError(f"cannot repair the head of audit log {target}: {exc}") from exc
