"""CLI conventions through the real CLI in subprocesses: --version, exit codes, NO_COLOR,
the documented --json shapes."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

import agentguard
from agentguard.audit import JsonlAuditLog
from agentguard.store import SQLiteStore
from agentguard.types import ApprovalRequest, ApprovalSpec, ApprovalVote, Grant

HOSTILE = "deploy\x1b[2J\u202e"


def cli(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    full.update(AGENTGUARD_HOME=str(home), **env)
    return subprocess.run([sys.executable, "-m", "agentguard.cli", *args], env=full,
                          capture_output=True, text=True, timeout=60)


def on_terminal(*args: str, home: Path, **env: str) -> bytes:
    """Run the CLI with stdout and stderr on a pseudo-terminal; everything it wrote."""
    full = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    full.update(AGENTGUARD_HOME=str(home), TERM="xterm", **env)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "agentguard.cli", *args], env=full,
                            stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(leader)
    return out


def _request(rid: str, tool: str, now: float) -> ApprovalRequest:
    return ApprovalRequest(
        id=rid, call={"tool": tool, "server": "ops", "args": {"env": "prod"},
                      "principal": "svc:bot"},
        call_hash="ab" * 32, created_at=now, expires_at=now + 600, rule_id="prod-deploy",
        reason="rule 'prod-deploy'", privilege="destructive", labels=("deploy",),
        approval=ApprovalSpec(approvers=("group:oncall",), quorum=2, max_grant=900.0),
        votes=(ApprovalVote("alice", True, now, "cli"),))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with one pending request (hostile tool name), one grant, pins and a log."""
    base = tmp_path_factory.mktemp("home")
    now = time.time()

    async def fill() -> None:
        store = SQLiteStore(base / "agentguard.db")
        await store.open()
        try:
            await store.create_request(_request("req_one", HOSTILE, now))
            await store.add_grant(Grant(
                id="gr_one", scope="ttl", principal="svc:bot", server="ops", tool="deploy",
                max_rank=2, expires_at=now + 900, granted_by="alice", rule_id="prod-deploy",
                created_at=now, acting_for="carol", request_id="req_one"))
            await store.set_pin("ops", "deploy", "1" * 64)
            await store.set_pin("~pending/ops", "deploy", "2" * 64)
        finally:
            await store.close()

    anyio.run(fill)
    log = JsonlAuditLog(base / "audit.jsonl")
    log.append({"type": "call.allowed", "tool": HOSTILE})
    log.append({"type": "call.denied", "tool": "x"})
    log.close()
    return base


def test_version_is_the_package_version(home: Path) -> None:
    from agentguard.proxy import __version__ as proxy_version

    done = cli("--version", home=home)
    assert done.returncode == 0 and done.stdout == f"agentguard {agentguard.__version__}\n"
    assert proxy_version is agentguard.__version__
    from importlib.metadata import version

    assert version("agentguard") == agentguard.__version__


def test_help_documents_exit_codes_and_no_color(home: Path) -> None:
    text = " ".join(cli("--help", home=home, COLUMNS="200").stdout.split())
    assert "Exit status: 0 ok; 1 refused, failed or not found" in text
    assert "2 usage" in text and "NO_COLOR" in text


@pytest.mark.parametrize("args", [
    ["approvals", "show", "req_missing"],
    ["approvals", "approve", "req_missing", "--as", "alice"],
    ["approvals", "deny", "req_missing", "--as", "alice"],
    ["approvals", "edit", "req_missing", "--args", "{}", "--as", "alice"],
    ["grants", "revoke", "gr_missing"],
    ["audit", "tail", "/nonexistent/audit.jsonl"],
    ["audit", "verify", "/nonexistent/audit.jsonl"],
    ["audit", "report", "/nonexistent/audit.jsonl"],
])
def test_not_found_exits_1_everywhere(home: Path, args: list[str]) -> None:
    done = cli(*args, home=home)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [
    ["approvals", "show"],
    ["approvals", "nosuch"],
    ["approvals", "edit", "req_one", "--args", "[1]"],
    ["audit", "verify", "--expect", "nonsense"],
    ["policy", "explain", "/nonexistent.yaml", "--call", "{}"],
])
def test_usage_errors_exit_2(home: Path, args: list[str]) -> None:
    done = cli(*args, home=home)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr


def test_error_prefix_is_red_on_a_terminal_unless_no_color(home: Path) -> None:
    args = ("approvals", "show", "req_missing")
    assert b"\x1b[31merror: no approval request" in on_terminal(*args, home=home)
    plain = on_terminal(*args, home=home, NO_COLOR="1")
    assert b"error: no approval request" in plain and b"\x1b[" not in plain


def test_audit_report_honours_no_color(home: Path) -> None:
    coloured = on_terminal("audit", "report", str(home / "audit.jsonl"), home=home,
                           COLUMNS="120")
    assert _colours(coloured)
    plain = on_terminal("audit", "report", str(home / "audit.jsonl"), home=home,
                        COLUMNS="120", NO_COLOR="1")
    assert b"chain" in plain and not _colours(plain)


