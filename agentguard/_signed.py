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

from dataclasses import dataclass
from typing import Any

from agentguard.trust import TrustAnchors, count_quorum, verify_vote
from agentguard.trust.verify import receipt_from_dict
from agentguard.types import ApprovalRequest, ApprovalSpec

__all__ = ["SignedSettlement", "settle_signed"]


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
