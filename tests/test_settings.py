"""One default store and audit log for every entry point, and the README's "Guarding a
function" snippet meeting `agentguard approvals` from another process."""

from __future__ import annotations

import datetime as dt
import os
import re
import selectors
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agentguard.audit import JsonlAuditLog
from agentguard.settings import (
    approver_identity,
    audit_path,
    default_audit,
    default_home,
    default_store,
    store_url,
)
from agentguard.store import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AGENTGUARD_STORE", "AGENTGUARD_AUDIT", "AGENTGUARD_APPROVER")}
    env.update(AGENTGUARD_HOME=str(home), **extra)
    return env


def test_defaults_live_under_agentguard_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("AGENTGUARD_STORE", raising=False)
    monkeypatch.delenv("AGENTGUARD_AUDIT", raising=False)
    monkeypatch.setenv("AGENTGUARD_HOME", str(tmp_path / "home"))
    assert default_home() == tmp_path / "home" and (tmp_path / "home").is_dir()
    assert store_url() == f"sqlite:///{tmp_path}/home/agentguard.db"
    assert audit_path() == tmp_path / "home" / "audit.jsonl"
    store = default_store()
    assert isinstance(store, SQLiteStore)
    log = default_audit()
    try:
        assert isinstance(log, JsonlAuditLog)
        assert Path(log.path) == tmp_path / "home" / "audit.jsonl"
        assert (tmp_path / "home" / "audit.jsonl.key").exists()  # redaction keyed like the CLI's
    finally:
        log.close()


def test_environment_and_explicit_values_win(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AGENTGUARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AGENTGUARD_STORE", "memory://")
    monkeypatch.setenv("AGENTGUARD_AUDIT", str(tmp_path / "elsewhere" / "a.jsonl"))
    assert store_url() == "memory://"
    assert store_url("sqlite:///x.db") == "sqlite:///x.db"
    assert audit_path() == tmp_path / "elsewhere" / "a.jsonl"
    log = default_audit(tmp_path / "explicit.jsonl")
    try:
        assert Path(log.path) == tmp_path / "explicit.jsonl"
    finally:
        log.close()


def test_home_expands_a_tilde(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AGENTGUARD_HOME", "~/ag")
    assert default_home() == tmp_path / "ag"


def test_approver_identity_flag_then_environment_then_os_user(monkeypatch) -> None:
    import getpass

    monkeypatch.setenv("AGENTGUARD_APPROVER", "alice")
    assert approver_identity("bob") == "bob"
    assert approver_identity() == "alice"
    monkeypatch.delenv("AGENTGUARD_APPROVER")
    assert approver_identity() == getpass.getuser()


def _readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Guarding a function"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("\n```", start)]


def _policy_held_now(dest: Path) -> None:
    """scenarios.yaml with its change window on a day three days away: the deploy is held."""
    policy = (ROOT / "examples/policies/scenarios.yaml").read_text()
    today = dt.datetime.now(ZoneInfo("Europe/London")).weekday()
    assert "days: [tue, wed, thu]" in policy
    dest.parent.mkdir(parents=True)
    dest.write_text(policy.replace("days: [tue, wed, thu]", f"days: [{DAYS[(today + 3) % 7]}]"))


@pytest.mark.timeout(120)
def test_readme_snippet_is_approved_from_another_process(tmp_path: Path) -> None:
    """Paste the snippet into one process; the command it prints works in another."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    _policy_held_now(work / "examples/policies/scenarios.yaml")
    # A new session has no controlling terminal, so the console channel is unavailable and
    # the approver terminal is the one left (as for a headless agent).
    agent = subprocess.Popen([sys.executable, "-c", _readme_snippet()], cwd=work,
                             env=_env(home), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        hint = None
        seen = ""
        sel = selectors.DefaultSelector()
        sel.register(agent.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        while hint is None and time.monotonic() < deadline and agent.poll() is None:
            if sel.select(timeout=1):
                line = agent.stderr.readline()
                seen += line
                hint = re.search(r"decide with `(agentguard approvals approve \S+)`", line)
        assert hint is not None, seen
        command = hint.group(1).split()
        cli = Path(sys.executable).with_name("agentguard")
        listed = subprocess.run([str(cli), "approvals", "list"], env=_env(home),
                                capture_output=True, text=True, timeout=60)
        assert command[-1] in listed.stdout, listed.stdout + listed.stderr
        approved = subprocess.run([str(cli), *command[1:]],
                                  env=_env(home, AGENTGUARD_APPROVER="alice"),
                                  capture_output=True, text=True, timeout=60)
        assert approved.returncode == 0, approved.stdout + approved.stderr
        out, err = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.returncode == 0, err
    assert out.strip() == "deployed api 1.4.2 to production"
    log = (home / "audit.jsonl").read_text()
    assert '"call.executed"' in log and '"alice"' in log  # one log, both processes
