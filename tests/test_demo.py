"""`agentguard demo` as a user runs it: a real subprocess, a temp home, the real audit log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentguard.audit import read_events, verify_log

PASSED = [("list_services", "routine-reads", "allowed"), ("get_status", "routine-reads", "allowed"),
          ("deploy", "staging-deploy", "allowed")]
HELD = [("deploy", "prod-deploy"), ("read_secret", "prod-secrets"),
        ("restart_service", "restarts")]


def run_demo(home: Path, *args: str) -> str:
    """Run the demo detached from any terminal (new session, stdin from /dev/null)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTGUARD_")}
    env.update(COLUMNS="200", NO_COLOR="1", TERM="dumb")
    done = subprocess.run(
        [sys.executable, "-m", "agentguard.cli", "demo", "--home", str(home), *args],
        stdin=subprocess.DEVNULL, capture_output=True, start_new_session=True, env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    output = done.stdout.decode()
    # The restart's argument holds ANSI and bidi characters: shown escaped, never raw.
    assert "\x1b" not in output and "\u202e" not in output
    assert "api\\x1b[2J\\u202egnp.exe" in output
    return output


def summary(output: str) -> list[tuple[str, str, str]]:
    """The summary table's rows: ``(tool, rule, outcome)``."""
    rows = []
    for line in output[output.index("summary"):].splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 5:
            tool, _cls, rule, outcome, _time = cells
            rows.append((tool, rule, outcome))
    return rows


def events(home: Path) -> list[dict]:
    report = verify_log(home / "audit.jsonl")
    assert report.ok and report.records > 0
    return list(read_events(home / "audit.jsonl"))


@pytest.mark.parametrize("answer", ["approve", "deny"])
def test_scripted_answers(tmp_path: Path, answer: str) -> None:
    output = run_demo(tmp_path, "--answer", answer)
    expected = "approved" if answer == "approve" else "denied"
    assert summary(output) == PASSED + [(tool, rule, expected) for tool, rule in HELD]
    assert "6 calls, 3 held or refused" in output and "chain intact" in output
    log = events(tmp_path)
    executed = [e["tool"] for e in log if e["type"] == "call.executed"]
    decided = [e for e in log if e["type"] == "challenge.denied"]
    if answer == "approve":
        assert executed == ["deploy", "read_secret", "restart_service"] and not decided
        assert output.count("ran") >= 6 and "not run" not in output
    else:
        assert executed == [] and [e["approver"] for e in decided] == ["demo-approver"] * 3
        assert output.count("-> not run") == 3
    prod = next(e for e in log if e["type"] == "challenge.created" and e["tool"] == "deploy")
    assert prod["rule_id"] == "prod-deploy" and prod["signals"] == ["unknown_network"]
    assert prod["source_ip"] == "203.0.113.9"


def test_without_a_terminal_held_calls_are_unreachable_and_nothing_runs(
    tmp_path: Path,
) -> None:
    output = run_demo(tmp_path)  # --answer console, but no controlling terminal
    assert summary(output) == PASSED + [(tool, rule, "unreachable") for tool, rule in HELD]
    assert output.count("-> not run") == 3 and "chain intact" in output
    log = events(tmp_path)
    assert not [e for e in log if e["type"] == "call.executed"]
    unreachable = [e for e in log if e["type"] == "challenge.unreachable"]
    assert len(unreachable) == 3 and all(e["outcome"] == "unreachable" for e in unreachable)
    assert all("console" in json.dumps(e.get("detail")) for e in unreachable)
