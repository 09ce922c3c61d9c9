"""`agentguard audit report`: a real guard writes a log of varied calls; the report counts it
and draws charts that are valid files."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import anyio
import pyotp
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from agentguard import Guard, Policy
from agentguard.audit import JsonlAuditLog, read_events
from agentguard.audit.report import load_report, render_tables, summarise, write_chart
from agentguard.channels.base import ChannelAnswer
from agentguard.channels.scripted import ScriptedChannel
from agentguard.cli.report_cmd import report as report_command
from agentguard.reauth import TotpReauthenticator, TotpVerifier
from agentguard.store import SQLiteStore
from agentguard.testing import ManualClock
from agentguard.types import ApprovalRequest, CallContext, Principal, ToolCall

POLICY = """
version: 1
mode: enforce
defaults: {unknown_tool: approve, timeout: 5m, log_allows: true, deny_cooldown: 0s}
groups: {ops: [alice, bob], security: [carol, dave]}
classes:
  read:        {require: allow}
  write:       {require: allow}
  destructive: {require: approve, approvers: [group:ops]}
  privileged:  {require: approve, approvers: [group:security]}
signals:
  unknown_network: {outside_cidr: [10.20.0.0/16]}
  secret_burst: {rate: {labels: [secret], max: 3, per: 10m}}
rules:
  - id: reads
    match: {tool: ["list_*", "get_*"]}
    class: read
  - id: prod-deploy
    match: {tool: deploy, args: {env: production}}
    class: write
    labels: [deploy]
    approvers: [group:ops]
    step_up: [{when: unknown_network, require: approve}]
  - id: secrets
    match: {tool: read_secret}
    class: read
    labels: [secret]
    approvers: [group:security]
    step_up: [{when: secret_burst, require: approve}]
  - id: restarts
    match: {tool: restart}
    class: destructive
  - id: no-drops
    match: {tool: drop_db}
    class: privileged
    require: deny
  - id: resets
    match: {tool: reset_password}
    class: write
    labels: [credential]
    require: reauth
    reauth: {method: totp}
