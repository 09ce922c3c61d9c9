"""Reading logs back: read_events, tail (with follow) and the escaped one-line format."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentguard.audit import JsonlAuditLog, format_event, read_events, tail
from agentguard.errors import AuditError
from agentguard.sanitize import unescape
from tests.audit.helpers import event, lines, write_log


def test_read_events_streams_all_or_since_a_seq(log_path: Path) -> None:
    records = write_log(log_path, 10)
    assert list(read_events(log_path)) == records
    assert [r["seq"] for r in read_events(log_path, since_seq=7)] == [8, 9, 10]


def test_read_events_skips_a_line_still_being_written(log_path: Path) -> None:
    write_log(log_path, 2)
    with log_path.open("ab") as f:
        f.write(b'{"seq":3,')
    assert [r["seq"] for r in read_events(log_path)] == [1, 2]


def test_read_events_refuses_a_garbled_line(log_path: Path) -> None:
    write_log(log_path, 2)
    with log_path.open("ab") as f:
        f.write(b"garbage\n")
    with pytest.raises(AuditError, match=r"audit.jsonl:3"):
        list(read_events(log_path))


@pytest.mark.parametrize("n", [0, 1, 3, 50])
def test_tail_gives_the_last_n_records(log_path: Path, n: int) -> None:
    write_log(log_path, 40)
    assert [r["seq"] for r in tail(log_path, n)] == list(range(41 - min(n, 40), 41))


def test_tail_reads_backwards_across_blocks(log_path: Path) -> None:
    """Records longer than the read block still come back whole."""
    with JsonlAuditLog(log_path) as log:
        for i in range(5):
            log.append(event(i, args={"blob": "x" * 70_000}))
    got = list(tail(log_path, 2))
    assert [r["seq"] for r in got] == [4, 5] and len(got[0]["args"]["blob"]) == 70_000


def test_tail_follow_yields_new_records(log_path: Path) -> None:
    write_log(log_path, 3)
    follower = tail(log_path, 1, follow=True, poll=0.01)
    assert next(follower)["seq"] == 3
    with JsonlAuditLog(log_path) as log:
        log.append(event(4))
        log.append(event(5))
    assert [next(follower)["seq"], next(follower)["seq"]] == [4, 5]
    follower.close()


def test_tail_follow_holds_back_a_half_written_line(log_path: Path) -> None:
    write_log(log_path, 1)
    complete = lines(log_path)[0].replace(b'"seq":1', b'"seq":2')
    with log_path.open("ab") as f:
        f.write(complete[:10])  # another process is half-way through a record
    follower = tail(log_path, 5, follow=True, poll=0.01)
    assert next(follower)["seq"] == 1  # the half line has been read, and held back
    with log_path.open("ab") as f:
        f.write(complete[10:])
    assert next(follower)["seq"] == 2
    follower.close()


def test_tail_follow_notices_truncation(log_path: Path) -> None:
    write_log(log_path, 3)
    follower = tail(log_path, 3, follow=True, poll=0.01)
    for _ in range(3):
        next(follower)
    log_path.write_bytes(lines(log_path)[0])
    with pytest.raises(AuditError, match="shrank"):
        next(follower)


def test_format_event_shows_the_fields_a_human_needs() -> None:
    line = format_event({
        "seq": 12, "at": "2025-01-31T09:00:00.000000Z", "type": "challenge.approved",
        "principal": "agent:support-bot", "server": "vault", "tool": "secrets.read",
        "privilege": "privileged", "rule_id": "prod-secrets", "signals": ["secret_burst"],
        "outcome": "approved", "approver": "U024BE7LH", "reason": "prod secrets are held",
    })
    assert line == (
        "#12 2025-01-31T09:00:00.000000Z challenge.approved agent:support-bot "
        "vault/secrets.read class=privileged rule=prod-secrets signals=secret_burst "
        'outcome=approved approver=U024BE7LH reason="prod secrets are held"'
    )


def test_format_event_escapes_ansi_bidi_and_newlines() -> None:
    evil_tool = "read\x1b[2J\x1b[31m\u202egnp.exe\nfake=1"
    line = format_event({
        "seq": 1, "type": "call.denied", "server": "s\u200b", "tool": evil_tool,
        "principal": {"id": "agent:\x07x"}, "reason": "ok\rDENIED",
    })
    assert "\n" not in line and "\r" not in line
    assert all(ch.isprintable() for ch in line)
    assert "\\x1b[2J" in line and "\\u202e" in line and "\\u200b" in line
    assert "agent:\\x07x" in line
    shown = line.split(" ")[4]
    server, tool = shown.split("/", 1)
    assert tool.startswith('"') and tool.endswith('"')  # it holds "=": quoted as one value
    assert unescape(server) == "s\u200b" and unescape(tool[1:-1]) == evil_tool


def test_format_event_quotes_values_that_could_pass_for_other_fields() -> None:
    line = format_event({"type": "call.denied", "tool": "x outcome=approved", "seq": 1})
    assert '"x outcome=approved"' in line
    assert "outcome=approved" not in line.replace('"x outcome=approved"', "")
