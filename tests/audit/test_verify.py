"""verify_log / verify_records / repair_head: each kind of tampering is found and named."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path

import pytest

from agentguard.audit import (
    JsonlAuditLog,
    MemoryAuditLog,
    repair_head,
    verify_log,
    verify_records,
)
from agentguard.audit._chain import encode
from agentguard.errors import AuditError
from tests.audit.helpers import event, lines, write_log


def kinds(path: Path, **kwargs: bool) -> list[str]:
    return [p.kind for p in verify_log(path, **kwargs).problems]


def rewrite(path: Path, new_lines: list[bytes]) -> None:
    """Replace the log's content in place (the head file is left as the attacker left it)."""
    path.write_bytes(b"".join(new_lines))


def reseal(record: dict) -> bytes:
    """What an attacker who knows the format writes: a record with a fresh, valid hash."""
    body = {k: v for k, v in record.items() if k != "hash"}
    digest = hashlib.sha256(encode(body)).hexdigest()
    return encode(body)[:-1] + b',"hash":"' + digest.encode() + b'"}\n'


def test_untouched_log_verifies(log_path: Path) -> None:
    records = write_log(log_path, 10)
    report = verify_log(log_path)
    assert report.ok and report.records == 10 and report.problems == []
    assert (report.last_seq, report.last_hash) == (10, records[-1]["hash"])


def test_edited_field_is_detected(log_path: Path) -> None:
    write_log(log_path, 5)
    content = lines(log_path)
    content[2] = content[2].replace(b'"outcome":"held"', b'"outcome":"approved"')
    rewrite(log_path, content)

    report = verify_log(log_path)
    assert not report.ok
    assert [(p.kind, p.seq, p.line) for p in report.problems] == [("edited", 3, 3)]


def test_edited_and_rehashed_record_breaks_the_chain(log_path: Path) -> None:
    write_log(log_path, 5)
    content = lines(log_path)
    forged = json.loads(content[2])
    forged["outcome"] = "approved"
    content[2] = reseal(forged)
    rewrite(log_path, content)

    problems = verify_log(log_path).problems
    assert [(p.kind, p.seq) for p in problems] == [("chain_broken", 4)]


def test_deleted_middle_record_is_detected(log_path: Path) -> None:
    write_log(log_path, 5)
    content = lines(log_path)
    del content[2]
    rewrite(log_path, content)

    report = verify_log(log_path)
    assert not report.ok
    problems = [p for p in report.problems if p.kind == "deleted"]
    assert [(p.seq, p.detail) for p in problems] == [(4, "record 3 is missing")]


def test_swapped_records_are_reported_as_reordered(log_path: Path) -> None:
    write_log(log_path, 6)
    content = lines(log_path)
    content[2], content[3] = content[3], content[2]
    rewrite(log_path, content)

    report = verify_log(log_path)
    assert not report.ok
    assert [(p.kind, p.seq, p.line) for p in report.problems] == [("reordered", 3, 4)]


def test_duplicated_record_is_detected(log_path: Path) -> None:
    write_log(log_path, 3)
    content = lines(log_path)
    content.insert(2, content[1])
    rewrite(log_path, content)
    assert "duplicate" in kinds(log_path)


def test_truncated_tail_is_detected(log_path: Path) -> None:
    write_log(log_path, 6)
    rewrite(log_path, lines(log_path)[:4])

    report = verify_log(log_path)
    assert not report.ok
    assert [p.kind for p in report.problems] == ["truncated"]
    assert "record 6" in report.problems[0].detail


def test_tail_cut_mid_line_is_detected(log_path: Path) -> None:
    write_log(log_path, 3)
    rewrite(log_path, [log_path.read_bytes()[:-20]])
    assert kinds(log_path) == ["malformed", "truncated"]


def test_missing_head_is_a_warning_that_fails_unless_allowed(log_path: Path) -> None:
    write_log(log_path, 3)
    Path(f"{log_path}.head").unlink()

    strict = verify_log(log_path)
    assert not strict.ok
    assert [(p.kind, p.severity) for p in strict.problems] == [("head_missing", "warning")]
    lenient = verify_log(log_path, allow_missing_head=True)
    assert lenient.ok and [p.kind for p in lenient.problems] == ["head_missing"]


