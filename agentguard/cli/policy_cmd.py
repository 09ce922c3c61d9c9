"""``agentguard policy check|explain|schema``."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
import typer

from agentguard.cli.runtime import fail, say
from agentguard.errors import PolicyError

__all__ = ["app"]

app = typer.Typer(help="Check, explain and describe policy files.", no_args_is_help=True)


def _load(path: str):
    from agentguard.policy import load_policy

    try:
        return load_policy(path)
    except PolicyError as exc:
        raise fail(str(exc)) from exc


@app.command()
def check(path: Annotated[str, typer.Argument(help="Policy YAML file.")]) -> None:
    """Validate a policy file; exit 2 with the file, rule and field on error."""
    policy = _load(path)
    m = policy.model
    for warning in _warnings(m):
        say(f"warning: {warning}", fg="yellow", err=True)
    typer.echo(
        f"ok: {path}: mode {m.mode}, classes {' < '.join(m.classes)}, {len(m.rules)} rule(s), "
        f"{len(m.signals)} signal(s), unknown tools: {m.defaults.unknown_tool}"
    )


def _warnings(model: Any) -> list[str]:
    """Legal but risky choices a security reviewer should see."""
    from agentguard.types import Requirement

    out: list[str] = []
    if Requirement.parse(model.defaults.unknown_tool).rank == 0:
        out.append("defaults.unknown_tool is allow: tools no rule covers (and look-alike tool "
                   "names) run without asking")
        destructive = model.classes.get("destructive")
        if destructive is not None and destructive.require and \
                Requirement.parse(destructive.require).rank > 0:
            out.append(
                "defaults.unknown_tool is allow, but an MCP tool no rule covers and without "
                "annotations counts as destructive (the MCP default), and classes.destructive "
                f"requires {destructive.require}: behind `agentguard proxy` every such tool is "
                "still held. Write rules for the tools you mean to allow (or check one with "
                "`agentguard policy explain --annotations '{}'`)")
    owners = [(f"classes.{name}", spec, None) for name, spec in model.classes.items()]
    owners += [(f"rules[{rule.id}]", rule, model.classes.get(rule.class_ or ""))
               for rule in model.rules]
    for where, spec, cls in owners:
        require = spec.require or (cls.require if cls is not None else None)
        approvers = spec.approvers or (cls.approvers if cls is not None else None)
        if require and Requirement.parse(require).approve and not (
                approvers or model.defaults.approvers):
            out.append(f"{where}: approval without approvers: anyone a channel verifies may "
                       "approve (on Slack, anyone who can click)")
    return out


@app.command()
def schema() -> None:
    """Print the policy file's JSON Schema (for editor completion and validation)."""
    from agentguard.policy import Policy

    typer.echo(json.dumps(Policy.json_schema(), indent=2))


@app.command()
def reference() -> None:
    """Print every policy field with its type, default and meaning (Markdown), generated
    from the policy model."""
    from agentguard.policy.reference import render_reference

    typer.echo(render_reference(), nl=False)


