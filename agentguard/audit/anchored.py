"""``audit verify --trust``: the chain, plus what only signatures can prove about it.

:func:`verify_log` proves the log is one unbroken chain; the agent can write such a chain
itself. :func:`verify_anchored` adds, for a trust file:

1. every approval record's receipts (:func:`agentguard.audit.receipts.check_receipts`);
2. every signed checkpoint, in the log (``audit.checkpoint`` records) and in a checkpoint file
   kept elsewhere (:mod:`agentguard.audit.checkpoint`): its signature, and then the record it
   names, which must still be there with that hash (fed to :func:`verify_log` as anchors);
3. the rotation history: a chain that starts with ``audit.rotated`` must continue the archive
   it names, which must verify and end where it says; checkpoints of an older chain are
   checked against that archive (so a wipe dressed up as a rotation, naming an archive that
   is not there, does not pass); one that starts with ``audit.reset`` is reported.

One streaming pass reads the records (receipts, checkpoints, the first record), a second is
:func:`verify_log` with the anchors found; memory stays flat except for one entry per
checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from agentguard.audit.checkpoint import (
    CHECKPOINT_EVENT,
    SignedCheckpoint,
    read_checkpoint_file,
    verify_checkpoint,
)
from agentguard.audit.lifecycle import RESET_EVENT, ROTATED_EVENT, first_record
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


@dataclass
class _Chain:
    """One chain in the rotation history: the current log, or an archive it names."""

    first: str | None
    path: str | None  # None: the archive named is not beside the log
    via: str  # how it was reached, for messages
    expect: dict[int, str] = field(default_factory=dict)
    reset: bool = False  # the chain after it began with audit.reset


def _history(target: str, first: Mapping[str, Any] | None) -> list[_Chain]:
    """The current chain, then each rotated archive its first records name, newest first."""
    chains = [_Chain(first.get("hash") if first else None, target, "this log")]
    seen = {os.path.realpath(target)}
    while len(chains) < 1000:
        record = first
        previous = _previous(record)
        if not previous:
            break
        assert record is not None
        name = previous.get("file")
        path = os.path.join(os.path.dirname(target), name) if isinstance(name, str) and \
            name and os.path.basename(name) == name else None
        if path is not None and (os.path.realpath(path) in seen or not os.path.exists(path)):
            path = None
        first_hash = previous.get("first")
        chains.append(_Chain(first_hash if isinstance(first_hash, str) else None, path,
                             f"rotated log {name!r}", reset=record.get("type") == RESET_EVENT))
        if path is None:
            break
        seen.add(os.path.realpath(path))
        first = first_record(path)
    return chains


def _place(where: str, signed: SignedCheckpoint, chains: list[_Chain],
           problems: list[Problem]) -> None:
    """File a verified checkpoint under the chain it anchors."""
    c = signed.checkpoint
    chain = next((ch for ch in chains if ch.first is not None and ch.first == c.first), None)
    if chain is None:
        problems.append(Problem(c.seq, None, "foreign_checkpoint", (
            f"signed checkpoint of record {c.seq} ({where}) belongs to no chain this log "
            "continues: the log was wiped or replaced without `agentguard audit rotate`")))
        return
    if chain.expect.get(c.seq, c.hash) != c.hash:
        problems.append(Problem(c.seq, None, "anchor_mismatch", (
            f"two anchors name record {c.seq} of {chain.via} with different hashes ({where})")))
    chain.expect[c.seq] = c.hash


def _check_history(chains: list[_Chain], problems: list[Problem]) -> None:
    """Each older chain must be beside the log, verify, end where the next one says, and hold
    what its checkpoints anchored."""
    for newer, chain in pairwise(chains):
        link = _previous(first_record(newer.path) if newer.path else None)
        if chain.reset:
            problems.append(Problem(1, None, "reset", (
                f"{newer.via} was started by a reset; the broken log was kept as "
                f"{link.get('file')!r} with problems {link.get('problems')}"), "warning"))
            if chain.expect:
                problems.append(Problem(None, None, "foreign_checkpoint", (
                    f"{len(chain.expect)} checkpoint(s) anchor the chain before the reset: "
                    "what they anchored is only in the broken log"), "warning"))
            return
        if chain.path is None:
            severity = "error" if chain.expect else "warning"
            problems.append(Problem(1, None, "previous_missing", (
                f"{newer.via} continues the {chain.via}, which is not beside it"
                + (f", and {len(chain.expect)} signed checkpoint(s) anchor it" if chain.expect
                   else "")), severity))  # type: ignore[arg-type]
            return
        old = verify_log(chain.path, expect=chain.expect)
        if not old.ok or old.last_seq != link.get("seq") or old.last_hash != link.get("hash"):
            kinds = sorted({p.kind for p in old.problems})
            problems.append(Problem(1, None, "rotation_mismatch", (
                f"the {chain.via} does not verify ({', '.join(kinds) or 'ok'}) or does not end "
                f"where {newer.via} says (it ends at {old.last_seq}:{old.last_hash[:16]}...)")))


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
    chains = _history(target, scan.first)
    chains[0].expect.update(expect or {})
    for where, item in scan.checkpoints:
        why = item if isinstance(item, str) else verify_checkpoint(item, anchors)
        if why is not None:
            problems.append(Problem(None, None, "checkpoint_invalid", f"{where}: {why}"))
        else:
            assert isinstance(item, SignedCheckpoint)
            _place(where, item, chains, problems)
    _check_history(chains, problems)
    report = verify_log(target, expect=chains[0].expect)
    report.problems.extend(problems)
    report.ok = report.ok and not any(p.severity == "error" for p in problems)
    return report