def test_forged_last_record_is_caught_by_the_head(log_path: Path) -> None:
    """Re-hashing the last record keeps the chain consistent; only the head can tell."""
    write_log(log_path, 4)
    content = lines(log_path)
    forged = json.loads(content[3])
    forged["outcome"] = "approved"
    content[3] = reseal(forged)
    rewrite(log_path, content)
    assert kinds(log_path) == ["head_mismatch"]


def test_malformed_line_is_detected(log_path: Path) -> None:
    write_log(log_path, 3)
    content = lines(log_path)
    content.insert(1, b"this is not json\n")
    rewrite(log_path, content)
    assert "malformed" in kinds(log_path)


def test_garbled_record_is_not_also_reported_as_deleted(log_path: Path) -> None:
    write_log(log_path, 3)
    content = lines(log_path)
    content[1] = b"{garbled}\n"
    rewrite(log_path, content)
    assert kinds(log_path) == ["malformed"]


def test_reformatted_line_with_a_duplicate_key_is_detected(log_path: Path) -> None:
    """json.loads keeps the last of two equal keys, so a reader could be shown a different
    value than the one hashed; verify requires the exact form a sink writes."""
    write_log(log_path, 3)
    content = lines(log_path)
    content[1] = content[1].replace(b'{"args"', b'{"outcome":"approved","args"', 1)
    rewrite(log_path, content)
    problems = verify_log(log_path).problems
    assert [(p.kind, p.seq) for p in problems] == [("edited", 2)]


def test_records_beyond_the_head_are_reported(log_path: Path) -> None:
    write_log(log_path, 2)
    head = Path(f"{log_path}.head")
    before = head.read_bytes()
    write_log(log_path, 1)
    head.write_bytes(before)
    assert kinds(log_path) == ["head_behind"]


def test_repair_head_rebuilds_a_missing_head_after_a_clean_check(log_path: Path) -> None:
    write_log(log_path, 3)
    head = Path(f"{log_path}.head")
    original = head.read_bytes()
    head.unlink()

    assert repair_head(log_path).ok
    assert head.read_bytes() == original
    assert verify_log(log_path).ok
    with JsonlAuditLog(log_path) as log:
        assert log.append(event(4))["seq"] == 4


def test_repair_head_refuses_a_truncated_log(log_path: Path) -> None:
    write_log(log_path, 3)
    head = Path(f"{log_path}.head")
    original = head.read_bytes()
    rewrite(log_path, lines(log_path)[:2])

    report = repair_head(log_path)
    assert not report.ok and [p.kind for p in report.problems] == ["truncated"]
    assert head.read_bytes() == original


def test_log_gone_but_head_left_is_truncation(log_path: Path) -> None:
    write_log(log_path, 2)
    log_path.unlink()
    assert kinds(log_path) == ["truncated"]


def test_no_log_at_all_raises(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="cannot read"):
        verify_log(tmp_path / "nothing.jsonl")


def test_verify_streams(log_path: Path) -> None:
    """Memory stays flat however long the log is: nothing is kept per record."""
    write_log(log_path, 5000)
    assert log_path.stat().st_size > 2_000_000
    tracemalloc.start()
    try:
        report = verify_log(log_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok and report.records == 5000
    assert peak < 500_000


def test_problem_list_is_capped(log_path: Path) -> None:
    write_log(log_path, 30)
    rewrite(log_path, [line.replace(b"held", b"gone") for line in lines(log_path)])
    report = verify_log(log_path, max_problems=10)
    assert len(report.problems) == 10 and report.unlisted == 20 and not report.ok


def test_verify_records_checks_the_memory_sink() -> None:
    log = MemoryAuditLog()
    for i in range(5):
        log.append(event(i))
    assert verify_records(log.events).ok

    log.events[1]["outcome"] = "approved"
    del log.events[3]
    problems = verify_records(log.events).problems
    assert [(p.kind, p.seq) for p in problems] == [("edited", 2), ("deleted", 5)]


def test_overlong_lines_are_reported_not_loaded(
    log_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentguard.audit import verify as verify_module

    write_log(log_path, 3)
    with JsonlAuditLog(log_path) as log:
        log.append(event(3, args={"blob": "x" * 5000}))
        log.append(event(4))
    monkeypatch.setattr(verify_module, "MAX_LINE", 1000)
    problems = verify_log(log_path).problems
    assert [(p.kind, p.line) for p in problems] == [("malformed", 4)]
    assert "longer than 1000" in problems[0].detail
