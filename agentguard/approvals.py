"""Who may decide a held call, and recording their vote. Shared by the guard (answers from
channels) and the approver terminal (``agentguard approvals approve``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentguard.audit._group import record_event
from agentguard.audit.base import AuditSink
from agentguard.errors import ConflictError
from agentguard.store.base import Store
from agentguard.types import ApprovalRequest, ApprovalVote, ToolCall

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "approver_problem",
    "call_hash_problem",
    "cast_vote",
    "hashed_call_fields",
    "redacted_view",
    "request_event",
    "shown_call",
    "shown_hash",
    "shown_view",
]

_HASHED = ("server", "tool", "tool_definition_hash", "args", "principal", "session_id")
_SHOWN_CONTEXT = ("acting_for", "source_ip", "extra")


def shown_call(call: ToolCall, redact: tuple[str, ...]) -> dict[str, Any]:
    """What the store keeps of ``call`` for approvers, and they are shown: the fields the
    call hash covers with the policy's ``redact`` paths masked, and the call's context.

    The guard stores exactly this (plus ids) and can rebuild it from the real call at any
    time, so it knows the :func:`shown_hash` an honest approver's vote must name.
    """
    from dataclasses import replace

    from agentguard.audit.redact import mask_paths
    from agentguard.canonical import call_to_dict

    masked = replace(call, args=mask_paths(call.args, redact))
    return call_to_dict(masked) | {"context": {
        "source_ip": call.context.source_ip, "acting_for": call.context.acting_for,
        "extra": dict(call.context.extra)}}


def shown_view(request: ApprovalRequest) -> dict[str, Any]:
    """What an approver's tool displays of a stored request and a vote names: the stored
    call, and the class and labels it was held under (see :func:`shown_hash`)."""
    return {"call": request.call, "privilege": request.privilege,
            "labels": list(request.labels)}


def shown_hash(view: Mapping[str, Any]) -> str | None:
    """SHA-256 (hex) of a held call as an approver is shown it, or None if malformed.

    ``view`` is :func:`shown_view` of the stored request (or, in the guard, the same built
    from the real call: :func:`shown_call`). Covers the call-hash fields as stored (redacted
    values masked: no one outside the guard holds the real ones), the context an approver
    reads (acting for, source, extra), and the class and labels. An approver's tool computes
    it from the very request it displayed and signs it in the
    :class:`~agentguard.trust.VoteStatement`; the guard counts no vote naming another. So a
    call the agent rewrote in the store, redacted or not, gets no vote that counts.
    """
    import json

    from agentguard.canonical import CanonicalizationError, canonical_bytes, sha256_hex

    try:
        call, context = view["call"], view["call"]["context"]
        if not isinstance(context, Mapping):
            return None
        fields = hashed_call_fields(call) | {
            "context": {k: context.get(k) for k in _SHOWN_CONTEXT},
            "privilege": view["privilege"], "labels": view["labels"]}
        # The form a store hands back (JSON), so both sides hash the same data.
        plain = json.loads(json.dumps(fields, allow_nan=False))
        return sha256_hex(canonical_bytes(plain))
    except (KeyError, TypeError, ValueError, CanonicalizationError):
        return None


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
    """A note when the stored call has arguments the policy redacts, or None.

    The call hash covers the real values, which the store never holds, so nobody outside the
    guard can check such a call against it. A signed vote names the :func:`shown_hash` of
    what its approver read, which the guard checks against the call it holds: a rewritten
    call gets no vote that counts under ``assurance: signed``.
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
    if request.approval.assurance == "signed":
        return ("some arguments are redacted by policy; the guard checks that your signed "
                "vote names exactly the call shown here, so a rewritten call gets no vote")
    return ("some arguments are redacted by policy, so the rest of this call cannot be "
            "checked against its call hash here; decide it only if you trust this store "
            "(rules with `assurance: signed` check it)")


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
    shown: str | None = None,
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

    ``shown`` is the :func:`shown_hash` of the request the approver's tool displayed (a prefix
    of at least 12 hex digits will do when a person typed it): an approval is refused if
    the stored call no longer hashes to it (it changed after the approver read it).
    Without it, the stored call as read now is what a signature names.

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
        record_event(audit, request_event(request, "vote.rejected", approver=approver,
                                          channel=channel, detail=problem))
        return request, problem
    problem = call_hash_problem(request) if approve else None
    if problem is not None:
        # The agent rewrote the stored call an approver reads while keeping the hash the vote
        # would name: whoever reviewed it saw something else than what would run.
        record_event(audit, request_event(request, "vote.rejected", approver=approver,
                                          channel=channel, detail=problem))
        return request, problem
    seen = shown_hash(shown_view(request))
    if approve and shown is not None and (
            seen is None or len(shown) < 12 or not seen.startswith(shown)):
        problem = ("the stored call changed since it was shown to you (or the hash given "
                   "is not the one shown): read it again before deciding")
        record_event(audit, request_event(request, "vote.rejected", approver=approver,
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

        if seen is None:
            return request, "the stored call is malformed: it cannot be signed"

        statement = VoteStatement.for_vote(
            request_id=request.id, call_hash=request.call_hash, rule_id=request.rule_id,
            settings_hash=request.settings_hash, approve=approve, approver=approver, at=at,
            shown_hash=seen, grant_ttl=grant_ttl, reason=reason)
        receipt = sign(statement, key).to_dict()
    elif receipt is not None:
        receipt = dict(receipt)
    elif approve and request.approval.assurance == "signed":
        problem = ("this rule needs a signed vote: make a key with `agentguard approvers "
                   "keygen`, have it added to the trust file, and approve with it")
        record_event(audit, request_event(request, "vote.rejected", approver=approver,
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
