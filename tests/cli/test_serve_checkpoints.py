"""`agentguard serve --service-key` signs checkpoints of the audit log itself (what `agentguard
audit checkpoint` does, on a timer), into the log and a file of its own; `audit verify
--checkpoints` then anchors the log, and a cut below a checkpoint is caught."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agentguard.audit import JsonlAuditLog
from agentguard.trust import generate_key
from agentguard.trust.keys import public_key_text


def agentguard(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentguard.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(90)
def test_serve_signs_checkpoints_of_the_log_on_its_own(tmp_path: Path) -> None:
    key_path = tmp_path / "serve" / "serve.key"
    key = generate_key(key_path)
    trust = tmp_path / "trust.yaml"
    trust.write_text(yaml.safe_dump({"version": 1, "approvers": [], "services": [
        {"name": "serve", "key": public_key_text(key.public_key()),
         "may_vouch_for": ["slack:*"]}]}))
    log, out = tmp_path / "agent" / "audit.jsonl", tmp_path / "serve" / "checkpoints.jsonl"
    log.parent.mkdir()
    writer = JsonlAuditLog(log)  # the agent's guard
    for i in range(3):
        writer.append({"type": "call.allowed", "tool": "read_status", "n": i})
    writer.close()
    env = {**os.environ, "AGENTGUARD_HOME": str(tmp_path / "serve"),
           "AGENTGUARD_WEBHOOK_SECRET": "s" * 32}
    env.pop("AGENTGUARD_SERVICE_KEY", None)
    serve = subprocess.Popen(
        [sys.executable, "-m", "agentguard.cli", "serve", "--webhook", "--port", "0",
         "--audit", str(tmp_path / "serve" / "serve-audit.jsonl"),
         "--service-key", str(key_path), "--checkpoint-every", "1s",
         "--checkpoint-log", str(log), "--checkpoint-out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stdout is not None
        signed = []
        while len(signed) < 2:  # the first at start, the next a period later
            line = serve.stdout.readline()
            assert line, serve.stderr.read() if serve.stderr else ""
            if "checkpoint " in line:
                assert " signed" in line, line
                signed.append(line)
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    assert len(out.read_text().splitlines()) >= 2
    ok = agentguard("audit", "verify", str(log), "--trust", str(trust),
                    "--checkpoints", str(out), env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # The agent cuts the log back to its first record (and its head with it): caught.
    lines = log.read_text().splitlines(keepends=True)
    log.write_text(lines[0])
    head = log.with_name(log.name + ".head")
    if head.exists():
        head.unlink()
    cut = agentguard("audit", "verify", str(log), "--trust", str(trust),
                     "--checkpoints", str(out), env=env)
    assert cut.returncode != 0 and "checkpoint" in cut.stdout + cut.stderr, cut.stdout
