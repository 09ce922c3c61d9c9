"""The one rule for whether a signed vote counts, and how verified votes settle a request.

:func:`verify_vote` answers "who, provably, said what about this exact call": the signature
must be valid for a key the trust anchors list; the statement must name the request, call hash,
rule and settings hash the guard holds *in memory* (never the store's copy, which the agent can
rewrite); the identity is the one the anchors bind the key to (a name the vote claims is only
checked against it); a service key may speak only for identities its ``may_vouch_for`` allows.

:func:`count_quorum` then settles: only eligible people count (in the approver set, and with
separation of duties neither the principal nor the human it acts for), each person once, each
personal key once. :func:`eligibility_problem` is the eligibility rule on its own, for auditing
a refused vote.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature

from agentguard.identity import canonical_identity, same_identity
from agentguard.trust.anchors import ApproverAnchor, ServiceAnchor, TrustAnchors
from agentguard.trust.passkey import PasskeyVote, passkey_signer
from agentguard.trust.statement import SignedVote, StatementError, VoteStatement

__all__ = [
    "VerifiedVote",
    "count_quorum",
    "eligibility_problem",
    "receipt_from_dict",
    "verify_vote",
]


@dataclass(frozen=True, slots=True)
class VerifiedVote:
    """A vote whose signature and binding were checked: safe to count and to audit.

    Attributes:
        identity: Canonical identity the anchors bind the key to (or the identity a service
            vouched for).
        approve: True to approve, False to deny.
        grant_ttl: Seconds of "approve for N" asked for (0: this call only).
        at: Unix time the approver signed.
        key_id: Id of the key that signed (``passkey:<credential id>`` for a passkey).
        service: Name of the service that vouched, or None for the approver's own key.
        signed: The signed vote as received (the receipt to put in the audit log).
    """

    identity: str
    approve: bool
    grant_ttl: float
    at: int
    key_id: str
    service: str | None
    signed: SignedVote | PasskeyVote


def receipt_from_dict(data: object) -> SignedVote | PasskeyVote:
    """Read a stored receipt: an Ed25519 :class:`SignedVote` or a :class:`PasskeyVote`.

    Raises:
        StatementError: neither, or malformed.
    """
    if isinstance(data, dict) and "passkey_assertion" in data:
        return PasskeyVote.from_dict(data)
    if isinstance(data, dict):
        return SignedVote.from_dict(data)
    raise StatementError("a receipt is a JSON object")


def _signature(text: object) -> bytes | None:
    if not isinstance(text, str) or not text.isascii():
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 64 else None


def verify_vote(
    signed: SignedVote | PasskeyVote, *, request_id: str, call_hash: str, rule_id: str | None,
    settings_hash: str, anchors: TrustAnchors,
    signed_between: tuple[float, float] | None = None, shown_hash: str | None = None,
) -> VerifiedVote | str:
    """Check one signed vote for the request the guard is holding.

    Args:
        signed: The vote as read from the store or a channel (untrusted): an Ed25519
            signature, or a passkey assertion over the statement's digest
            (:func:`agentguard.trust.passkey.passkey_signer`). Either way the statement is then
            checked the same way.
        request_id: The request id the guard created (in memory).
        call_hash: The hash of the call the guard holds (in memory).
        rule_id: The rule that held it.
        settings_hash: :func:`agentguard.grants.settings_hash` of that rule now.
        anchors: The trust anchors (read from the file the policy names).
        signed_between: When given, ``(earliest, latest)`` unix times the statement's ``at``
            must lie within (e.g. the request's creation and expiry, with some clock skew).
        shown_hash: When given (the guard always gives it), the hash of the call as the
            guard stored it for approvers (:func:`agentguard.approvals.shown_hash`, computed
            from the real call and the rule's redact paths): the statement must name exactly
            it, so a vote on a call the store rewrote under its call hash does not count, and
            neither does a version-1 statement (which names nothing shown). Without it (an
            audit of old receipts) the statement's ``shown_hash`` is not checked.

    Returns:
        The verified vote, or a sentence saying why it does not count.
    """
    # Exact types: a subclass could sign one set of bytes and show other fields.
    owner: ApproverAnchor | None
    if type(signed) is PasskeyVote and type(signed.statement) is VoteStatement:
        statement = signed.statement
        signer = passkey_signer(signed, anchors)
        if isinstance(signer, str):
            return signer
        owner, kid = signer
        vouching: ServiceAnchor | None = None
    elif type(signed) is SignedVote and type(signed.statement) is VoteStatement:
        statement = signed.statement
        binding = anchors.key(signed.key_id)
        if binding is None:
            return f"key {signed.key_id!r} is not in the trust file {anchors.source}"
        signature = _signature(signed.signature_b64)
        if signature is None:
            return "the signature is not base64 of 64 bytes"
        try:
            binding.public_key.verify(signature, statement.to_bytes())
        except InvalidSignature:
            return f"the signature does not verify with key {binding.key_id}"
        owner, kid, vouching = binding.approver, binding.key_id, binding.service
    else:
        return "not a signed vote"
    if statement.request_id != request_id:
        return "the vote was signed for another request"
    if statement.call_hash != call_hash:
        return "the vote was signed for another call (the call hash differs)"
    if statement.rule_id != rule_id:
        return "the vote was signed under another rule"
    if statement.settings_hash != settings_hash:
        return "the vote was signed under other approval settings (the policy changed)"
    if shown_hash is not None and statement.shown_hash is None:
        return ("the vote does not name what its approver was shown (a version-1 statement "
                "from an older approver tool)")
    if shown_hash is not None and statement.shown_hash != shown_hash:
        return ("the approver was shown another call than the one held (the stored call was "
                "rewritten): the vote does not count")
    if signed_between is not None and not (
            signed_between[0] <= statement.at <= signed_between[1]):
        return "the vote was signed outside the request's lifetime"
    if owner is not None:
        identity = owner.identity
        if statement.approver != identity:
            return f"key {kid} belongs to {identity!r}, not to {statement.approver!r}"
        service = None
    else:
        assert vouching is not None
        if not vouching.may_vouch(statement.approver):
            return (f"service {vouching.name!r} may not vouch for "
                    f"{statement.approver!r} (only {list(vouching.may_vouch_for)})")
        identity, service = statement.approver, vouching.name
    return VerifiedVote(identity=identity, approve=statement.approve,
                        grant_ttl=statement.grant_ttl, at=statement.at,
                        key_id=kid, service=service, signed=signed)


def eligibility_problem(
    identity: str, *, approvers: Iterable[str], separation_of_duties: bool,
    principal: str | None, acting_for: str | None,
) -> str | None:
    """Why ``identity`` may not decide, or None if they may.

    An empty approver set means anyone the trust anchors list; otherwise the identity must be
    in it (compared canonically; groups are expanded before this). With separation of duties,
    neither the calling principal nor the human it acts for may decide.
    """
    if not identity:
        return "the approver's identity is unknown"
    allowed = tuple(approvers)
    if allowed and not any(same_identity(identity, a) for a in allowed):
        return f"{identity!r} is not an approver for this rule"
    if separation_of_duties and (same_identity(identity, principal)
                                 or same_identity(identity, acting_for)):
        return f"{identity!r} requested this call and may not decide it (separation of duties)"
    return None


def count_quorum(
    verified_votes: Iterable[VerifiedVote], approvers: Iterable[str], quorum: int,
    separation_of_duties: bool, principal: str | None, acting_for: str | None,
) -> tuple[bool, str | None, tuple[str, ...]]:
    """Settle a request from its verified votes, in the order they arrived.

    Votes of ineligible identities are skipped (see :func:`eligibility_problem`). The first
    eligible deny settles the request as denied, even from someone who approved earlier,
    unless the quorum was already met by the approvals before it. Approvals count once per
    person, and a personal key once (a service key counts once per identity it vouched for).

    Returns:
        ``(approved, denied_by, approvers)``: whether the quorum (at least 1) was met, the
        identity whose deny settled it (or None), and the distinct identities whose approvals
        counted, in order.
    """
    allowed = tuple(approvers)
    needed = max(1, quorum)
    counted: list[str] = []
    used_keys: set[str] = set()
    for vote in verified_votes:
        if type(vote) is not VerifiedVote:
            continue
        identity = canonical_identity(vote.identity)
        if eligibility_problem(identity, approvers=allowed,
                               separation_of_duties=separation_of_duties,
                               principal=principal, acting_for=acting_for) is not None:
            continue
        if not vote.approve:
            return False, identity, tuple(counted)
        personal_key = vote.key_id if vote.service is None else None
        if identity in counted or personal_key in used_keys:
            continue
        counted.append(identity)
        if personal_key is not None:
            used_keys.add(personal_key)
        if len(counted) >= needed:
            return True, None, tuple(counted)
    return False, None, tuple(counted)
