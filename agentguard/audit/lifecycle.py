"""The audit log's lifecycle: rotating it, and resetting a broken one, without a silent gap.

A JSONL log is never renamed or truncated behind its writers (they refuse to carry on, see
:class:`~agentguard.audit.JsonlAuditLog`). Instead:

* :func:`rotate_log` (``agentguard audit rotate``) checks the whole chain, moves the log and its
  ``.head`` aside (``audit.jsonl`` -> ``audit.jsonl.<UTC time>``), and starts a new chain whose
  first record, ``audit.rotated``, names the old file, its final record (``seq``, ``hash``)
  and its first record's hash. ``audit verify`` follows that link to the archive, and signed
  checkpoints of the old chain still count. A log with problems is not rotated: rotation must
  not launder a cut or an edit into an archive nobody checks.
* :func:`rotate_log` with ``reset=REASON`` (``agentguard audit reset --reason ...``) is the
  documented way out of a log that no longer verifies (e.g. deleted while its ``.head``
  remained, after which every held call fails closed: "shorter than its head says"). It moves
  whatever is there aside as ``<log>.broken-<UTC time>`` and starts a new chain whose first
  record, ``audit.reset``, says what was found and why it was reset. ``audit verify`` reports
  every reset as a warning, and checkpoints of the old chain cannot be met any more: a reset
  is an admission, never a cover.

A writer that holds the old file open follows the rotation at its next append, but only
after :func:`rotation_problem` found that the new chain's first record names an archive beside
it that still holds, with the same hash, the last record this writer wrote; otherwise (a wipe
dressed up as a rotation, a reset) it fails closed, as before.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agentguard.audit._chain import head_path
from agentguard.audit._rotation import RESET_EVENT, ROTATED_EVENT, rotation_problem
from agentguard.audit.jsonl import JsonlAuditLog, parse_head
from agentguard.audit.verify import _verify
from agentguard.errors import AuditError

__all__ = [
    "RESET_EVENT",
    "ROTATED_EVENT",
    "Rotation",
    "first_record",
    "rotate_log",
    "rotation_problem",
]



@dataclass(frozen=True, slots=True)
class Rotation:
    """What :func:`rotate_log` did.

    Attributes:
        archive: Where the old log now is (None when there was no log file).
        record: The first record of the new chain.
    """

    archive: str | None
    record: dict[str, Any]


def first_record(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The parsed first line of a log (unverified), or None when empty, missing or not JSON."""
    try:
        with open(path, "rb") as log:
            raw = log.readline(1024 * 1024)
    except OSError:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _archive_name(target: str, infix: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name, n = f"{target}.{infix}{stamp}", 1
    while os.path.exists(name) or os.path.exists(head_path(name)):
        n += 1
        name = f"{target}.{infix}{stamp}-{n}"
    return name


def _head_found(target: str) -> dict[str, Any] | None:
    try:
        with open(head_path(target), "rb") as fh:
            parsed = parse_head(fh.read(200))
    except (OSError, ValueError):
        return None
    return None if parsed is None else {"seq": parsed[0], "hash": parsed[1]}


def rotate_log(path: str | os.PathLike[str], *, reset: str | None = None) -> Rotation:
    """Move the log aside and start a new chain that names it (see the module docstring).

    Args:
        path: The JSONL log.
        reset: ``None`` to rotate a log that verifies clean; otherwise the reason a broken log
            is being reset (recorded in the new chain's first record).

    Raises:
        AuditError: rotating a log that does not verify, or a file cannot be moved or written.
    """
    target = os.fspath(path)
    exists = os.path.exists(target)
    if reset is None and not exists:
        raise AuditError(f"no audit log at {target} to rotate")
    if reset is not None and (not reset.strip() or not reset.isprintable()):
        raise AuditError("a reset needs a reason (printable text)")
    with ExitStack() as stack:
        if exists:  # hold the writers' lock so no record lands between verify and move
            log = stack.enter_context(open(target, "rb"))
            fcntl.flock(log.fileno(), fcntl.LOCK_EX)
            report = _verify(target, reset is not None, 1000, lock=False)
        if reset is None:
            if not report.ok:
                kinds = sorted({p.kind for p in report.problems})
                raise AuditError(
                    f"audit log {target} does not verify ({', '.join(kinds)}): not rotating it "
                    "into an archive nobody checks; see `agentguard audit verify`, and "
                    "`agentguard audit reset --reason ...` if it cannot be repaired")
            if not report.last_seq:
                raise AuditError(f"audit log {target} is empty: nothing to rotate")
        first = first_record(target) if exists else None
        archive = _archive_name(target, "" if reset is None else "broken-") if (
            exists or os.path.exists(head_path(target))) else None
        previous: dict[str, Any] = {"file": os.path.basename(archive) if archive else None}
        if exists:
            previous |= {"seq": report.last_seq, "hash": report.last_hash,
                         "first": first.get("hash") if first else None}
        if reset is None:
            event: dict[str, Any] = {"type": ROTATED_EVENT, "previous": previous}
        else:
            previous |= {"head": _head_found(target),
                         "problems": sorted({p.kind for p in report.problems}) if exists
                         else ["missing"]}
            event = {"type": RESET_EVENT, "reason": reset, "previous": previous}
        fresh = _archive_name(target, "new-")
        try:
            with JsonlAuditLog(fresh) as new:
                record = new.append(event)
            if archive is not None:
                if exists:
                    os.rename(target, archive)
                if os.path.exists(head_path(target)):
                    os.rename(head_path(target), head_path(archive))
            # Head first: a writer opening in between finds a head and no log, and refuses.
            os.rename(head_path(fresh), head_path(target))
            os.rename(fresh, target)
        except OSError as exc:
            raise AuditError(f"cannot rotate audit log {target}: {exc}") from exc
    return Rotation(archive, record)
