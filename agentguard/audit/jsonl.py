"""Hash-chained, append-only JSON Lines audit log, safe for several writer processes.

Each line is one record: the event (redacted, made JSON-safe) plus ``seq`` (1, 2, 3...),
``at`` (RFC 3339 UTC, microseconds), ``prev_hash`` (the previous record's ``hash``; 64 zeros
for the first) and ``hash`` (SHA-256 over the record without ``hash``, in the chain encoding
described in :mod:`agentguard.audit._chain`).

Beside the log, ``<path>.head`` holds the last record's ``seq``, ``hash`` and the log's size
after it, in a fixed-width line overwritten in place. Writers read it under an exclusive
``flock`` on the log, so processes appending to one file keep one chain; ``verify_log`` uses
it to notice a truncated tail.

Two ways in: :meth:`JsonlAuditLog.append` writes (and syncs) one record and returns it, for
synchronous callers; :meth:`JsonlAuditLog.submit` queues a record for **group commit** (see
:mod:`agentguard.audit._group`): a writer thread appends every record queued meanwhile with
one ``write`` and one ``fdatasync``, so many concurrent guarded calls share one sync.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from agentguard.audit._chain import GENESIS_HASH, ChainError, check_line, head_path, seal
from agentguard.audit._group import GroupCommitted, GroupCommitter
from agentguard.audit._rotation import rotation_problem
from agentguard.audit.redact import Redactor
from agentguard.errors import AuditError

__all__ = ["JsonlAuditLog", "format_head", "parse_head"]

_HEAD_SIZE = 107  # "%020d %64s %020d\n"


def format_head(seq: int, digest: str, size: int) -> bytes:
    """The head file's content: last ``seq``, its ``hash`` and the log size after it."""
    return b"%020d %s %020d\n" % (seq, digest.encode("ascii"), size)


def parse_head(data: bytes) -> tuple[int, str, int] | None:
    """Parse a head file's content; ``None`` when empty (no record written yet).

    Raises:
        ValueError: the content is not a head line.
    """
    if not data:
        return None
    parts = data.split(b" ")
    if len(data) != _HEAD_SIZE or len(parts) != 3 or not data.endswith(b"\n"):
        raise ValueError("the head file is not a '<seq> <hash> <size>' line")
    seq, digest, size = int(parts[0]), parts[1].decode("ascii"), int(parts[2])
    if seq < 1 or size < 1 or len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise ValueError("the head file holds impossible values")
    return seq, digest, size


