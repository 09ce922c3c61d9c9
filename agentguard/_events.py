"""Audit events about one call, as the guard writes them.

Every record about a call carries who (principal, the human it acts for), what (server, tool,
arguments), why (rule, class, labels, signals, requirement) and the outcome. Argument paths the
policy's ``redact:`` names are masked here, before any sink sees them (a sink's own redactor
then hides secret-looking keys and values as well).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agentguard.audit.redact import mask_paths
from agentguard.types import Decision, ToolCall

__all__ = ["args_for_audit", "args_size", "call_event"]

_AUDIT_ARGS_LIMIT = 16_384


def args_for_audit(args: Mapping[str, Any], redact: tuple[str, ...] = ()) -> Any:
    """Arguments as recorded: in full when small, else a marked preview (the call hash in the
    same record identifies the exact call). ``redact`` paths are masked first."""
    args = mask_paths(args, redact)
    try:
        text = json.dumps(args, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        return {"unserialisable": True}
    if len(text) <= _AUDIT_ARGS_LIMIT:
        return dict(args)
    return {"truncated": True, "bytes": len(text.encode()),
            "preview": text[:_AUDIT_ARGS_LIMIT // 4]}


def args_size(args: Mapping[str, Any]) -> int:
    """Size of the arguments as JSON (C encoder: cheap even for large values); ``-1`` when
    nested too deeply to encode, ``0`` when not JSON at all (refused later, precisely)."""
    try:
        return len(json.dumps(args, ensure_ascii=False, default=repr).encode())
    except (TypeError, ValueError):
        return 0
    except RecursionError:
        return -1


def call_event(
    call: ToolCall, decision: Decision | None, event_type: str, *,
    redact: tuple[str, ...] = (), **extra: Any,
) -> dict[str, Any]:
    """One audit event about ``call`` (and the decision, when there is one)."""
    event: dict[str, Any] = {
        "type": event_type,
        "call_id": call.id,
        "principal": call.principal.id,
        "principal_kind": call.principal.kind,
        "acting_for": call.context.acting_for,
        "source_ip": call.context.source_ip,
        "session_id": call.session_id,
        "server": call.server,
        "tool": call.tool,
        "origin": call.origin,
        "args": args_for_audit(call.args, redact),
    }
    if decision is not None:
        c = decision.classification
        event.update(
            privilege=c.privilege, labels=sorted(c.labels), rule_id=decision.rule_id,
            reason=decision.reason, signals=list(decision.signals),
            requirement=str(decision.requirement), standards=list(c.standards),
        )
    event.update(extra)
    return event
