"""Passkey votes: a WebAuthn assertion whose challenge is the statement's digest counts like a
signature, and each way the agent could bend one is refused. The agent can write the store
(any statement, any assertion JSON, any name); it cannot write the trust file nor use a
listed authenticator."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest

from agentguard._signed import settle_signed
from agentguard.testing.passkey import SoftPasskey
from agentguard.trust.anchors import TrustAnchors, TrustFileError
from agentguard.trust.passkey import PasskeyVote, b64url_decode, b64url_encode
from agentguard.trust.statement import StatementError
from agentguard.trust.verify import VerifiedVote, receipt_from_dict, verify_vote
from agentguard.types import ApprovalRequest, ApprovalSpec, ApprovalVote
from tests.trust.conftest import Held, Keys, trust_data

pytest.importorskip("webauthn")


@pytest.fixture
def passkeys() -> dict[str, SoftPasskey]:
    return {who: SoftPasskey(label=f"{who}'s laptop") for who in ("dave", "erin", "frank")}


@pytest.fixture
def anchors(keys: Keys, passkeys: dict[str, SoftPasskey]) -> TrustAnchors:
    data = trust_data(keys)
    for entry, who in zip(data["approvers"], ("dave", "erin", "frank"), strict=True):
        entry["passkeys"] = [passkeys[who].anchor()]
    return TrustAnchors.from_mapping(data, source="test-trust.yaml")


def vote(held: Held, who: str, passkey: SoftPasskey, **kwargs) -> PasskeyVote:
    statement = held.statement(who, **kwargs)
    return PasskeyVote(statement, passkey.assert_(statement.digest()))


def check(signed: PasskeyVote, held: Held, anchors: TrustAnchors) -> VerifiedVote | str:
    return verify_vote(signed, anchors=anchors, **held.terms())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the good path
def test_a_listed_passkey_confirming_this_statement_is_a_verified_vote(
        held: Held, passkeys: dict[str, SoftPasskey], anchors: TrustAnchors) -> None:
    result = check(vote(held, "user:Erin", passkeys["erin"], grant_ttl=900), held, anchors)
    assert isinstance(result, VerifiedVote), result
    assert (result.identity, result.approve, result.grant_ttl, result.service) == (
        "erin", True, 900.0, None)
    assert result.key_id == f"passkey:{passkeys['erin'].credential_id}"


def test_the_passkey_receipt_survives_the_mailbox(
        held: Held, passkeys: dict[str, SoftPasskey], anchors: TrustAnchors) -> None:
    stored = json.loads(json.dumps(vote(held, "dave", passkeys["dave"]).to_dict()))
    again = receipt_from_dict(stored)
    assert isinstance(again, PasskeyVote)
    assert isinstance(check(again, held, anchors), VerifiedVote)


# --------------------------------------------------------------------------- refusals
def test_an_assertion_made_for_another_request_is_refused(
        held: Held, passkeys: dict[str, SoftPasskey], anchors: TrustAnchors) -> None:
    """dave confirmed request A; the agent copies the assertion onto request B."""
    other = vote(held, "dave", passkeys["dave"], request_id="req_other")
    assert "another request" in check(other, held, anchors)
    moved = PasskeyVote(held.statement("dave"), other.assertion)
    assert "challenge" in check(moved, held, anchors).lower()


@pytest.mark.parametrize("field, value", [("decision", "approve"), ("grant_ttl", 86400.0),
                                          ("approver", "erin")])
def test_changing_what_was_confirmed_breaks_the_challenge(
        field: str, value: object, held: Held, passkeys: dict[str, SoftPasskey],
        anchors: TrustAnchors) -> None:
    """A deny turned into an approve, a longer grant, another name: the digest differs."""
    confirmed = vote(held, "dave", passkeys["dave"], approve=False)
    bent = PasskeyVote(dataclasses.replace(confirmed.statement, **{field: value}),
                       confirmed.assertion)
    assert isinstance(check(bent, held, anchors), str)


def test_an_assertion_without_user_verification_is_refused(
        held: Held, passkeys: dict[str, SoftPasskey], anchors: TrustAnchors) -> None:
    statement = held.statement("dave")
    touched = PasskeyVote(statement, passkeys["dave"].assert_(statement.digest(),
                                                               user_verified=False))
    assert "verif" in check(touched, held, anchors).lower()


def test_a_passkey_not_in_the_trust_file_is_refused(
        held: Held, anchors: TrustAnchors) -> None:
    """The agent registers its own authenticator and confirms as dave."""
    assert "not in the trust file" in check(vote(held, "dave", SoftPasskey()), held, anchors)


def test_the_agent_own_key_under_daves_credential_id_is_refused(
        held: Held, passkeys: dict[str, SoftPasskey], anchors: TrustAnchors) -> None:
    forger = SoftPasskey(credential_id=passkeys["dave"].credential_id)
    assert "does not verify" in check(vote(held, "dave", forger), held, anchors)


def test_a_passkey_votes_only_as_its_owner(
        held: Held, passkeys: dict[str, SoftPasskey], anchors: TrustAnchors) -> None:
    """frank's passkey confirming a statement that says "dave"."""
    assert "belongs to 'frank'" in check(vote(held, "dave", passkeys["frank"]), held, anchors)


