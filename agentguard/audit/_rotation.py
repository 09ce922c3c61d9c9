"""How a writer tells a rotation from a wipe: the first record of the log now at its path
must name an archive that still holds what the writer last wrote (see
:mod:`agentguard.audit.lifecycle`). Apart so that the JSONL writer needs nothing else."""

from __future__ import annotations

import os

from agentguard.audit._chain import ChainError, check_line

__all__ = ["RESET_EVENT", "ROTATED_EVENT", "rotation_problem"]

ROTATED_EVENT = "audit.rotated"
RESET_EVENT = "audit.reset"


def rotation_problem(path: str | os.PathLike[str], written: tuple[int, str] | None,
                     ) -> str | None:
    """Why a writer must not follow the log now at ``path``, or None if it may.

    Args:
        path: The log path, which now names another file than the writer holds.
        written: ``(seq, hash)`` of the last record this writer wrote (None: none yet).
    """
    target = os.fspath(path)
    try:
        with open(target, "rb") as log:
            first = check_line(log.readline(1024 * 1024))
    except (OSError, ChainError) as exc:
        return f"the new log does not start with a sealed record ({exc})"
    previous = first.get("previous")
    if first.get("type") != ROTATED_EVENT or first.get("seq") != 1 or not isinstance(
            previous, dict):
        return "the new log does not start with an audit.rotated record"
    if written is None:
        return None
    name, seq = previous.get("file"), previous.get("seq")
    if not isinstance(name, str) or os.path.basename(name) != name or not isinstance(
            seq, int) or seq < written[0]:
        return "the rotation does not name an archive that ends after what this writer wrote"
    try:
        with open(os.path.join(os.path.dirname(target), name), "rb") as archive:
            for raw in archive:
                record = check_line(raw)
                if record["seq"] == written[0]:
                    if record["hash"] == written[1]:
                        return None
                    break
    except (OSError, ChainError) as exc:
        return f"the rotated archive {name!r} cannot be checked ({exc})"
    return f"the rotated archive {name!r} does not hold record {written[0]} as written"
