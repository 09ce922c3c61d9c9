"""Attacks on signed votes, as the agent would try them: same OS user, same store.

The agent can write anything into the mailbox (the store): rows, statements, key ids, names.
It cannot write the trust file nor read an approver's private key. Each test is one forgery;
each must be refused by :func:`verify_vote` or not counted by :func:`count_quorum`.
"""

from __future__ import annotations

import base64
import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentguard.canonical import sha256_hex
from agentguard.trust.anchors import TrustAnchors
from agentguard.trust.keys import key_id, public_key_text, sign
from agentguard.trust.statement import SignedVote, VoteStatement
from agentguard.trust.verify import (
    VerifiedVote,
    count_quorum,
    eligibility_problem,
    verify_vote,
)
from tests.trust.conftest import Held, Keys, trust_data

APPROVERS = ("dave", "erin", "frank")


def check(signed: SignedVote, held: Held, anchors: TrustAnchors) -> VerifiedVote | str:
    return verify_vote(signed, anchors=anchors, **held.terms())  # type: ignore[arg-type]


def verified(signed: SignedVote, held: Held, anchors: TrustAnchors) -> VerifiedVote:
    result = check(signed, held, anchors)
    assert isinstance(result, VerifiedVote), result
    return result


def quorum(votes: list[VerifiedVote], n: int = 2, *, sod: bool = False,
           principal: str | None = "agent-7", acting_for: str | None = "alice"):
    return count_quorum(votes, APPROVERS, n, sod, principal, acting_for)


# --------------------------------------------------------------------------- the good path
def test_a_listed_approver_signing_this_call_is_verified(held: Held, keys: Keys,
                                                         anchors: TrustAnchors) -> None:
    vote = verified(sign(held.statement("erin", grant_ttl=900), keys.erin), held, anchors)
    assert (vote.identity, vote.approve, vote.grant_ttl, vote.service) == ("erin", True,
                                                                          900.0, None)
    assert vote.key_id == key_id(keys.erin.public_key())


def test_the_envelope_survives_the_mailbox(held: Held, keys: Keys,
                                           anchors: TrustAnchors) -> None:
    signed = sign(held.statement("dave"), keys.dave)
    assert verified(SignedVote.from_dict(signed.to_dict()), held, anchors).identity == "dave"


# --------------------------------------------------------------------------- forgeries
def test_a_key_not_in_the_trust_file_is_refused(held: Held, keys: Keys,
                                                anchors: TrustAnchors) -> None:
    """The agent makes its own key and signs a perfect statement as dave."""
    forged = sign(held.statement("dave"), keys.stranger)
    assert "not in the trust file" in check(forged, held, anchors)


def test_the_agent_own_key_under_daves_key_id_is_refused(held: Held, keys: Keys,
                                                         anchors: TrustAnchors) -> None:
    """Claiming a listed key id does not help: the signature is checked with that key."""
    forged = sign(held.statement("dave"), keys.stranger)
    forged = dataclasses.replace(forged, key_id=key_id(keys.dave.public_key()))
    assert "does not verify" in check(forged, held, anchors)


@pytest.mark.parametrize("field, value", [
    ("request_id", "req_other"),
    ("call_hash", sha256_hex(b"deploy prod v43")),
    ("rule_id", "staging-deploy"),
    ("rule_id", None),
    ("settings_hash", sha256_hex(b"approvers: dave; quorum 1")),
])
def test_a_valid_signature_for_other_terms_is_refused(held: Held, keys: Keys,
                                                      anchors: TrustAnchors, field: str,
                                                      value: object) -> None:
    """Dave really approved something else; the agent replays it for this call."""
    replayed = sign(held.statement("dave", **{field: value}), keys.dave)
    assert "signed for another" in check(replayed, held, anchors) or \
        "signed under" in check(replayed, held, anchors)


