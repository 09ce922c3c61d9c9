"""Rotating the audit log and resetting a broken one: never a silent gap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentguard.audit import JsonlAuditLog, verify_log
from agentguard.audit.anchored import verify_anchored
from agentguard.audit.lifecycle import rotate_log
from agentguard.errors import AuditError
from agentguard.trust import TrustAnchors
from tests.adversarial.helpers import cli

NO_TRUST = TrustAnchors.from_mapping({"version": 1})


def write(path: Path, n: int) -> list[dict]:
    with JsonlAuditLog(path) as log:
        return [log.append({"type": "call.denied", "tool": f"t{i}"}) for i in range(n)]


def first(path: Path) -> dict:
    return json.loads(path.read_bytes().splitlines()[0])


def test_rotate_starts_a_chain_that_names_the_old_logs_final_head(log_path: Path) -> None:
    old = write(log_path, 3)
    done = rotate_log(log_path)
    assert done.archive and Path(done.archive).exists() and Path(done.archive + ".head").exists()
    head = first(log_path)
    assert head["type"] == "audit.rotated" and head["seq"] == 1
    assert head["previous"] == {"file": Path(done.archive).name, "seq": 3,
                                "hash": old[-1]["hash"], "first": old[0]["hash"]}
    assert verify_log(done.archive).ok and verify_log(log_path).ok
    write(log_path, 2)  # a new writer carries on the new chain
    report = verify_anchored(log_path, NO_TRUST)
    assert report.ok and report.last_seq == 3, report.problems


def test_a_log_that_does_not_verify_is_not_rotated(log_path: Path) -> None:
    write(log_path, 3)
    lines = log_path.read_bytes().splitlines(keepends=True)
    log_path.write_bytes(lines[0] + lines[1].replace(b"t1", b"t9") + lines[2])
    with pytest.raises(AuditError, match="does not verify"):
        rotate_log(log_path)
    assert log_path.read_bytes().count(b"\n") == 3  # left exactly as it was


def test_an_archive_edited_after_rotation_breaks_the_link(log_path: Path) -> None:
    write(log_path, 3)
    done = rotate_log(log_path)
    archive = Path(done.archive)
    lines = archive.read_bytes().splitlines(keepends=True)
    archive.write_bytes(b"".join(lines[:2]))  # cut the archive's tail
    report = verify_anchored(log_path, NO_TRUST)
    assert not report.ok and "rotation_mismatch" in {p.kind for p in report.problems}


def test_a_writer_holding_the_rotated_file_follows_the_rotation(log_path: Path) -> None:
    log = JsonlAuditLog(log_path)
    log.append({"type": "call.denied"})
    rotate_log(log_path)
    record = log.append({"type": "call.denied", "tool": "after"})
    log.close()
    assert record["seq"] == 2 and [r["type"] for r in map(json.loads, log_path.read_bytes()
                                                           .splitlines())] == [
        "audit.rotated", "call.denied"]
    assert verify_anchored(log_path, NO_TRUST).ok


def test_a_writer_does_not_follow_a_rotation_whose_archive_lacks_its_records(
    log_path: Path
) -> None:
    log = JsonlAuditLog(log_path)
    for _ in range(3):
        log.append({"type": "call.denied"})
    # The agent: cut the log to one record (head rewritten), "rotate" that, and hope the
    # writer carries on in the new chain.
    lines = log_path.read_bytes().splitlines(keepends=True)
    log_path.unlink()
    Path(f"{log_path}.head").unlink()
    write(log_path, 0)
    log_path.write_bytes(lines[0])
    from agentguard.audit.jsonl import format_head

    Path(f"{log_path}.head").write_bytes(format_head(
        1, json.loads(lines[0])["hash"], len(lines[0])))
    rotate_log(log_path)
    with pytest.raises(AuditError, match=r"removed or replaced.*does not"):
        log.append({"type": "call.denied"})
    log.close()


def test_a_writer_does_not_follow_a_reset(log_path: Path) -> None:
    log = JsonlAuditLog(log_path)
    log.append({"type": "call.denied"})
    rotate_log(log_path, reset="testing")
    with pytest.raises(AuditError, match="removed or replaced"):
        log.append({"type": "call.denied"})
    log.close()


def test_a_deleted_log_fails_closed_until_it_is_reset(log_path: Path) -> None:
    write(log_path, 3)
    log_path.unlink()  # the head remains
    with pytest.raises(AuditError, match="shorter than its head says"):
        write(log_path, 1)
    done = rotate_log(log_path, reset="log deleted by mistake on 2026-12-05")
    record = first(log_path)
    assert record["type"] == "audit.reset" and record["reason"].startswith("log deleted")
    assert record["previous"]["head"]["seq"] == 3
    assert done.archive and Path(done.archive + ".head").exists()
    write(log_path, 2)
    report = verify_anchored(log_path, NO_TRUST)
    assert report.ok and [p.kind for p in report.problems] == ["reset"]  # said, as a warning


def test_a_reset_needs_a_reason(log_path: Path) -> None:
    write(log_path, 1)
    with pytest.raises(AuditError, match="reason"):
        rotate_log(log_path, reset=" ")


def test_cli_rotate_and_reset(log_path: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    write(log_path, 2)
    out = cli("audit", "rotate", str(log_path), home=home)
    assert out.returncode == 0 and b"rotated:" in out.stdout
    assert cli("audit", "verify", str(log_path), home=home).returncode == 0
    log_path.write_bytes(b"garbage\n")
    assert cli("audit", "rotate", str(log_path), home=home).returncode == 1
    refused = cli("audit", "reset", str(log_path), home=home)
    assert refused.returncode == 2 and b"--reason" in refused.stderr
    done = cli("audit", "reset", str(log_path), "--reason", "garbage", "--yes", home=home)
    assert done.returncode == 0 and b"malformed" in done.stdout
    shown = cli("audit", "verify", str(log_path), "--trust", "/dev/null", home=home)
    assert shown.returncode == 0 and b"reset" in shown.stderr
