"""Who may decide a held call, and recording their vote. Shared by the guard (answers from
channels) and the approver terminal (``agentguard approvals approve``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentguard.audit.base import AuditSink
from agentguard.errors import ConflictError
from agentguard.store.base import Store
from agentguard.types import ApprovalRequest, ApprovalVote

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "approver_problem",
    "call_hash_problem",
    "cast_vote",
    "hashed_call_fields",
    "redacted_view",
    "request_event",
]

_HASHED = ("server", "tool", "tool_definition_hash", "args", "principal", "session_id")


def hashed_call_fields(call: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a stored call its call hash covers (``KeyError`` if one is missing)."""
    return {k: call[k] for k in _HASHED}


def approver_problem(request: ApprovalRequest, approver: str) -> str | None:
    """Why ``approver`` may not decide ``request``, or None if they may.

    The approver must be in the request's approver set (groups were expanded when the
    request was made, so the stored request is self-contained); with separation of duties,
    neither the calling principal nor the human it acts for may decide. The rule itself is
    :func:`agentguard.trust.eligibility_problem` (the guard applies it again to signed votes).
    """
    from agentguard.trust import eligibility_problem

    context = request.call.get("context") or {}
    acting_for = context.get("acting_for") if isinstance(context, Mapping) else None
    return eligibility_problem(
        approver, approvers=request.approval.approvers,
        separation_of_duties=request.approval.separation_of_duties,
        principal=str(request.call.get("principal", "")), acting_for=acting_for)


def call_hash_problem(request: ApprovalRequest) -> str | None:
    """Why the stored copy of the call may not be shown for approval, or None.

    The store is the agent's to write: it could rewrite the call an approver reads while
    leaving the hash the vote will name. So a channel recomputes the hash from the fields it
    shows (:func:`agentguard.canonical.call_to_dict`) and refuses to offer a vote on a
    mismatch.
    """
    from agentguard.canonical import CanonicalizationError, canonical_bytes, sha256_hex

    try:
        recomputed = sha256_hex(canonical_bytes(hashed_call_fields(request.call)))
    except (KeyError, TypeError, CanonicalizationError):
        return "the stored call is malformed: do not decide it here"
    if recomputed != request.call_hash and not redacted_view(request):
        return ("the stored call does not match its call hash (the store was altered): "
                "what it shows is not what would run; do not decide it here")
    return None


def redacted_view(request: ApprovalRequest) -> str | None:
    """A warning when the stored call has arguments the policy redacts, or None.

    The hash covers the real values, which the store never holds, so nobody outside the
    guard can check such a call against its hash (a known gap: see docs/security.md).
    """
    from agentguard.audit.redact import POLICY_MARK

    def marked(value: Any, depth: int = 0) -> bool:
        if value == POLICY_MARK:
            return True
        if depth > 64:
            return False
        if isinstance(value, Mapping):
            value = list(value.values())
        return isinstance(value, list | tuple) and any(marked(v, depth + 1) for v in value)

    if not marked(request.call.get("args")):
        return None
    return ("some arguments are redacted by policy, so the rest of this call cannot be "
            "checked against its call hash here; decide it only if you trust this store")


def request_event(request: ApprovalRequest, event_type: str, **extra: Any) -> dict[str, Any]:
    """An audit event about an approval request."""
    call = request.call
    event: dict[str, Any] = {
        "type": event_type,
        "request_id": request.id,
        "call_id": call.get("call_id"),
        "principal": call.get("principal"),
        "server": call.get("server"),
        "tool": call.get("tool"),
        "call_hash": request.call_hash,
        "privilege": request.privilege,
        "labels": list(request.labels),
        "rule_id": request.rule_id,
        "reason": request.reason,
        "status": request.status,
    }
    event.update(extra)
    return event


async def cast_vote(
    *, store: Store, audit: AuditSink, request_id: str, approver: str,
    approve: bool, channel: str, reason: str = "", grant_ttl: float = 0.0,
    now: float | None = None, edited_args: Mapping[str, Any] | None = None,
    key: Ed25519PrivateKey | None = None, receipt: Mapping[str, Any] | None = None,
) -> tuple[ApprovalRequest | None, str | None]:
    """Check the approver and the stored call, then record their vote atomically.

    An approval of a request whose stored call no longer hashes to its call hash (the store
    was altered after the call was held) is refused and audited: the approver read something
    other than what would run. A denial still counts (it can only stop a call).

    With ``key`` (the approver's own Ed25519 key) the vote is signed: a
    :class:`~agentguard.trust.VoteStatement` naming this request, its call hash, rule and
    approval settings, the decision, the grant asked for, the time and the approver. A rule
    with ``assurance: signed`` refuses approvals without one; the guard verifies the
    signature against the trust file before it counts the vote. A channel that obtained the
    proof elsewhere (a passkey assertion made in the approver's browser) passes it as
    ``receipt`` instead; the guard verifies it the same way.

    Returns:
        (request after the vote, None) when counted, or (request or None, problem) when the
        vote was refused: unknown request, not authorised, already settled. Refused votes
        by someone who is not authorised are audited as ``vote.rejected``.
    """
    request = await store.get_request(request_id)
    if request is None:
        return None, f"no approval request {request_id!r}"
    problem = approver_problem(request, approver)
    if problem is not None:
        audit.append(request_event(request, "vote.rejected", approver=approver,
                                   channel=channel, detail=problem))
        return request, problem
    problem = call_hash_problem(request) if approve else None
    if problem is not None:
        # The agent rewrote the stored call an approver reads while keeping the hash the vote
        # would name: whoever reviewed it saw something else than what would run.
        audit.append(request_event(request, "vote.rejected", approver=approver,
                                   channel=channel, detail=problem))
        return request, problem
    if edited_args is not None and (approve or not isinstance(edited_args, Mapping)):
        return request, "an edit is a deny of this call with proposed arguments (an object)"
    if grant_ttl > request.approval.max_grant:
        return request, (
            f"this rule allows approving for at most {request.approval.max_grant:.0f}s"
            if request.approval.max_grant else "this rule allows single-use approval only")
    at = now or time.time()
    if key is not None:
        from agentguard.trust import VoteStatement, sign

        statement = VoteStatement.for_vote(
            request_id=request.id, call_hash=request.call_hash, rule_id=request.rule_id,
            settings_hash=request.settings_hash, approve=approve, approver=approver, at=at,
            grant_ttl=grant_ttl, reason=reason)
        receipt = sign(statement, key).to_dict()
    elif receipt is not None:
        receipt = dict(receipt)
    elif approve and request.approval.assurance == "signed":
        problem = ("this rule needs a signed vote: make a key with `agentguard approvers "
                   "keygen`, have it added to the trust file, and approve with it")
        audit.append(request_event(request, "vote.rejected", approver=approver,
                                   channel=channel, detail=problem))
        return request, problem
    vote = ApprovalVote(approver=approver, approve=approve, at=at,
                        channel=channel, reason=reason, grant_ttl=grant_ttl,
                        edited_args=dict(edited_args) if edited_args is not None else None,
                        receipt=receipt)
    try:
        result = await store.record_vote(request_id, vote)
    except ConflictError as exc:
        latest = await store.get_request(request_id)
        return latest, f"request is no longer pending ({latest.status if latest else exc})"
    if not result.counted:
        return result.request, f"{approver!r} has already voted on this request"
    return result.request, None