def test_editing_the_signed_statement_breaks_the_signature(held: Held, keys: Keys,
                                                           anchors: TrustAnchors) -> None:
    """Dave denied; the agent flips the decision (or stretches the grant) in the mailbox."""
    denied = sign(held.statement("dave", approve=False), keys.dave)
    for change in ({"decision": "approve"}, {"grant_ttl": 86400.0}, {"at": 1_765_000_500}):
        tampered = dataclasses.replace(
            denied, statement=dataclasses.replace(denied.statement, **change))
        assert "does not verify" in check(tampered, held, anchors)


def test_daves_key_cannot_claim_to_be_erin(held: Held, keys: Keys,
                                           anchors: TrustAnchors) -> None:
    """A key speaks for the person the trust file binds it to, whatever name it signs."""
    as_erin = sign(held.statement("erin"), keys.dave)
    assert check(as_erin, held, anchors) == (
        f"key {key_id(keys.dave.public_key())} belongs to 'dave', not to 'erin'")


def test_one_person_with_two_keys_counts_once(held: Held, keys: Keys,
                                              anchors: TrustAnchors) -> None:
    votes = [verified(sign(held.statement("dave"), k), held, anchors)
             for k in (keys.dave, keys.dave2)]
    assert quorum(votes) == (False, None, ("dave",))
    erin = verified(sign(held.statement("erin"), keys.erin), held, anchors)
    assert quorum([*votes, erin]) == (True, None, ("dave", "erin"))


def test_one_vote_repeated_in_the_mailbox_counts_once(held: Held, keys: Keys,
                                                      anchors: TrustAnchors) -> None:
    vote = verified(sign(held.statement("frank"), keys.frank), held, anchors)
    assert quorum([vote, vote, vote]) == (False, None, ("frank",))


def test_a_service_key_cannot_vouch_for_a_person_or_another_namespace(
        held: Held, keys: Keys, anchors: TrustAnchors) -> None:
    """Serve's key signs for Slack and webhook users it verified, nobody else."""
    for who in ("dave", "github:octocat", "slackish:u1", "os:root"):
        problem = check(sign(held.statement(who), keys.serve), held, anchors)
        assert isinstance(problem, str) and "may not vouch for" in problem, who
    vote = verified(sign(held.statement("slack:U012ABC"), keys.serve), held, anchors)
    assert (vote.identity, vote.service) == ("slack:u012abc", "serve")


def test_service_votes_count_once_per_person_vouched_for(held: Held, keys: Keys,
                                                         anchors: TrustAnchors) -> None:
    a, b = (verified(sign(held.statement(w), keys.serve), held, anchors)
            for w in ("slack:u1", "slack:u2"))
    approved, _, who = count_quorum([a, a, b], ("slack:u1", "slack:u2"), 2, False, "x", None)
    assert approved and who == ("slack:u1", "slack:u2")
    approved, _, who = count_quorum([a, a], ("slack:u1", "slack:u2"), 2, False, "x", None)
    assert not approved and who == ("slack:u1",)


@pytest.mark.parametrize("signature", [
    "", "AAAA", "not base64!!", "\u00e9" * 88,
    # truncated and padded real signatures
    "TRUNCATE", "EXTEND", "FLIPBIT",
])
def test_a_garbled_signature_is_refused(held: Held, keys: Keys, anchors: TrustAnchors,
                                        signature: str) -> None:
    good = sign(held.statement("dave"), keys.dave)
    raw = base64.b64decode(good.signature_b64)
    signature = {
        "TRUNCATE": base64.b64encode(raw[:63]).decode(),
        "EXTEND": base64.b64encode(raw + b"\0").decode(),
        "FLIPBIT": base64.b64encode(bytes([raw[0] ^ 1]) + raw[1:]).decode(),
    }.get(signature, signature)
    result = check(dataclasses.replace(good, signature_b64=signature), held, anchors)
    assert isinstance(result, str)


def test_a_signature_outside_the_requests_lifetime_is_refused(held: Held, keys: Keys,
                                                              anchors: TrustAnchors) -> None:
    signed = sign(held.statement("dave", at=1_765_000_000), keys.dave)
    window = (1_765_000_100.0, 1_765_000_400.0)
    assert "outside the request's lifetime" in verify_vote(
        signed, anchors=anchors, signed_between=window, **held.terms())  # type: ignore[arg-type]
    inside = verify_vote(signed, anchors=anchors, signed_between=(0, 2e9),
                         **held.terms())  # type: ignore[arg-type]
    assert isinstance(inside, VerifiedVote)


