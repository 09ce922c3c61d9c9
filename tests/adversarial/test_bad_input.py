"""Bad input at the guard, decorator and CLI boundaries: a clear error, the process survives,
memory stays bounded.

Already asserted elsewhere (not repeated): ``loads_strict`` on duplicate keys, NaN, unsafe
integers and 10,000-deep nesting (tests/test_canonical.py), deep nesting and 5 MB arguments
at the guard (tests/test_guard_failures.py), ``policy explain`` on duplicate keys
(tests/cli/test_policy_cli.py::test_explain_rejects_ambiguous_json), ``approvals edit`` with a
non-object (tests/cli/test_approver_terminal.py).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest

from agentguard import Guard, Policy, PolicyError, ToolCallRefused, guarded, load_policy
from agentguard.audit import JsonlAuditLog, read_events, verify_log
from agentguard.store import SQLiteStore
from agentguard.testing.store_samples import sample_request
from tests.adversarial.helpers import PATIENT_POLICY, POLICY, Silent, cli, unsafe_chars

DEEP = '{"tool": "x", "args": ' + '{"a": ' * 70 + "1" + "}" * 70 + "}"

HOSTILE_CALLS: dict[str, tuple[str | bytes, int, str]] = {
    # name: (--call text, exit code, what stderr/stdout must say)
    "duplicate keys": ('{"tool": "delete", "tool": "get_status"}', 2, "duplicate key"),
    "NaN": ('{"tool": "x", "args": {"n": NaN}}', 2, "not valid JSON"),
    "unsafe integer": ('{"tool": "x", "args": {"n": 9007199254740993}}', 2, "safe range"),
    "overflowing float": ('{"tool": "x", "args": {"n": 1e400}}', 2, "infinity"),
    "deep nesting": (DEEP, 2, "nested deeper"),
    "very deep nesting": ("[" * 100_000, 2, "--call"),
    "empty": ("", 2, "invalid JSON"),
    "not an object": ('"delete"', 2, "JSON object"),
    "tool not a string": ('{"tool": 5}', 2, "JSON object"),
    "lone surrogate escape": ('{"tool": "x\\ud800", "principal": "\\udfff"}', 0, "x\\ud800"),
    "invalid UTF-8 bytes": (b'{"tool": "x\xff\xfe", "principal": "\xc0"}', 0, "x\\udcff"),
    "control characters": ('{"tool": "x\\u001b[2J\\r", "principal": "a\\u202e"}', 0,
                           "x\\x1b[2J\\x0d"),
}


@pytest.mark.parametrize("text,code,says", HOSTILE_CALLS.values(), ids=HOSTILE_CALLS.keys())
def test_policy_explain_refuses_hostile_json_clearly(tmp_path: Path, text: str | bytes,
                                                     code: int, says: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    proc = cli("policy", "explain", str(path), "--call", text, home=tmp_path)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert says in (out if code == 0 else err)
    assert unsafe_chars(out + err) == set()


@pytest.mark.parametrize("server", ["5", "null", '["a"]'])
def test_policy_explain_refuses_a_server_that_is_not_a_string(tmp_path: Path,
                                                               server: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    proc = cli("policy", "explain", str(path), "--call", f'{{"tool": "x", "server": {server}}}',
               home=tmp_path)
    assert "Traceback" not in proc.stderr.decode()
    assert proc.returncode == 2 and "server" in proc.stderr.decode()


EDITS: dict[str, tuple[str | bytes, int, str]] = {
    "duplicate keys": ('{"service": "api", "service": "all"}', 2, "duplicate key"),
    "NaN": ('{"n": NaN}', 2, "not valid JSON"),
    "unsafe integer": ('{"n": -9007199254740993}', 2, "safe range"),
    "deep nesting": ('{"a": ' * 70 + "1" + "}" * 70, 2, "nested deeper"),
    "very deep nesting": ("[" * 100_000, 2, "--args"),
    "truncated": ('{"service": "api"', 2, "invalid JSON"),
}


def test_an_integer_too_long_to_parse_is_a_clear_error(tmp_path: Path) -> None:
    from agentguard.canonical import CanonicalizationError, loads_strict

    text = '{"tool": "x", "args": {"n": ' + "9" * 5000 + "}}"
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    proc = cli("policy", "explain", str(path), "--call", text, home=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr.decode()
    with pytest.raises(CanonicalizationError):
        loads_strict(text)


@pytest.mark.anyio
@pytest.mark.parametrize("text,code,says", EDITS.values(), ids=EDITS.keys())
async def test_approvals_edit_refuses_hostile_json_clearly(tmp_path: Path, text: str | bytes,
                                                           code: int, says: str) -> None:
    async with SQLiteStore(tmp_path / "state.db") as store:
        request = sample_request(time.time)
        await store.create_request(request)
        proc = await anyio.to_thread.run_sync(lambda: cli(
            "approvals", "edit", request.id, "--args", text, "--as", "alice",
            "--store", f"sqlite:///{tmp_path / 'state.db'}", home=tmp_path))
        after = await store.get_request(request.id)
    assert proc.returncode == code and "Traceback" not in proc.stderr.decode()
    assert says in proc.stderr.decode()
    assert after is not None and after.status == "pending"  # nothing was recorded


@pytest.mark.anyio
@pytest.mark.parametrize("edit", ['{"service": "\\ud800"}', b'{"service": "\xff"}'],
                         ids=["lone-surrogate-escape", "invalid-utf8-argv"])
async def test_edited_arguments_that_cannot_be_hashed_fail_closed(tmp_path: Path,
                                                                  edit: str | bytes) -> None:
    db, log = tmp_path / "state.db", tmp_path / "audit.jsonl"
    ran: list[str] = []
    async with Guard(Policy.from_yaml(PATIENT_POLICY), store=SQLiteStore(db),
                     audit=JsonlAuditLog(log), channels=[Silent()]) as guard:

        @guarded(guard=guard)
        async def restart(service: str) -> None:
            ran.append(service)

        refused: list[ToolCallRefused] = []

        async def held() -> None:
            try:
                await restart("api")
            except ToolCallRefused as exc:
                refused.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(held)
            with anyio.fail_after(10):
                while not (pending := await guard.store.list_requests("pending")):
                    await anyio.sleep(0.02)
            proc = await anyio.to_thread.run_sync(lambda: cli(
                "approvals", "edit", pending[0].id, "--args", edit, "--as", "alice",
                "--store", f"sqlite:///{db}", home=tmp_path))
            assert proc.returncode == 0, proc.stderr
    assert ran == []
    assert refused[0].kind == "denied" and "failed closed" in refused[0].reason
    assert [e["type"] for e in read_events(log)] == ["challenge.created", "challenge.edited",
                                                     "call.denied"]
    assert verify_log(log).ok


@pytest.mark.parametrize("rid", [
    "req_\x1b[2J\u202e",
    pytest.param(b"req_\xff"),
], ids=["ansi", "invalid-utf8"])
def test_approvals_show_of_a_hostile_id_is_a_clear_error(tmp_path: Path, rid: str | bytes) -> None:
    proc = cli("approvals", "show", rid, "--store", f"sqlite:///{tmp_path / 's.db'}",
               home=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "no approval request" in err and "Traceback" not in err
    assert unsafe_chars(err) == set() and b"\x1b" not in proc.stderr


# ---------------------------------------------------------------------------- policy files


@pytest.mark.parametrize("raw", [
    b"rules:\n  - {id: r\xff, match: {tool: x}, class: read}\n",
    b"\xef\xbb\xbfrules: [{id: r, match: {tool: \xed\xa0\x80}, class: read}]\n",  # CESU surrogate
    b"rules: [{id: r, match: {tool: \x00}, class: read}]\n",
    pytest.param(b"rules: [" * 10_000),
], ids=["invalid-utf8", "encoded-surrogate", "nul-byte", "deep-yaml"])
def test_a_broken_policy_file_is_a_clear_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(raw)
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    assert str(path) in str(error.value)
    proc = cli("policy", "check", str(path), home=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err and str(path) in err


# ---------------------------------------------------------------------------- guard boundary


@pytest.mark.anyio
async def test_lone_surrogates_in_arguments_never_break_the_audit_writer(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    policy = Policy.from_yaml(POLICY.replace("deny_cooldown: 1m}", "deny_cooldown: 1m, "
                                             "log_allows: true}"))
    guard = Guard(policy, audit=JsonlAuditLog(log), channels=[Silent()])
    ran: list[str] = []

    @guarded(guard=guard)
    async def get_status(name: str) -> None:
        ran.append(name)

    @guarded(guard=guard, name="restart")
    async def restart(service: str) -> None:
        ran.append(service)

    async with guard:
        await get_status("half \ud800 pair")  # routine: allowed, and the allow is audited
        with pytest.raises(ToolCallRefused) as held:
            await restart("\udcff")  # held: its hash cannot be computed, so refused
    assert ran == ["half \ud800 pair"]
    assert held.value.kind == "denied" and "failed closed" in held.value.reason
    records = list(read_events(log))
    assert [r["type"] for r in records] == ["call.allowed", "call.denied"]
    assert records[0]["args"] == {"name": "half \ud800 pair"}
    assert verify_log(log).ok


_BIG_ARGS = textwrap.dedent("""
    import json, resource, sys
    import anyio
    from agentguard import Guard, Policy, ToolCallRefused, guarded
    from agentguard.audit import JsonlAuditLog
    from agentguard.store import SQLiteStore

    kind, db, log = sys.argv[1:4]
    if kind == "ascii":
        value = "x" * 50_000_000
    elif kind == "emoji":
        value = "\\U0001f511" * 12_500_000          # 50 MB of UTF-8, 4 bytes a character
    else:
        value = {f"k{i:07d}": "v" * 90 for i in range(500_000)}   # 50 MB in many small keys

    guard = Guard(Policy.from_yaml("rules: [{id: d, match: {tool: upload}, class: destructive}]"),
                  store=SQLiteStore(db), audit=JsonlAuditLog(log))

    @guarded(guard=guard)
    async def upload(blob) -> None:
        raise SystemExit("ran")

    async def main() -> None:
        async with guard:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            try:
                await upload(value)
            except ToolCallRefused as exc:
                after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                print(json.dumps({"kind": exc.kind, "reason": exc.reason,
                                  "growth_kb": after - before}))

    anyio.run(main)
""")


@pytest.mark.parametrize("kind", ["ascii", "emoji", "many-keys"])
def test_50_mb_arguments_are_refused_with_bounded_memory(tmp_path: Path, kind: str) -> None:
    import json

    db, log = tmp_path / "state.db", tmp_path / "audit.jsonl"
    proc = subprocess.run([sys.executable, "-c", _BIG_ARGS, kind, str(db), str(log)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr  # the process survives
    result = json.loads(proc.stdout)
    assert result["kind"] == "denied" and "max_args_bytes" in result["reason"]
    assert result["growth_kb"] < 400 * 1024  # peak RSS growth, a memory bound (not a time)
    [record] = read_events(log)
    assert record["args"]["truncated"] is True and log.stat().st_size < 64 * 1024
