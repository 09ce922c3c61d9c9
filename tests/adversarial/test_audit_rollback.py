"""The agent (same OS user) erasing its own record: cutting the audit log's tail and
rewriting the head file to match, or wiping both. The chain alone cannot see that (the cut
log is a valid shorter chain); a writer that remembers what it wrote, and anchors noted
outside the log (``audit verify --expect SEQ:HASH``), can."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agentguard.audit import JsonlAuditLog, verify_log
from agentguard.audit.jsonl import format_head
from agentguard.errors import AuditError
from tests.adversarial.helpers import cli


def written(path: Path, n: int) -> tuple[JsonlAuditLog, list[dict]]:
    log = JsonlAuditLog(path)
    records = [log.append({"type": "call.executed", "tool": f"t{i}"}) for i in range(n)]
    return log, records


def cut_to(path: Path, keep: int) -> None:
    """What the attacker does: keep the first ``keep`` lines and rewrite the head to match."""
    lines = path.read_bytes().splitlines(keepends=True)[:keep]
    path.write_bytes(b"".join(lines))
    last = json.loads(lines[-1])
    Path(f"{path}.head").write_bytes(format_head(last["seq"], last["hash"], path.stat().st_size))


def test_a_cut_tail_with_a_rewritten_head_verifies_clean_without_an_anchor(
    tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    log, records = written(path, 5)
    log.close()
    cut_to(path, 2)
    assert verify_log(path).ok  # the hole this file is about: the shorter chain is valid
    report = verify_log(path, expect={records[-1]["seq"]: records[-1]["hash"]})
    assert not report.ok and report.problems[0].kind == "truncated"


def test_an_open_writer_refuses_to_carry_on_after_the_log_went_backwards(
    tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    log, _ = written(path, 5)
    cut_to(path, 2)
    with pytest.raises(AuditError, match="went backwards"):
        log.append({"type": "call.executed", "tool": "after the cut"})


def test_an_open_writer_refuses_to_start_a_new_chain_after_a_wipe(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log, _ = written(path, 3)
    for name in (path, Path(f"{path}.head")):
        with open(name, "r+b") as f:
            f.truncate(0)
    with pytest.raises(AuditError, match="went backwards"):
        log.append({"type": "call.executed", "tool": "seq 1 again?"})
    assert os.path.getsize(path) == 0


def test_verify_expect_on_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log, records = written(path, 4)
    log.close()
    ok = cli("audit", "verify", str(path), home=tmp_path)
    assert ok.returncode == 0
    anchor = f"{records[-1]['seq']}:{records[-1]['hash']}"
    assert anchor in ok.stdout.decode()  # what to keep elsewhere
    cut_to(path, 1)
    assert cli("audit", "verify", str(path), home=tmp_path).returncode == 0
    caught = cli("audit", "verify", str(path), "--expect", anchor, home=tmp_path)
    assert caught.returncode == 1 and b"truncated" in caught.stderr
    path.unlink()
    Path(f"{path}.head").unlink()
    gone = cli("audit", "verify", str(path), "--expect", anchor, home=tmp_path)
    assert gone.returncode == 1 and b"gone" in gone.stderr
    bad = cli("audit", "verify", str(path), "--expect", "12:xyz", home=tmp_path)
    assert bad.returncode != 0 and b"SEQ:HASH" in bad.stderr
