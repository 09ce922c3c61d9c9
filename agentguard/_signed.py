"""Settling a request under ``assurance: signed``: the store is a mailbox, not an authority.

The store says a request is approved; the agent can write that row. So the guard counts only
votes whose signature (an Ed25519 key's, or a passkey assertion over the statement's digest)
verifies against the trust file, over a statement naming the request
id, call hash, rule and approval settings the guard holds in memory, and the hash of the call
as the guard stored it for approvers (``shown_hash``, redacted values masked)
(:func:`agentguard.trust.verify_vote`), and settles them with the rule's approval settings
from the policy, never the row's (:func:`agentguard.trust.count_quorum`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentguard.trust import TrustAnchors, count_quorum, verify_vote
from agentguard.trust.verify import VerifiedVote, receipt_from_dict
from agentguard.types import ApprovalRequest, ApprovalSpec, Grant, ToolCall

__all__ = ["SignedSettlement", "settle_signed", "verify_grant"]


@dataclass(frozen=True, slots=True)
class SignedSettlement:
    """What the verified votes say.

    Attributes:
        approved: The quorum was met by valid signatures of eligible, distinct approvers.
        approvers: Whose verified approvals counted.
        problems: Why each other vote did not count.
        receipts: The signed votes that counted (for the audit log).
    """

    approved: bool
    approvers: tuple[str, ...]
    problems: tuple[str, ...]
    receipts: tuple[dict[str, Any], ...]


def settle_signed(
    stored: ApprovalRequest, *, request_id: str, call_hash: str, rule_id: str | None,
    settings_hash: str, approval: ApprovalSpec, principal: str, acting_for: str | None,
    anchors: TrustAnchors, shown_hash: str,
) -> SignedSettlement:
    """Verify every approving vote in ``stored`` and count them (see the module docstring)."""
    verified = []
    problems: list[str] = []
    for vote in stored.votes:
        if not vote.approve:
            continue  # a deny can only stop a call; the store's "denied" stands unsigned
        if vote.receipt is None:
            problems.append(f"{vote.approver!r}: not signed")
            continue
        try:
            signed = receipt_from_dict(vote.receipt)
        except Exception as exc:  # the row is the agent's to write: anything may be there
            problems.append(f"{vote.approver!r}: unreadable signature ({exc})")
            continue
        result = verify_vote(signed, request_id=request_id, call_hash=call_hash,
                             rule_id=rule_id, settings_hash=settings_hash, anchors=anchors,
                             shown_hash=shown_hash)
        if isinstance(result, str):
            problems.append(f"{vote.approver!r}: {result}")
        else:
            verified.append(result)
    approved, _, approvers = count_quorum(
        verified, approval.approvers, approval.quorum, approval.separation_of_duties,
        principal, acting_for)
    counted = set(approvers)
    receipts = tuple(v.signed.to_dict() for v in verified if v.identity in counted)
    return SignedSettlement(approved, approvers, tuple(problems), receipts)


def verify_grant(
    grant: Grant, call: ToolCall, *, rank: int, rank_of: Mapping[str, int],
    rule_id: str | None, settings_hash: str, approval: ApprovalSpec, anchors: TrustAnchors,
    now: float,
) -> tuple[str, ...] | str:
    """Whether a grant row may cover ``call`` under ``assurance: signed``.

    The row is the agent's to write, so none of its own fields is believed: it must carry
    the signed votes that made it and the view its approvers were shown. The votes must
    verify against the trust file for the rule and approval settings the guard holds now,
    all name the hash of that view and one request, and meet the rule's quorum of eligible,
    distinct approvers for this caller; the view must be of the same principal, the same
    human it acts for, server and tool, and of a class at least as high as this call's; and
    the signed "approve for N" (from the time each approver signed, at most ``max_grant``)
    must not have run out.

    Returns:
        The approvers whose signatures cover the call, or why the grant does not.
    """
    from agentguard.approvals import shown_hash

    view = grant.shown
    shown = shown_hash(view) if isinstance(view, Mapping) else None
    if not grant.receipts or view is None or shown is None:
        return "the grant carries no signed votes (or no view they name)"
    seen = view["call"]
    context = seen["context"]
    if (seen.get("principal") != call.principal.id
            or context.get("acting_for") != call.context.acting_for
            or seen.get("server") != call.server or seen.get("tool") != call.tool):
        return "the signed grant is for another caller, human, server or tool"
    privilege = view.get("privilege")
    held_rank = rank_of.get(privilege) if isinstance(privilege, str) else None
    if held_rank is None or rank > held_rank:
        return "the signed grant was given for a lower class"
    verified: list[VerifiedVote] = []
    first: tuple[str, str] | None = None
    for data in grant.receipts:
        try:
            signed = receipt_from_dict(data)
        except Exception as exc:  # the row is the agent's to write: anything may be there
            return f"unreadable signature ({exc})"
        terms = (signed.statement.request_id, signed.statement.call_hash)
        first = first or terms
        if terms != first:
            return "the signed votes are about different requests"
        result = verify_vote(signed, request_id=terms[0], call_hash=terms[1], rule_id=rule_id,
                             settings_hash=settings_hash, anchors=anchors, shown_hash=shown)
        if isinstance(result, str):
            return result
        verified.append(result)
    approved, _, approvers = count_quorum(
        verified, approval.approvers, approval.quorum, approval.separation_of_duties,
        call.principal.id, call.context.acting_for)
    if not approved:
        return "the signed votes do not meet the rule's quorum for this call"
    counted = [v for v in verified if v.identity in approvers]
    if any(v.grant_ttl <= 0 for v in counted):
        return "an approver approved that call only, not for a while"
    until = min(v.at + min(v.grant_ttl, approval.max_grant) for v in counted)
    if now >= until:
        return "the signed grant has run out"
    return approvers
