"""``agentguard demo``: a scripted agent calls tools through a real guard.

Routine calls pass at once; the sensitive ones are held and the person at the terminal
approves or denies them on the console (or a scripted approver answers, for CI). Everything
is real: the policy, a SQLite store, a hash-chained audit log that is verified at the end.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentguard.channels.base import ApprovalChannel
from agentguard.guard import Guard
from agentguard.policy import Policy
from agentguard.sanitize import escape_text
from agentguard.types import CallContext, Principal, ToolCall

__all__ = ["DEMO_POLICY", "DemoStep", "run_demo"]

DEMO_POLICY = """\
version: 1
mode: enforce
defaults: {unknown_tool: approve, timeout: 60s, deny_cooldown: 2m}
classes:
  read:        {require: allow}
  write:       {require: allow}
  destructive: {require: approve, max_grant: 15m}
  privileged:  {require: approve}
signals:
  unknown_network: {outside_cidr: [10.20.0.0/16]}
rules:
  - id: routine-reads
    match: {tool: ["list_*", "get_*"]}
    class: read
  - id: staging-deploy
    match: {tool: deploy, args: {env: staging}}
    class: write
    labels: [deploy]
  - id: prod-deploy
    description: production deploys from outside the CI network are held
    match: {tool: deploy, args: {env: production}}
    class: write
    labels: [deploy]
    step_up: [{when: unknown_network, require: approve}]
    standards: [OWASP-NHI-02, NIST-800-207]
  - id: prod-secrets
    match: {tool: read_secret, args: {path: {path: [prod, "prod/*"]}}}
    class: privileged
    labels: [secret]
  - id: restarts
    match: {tool: restart_service}
    class: destructive
"""


@dataclass(frozen=True)
class DemoStep:
    """One scripted agent call."""

    tool: str
    args: dict[str, Any]
    note: str
    source_ip: str = "10.20.4.2"


STEPS: tuple[DemoStep, ...] = (
    DemoStep("list_services", {}, "routine read"),
    DemoStep("get_status", {"service": "api"}, "routine read"),
    DemoStep("deploy", {"env": "staging", "service": "api", "version": "1.4.2"},
             "staging deploy from the CI network"),
    DemoStep("deploy", {"env": "production", "service": "api", "version": "1.4.2"},
             "production deploy from an unknown network", source_ip="203.0.113.9"),
    DemoStep("read_secret", {"path": "prod/db-password"}, "secret read"),
    DemoStep("restart_service", {"name": "api\x1b[2J\u202egnp.exe"},
             "argument with ANSI and bidi characters (shown escaped)"),
)

_STYLE = {"allowed": "green", "approved": "green", "denied": "red", "expired": "yellow",
          "unreachable": "magenta", "reauth_failed": "red"}


def _tool_fn(step: DemoStep) -> str:
    """What the pretend tool returns when it runs."""
    return f"{step.tool} ran"


async def run_demo(
    *, channels: Sequence[ApprovalChannel], store_path: Path, audit_path: Path,
    console: Console | None = None, steps: Sequence[DemoStep] = STEPS,
) -> list[dict[str, Any]]:
    """Run the scripted agent; return one summary row per call."""
    from agentguard.audit import JsonlAuditLog, verify_log
    from agentguard.store import SQLiteStore

    out = console or Console()
    policy = Policy.from_yaml(DEMO_POLICY, "<demo policy>")
    agent = Principal("agent:demo-assistant", "agent")
    rows: list[dict[str, Any]] = []
    out.rule("[bold]agentguard demo[/bold]: an agent calls six tools through the guard")
    async with Guard(policy, store=SQLiteStore(store_path), audit=JsonlAuditLog(audit_path),
                     channels=channels) as guard:
        for step in steps:
            call = ToolCall(tool=step.tool, args=step.args, principal=agent, origin="demo",
                            context=CallContext(source_ip=step.source_ip))
            arguments = ", ".join(f"{k}={escape_text(str(v))!s}" for k, v in step.args.items())
            shown = f"{escape_text(step.tool)}({arguments})"
            out.print(f"[bold]agent[/bold] -> {shown}  [dim]({step.note})[/dim]",
                      highlight=False, markup=True)
            started = time.perf_counter()
            auth = await guard.authorize(call)
            elapsed = time.perf_counter() - started
            style = _STYLE.get(auth.outcome, "white")
            result = _tool_fn(step) if auth.allowed else "not run"
            out.print(f"  [{style}]{auth.outcome.upper()}[/{style}] "
                      f"[dim]{escape_text(auth.reason)}[/dim] -> {result}", highlight=False)
            rows.append({"tool": step.tool, "outcome": auth.outcome,
                         "rule": auth.rule_id or "-", "seconds": elapsed,
                         "class": auth.decision.classification.privilege})
    report = verify_log(audit_path)
    table = Table("tool", "class", "rule", "outcome", "time", title="summary")
    for row in rows:
        style = _STYLE.get(row["outcome"], "white")
        table.add_row(row["tool"], row["class"], row["rule"],
                      f"[{style}]{row['outcome']}[/{style}]", f"{row['seconds'] * 1000:.1f} ms")
    out.print(table)
    held = sum(1 for r in rows if r["outcome"] != "allowed")
    out.print(f"{len(rows)} calls, {held} held or refused. Audit log {audit_path}: "
              f"{report.records} records, chain {'intact' if report.ok else 'BROKEN'}.")
    return rows