"""

HOSTILE_TOOL = "evil\x1b[2J<script>alert(1)</script>$x$"
CI, HOME = "10.20.1.7", "203.0.113.9"


class Humans:
    """What the approvers do with each held call, in order: wait ``delay`` seconds of the
    manual clock, then approve / deny / say nothing (expiry) / be unreachable."""

    def __init__(self, clock: ManualClock, plan: list[tuple[str, str, float]]) -> None:
        self.clock = clock
        self.plan: Iterator[tuple[str, str, float]] = iter(plan)

    def __call__(self, request: ApprovalRequest) -> Iterator[ChannelAnswer]:
        action, who, delay = next(self.plan)
        self.clock.advance(delay)
        if action == "approve":
            yield ScriptedChannel.vote(who)
        elif action == "stranger-then-approve":
            yield ScriptedChannel.vote("mallory")  # not an approver: rejected and audited
            yield ScriptedChannel.vote(who)
        elif action == "deny":
            yield ScriptedChannel.vote(who, False, reason="not now")
        elif action == "unreachable":
            yield ChannelAnswer(kind="unreachable", channel="scripted", reason="pager down")
        # "expire": no answer, and the clock is already past the deadline


def bot(ip: str = CI) -> tuple[Principal, CallContext]:
    return Principal("svc:deploy-bot", "service"), CallContext(source_ip=ip)


async def generate(path: Path, tmp_path: Path) -> None:
    """Write a log: allowed reads, approvals with known waits, denials, an expiry, an
    unreachable channel, a policy deny, a burst, re-authentication passed and failed, and a
    shadow-mode run of the same policy."""
    clock = ManualClock(1_767_600_000.0)
    plan = [("approve", "alice", 30), ("deny", "bob", 90), ("stranger-then-approve", "alice", 240),
            ("expire", "-", 301), ("unreachable", "-", 0), ("approve", "carol", 12),
            ("approve", "alice", 60)]
    store = SQLiteStore(tmp_path / "state.db", clock=clock)
    verifier = TotpVerifier(store, clock=clock)
    codes = iter(["000000", "000000", "000000"])  # the second reset gets three wrong codes

    async def ask_code(subject: str, request: ApprovalRequest, attempt: int) -> str:
        secret = await store.get_secret(f"totp:{subject}")
        if subject == "operator-9":
            return next(codes)
        return pyotp.TOTP(secret).at(clock())

    guard = Guard(Policy.from_yaml(POLICY), store=store, audit=JsonlAuditLog(path),
                  channels=[ScriptedChannel(Humans(clock, plan))], clock=clock,
                  reauthenticators={"totp": TotpReauthenticator(verifier, ask_code)})

    async def call(tool: str, args: dict, who: tuple[Principal, CallContext]) -> str:
        auth = await guard.authorize(ToolCall(tool=tool, args=args, principal=who[0],
                                              context=who[1]))
        clock.advance(7)
        return auth.outcome

    async with guard:
        await verifier.enroll("operator-7")
        await verifier.enroll("operator-9")
        outcomes = [
            await call("list_services", {}, bot()),
            await call("get_status", {"service": "api"}, bot()),
            await call("deploy", {"env": "production", "v": "1"}, bot()),
            await call("deploy", {"env": "production", "v": "2"}, bot(HOME)),   # approve 30 s
            await call("deploy", {"env": "production", "v": "3"}, bot(HOME)),   # deny 90 s
            await call("restart", {"name": "api"}, bot()),                      # approve 240 s
            await call("restart", {"name": "db"}, bot()),                       # expire
            await call("restart", {"name": "cache"}, bot()),                    # unreachable
            await call("drop_db", {"name": "main"}, bot()),                     # policy deny
        ]
        agent = (Principal("agent:support-bot"), CallContext(acting_for="user:jane"))
        outcomes += [await call("read_secret", {"path": f"app/{i}"}, agent) for i in range(4)]
        # the 4th secret read is the burst: approve 12 s
        outcomes.append(await call(HOSTILE_TOOL, {}, agent))                   # approve 60 s
        helpdesk = (Principal("agent:helpdesk"), CallContext(acting_for="operator-7"))
        outcomes.append(await call("reset_password", {"user": "bob"}, helpdesk))
        bad = (Principal("agent:helpdesk"), CallContext(acting_for="operator-9"))
        outcomes.append(await call("reset_password", {"user": "eve"}, bad))
    assert outcomes == ["allowed", "allowed", "allowed", "approved", "denied", "approved",
                        "expired", "unreachable", "denied", "allowed", "allowed", "allowed",
                        "approved", "approved", "approved", "reauth_failed"]

    shadow = Policy.from_yaml(POLICY.replace("mode: enforce", "mode: shadow"))
    async with Guard(shadow, store=SQLiteStore(tmp_path / "shadow.db", clock=clock),
                     audit=JsonlAuditLog(path), clock=clock) as quiet:
        for name in ("a", "b", "c"):
            auth = await quiet.authorize(ToolCall(tool="restart", args={"name": name},
                                                  principal=bot()[0], context=bot()[1]))
            assert auth.outcome == "allowed" and auth.shadow
        await quiet.authorize(ToolCall(tool="list_services", args={}, principal=bot()[0]))


@pytest.fixture
async def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    with anyio.fail_after(30):  # a vote the script gets wrong would wait on the manual clock
        await generate(path, tmp_path)
    return path


pytestmark = pytest.mark.anyio


async def test_counts_per_rule_tool_class_and_outcome(log: Path) -> None:
    report = load_report(log)
    assert report.chain is not None and report.chain.ok
    by_rule = {rule: dict(c) for rule, c in report.counts("rule").items()}
    assert by_rule == {
        "restarts": {"approved": 1, "expired": 1, "unreachable": 1},
        "prod-deploy": {"approved": 1, "denied": 1},
        "resets": {"approved": 1, "reauth_failed": 1},
        "no-drops": {"denied": 1},
        "secrets": {"approved": 1},
        "(defaults)": {"approved": 1},  # the unknown tool: defaults.unknown_tool
    }
    assert dict(report.counts("class")["destructive"]) == by_rule["restarts"]
    assert report.counts("tool")["deploy"].total() == 2
    assert dict(Counter(c.outcome for c in report.interruptions)) == {
        "approved": 5, "denied": 2, "expired": 1, "unreachable": 1, "reauth_failed": 1}
    assert len(report.calls) == 20 and len(report.interruptions) == 10


async def test_who_was_challenged_names_the_human_and_the_signals(log: Path) -> None:
    report = load_report(log)
    rows = {(r["principal"], r["tool"], r["acting_for"]): r for r in report.who()}
    deploys = rows[("svc:deploy-bot", "deploy", None)]
    assert deploys["signals"] == ["unknown_network"] and deploys["calls"] == 2
    assert dict(deploys["decided_by"]) == {"alice": 1, "bob": 1}
    burst = rows[("agent:support-bot", "read_secret", "user:jane")]
    assert burst["signals"] == ["secret_burst"]
    assert report.bursts == Counter({("agent:support-bot", "secret_burst"): 1})
    assert dict(rows[("agent:helpdesk", "reset_password", "operator-7")]["outcomes"]) == {
        "approved": 1}
    assert dict(rows[("agent:helpdesk", "reset_password", "operator-9")]["outcomes"]) == {
        "reauth_failed": 1}
    assert {c.via for c in report.calls if c.tool == "reset_password"} == {"reauth"}
    assert [c.rejected_votes for c in report.calls if c.rejected_votes] == [1]


async def test_shadow_mode_counts_what_would_have_been_challenged(log: Path) -> None:
    report = load_report(log)
    shadow = {rule: dict(c) for rule, c in report.shadow_counts().items()}
    assert shadow == {"restarts": {"require_approval": 3}, "reads": {"allow": 1}}
    assert all(not c.interrupted for c in report.shadow_calls)


async def test_latency_is_the_time_held_per_outcome(log: Path) -> None:
    report = load_report(log)
    assert sorted(report.latencies_ms("approved")) == [12_000, 30_000, 60_000, 240_000]
    assert report.latencies_ms("denied") == [90_000]
    assert report.latencies_ms("expired") == [301_000]
    stats = report.latency_stats()
    assert stats["approved"]["count"] == 4 and stats["approved"]["max"] == 240_000
    assert stats["all"]["count"] == 7 and stats["all"]["min"] == 0  # unreachable: at once


async def test_terminal_tables_escape_what_the_log_holds(log: Path) -> None:
    buffer = io.StringIO()
    render_tables(load_report(log), Console(file=buffer, width=250, color_system=None))
    text = buffer.getvalue()
    for title in ("who was interrupted, for what", "interruptions by rule",
                  "interruptions by tool", "interruptions by privilege class",
                  "shadow mode", "approval latency", "abnormal rates"):
        assert title in text
    assert "\x1b" not in text and "evil\\x1b[2J" in text
    assert "intact (" in text and "user:jane" in text


async def test_png_chart_is_a_decodable_image(log: Path, tmp_path: Path) -> None:
    import matplotlib.image

    out = write_chart(load_report(log), tmp_path / "report.png")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 500 and image.shape[1] > 500
    assert image.std() > 0.05  # not a blank canvas


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags[tag] += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


async def test_html_chart_is_self_contained_with_inline_svg(log: Path, tmp_path: Path) -> None:
    page = write_chart(load_report(log), tmp_path / "report.html").read_text()
    parser = _Collect()
    parser.feed(page)
    parser.close()
    assert parser.tags["svg"] == 1 and parser.tags["table"] >= 5
    assert parser.tags["script"] == 0 and "<script>alert" not in page
    assert "\x1b" not in page
    text = "".join(parser.text)
    assert "evil\\x1b[2J<script>alert(1)</script>$x$" in text  # shown escaped, as text
    assert "prod-deploy" in text and "unknown_network" in text
    assert not re.search(r'(?:href|src)="(?!#)', page)  # nothing fetched: internal refs only


async def test_svg_and_unknown_extensions(log: Path, tmp_path: Path) -> None:
    report = load_report(log)
    svg = write_chart(report, tmp_path / "r.svg").read_text()
    assert svg.startswith("<svg") and "interruptions by rule" in svg
    assert write_chart(report, tmp_path / "again.svg").read_text() == svg  # reproducible
    with pytest.raises(ValueError, match=r"\.png, \.svg or \.html"):
        write_chart(report, tmp_path / "r.gif")


def test_an_empty_log_still_reports(tmp_path: Path) -> None:
    report = summarise([])
    assert report.calls == [] and report.latency_stats() == {}
    out = write_chart(report, tmp_path / "empty.png")
    assert out.read_bytes().startswith(b"\x89PNG")


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(report_command)
    app.command("noop")(lambda: None)  # two commands keep `report` a subcommand
    return app


async def test_cli_prints_tables_writes_the_chart_and_json(log: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "chart.html"
    result = runner.invoke(_cli(), ["report", str(log), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "interruptions by rule" in result.output and f"chart written to {out}" in result.output
    assert "<svg" in out.read_text()
    result = runner.invoke(_cli(), ["report", str(log), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["chain"]["ok"] and data["by_rule"]["no-drops"] == {"denied": 1}
    assert data["shadow"]["restarts"] == {"require_approval": 3}


async def test_cli_exits_1_on_a_broken_chain_and_2_on_bad_input(
    log: Path, tmp_path: Path
) -> None:
    lines = log.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace('"svc:deploy-bot"', '"svc:someone-else"')
    log.write_text("".join(lines))
    runner = CliRunner()
    result = runner.invoke(_cli(), ["report", str(log)])
    assert result.exit_code == 1 and "BROKEN" in result.output
    assert "chain is broken" in result.stderr
    result = runner.invoke(_cli(), ["report", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 1 and "no audit log" in result.stderr
    result = runner.invoke(_cli(), ["report", str(log), "--out", str(tmp_path / "x.gif")])
    assert result.exit_code == 2 and ".png, .svg or .html" in result.stderr


async def test_records_without_a_call_only_count_as_events(log: Path) -> None:
    records = [*read_events(log), {"type": "grant.revoked", "grant_id": "grant_x"}]
    report = summarise(records)
    assert report.event_types["grant.revoked"] == 1 and len(report.calls) == 20