class JsonlAuditLog(GroupCommitted):
    """An :class:`~agentguard.audit.base.AuditSink` writing a hash-chained JSON Lines file.

    Every failure (unwritable file, full disk, the log removed or replaced behind our back, a
    log that no longer matches its head) raises :class:`AuditError`; nothing is swallowed, so
    the guard refuses privileged calls. A write that fails half-way is cut back off the file
    before the error is raised. Safe for threads, and for processes appending to one path.

    Do not rename or truncate the file while writers run: the next append fails (fail
    closed). ``agentguard audit rotate`` is followed: a writer whose file was moved aside
    carries on in the new chain only if its first record names an archive beside it that
    holds the last record this writer wrote (see :mod:`agentguard.audit.lifecycle`).

    Args:
        path: The log file; created (mode 0600) if missing, with ``<path>.head`` beside it.
        redactor: Replaces secrets before anything is written. Defaults to a
            :class:`Redactor` with a random per-process key: secrets are still hidden, but
            equal secrets correlate only within this process. Pass
            ``Redactor(load_or_create_key(...))`` to correlate across restarts.
        fsync: ``fdatasync`` the log after every write (one record from :meth:`append`, a
            whole group from :meth:`submit`) before it counts as written. On by default.
            Off, a record survives a process crash but may be lost in a power cut or kernel
            crash (the head can lag then; the next append or ``repair_head`` re-reads such
            records, since they are still chained).
        clock: Source of Unix time for each record's ``at`` (default: the system clock).
            Give it the guard's clock when the guard runs on simulated time (a notebook, a
            replay), so the log tells the same time as the decisions it records.

    Raises:
        AuditError: the log or its head cannot be opened, or the log has records but no head.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        redactor: Redactor | None = None,
        fsync: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._clock = clock
        self.head_path = head_path(self.path)
        self.fsync = fsync
        self._redactor = redactor if redactor is not None else Redactor.ephemeral()
        self._lock = threading.Lock()
        self._log_fd = self._head_fd = -1
        self._head: tuple[int, str, int] | None = None
        self._head_raw = b""
        self._open()
        self._group = GroupCommitter(self._commit, name=f"agentguard-audit {self.path}")

    # ------------------------------------------------------------------ lifecycle
    def _open(self) -> None:
        flags = os.O_CLOEXEC | os.O_CREAT
        try:
            self._log_fd = os.open(self.path, flags | os.O_WRONLY | os.O_APPEND, 0o600)
            try:
                self._head_fd = os.open(self.head_path, os.O_CLOEXEC | os.O_RDWR)
            except FileNotFoundError:
                if os.fstat(self._log_fd).st_size:
                    raise AuditError(
                        f"audit log {self.path} has records but its head file "
                        f"{self.head_path} is missing; run `agentguard audit verify`"
                    ) from None
                self._head_fd = os.open(self.head_path, flags | os.O_RDWR, 0o600)
        except OSError as exc:
            self._close_fds()
            raise AuditError(f"cannot open audit log {self.path}: {exc}") from exc
        except AuditError:
            self._close_fds()
            raise
        self._pid = os.getpid()

    def _close_fds(self) -> None:
        for fd in (self._log_fd, self._head_fd):
            if fd >= 0:
                os.close(fd)
        self._log_fd = self._head_fd = -1

    def close(self) -> None:
        """Write what is queued for group commit, then release the files. Appending
        afterwards raises :class:`AuditError`."""
        self._group.close()
        with self._lock:
            self._close_fds()

    def __enter__(self) -> JsonlAuditLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ append
    def _commit(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Chain and write prepared events, all or none (under the writers' lock)."""
        with self._lock:
            if self._log_fd < 0:
                raise AuditError(f"audit log {self.path} is closed")
            if self._pid != os.getpid():
                # flock belongs to the open file, which a forked child shares: reopen.
                self._close_fds()
                self._open()
            self._lock_current()
            try:
                return self._append_locked(batch)
            finally:
                fcntl.flock(self._log_fd, fcntl.LOCK_UN)

    def _lock_current(self) -> None:
        """Take the writers' lock on the file the path names, following an
        ``agentguard audit rotate`` that continues what this writer wrote."""
        try:
            fcntl.flock(self._log_fd, fcntl.LOCK_EX)
            if not self._replaced():
                return
            fcntl.flock(self._log_fd, fcntl.LOCK_UN)
        except OSError as exc:
            raise AuditError(f"cannot lock audit log {self.path}: {exc}") from exc
        problem = rotation_problem(self.path, self._head[:2] if self._head else None)
        if problem is not None:
            raise AuditError(f"audit log {self.path} was removed or replaced while in use "
                             f"({problem}); run `agentguard audit verify`")
        self._close_fds()
        self._open()
        self._head, self._head_raw = None, b""  # a new chain: nothing of it written by us
        try:
            fcntl.flock(self._log_fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise AuditError(f"cannot lock audit log {self.path}: {exc}") from exc

    def _replaced(self) -> bool:
        held = os.fstat(self._log_fd)
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return True
        return named.st_ino != held.st_ino or named.st_dev != held.st_dev

    def _append_locked(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            size = self._log_size()
            raw = os.pread(self._head_fd, _HEAD_SIZE + 1, 0)
            # Unchanged since our last append (no other writer): skip parsing it again.
            head = self._head if raw == self._head_raw else parse_head(raw)
        except OSError as exc:
            raise AuditError(f"cannot read audit log {self.path}: {exc}") from exc
        except ValueError as exc:
            raise AuditError(f"{self.head_path}: {exc}; run `agentguard audit verify`") from exc
        if self._head is not None and (head is None or head[0] < self._head[0]
                                       or size < self._head[2]):
            # We wrote record N; the head (or the log) now says less: someone cut the log and
            # rewrote its head, or wiped both. Carrying on would start a new chain that
            # verifies clean, hiding the cut.
            raise AuditError(
                f"audit log {self.path} went backwards (this writer wrote record "
                f"{self._head[0]}, the log now ends at {head[0] if head else 0}): refusing "
                "to write; run `agentguard audit verify`")
        seq, prev, known = head if head is not None else (0, GENESIS_HASH, 0)
        if size != known:
            seq, prev = self._catch_up(seq, prev, known, size)
        records, lines = [], []
        for data in batch:
            seq += 1
            record, line = seal(data, seq, prev, self._clock)
            prev = record["hash"]
            records.append(record)
            lines.append(line)
        block = b"".join(lines)
        try:
            self._write_all(block)
            if self.fsync:
                os.fdatasync(self._log_fd)
            head = (seq, prev, size + len(block))
            raw = format_head(*head)
            if os.pwrite(self._head_fd, raw, 0) != len(raw):
                raise OSError(f"short write to {self.head_path}")
        except OSError as exc:
            error = AuditError(f"cannot write audit log {self.path}: {exc}")
            try:
                os.ftruncate(self._log_fd, size)
            except OSError as undo:
                error.add_note(f"the partial record could not be removed: {undo}")
            raise error from exc
        self._head, self._head_raw = head, raw
        return records

    def _log_size(self) -> int:
        """Size of the log, failing unless its path still names the file we hold.

        Without this, records written after the log was deleted or renamed would vanish
        unnoticed. (A removed head file needs no such check: verify reports it, and no new
        writer opens the log without one.)
        """
        held = os.fstat(self._log_fd)
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            named = None
        if named is None or named.st_ino != held.st_ino or named.st_dev != held.st_dev:
            raise AuditError(f"audit log {self.path} was removed or replaced while in use")
        return held.st_size

    def _catch_up(self, seq: int, prev: str, known: int, size: int) -> tuple[int, str]:
        """Adopt records written after the head (a writer died between log and head)."""
        if size < known:
            raise AuditError(
                f"audit log {self.path} is shorter than its head says ({size} < {known} "
                "bytes): truncated? run `agentguard audit verify`"
            )
        if known == 0:
            raise AuditError(
                f"audit log {self.path} has records but its head file is empty; "
                "run `agentguard audit verify`"
            )
        try:
            with open(self.path, "rb") as log:
                log.seek(known)
                for raw in log:
                    record = check_line(raw)
                    if record["seq"] != seq + 1 or record["prev_hash"] != prev:
                        raise ChainError("chain_broken", "does not continue the chain")
                    seq, prev = record["seq"], record["hash"]
        except OSError as exc:
            raise AuditError(f"cannot read audit log {self.path}: {exc}") from exc
        except ChainError as exc:
            raise AuditError(
                f"audit log {self.path} has data after its head that is not a valid record "
                f"({exc.detail}); run `agentguard audit verify`"
            ) from exc
        return seq, prev

    def _write_all(self, line: bytes) -> None:
        view = memoryview(line)
        while view:
            view = view[os.write(self._log_fd, view):]
