"""Read an audit log and show its records to a human.

Reading does not verify the chain (use :func:`agentguard.audit.verify.verify_log`); it parses
complete lines only, so a record being appended by another process is never shown half-way.
Every string :func:`format_event` shows comes from the log, i.e. ultimately from an agent or a
tool server, and is escaped with :func:`agentguard.sanitize.escape_text`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from typing import IO, Any

from agentguard.errors import AuditError
from agentguard.sanitize import escape_text

__all__ = ["format_event", "read_events", "tail"]

_BLOCK = 65536


def _parse(raw: bytes, path: str, number: int | None) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except ValueError as exc:
        where = f"{path}:{number}" if number else path
        raise AuditError(f"{where}: not a JSON record ({exc}); run `agentguard audit verify`")\
            from exc
    if not isinstance(record, dict):
        raise AuditError(f"{path}: a line is not a JSON object; run `agentguard audit verify`")
    return record


def read_events(path: str | os.PathLike[str], *, since_seq: int = 0) -> Iterator[dict[str, Any]]:
    """Yield the records of a log, oldest first, streaming.

    Args:
        path: The JSONL log.
        since_seq: Skip records whose ``seq`` is not greater than this.

    Raises:
        AuditError: the log cannot be read, or a complete line is not a JSON object.
    """
    target = os.fspath(path)
    try:
        with open(target, "rb") as log:
            for number, raw in enumerate(log, start=1):
                if not raw.endswith(b"\n"):
                    return  # still being written
                record = _parse(raw, target, number)
                seq = record.get("seq")
                if not isinstance(seq, int) or seq > since_seq:
                    yield record
    except OSError as exc:
        raise AuditError(f"cannot read audit log {target}: {exc}") from exc


def _start_of_last_lines(log: IO[bytes], n: int) -> int:
    """Offset where the last ``n`` complete lines begin (a partial last line is ignored)."""
    end = log.seek(0, os.SEEK_END)
    pos, chunk = end, b""
    while pos > 0:
        # n complete lines need n newlines plus the one ending the line before them.
        complete = chunk[: chunk.rfind(b"\n") + 1]
        if complete.count(b"\n") > n:
            break
        step = min(_BLOCK, pos)
        pos -= step
        log.seek(pos)
        chunk = log.read(step) + chunk
    complete = chunk[: chunk.rfind(b"\n") + 1]
    lines = complete.split(b"\n")[:-1]
    kept = sum(len(line) + 1 for line in lines[max(len(lines) - n, 0) :]) if n else 0
    return pos + len(complete) - kept


def tail(
    path: str | os.PathLike[str], n: int = 20, follow: bool = False, *, poll: float = 0.2,
) -> Iterator[dict[str, Any]]:
    """Yield the last ``n`` records; with ``follow``, keep yielding new ones as they arrive.

    Args:
        path: The JSONL log.
        n: How many of the existing records to yield first.
        follow: Wait for new records forever (stop by closing the generator).
        poll: Seconds between checks for new records when following.

    Raises:
        AuditError: the log cannot be read, a line is not a JSON object, or (when following)
            the log shrank, i.e. it was truncated or replaced.
    """
    target = os.fspath(path)
    try:
        with open(target, "rb") as log:
            offset = _start_of_last_lines(log, max(n, 0))
            log.seek(offset)
            pending = b""
            while True:
                data = log.read()
                if data:
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield _parse(line, target, None)
                if not follow:
                    return
                offset = log.tell()
                if os.stat(target).st_size < offset:
                    raise AuditError(f"audit log {target} shrank while following it")
                time.sleep(poll)
    except OSError as exc:
        raise AuditError(f"cannot read audit log {target}: {exc}") from exc


_QUOTE_IF = frozenset(' ="')


def _show(value: Any) -> str:
    """One value, escaped, quoted when it could be mistaken for more than one field."""
    if isinstance(value, Mapping) and "id" in value:
        value = value["id"]
    if isinstance(value, list | tuple):
        text = ",".join(escape_text(str(item)) for item in value)
    elif isinstance(value, str):
        text = escape_text(value)
    else:
        text = escape_text(json.dumps(value, ensure_ascii=False, default=str))
    if not text or not _QUOTE_IF.isdisjoint(text):
        text = '"' + text.replace('"', "\\x22") + '"'
    return text


def format_event(event: Mapping[str, Any]) -> str:
    """One human line for a record: seq, time, type, principal, server/tool, class, rule,
    signals, outcome, approver and reason. Absent fields are left out; every value is
    escaped, so ANSI, bidi or newline characters in (say) a tool name show as ``\\x1b``..."""
    parts = [f"#{_show(event.get('seq', '?'))}", _show(event.get("at", "-")),
             _show(event.get("type", "?"))]
    if event.get("principal") is not None:
        parts.append(_show(event["principal"]))
    server, tool = event.get("server"), event.get("tool")
    if tool is not None:
        parts.append(f"{_show(server)}/{_show(tool)}" if server is not None else _show(tool))
    for label, key in (("class", "privilege"), ("rule", "rule_id"), ("signals", "signals"),
                       ("outcome", "outcome"), ("approver", "approver")):
        value = event.get(key)
        if value not in (None, "", [], ()):
            parts.append(f"{label}={_show(value)}")
    if event.get("reason"):
        parts.append(f"reason={_show(event['reason'])}")
    return " ".join(parts)
