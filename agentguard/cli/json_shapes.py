"""The ``--json`` shapes of the CLI's listing and reading commands.

These are a documented interface (README, "Machine-readable output"): fields are only ever
added, never renamed or removed, so scripts need not scrape tables. They are spelled out here
rather than taken from the store's encoding, which may change with the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentguard.proxy.pins import PinRow
    from agentguard.types import ApprovalRequest, Grant

__all__ = ["grant_json", "pin_json", "request_json"]


def request_json(request: ApprovalRequest) -> dict[str, Any]:
    """An approval request: the whole call (never cut), who may approve, votes so far."""
    from agentguard.approvals import shown_hash, shown_view

    call = dict(request.call)
    spec = request.approval
    reauth = request.reauth
    return {
        "id": request.id,
        "status": request.status,
        "server": call.get("server"),
        "tool": call.get("tool"),
        "principal": call.get("principal"),
        "call": call,
        "call_hash": request.call_hash,
        # What a signed vote names: a script approving what it showed passes it to
        # ``approvals approve ID --shown HASH``, refused if the stored call changed meanwhile.
        "shown_hash": shown_hash(shown_view(request)),
        "rule": request.rule_id,
        "reason": request.reason,
        "class": request.privilege,
        "labels": list(request.labels),
        "created_at": request.created_at,
        "expires_at": request.expires_at,
        "approval": {
            "approvers": list(spec.approvers), "quorum": spec.quorum,
            "separation_of_duties": spec.separation_of_duties, "timeout": spec.timeout,
            "channels": list(spec.channels), "max_grant": spec.max_grant,
            "assurance": spec.assurance,
        },
        "reauth": None if reauth is None else {
            "method": reauth.method, "subject": reauth.subject, "max_age": reauth.max_age,
            "acr_values": list(reauth.acr_values),
        },
        "votes": [
            {"approver": v.approver, "approve": v.approve, "at": v.at, "channel": v.channel,
             "reason": v.reason, "grant_ttl": v.grant_ttl, "edited": v.edited_args is not None,
             "signed": v.receipt is not None}
            for v in request.votes
        ],
        "decided_by": list(request.decided_by),
        "decided_at": request.decided_at,
    }


def grant_json(grant: Grant) -> dict[str, Any]:
    """A live grant: what it covers, until when, who gave it."""
    return {
        "id": grant.id, "kind": grant.kind, "scope": grant.scope, "principal": grant.principal,
        "acting_for": grant.acting_for, "server": grant.server, "tool": grant.tool,
        "max_rank": grant.max_rank, "rule": grant.rule_id, "session_id": grant.session_id,
        "created_at": grant.created_at, "expires_at": grant.expires_at,
        "granted_by": grant.granted_by, "uses": grant.uses, "request_id": grant.request_id,
    }


def pin_json(row: PinRow) -> dict[str, Any]:
    """A pinned (or never approved, or changed) tool definition."""
    return {"server": row.server, "tool": row.tool, "state": row.state,
            "pinned_hash": row.pinned_hash or None, "pending_hash": row.pending_hash or None}
