"""Signed approvals: votes the agent cannot forge, checked against anchors it cannot write.

Threat model (``/work/shared/DESIGN.md``): the attacker is the agent. It runs as the same OS
user as the guard holding it, with the same store and database role, so it can write any row
the guard reads: a vote "from dave", a request's copy of the call, a Slack answer. The store is
therefore a mailbox, never an authority. A vote counts only when it is a signature by a key
listed in the *trust anchors* -- a file the policy names, deployed read-only to the agent (like
ssh's ``authorized_keys``) -- over a :class:`VoteStatement` naming this request, this call's
hash, this rule and its approval settings.

Parts, one job each:

- :mod:`~agentguard.trust.statement`: the bytes a vote signs (:class:`VoteStatement`) and the
  envelope in the mailbox (:class:`SignedVote`).
- :mod:`~agentguard.trust.keys`: approvers' Ed25519 keys: make, load (0600 like ssh), sign.
- :mod:`~agentguard.trust.anchors`: the trust file (:class:`TrustAnchors`), with warnings when
  this process could change it.
- :mod:`~agentguard.trust.passkey`: votes confirmed with a passkey (:class:`PasskeyVote`, a
  WebAuthn assertion whose challenge is the statement's digest).
- :mod:`~agentguard.trust.verify`: the one rule (:func:`verify_vote`) and the count
  (:func:`count_quorum`).

How the guard uses it: a channel (the approver terminal with the approver's key, ``serve`` with
its service key for Slack and webhook answers) stores a :class:`SignedVote`. When settling a
request the guard reads the signed votes from the store and, for each, calls
``verify_vote(signed, request_id=..., call_hash=..., rule_id=..., settings_hash=...,
anchors=...)`` with the values it holds **in memory** for the held call (not the store's copy);
a ``str`` result is a refused vote to audit (``vote.rejected``). It then calls
``count_quorum(verified, approvers, quorum, separation_of_duties, principal, acting_for)`` with
the rule's approval spec and the in-memory call, and acts on ``(approved, denied_by,
approvers)``: only then is the call approved, and the verified votes' ``signed`` envelopes are
the receipts for the audit log.
"""

from __future__ import annotations

from agentguard.trust.anchors import TrustAnchors, TrustFileError
from agentguard.trust.keys import (
    KeyFileError,
    default_key_path,
    generate_key,
    load_signing_key,
    sign,
)
from agentguard.trust.passkey import PasskeyVote
from agentguard.trust.statement import SignedVote, StatementError, VoteStatement
from agentguard.trust.verify import (
    VerifiedVote,
    count_quorum,
    eligibility_problem,
    receipt_from_dict,
    verify_vote,
)

__all__ = [
    "KeyFileError",
    "PasskeyVote",
    "SignedVote",
    "StatementError",
    "TrustAnchors",
    "TrustFileError",
    "VerifiedVote",
    "VoteStatement",
    "count_quorum",
    "default_key_path",
    "eligibility_problem",
    "generate_key",
    "load_signing_key",
    "receipt_from_dict",
    "sign",
    "verify_vote",
]
