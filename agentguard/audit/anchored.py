"""``audit verify --trust``: the chain, plus what only signatures can prove about it.

:func:`verify_log` proves the log is one unbroken chain; the agent can write such a chain
itself. :func:`verify_anchored` adds, for a trust file:

1. every approval record's receipts (:func:`agentguard.audit.receipts.check_receipts`);
2. every signed checkpoint, in the log (``audit.checkpoint`` records) and in a checkpoint file
   kept elsewhere (:mod:`agentguard.audit.checkpoint`): its signature, and then the record it
   names, which must still be there with that hash (fed to :func:`verify_log` as anchors);
3. the rotation link: a chain that starts with ``audit.rotated`` must continue the archive it
   names (when that file is beside it), and one that starts with ``audit.reset`` is reported.

One streaming pass reads the records (receipts, checkpoints, the first record), a second is
:func:`verify_log` with the anchors found; memory stays flat except for one entry per
checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

from agentguard.audit.checkpoint import (
    CHECKPOINT_EVENT,
    SignedCheckpoint,
    read_checkpoint_file,
    verify_checkpoint,
)
from agentguard.audit.lifecycle import RESET_EVENT, ROTATED_EVENT
from agentguard.audit.receipts import check_receipts
from agentguard.audit.verify import MAX_LINE, Problem, VerifyReport, verify_log
from agentguard.errors import AuditError
from agentguard.trust import TrustAnchors

__all__ = ["verify_anchored"]


def _records(path: str) -> Iterator[dict[str, Any]]:
    """Every line that parses as a JSON object (chain problems are verify_log's to report)."""
    try:
        with open(path, "rb") as log:
            for raw in log:
                if len(raw) > MAX_LINE or not raw.endswith(b"\n"):
                    continue
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield record
    except OSError as exc:
        raise AuditError(f"cannot read audit log {path}: {exc}") from exc


class _Scan:
    """Pass one: the first record and the checkpoints, while receipts are checked."""

    def __init__(self) -> None:
        self.first: dict[str, Any] | None = None
        self.checkpoints: list[tuple[str, SignedCheckpoint | str]] = []

    def feed(self, records: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for record in records:
            if self.first is None:
                self.first = record
            if record.get("type") == CHECKPOINT_EVENT:
                where = f"record {record.get('seq')}"
                try:
                    self.checkpoints.append((where, SignedCheckpoint.from_dict(
                        record.get("checkpoint"))))
                except ValueError as exc:
                    self.checkpoints.append((where, str(exc)))
            yield record


def _previous(first: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if first is None or first.get("type") not in (ROTATED_EVENT, RESET_EVENT):
        return {}
    previous = first.get("previous")
    return previous if isinstance(previous, Mapping) else {}


def _place(
    where: str, signed: SignedCheckpoint, first: Mapping[str, Any] | None,
    expect: dict[int, str], problems: list[Problem],
) -> None:
    """Use a verified checkpoint: an anchor of this chain, or one of the chain it rotated."""
    c = signed.checkpoint
    if first is not None and c.first == first.get("hash"):
        if expect.get(c.seq, c.hash) != c.hash:
            problems.append(Problem(c.seq, None, "anchor_mismatch", (
                f"two anchors name record {c.seq} with different hashes ({where})")))
        expect[c.seq] = c.hash
        return
    previous = _previous(first)
    if previous.get("first") == c.first and first is not None:
        seq, digest = previous.get("seq"), previous.get("hash")
        fits = isinstance(seq, int) and (c.seq < seq or (c.seq == seq and c.hash == digest))
        if first.get("type") == ROTATED_EVENT and fits:
            return  # the archive is checked on its own (its link is below)
        if first.get("type") == RESET_EVENT:
            problems.append(Problem(c.seq, None, "foreign_checkpoint", (
                f"checkpoint of record {c.seq} ({where}) belongs to the chain reset at record "
                "1: what it anchored is in the archived broken log"), "warning"))
            return
    problems.append(Problem(c.seq, None, "foreign_checkpoint", (
        f"signed checkpoint of record {c.seq} ({where}) belongs to another chain: the log was "
        "wiped or replaced without `agentguard audit rotate`")))


def _link(target: str, first: Mapping[str, Any] | None, problems: list[Problem]) -> None:
    """Check the rotation link of record 1 against the archive beside the log."""
    previous = _previous(first)
    if not previous:
        return
    assert first is not None
    if first.get("type") == RESET_EVENT:
        problems.append(Problem(first.get("seq"), None, "reset", (
            f"the chain was reset ({first.get('reason')!r}); the broken log was kept as "
            f"{previous.get('file')!r} with problems {previous.get('problems')}"), "warning"))
        return
    name = previous.get("file")
    archive = os.path.join(os.path.dirname(target), name) if isinstance(name, str) and \
        os.path.basename(name) == name else None
    if archive is None or not os.path.exists(archive):
        problems.append(Problem(1, None, "previous_missing", (
            f"the chain continues the rotated log {name!r}, which is not beside it"),
            "warning"))
        return
    old = verify_log(archive)
    if not old.ok or old.last_seq != previous.get("seq") or old.last_hash != previous.get(
            "hash"):
        problems.append(Problem(1, None, "rotation_mismatch", (
            f"the rotated log {name!r} does not verify or does not end where record 1 says "
            f"(it ends at {old.last_seq}:{old.last_hash[:16]}...)")))


def verify_anchored(
    path: str | os.PathLike[str], anchors: TrustAnchors, *,
    checkpoint_files: tuple[str | os.PathLike[str], ...] = (),
    expect: Mapping[int, str] | None = None, allow_unsigned: bool = False,
) -> VerifyReport:
    """Verify the chain, its receipts, its signed checkpoints and its rotation link.

    Args:
        path: The JSONL log.
        anchors: The trust file (approvers' and services' keys).
        checkpoint_files: Files of signed checkpoints kept outside the log (``--out`` of
            ``audit checkpoint``).
        expect: Further anchors noted elsewhere (``seq -> hash``).
        allow_unsigned: An approval without a receipt is a warning, not an error.

    Raises:
        AuditError: the log or a checkpoint file cannot be read.
    """
    target = os.fspath(path)
    scan = _Scan()
    problems = check_receipts(scan.feed(_records(target)), anchors,
                              allow_unsigned=allow_unsigned)
    for file in checkpoint_files:
        for number, item in read_checkpoint_file(file):
            scan.checkpoints.append((f"{os.fspath(file)}:{number}", item))
    merged = dict(expect or {})
    for where, item in scan.checkpoints:
        why = item if isinstance(item, str) else verify_checkpoint(item, anchors)
        if why is not None:
            problems.append(Problem(None, None, "checkpoint_invalid", f"{where}: {why}"))
        else:
            assert isinstance(item, SignedCheckpoint)
            _place(where, item, scan.first, merged, problems)
    _link(target, scan.first, problems)
    report = verify_log(target, expect=merged)
    report.problems.extend(problems)
    report.ok = report.ok and not any(p.severity == "error" for p in problems)
    return report
