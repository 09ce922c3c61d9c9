"""JsonlAuditLog: chaining, the head file, several writer processes, real write failures."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agentguard.audit import GENESIS_HASH, JsonlAuditLog, Redactor, verify_log
from agentguard.audit._chain import encode
from agentguard.audit.base import AuditSink
from agentguard.errors import AuditError
from tests.audit.helpers import KEY, event, lines, write_log


def test_records_are_chained_and_numbered(log_path: Path) -> None:
    records = write_log(log_path, 25)

    stored = [json.loads(line) for line in lines(log_path)]
    assert stored == records
    assert [r["seq"] for r in stored] == list(range(1, 26))
    assert stored[0]["prev_hash"] == GENESIS_HASH
    for before, after in itertools.pairwise(stored):
        assert after["prev_hash"] == before["hash"]
    for record in stored:
        body = {k: v for k, v in record.items() if k != "hash"}
        assert record["hash"] == hashlib.sha256(encode(body)).hexdigest()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record["at"])
    assert verify_log(log_path).ok


def test_head_file_names_the_last_record_and_the_size(log_path: Path) -> None:
    records = write_log(log_path, 3)

    seq, digest, size = (log_path.parent / "audit.jsonl.head").read_text().split()
    assert (int(seq), digest, int(size)) == (3, records[-1]["hash"], log_path.stat().st_size)


def test_reopening_continues_the_chain(log_path: Path) -> None:
    write_log(log_path, 2)
    with JsonlAuditLog(log_path, redactor=Redactor(KEY)) as log:
        record = log.append(event(9))
    assert record["seq"] == 3
    report = verify_log(log_path)
    assert report.ok and report.records == 3 and report.last_hash == record["hash"]


def test_sink_fields_cannot_be_forged_by_the_event(log_path: Path) -> None:
    with JsonlAuditLog(log_path) as log:
        record = log.append(event(1, seq=99, hash="f" * 64, prev_hash="e" * 64, at="yesterday"))
    assert record["seq"] == 1 and record["prev_hash"] == GENESIS_HASH
    assert record["at"] != "yesterday" and record["hash"] != "f" * 64
    assert verify_log(log_path).ok


def test_is_an_audit_sink_and_files_are_private(log_path: Path) -> None:
    with JsonlAuditLog(log_path, fsync=True) as log:
        assert isinstance(log, AuditSink)
        log.append(event(1))
    assert log_path.stat().st_mode & 0o777 == 0o600
    assert Path(f"{log_path}.head").stat().st_mode & 0o777 == 0o600


def test_rejects_an_event_without_a_type(log_path: Path) -> None:
    with JsonlAuditLog(log_path) as log, pytest.raises(AuditError, match="type"):
        log.append({"tool": "x"})


def test_append_after_close_raises(log_path: Path) -> None:
    log = JsonlAuditLog(log_path)
    log.close()
    with pytest.raises(AuditError, match="closed"):
        log.append(event(1))


WRITER = textwrap.dedent("""
    import os, sys, time
    from agentguard.audit import JsonlAuditLog
    path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    log = JsonlAuditLog(path)
    open(path + ".ready-" + name, "w").close()
    while not os.path.exists(path + ".go"):
        time.sleep(0.001)
    for i in range(count):
        log.append({"type": "call.allowed", "writer": name, "i": i})
    log.close()
