"""Signed checkpoints (issue 14): anchors of the audit chain the agent cannot forge alone.
The agent writes the log and can re-hash it, cut it with its head, or wipe it and start again;
a checkpoint signed by serve's service key (another OS user) and kept outside the log names a
record that must still be there, and the agent cannot sign a new one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentguard.audit import JsonlAuditLog, verify_log
from agentguard.audit.anchored import verify_anchored
from agentguard.audit.checkpoint import (
    Checkpoint,
    append_checkpoint_file,
    sign_checkpoint,
    write_checkpoint,
)
from agentguard.audit.jsonl import format_head
from agentguard.audit.lifecycle import rotate_log
from agentguard.errors import AuditError
from agentguard.trust import TrustAnchors, generate_key
from agentguard.trust.keys import public_key_text
from tests.adversarial.helpers import cli
from tests.adversarial.test_signed_audit import rechain, records


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    serve = generate_key(tmp_path / "serve" / "serve.key")
    dave = generate_key(tmp_path / "dave" / "dave.key")
    trust = {"version": 1,
             "approvers": [{"id": "dave", "keys": [public_key_text(dave.public_key())]}],
             "services": [{"name": "serve", "key": public_key_text(serve.public_key()),
                           "may_vouch_for": ["slack:*"]}]}
    (tmp_path / "trust.yaml").write_text(yaml.safe_dump(trust))
    log = tmp_path / "audit.jsonl"
    with JsonlAuditLog(log) as writer:
        for i in range(5):
            writer.append({"type": "call.denied", "tool": f"t{i}"})
    return {"log": log, "serve": serve, "dave": dave, "dir": tmp_path,
            "trust": TrustAnchors.from_mapping(trust), "out": tmp_path / "serve" / "cp.jsonl"}


def cut_to(path: Path, keep: int) -> None:
    lines = path.read_bytes().splitlines(keepends=True)[:keep]
    path.write_bytes(b"".join(lines))
    last = json.loads(lines[-1])
    Path(f"{path}.head").write_bytes(format_head(last["seq"], last["hash"], path.stat().st_size))


def errors(report: Any) -> set[str]:
    return {p.kind for p in report.problems if p.severity == "error"}


def test_a_checkpoint_verifies_and_anchors_the_log(world: dict[str, Any]) -> None:
    signed = write_checkpoint(world["log"], world["serve"], out=world["out"])
    assert signed.checkpoint.seq == 5
    assert records(world["log"])[-1]["type"] == "audit.checkpoint"
    report = verify_anchored(world["log"], world["trust"], checkpoint_files=(world["out"],))
    assert report.ok, report.problems


def test_a_cut_below_a_checkpoint_kept_elsewhere_is_detected(world: dict[str, Any]) -> None:
    write_checkpoint(world["log"], world["serve"], out=world["out"])
    cut_to(world["log"], 3)  # records 4, 5 and the checkpoint record go, the head is rewritten
    assert verify_log(world["log"]).ok  # the shorter chain is valid on its own
    report = verify_anchored(world["log"], world["trust"], checkpoint_files=(world["out"],))
    assert not report.ok and "truncated" in errors(report)


def test_a_record_rewritten_below_an_in_log_checkpoint_is_detected(
    world: dict[str, Any]
) -> None:
    write_checkpoint(world["log"], world["serve"], into_log=True)
    rows = records(world["log"])
    rows[2]["tool"] = "nothing-to-see"
    rechain(world["log"], rows)  # re-hashed from record 3 on; record 1 is untouched
    assert verify_log(world["log"]).ok
    report = verify_anchored(world["log"], world["trust"])
    assert not report.ok and "anchor_mismatch" in errors(report)


def test_a_wiped_and_restarted_log_does_not_meet_its_checkpoints(
    world: dict[str, Any]
) -> None:
    write_checkpoint(world["log"], world["serve"], out=world["out"], into_log=False)
    world["log"].unlink()
    Path(f"{world['log']}.head").unlink()
    with JsonlAuditLog(world["log"]) as writer:  # a fresh chain, perfectly valid
        for i in range(7):
            writer.append({"type": "call.denied", "tool": f"new{i}"})
    assert verify_log(world["log"]).ok
    report = verify_anchored(world["log"], world["trust"], checkpoint_files=(world["out"],))
    assert not report.ok and "foreign_checkpoint" in errors(report)


@pytest.mark.parametrize("signer", ["agent", "dave"])
def test_a_checkpoint_not_signed_by_a_listed_service_is_refused(
    world: dict[str, Any], signer: str
) -> None:
    key = generate_key(world["dir"] / "agent.key") if signer == "agent" else world["dave"]
    rows = records(world["log"])
    cut_to(world["log"], 3)
    # The agent "anchors" its cut log, with its own key or a (stolen) approver key.
    forged = sign_checkpoint(Checkpoint(rows[0]["hash"], 3, rows[2]["hash"], 1), key)
    append_checkpoint_file(world["out"], forged)
    report = verify_anchored(world["log"], world["trust"], checkpoint_files=(world["out"],))
    assert not report.ok and errors(report) == {"checkpoint_invalid"}


def test_an_edited_checkpoint_does_not_verify(world: dict[str, Any]) -> None:
    write_checkpoint(world["log"], world["serve"], out=world["out"], into_log=False)
    line = json.loads(world["out"].read_text())
    cut_to(world["log"], 2)
    rows = records(world["log"])
    line |= {"seq": 2, "hash": rows[1]["hash"]}  # retarget the real signature at the cut
    world["out"].write_text(json.dumps(line) + "\n")
    report = verify_anchored(world["log"], world["trust"], checkpoint_files=(world["out"],))
    assert not report.ok and errors(report) == {"checkpoint_invalid"}


def test_a_broken_log_is_not_checkpointed(world: dict[str, Any]) -> None:
    cut_to(world["log"], 2)
    Path(f"{world['log']}.head").write_bytes(format_head(5, "a" * 64, 9999))
    with pytest.raises(AuditError, match="does not verify"):
        write_checkpoint(world["log"], world["serve"], out=world["out"])


def test_checkpoints_of_a_rotated_chain_still_count(world: dict[str, Any]) -> None:
    write_checkpoint(world["log"], world["serve"], out=world["out"])
    rotate_log(world["log"])
    write_checkpoint(world["log"], world["serve"], out=world["out"])
    report = verify_anchored(world["log"], world["trust"], checkpoint_files=(world["out"],))
    assert report.ok, report.problems


def test_cli_checkpoint_and_verify(world: dict[str, Any]) -> None:
    home, log, out = world["dir"] / "home", str(world["log"]), str(world["out"])
    trust = str(world["dir"] / "trust.yaml")
    made = cli("audit", "checkpoint", log, "--key", str(world["dir"] / "serve" / "serve.key"),
               "--out", out, home=home)
    assert made.returncode == 0 and b"checkpoint: 5:" in made.stdout
    good = cli("audit", "verify", log, "--trust", trust, "--checkpoints", out, home=home)
    assert good.returncode == 0, good.stderr
    cut_to(world["log"], 4)
    assert cli("audit", "verify", log, home=home).returncode == 0
    bad = cli("audit", "verify", log, "--trust", trust, "--checkpoints", out, home=home)
    assert bad.returncode == 1 and b"truncated" in bad.stderr


def test_a_wipe_dressed_up_as_a_rotation_does_not_meet_the_checkpoints(
    world: dict[str, Any]
) -> None:
    write_checkpoint(world["log"], world["serve"], out=world["out"], into_log=False)
    first = records(world["log"])[0]
    world["log"].unlink()
    Path(f"{world['log']}.head").unlink()
    with JsonlAuditLog(world["log"]) as writer:  # a new chain claiming to continue the old one
        writer.append({"type": "audit.rotated", "previous": {
            "file": "audit.jsonl.gone", "seq": 999, "hash": "f" * 64, "first": first["hash"]}})
    report = verify_anchored(world["log"], world["trust"], checkpoint_files=(world["out"],))
    assert not report.ok and "previous_missing" in errors(report)


def test_checkpoints_across_two_rotations_are_checked_against_their_archives(
    world: dict[str, Any]
) -> None:
    write_checkpoint(world["log"], world["serve"], out=world["out"])
    oldest = rotate_log(world["log"]).archive
    write_checkpoint(world["log"], world["serve"], out=world["out"])
    rotate_log(world["log"])
    write_checkpoint(world["log"], world["serve"], out=world["out"])
    report = verify_anchored(world["log"], world["trust"], checkpoint_files=(world["out"],))
    assert report.ok, report.problems
    assert oldest is not None
    cut_to(Path(oldest), 3)  # the agent cuts the oldest archive below its checkpoint
    report = verify_anchored(world["log"], world["trust"], checkpoint_files=(world["out"],))
    assert not report.ok and "rotation_mismatch" in errors(report)