def _colours(output: bytes) -> set[int]:
    """SGR colour parameters (foreground/background, 8, 16, 256 and true colour) used."""
    found: set[int] = set()
    for params in re.findall(rb"\x1b\[([0-9;]*)m", output):
        for p in params.split(b";"):
            if p and (30 <= int(p) <= 49 or 90 <= int(p) <= 107):
                found.add(int(p))
    return found


def _json(*args: str, home: Path) -> object:
    done = cli(*args, "--json", home=home)
    assert done.returncode == 0, done.stderr
    assert done.stdout.isascii() and "\x1b" not in done.stdout
    return json.loads(done.stdout)


REQUEST_KEYS = {"id", "status", "server", "tool", "principal", "call", "call_hash", "shown_hash",
                "rule",
                "reason", "class", "labels", "created_at", "expires_at", "approval", "reauth",
                "votes", "decided_by", "decided_at"}


def test_approvals_list_and_show_json(home: Path) -> None:
    listed = _json("approvals", "list", home=home)
    assert set(listed) == {"requests"} and len(listed["requests"]) == 1
    shown = _json("approvals", "show", "req_one", home=home)
    assert listed["requests"][0] == shown
    assert set(shown) == REQUEST_KEYS
    assert shown["tool"] == HOSTILE and shown["call"]["args"] == {"env": "prod"}
    assert shown["approval"] == {
        "approvers": ["group:oncall"], "quorum": 2, "separation_of_duties": False,
        "timeout": 300.0, "channels": [], "max_grant": 900.0, "assurance": "any"}
    assert shown["votes"] == [{"approver": "alice", "approve": True,
                               "at": shown["votes"][0]["at"], "channel": "cli", "reason": "",
                               "grant_ttl": 0.0, "edited": False, "signed": False}]


def test_grants_list_json(home: Path) -> None:
    grants = _json("grants", "list", home=home)["grants"]
    assert [g["id"] for g in grants] == ["gr_one"]
    assert set(grants[0]) == {"id", "kind", "scope", "principal", "acting_for", "server",
                              "tool", "max_rank", "rule", "session_id", "created_at",
                              "expires_at", "granted_by", "uses", "request_id"}
    assert grants[0]["acting_for"] == "carol" and grants[0]["scope"] == "ttl"


def test_pins_list_json(home: Path) -> None:
    assert _json("pins", "list", home=home) == {"pins": [{
        "server": "ops", "tool": "deploy", "state": "changed", "pinned_hash": "1" * 64,
        "pending_hash": "2" * 64}]}


def test_pins_list_says_the_state_once(home: Path) -> None:
    done = cli("pins", "list", home=home)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"changed  ops/deploy  hash {'1' * 16}  pending {'2' * 16}\n"


def test_audit_tail_json_is_json_lines(home: Path) -> None:
    done = cli("audit", "tail", "--json", home=home)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["type"] for e in events] == ["call.allowed", "call.denied"]
    assert events[0]["tool"] == HOSTILE and "\x1b" not in done.stdout
    assert all(isinstance(e["seq"], int) for e in events)


def test_audit_verify_json(home: Path, tmp_path: Path) -> None:
    out = _json("audit", "verify", home=home)
    assert set(out) == {"ok", "path", "records", "last_seq", "last_hash", "problems"}
    assert out["ok"] is True and out["records"] == 2 and out["problems"] == []
    broken = tmp_path / "audit.jsonl"
    lines = (home / "audit.jsonl").read_text().splitlines()
    broken.write_text(lines[1] + "\n")
    done = cli("audit", "verify", str(broken), "--json", home=tmp_path)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["problems"]
    assert set(report["problems"][0]) == {"seq", "line", "kind", "detail", "severity"}


COMMANDS = [
    [], ["demo"], ["proxy"], ["serve"], ["policy", "check"], ["policy", "explain"],
    ["approvals", "list"], ["approvals", "show"], ["approvals", "approve"],
    ["approvals", "deny"], ["approvals", "edit"], ["approvals", "watch"],
    ["approvers", "keygen"], ["approvers", "list"], ["grants", "list"], ["grants", "revoke"],
    ["reauth", "enroll"], ["audit", "tail"], ["audit", "verify"], ["audit", "report"],
    ["pins", "list"], ["pins", "approve"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "agentguard")
def test_help_fits_80_columns_uncut_with_named_values(home: Path, args: list[str]) -> None:
    done = cli(*args, "--help", home=home, COLUMNS="80")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if len(line) > 80] == []
    assert "…" not in done.stdout
    options = done.stdout.partition("\nOptions:\n")[2]
    assert "<str>" not in options and "<bool>" not in options and "<int>" not in options


def test_help_rewraps_docstrings_instead_of_keeping_their_line_breaks(home: Path) -> None:
    text = cli("proxy", "--help", home=home, COLUMNS="80").stdout
    # The docstring breaks after "fronts the"; re-wrapped, no line is left as an orphan.
    paragraph = text.partition("The proxy is")[2].partition("\n\n")[0]
    assert all(len(line) > 40 for line in paragraph.splitlines()[:-1])
    assert "--store URL" in text and "--listen HOST:PORT" in text