""")


def test_two_processes_appending_keep_one_chain(log_path: Path) -> None:
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(log_path), name, "500"],
                         cwd=Path(__file__).parents[2])
        for name in ("a", "b")
    ]
    try:
        while not all(Path(f"{log_path}.ready-{n}").exists() for n in "ab"):
            assert all(w.poll() is None for w in writers), "a writer died before starting"
        Path(f"{log_path}.go").touch()
    finally:
        codes = [w.wait(timeout=60) for w in writers]
    assert codes == [0, 0]

    report = verify_log(log_path)
    assert report.ok, report.problems
    assert report.records == 1000 and report.last_seq == 1000
    stored = [json.loads(line) for line in lines(log_path)]
    for name in "ab":
        assert [r["i"] for r in stored if r["writer"] == name] == list(range(500))


def test_a_lagging_head_is_caught_up(log_path: Path) -> None:
    """A writer that died between writing its line and updating the head leaves the head one
    record behind; the next append adopts that record instead of forking the chain."""
    write_log(log_path, 2)
    head = Path(f"{log_path}.head")
    before = head.read_bytes()
    write_log(log_path, 1)  # appends record 3 ...
    head.write_bytes(before)  # ... but the head still says 2
    assert [p.kind for p in verify_log(log_path).problems] == ["head_behind"]

    with JsonlAuditLog(log_path) as log:
        assert log.append(event(4))["seq"] == 4
    assert verify_log(log_path).ok


def test_refuses_to_append_after_a_torn_line(log_path: Path) -> None:
    write_log(log_path, 2)
    with log_path.open("ab") as f:
        f.write(b'{"seq":3,"type":"cal')
    with JsonlAuditLog(log_path) as log, pytest.raises(AuditError, match="not a valid record"):
        log.append(event(3))


def test_refuses_to_append_to_a_truncated_log(log_path: Path) -> None:
    write_log(log_path, 3)
    with log_path.open("r+b") as f:
        f.truncate(len(b"".join(lines(log_path)[:2])))
    with JsonlAuditLog(log_path) as log, pytest.raises(AuditError, match="shorter"):
        log.append(event(3))


def test_refuses_a_log_whose_head_file_is_gone(log_path: Path) -> None:
    write_log(log_path, 1)
    Path(f"{log_path}.head").unlink()
    with pytest.raises(AuditError, match="head file"):
        JsonlAuditLog(log_path)


def test_refuses_a_garbled_head(log_path: Path) -> None:
    write_log(log_path, 1)
    Path(f"{log_path}.head").write_bytes(b"garbage\n")
    with JsonlAuditLog(log_path) as log, pytest.raises(AuditError, match="head"):
        log.append(event(2))


def test_read_only_log_raises_audit_error(log_path: Path, make_read_only) -> None:
    write_log(log_path, 1)
    make_read_only(log_path)
    with pytest.raises(AuditError, match="cannot open") as caught:
        JsonlAuditLog(log_path)
    assert isinstance(caught.value.__cause__, PermissionError)


def test_full_disk_raises_audit_error(tmp_path: Path) -> None:
    full = tmp_path / "full.jsonl"
    full.symlink_to("/dev/full")  # every write there fails with ENOSPC
    with JsonlAuditLog(full) as log, pytest.raises(AuditError, match="No space") as caught:
        log.append(event(1))
    assert isinstance(caught.value.__cause__, OSError)
    assert Path(f"{full}.head").read_bytes() == b""  # nothing counted as written


def test_missing_directory_raises_audit_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="cannot open") as caught:
        JsonlAuditLog(tmp_path / "gone" / "audit.jsonl")
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_log_removed_while_in_use_raises(log_path: Path) -> None:
    with JsonlAuditLog(log_path) as log:
        log.append(event(1))
        log_path.unlink()
        with pytest.raises(AuditError, match="removed or replaced"):
            log.append(event(2))


def test_log_replaced_while_in_use_raises(log_path: Path) -> None:
    with JsonlAuditLog(log_path) as log:
        log.append(event(1))
        os.replace(log_path, log_path.with_suffix(".old"))
        log_path.write_bytes(b"")
        with pytest.raises(AuditError, match="removed or replaced"):
            log.append(event(2))


def test_forked_child_takes_its_own_lock(log_path: Path) -> None:
    """flock belongs to the open file, which fork shares; the child must reopen."""
    log = JsonlAuditLog(log_path)
    log.append(event(0))
    pid = os.fork()
    if pid == 0:  # child: append and leave without running pytest's teardown
        try:
            for i in range(200):
                log.append(event(i))
        finally:
            os._exit(0)
    for i in range(200):
        log.append(event(i))
    os.waitpid(pid, 0)
    log.close()
    report = verify_log(log_path)
    assert report.ok, report.problems
    assert report.records == 401