def test_anything_but_a_signed_vote_is_refused(held: Held, keys: Keys,
                                               anchors: TrustAnchors) -> None:
    assert check({"statement": {}, "key_id": "x", "signature": ""}, held,  # type: ignore[arg-type]
                 anchors) == "not a signed vote"

    class Shifty(VoteStatement):
        """Signs dave's deny of another call, shows an approval of this one."""

        __slots__ = ()

        def to_bytes(self) -> bytes:
            return held.statement("dave", approve=False, request_id="req_other").to_bytes()

    shown = held.statement("dave")
    real = sign(held.statement("dave", approve=False, request_id="req_other"), keys.dave)
    shifty = Shifty(**shown.to_dict())
    assert check(SignedVote(shifty, real.key_id, real.signature_b64), held,
                 anchors) == "not a signed vote"


# --------------------------------------------------------------------------- counting
def test_non_approvers_and_separation_of_duties(held: Held, keys: Keys) -> None:
    """Alice (the human the agent acts for) holds a listed key: her vote never counts when
    separation of duties applies, and a key holder outside the rule's set never counts."""
    extra = Ed25519PrivateKey.generate()
    data = trust_data(keys)
    data["approvers"].append({"id": "alice", "keys": [public_key_text(extra.public_key())]})
    anchors = TrustAnchors.from_mapping(data)
    alice = verified(sign(held.statement("alice"), extra), held, anchors)
    dave = verified(sign(held.statement("dave"), keys.dave), held, anchors)
    assert count_quorum([alice, dave], ("alice", "dave"), 2, True, "agent-7",
                        "user:Alice") == (False, None, ("dave",))
    assert count_quorum([alice, dave], ("alice", "dave"), 2, False, "agent-7",
                        "alice") == (True, None, ("alice", "dave"))
    assert count_quorum([alice, dave], APPROVERS, 2, False, "agent-7",
                        None) == (False, None, ("dave",))
    assert eligibility_problem("alice", approvers=(), separation_of_duties=True,
                               principal="alice", acting_for=None) is not None
    assert eligibility_problem("zed", approvers=(), separation_of_duties=True,
                               principal="alice", acting_for=None) is None


def test_a_deny_settles_even_after_an_approval(held: Held, keys: Keys,
                                               anchors: TrustAnchors) -> None:
    dave_yes = verified(sign(held.statement("dave"), keys.dave), held, anchors)
    dave_no = verified(sign(held.statement("dave", approve=False), keys.dave2), held, anchors)
    erin_yes = verified(sign(held.statement("erin"), keys.erin), held, anchors)
    assert quorum([dave_yes, dave_no, erin_yes]) == (False, "dave", ("dave",))
    # Once the quorum was met, a later deny arrives too late (as in the store's rule).
    assert quorum([dave_yes, erin_yes, dave_no]) == (True, None, ("dave", "erin"))


def test_an_ineligible_deny_does_not_settle(held: Held, keys: Keys,
                                            anchors: TrustAnchors) -> None:
    slack_no = verified(sign(held.statement("slack:u9", approve=False), keys.serve), held,
                        anchors)
    assert quorum([slack_no]) == (False, None, ())


def test_quorum_zero_or_one_needs_one_approval(held: Held, keys: Keys,
                                               anchors: TrustAnchors) -> None:
    dave = verified(sign(held.statement("dave"), keys.dave), held, anchors)
    assert quorum([], n=0) == (False, None, ())
    assert quorum([dave], n=0) == (True, None, ("dave",))
    assert quorum([dave], n=1) == (True, None, ("dave",))


def test_a_hand_made_non_verified_object_is_not_counted() -> None:
    fake = {"identity": "dave", "approve": True}
    assert count_quorum([fake], APPROVERS, 1, False, "agent", None) == (  # type: ignore[list-item]
        False, None, ())