@pytest.mark.parametrize("where", [{"origin": "http://localhost:9999"},
                                   {"rp_id": "evil.localhost"},
                                   {"type_": "webauthn.create"}])
def test_an_assertion_from_another_origin_or_ceremony_is_refused(
        where: dict[str, str], held: Held, passkeys: dict[str, SoftPasskey],
        anchors: TrustAnchors) -> None:
    statement = held.statement("dave")
    stray = PasskeyVote(statement, passkeys["dave"].assert_(statement.digest(), **where))
    assert "does not verify" in check(stray, held, anchors)


def test_a_tampered_signature_is_refused(
        held: Held, passkeys: dict[str, SoftPasskey], anchors: TrustAnchors) -> None:
    good = vote(held, "dave", passkeys["dave"])
    raw = bytearray(b64url_decode(good.assertion["response"]["signature"]))
    raw[-1] ^= 1
    bad = json.loads(json.dumps(good.assertion))
    bad["response"]["signature"] = b64url_encode(bytes(raw))
    assert "does not verify" in check(PasskeyVote(good.statement, bad), held, anchors)


@pytest.mark.parametrize("data", [
    {"statement": {}, "passkey_assertion": {}},
    {"statement": None, "passkey_assertion": "x"},
    {"passkey_assertion": {}},
    {"statement": {}, "passkey_assertion": {"x": "a" * 20000}},
    [1, 2],
])
def test_malformed_receipts_are_refused(data: object) -> None:
    with pytest.raises(StatementError):
        receipt_from_dict(data)


# --------------------------------------------------------------------------- the count
def request_with(votes: list[tuple[str, PasskeyVote | None]], held: Held) -> ApprovalRequest:
    return ApprovalRequest(
        id=held.request_id, call={"principal": "agent-7"}, call_hash=held.call_hash,
        created_at=0.0, expires_at=9e9, rule_id=held.rule_id, reason="",
        privilege="privileged", labels=(),
        approval=ApprovalSpec(approvers=("dave", "erin", "frank"), quorum=2),
        votes=tuple(ApprovalVote(approver=name, approve=True, at=1.0, channel="web",
                                 receipt=v.to_dict() if v else None) for name, v in votes))


def settle(stored: ApprovalRequest, held: Held, anchors: TrustAnchors):
    return settle_signed(stored, request_id=held.request_id, call_hash=held.call_hash,
                         rule_id=held.rule_id, settings_hash=held.settings_hash,
                         approval=stored.approval, principal="agent-7", acting_for=None,
                         anchors=anchors, shown_hash=held.shown_hash)


def test_two_of_three_is_met_only_by_two_approvers_passkeys(
        held: Held, passkeys: dict[str, SoftPasskey], anchors: TrustAnchors) -> None:
    one = vote(held, "dave", passkeys["dave"])
    replayed = request_with([("dave", one), ("erin", one), ("frank", one)], held)
    assert not settle(replayed, held, anchors).approved
    two = request_with([("dave", one), ("erin", vote(held, "erin", passkeys["erin"]))], held)
    settled = settle(two, held, anchors)
    assert settled.approved and settled.approvers == ("dave", "erin")
    assert all("passkey_assertion" in r for r in settled.receipts)


def test_passkey_entries_in_the_trust_file_are_checked(keys: Keys) -> None:
    good = SoftPasskey().anchor()
    for broken, where in [({**good, "origin": "localhost"}, "origin"),
                          ({k: v for k, v in good.items() if k != "rp_id"}, "rp_id"),
                          ({**good, "credential_id": base64.b64encode(b"\xff" * 9).decode()
                            + "+/"}, "credential_id")]:
        data = trust_data(keys)
        data["approvers"][0]["passkeys"] = [broken]
        with pytest.raises(TrustFileError, match=where):
            TrustAnchors.from_mapping(data)