def _parse_time(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise fail(f"--at: not an ISO 8601 time: {text!r} ({exc})") from exc
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise fail("--at needs a timezone offset, e.g. 2026-12-01T10:00:00+00:00")
    try:
        utc = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        utc = None
    # Windows are evaluated in their own timezone and look a day either side.
    if utc is None or not _EARLIEST <= utc.replace(tzinfo=None) <= _LATEST:
        raise fail(f"--at: {text!r} is outside the supported range "
                   f"{_EARLIEST.date()} to {_LATEST.date()}")
    return moment.timestamp()


_EARLIEST = datetime(2, 1, 1)
_LATEST = datetime(9998, 12, 31, 23, 59, 59)


@app.command()
def explain(
    path: Annotated[str, typer.Argument(help="Policy YAML file.")],
    call: Annotated[str, typer.Option(
        "--call", help='The call as JSON: {"tool": "deploy", "args": {...}, "server": "local", '
        '"principal": "svc:deploy-bot", "principal_kind": "service", "source_ip": "10.20.1.5", '
        '"acting_for": "alice", "session_id": "s1", "claims": {...}}')],
    at: Annotated[str | None, typer.Option(
        help="Evaluate time-window signals at this ISO 8601 time (default: now).")] = None,
    server: Annotated[str | None, typer.Option(
        "--server", help='Server the tool is on (overrides "server" in --call).')] = None,
    annotations: Annotated[str | None, typer.Option(
        "--annotations", metavar="JSON",
        help='The MCP tool\'s annotations, e.g. \'{"readOnlyHint": true}\' ({} for none): '
        "explain the call as the proxy decides it (missing hints count as destructive and "
        "open-world).")] = None,
    store: Annotated[str | None, typer.Option(
        "--store", help="Read the tool's annotations from its pinned definition in this "
        "store (the proxy's; $AGENTGUARD_STORE when given as an empty string), and its pin "
        "state.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Explain what the policy decides for one call, without running anything.

    Prints the classification, each signal the matched rule refers to (fired or not), the
    requirement and the rule that decided. Rate and first-use signals are evaluated against
    an empty history. With --annotations or --store it answers for an MCP tool behind
    `agentguard proxy`: the tool's hints count as the proxy counts them, and it says whether
    the proxy forwards the call without the guard, holds it, or refuses it (a changed pin).
    """
    from agentguard.canonical import CanonicalizationError, loads_strict
    from agentguard.engine import evaluate, signals_needed
    from agentguard.signals import SignalEvaluator
    from agentguard.store import MemoryStore
    from agentguard.types import CallContext, Principal, ToolCall, ToolHints

    policy = _load(path)
    try:
        data = loads_strict(call)
    except CanonicalizationError as exc:
        raise fail(f"--call: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("tool"), str):
        raise fail('--call must be a JSON object with at least "tool"')
    for key, kinds, what in (
        ("server", (str,), "a string"), ("principal", (str,), "a string"),
        ("principal_kind", (str,), "a string"), ("session_id", (str, type(None)), "a string"),
        ("source_ip", (str, type(None)), "a string"), ("acting_for", (str, type(None)), "a string"),
        ("args", (dict,), "an object"), ("claims", (dict,), "an object"),
    ):
        if key in data and not isinstance(data[key], kinds):
            raise fail(f'--call: "{key}" must be {what}')
    when = _parse_time(at)
    principal_id = str(data.get("principal", "anonymous"))
    server_name = server or data.get("server", "local")
    proxy = None
    if annotations is not None or store is not None:
        from agentguard.cli.explain_proxy import proxy_view

        try:
            proxy = proxy_view(server_name, data["tool"], annotations, store)
        except ValueError as exc:
            raise fail(str(exc)) from exc
    tool_call = ToolCall(
        tool=data["tool"], args=data.get("args") or {}, server=server_name,
        hints=proxy.hints if proxy is not None else ToolHints(),
        principal=Principal(principal_id, data.get("principal_kind", "agent"),
                            data.get("claims") or {}),
        session_id=data.get("session_id"), origin="explain",
        context=CallContext(source_ip=data.get("source_ip"), acting_for=data.get("acting_for")),
    )
    classified = policy.classify(tool_call)
    names = signals_needed(classified)
    evaluator = SignalEvaluator(policy.model.signals,
                                (lambda: when) if when is not None else time.time)

    async def run() -> dict[str, bool]:
        store = MemoryStore()
        await store.open()
        return await evaluator.evaluate(names, tool_call, store)

    try:
        fired = anyio.run(run)
    except ValueError as exc:
        raise fail(f"--at: {exc}") from exc
    result = evaluate(policy.model, classified, fired)
    d = result.decision
    c = d.classification
    out: dict[str, Any] = {
        "tool": tool_call.tool, "server": tool_call.server, "principal": principal_id,
        "rule": d.rule_id, "class": c.privilege, "labels": sorted(c.labels),
        "classified_because": c.reason, "signals": fired, "fired": list(d.signals),
        "requirement": str(result.requirement), "decision": d.kind, "reason": d.reason,
        "standards": list(c.standards),
        "approval": _approval_json(d, policy.model.groups),
        "reauth": _reauth_json(d),
    }
    if proxy is not None:
        out["proxy"] = proxy.verdict(policy, tool_call, d.kind)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    from agentguard.sanitize import escape_text as esc

    typer.echo(f"call:        {esc(tool_call.server)}/{esc(tool_call.tool)} "
               f"by {esc(principal_id)}")
    typer.echo(f"rule:        {esc(d.rule_id or '(none: defaults)')}")
    typer.echo(f"class:       {c.privilege}" + (f"  labels: {', '.join(sorted(c.labels))}"
                                                 if c.labels else ""))
    typer.echo(f"because:     {esc(c.reason)}")
    for name, value in fired.items():
        typer.echo(f"signal:      {name} = {'FIRED' if value else 'quiet'}")
    typer.echo(f"requirement: {result.requirement}")
    typer.echo(f"decision:    {d.kind}: {esc(d.reason)}")
    if proxy is not None:
        typer.echo(f"hints:       {esc(out['proxy']['hints_from'])}")
        typer.echo(f"proxy:       {esc(out['proxy']['summary'])}")
    for label, text in _approval_lines(out["approval"], out["reauth"]):
        typer.echo(f"{label + ':':<13}{esc(text)}")
    if c.standards:
        typer.echo(f"standards:   {', '.join(c.standards)}")


def _approval_json(decision: Any, groups: dict[str, list[str]]) -> dict[str, Any] | None:
    """Who may approve a held call and how, as ``policy explain --json`` shows it."""
    spec = getattr(decision, "approval", None)
    if spec is None:
        return None
    return {
        "approvers": list(spec.approvers),
        "groups": {a.removeprefix("group:"): list(groups.get(a.removeprefix("group:"), []))
                   for a in spec.approvers if a.startswith("group:")},
        "quorum": spec.quorum,
        "separation_of_duties": spec.separation_of_duties,
        "assurance": spec.assurance,
        "timeout": spec.timeout,
        "channels": list(spec.channels),
        "max_grant": spec.max_grant,
        "grant_allowed": spec.max_grant > 0,
    }


def _reauth_json(decision: Any) -> dict[str, Any] | None:
    spec = getattr(decision, "reauth", None)
    if spec is None:
        return None
    return {"method": spec.method, "subject": spec.subject, "max_age": spec.max_age,
            "acr_values": list(spec.acr_values)}


def _approval_lines(approval: dict[str, Any] | None,
                    reauth: dict[str, Any] | None) -> list[tuple[str, str]]:
    from agentguard.durations import format_duration

    lines: list[tuple[str, str]] = []
    if approval is None and reauth is None:
        return lines
    if approval is not None:
        names = []
        for who in approval["approvers"]:
            members = approval["groups"].get(who.removeprefix("group:"))
            names.append(f"{who} ({', '.join(members) or 'no members'})"
                         if who.startswith("group:") and members is not None else who)
        lines.append(("approvers", ", ".join(names) if names else
                      "anyone a verified channel identifies (no approvers listed)"))
        quorum = approval["quorum"]
        lines.append(("quorum", "1 approval" if quorum == 1
                      else f"{quorum} approvals from {quorum} different approvers"))
        lines.append(("separation", "the principal and the human it acts for may not approve"
                      if approval["separation_of_duties"] else "off: the principal or the human it "
                      "acts for may approve"))
        lines.append(("assurance", "signed: only votes signed by a key in the trust file count"
                      if approval["assurance"] == "signed" else "any verified channel's vote"))
        lines.append(("grant", f"an approver may approve for up to "
                      f"{format_duration(approval['max_grant'])}" if approval["grant_allowed"]
                      else "none: each approval is for this one call"))
        lines.append(("timeout", f"{format_duration(approval['timeout'])}, then denied"))
        if approval["channels"]:
            lines.append(("channels", ", ".join(approval["channels"])))
    if reauth is not None:
        age = (f", a verification within {format_duration(reauth['max_age'])} is reused"
               if reauth["max_age"] else "")
        lines.append(("reauth", f"{reauth['method']} by the {reauth['subject']}{age}"))
    else:
        lines.append(("reauth", "not required"))
    return lines
