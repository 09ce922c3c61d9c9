"""Enrolling a passkey needs a token signed by a listed key (the approver's own or an admin's);
the agent's own key, an expired token, a token for someone else, or a bent token do nothing.
The credential is written into the trust file only, validated as a whole."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agentguard.testing.passkey import SoftPasskey
from agentguard.trust.anchors import PasskeyAnchor, TrustAnchors, TrustFileError
from agentguard.trust.enrol import (
    EnrolmentGrant,
    add_passkey,
    make_enrolment_token,
    verify_enrolment,
)
from tests.trust.conftest import Keys, trust_data

NOW = 1_765_000_000.0


@pytest.fixture
def anchors(keys: Keys) -> TrustAnchors:
    return TrustAnchors.from_mapping(trust_data(keys) | {"admins": ["dave"]})


def test_an_approver_enrols_themself_and_an_admin_enrols_others(
        keys: Keys, anchors: TrustAnchors) -> None:
    own = verify_enrolment(make_enrolment_token("frank", keys.frank, now=NOW), anchors, NOW)
    by_admin = verify_enrolment(make_enrolment_token("frank", keys.dave2, now=NOW), anchors, NOW)
    assert isinstance(own, EnrolmentGrant) and own.approver == "frank"
    assert isinstance(by_admin, EnrolmentGrant) and by_admin.approver == "frank"
    assert own.nonce != by_admin.nonce


@pytest.mark.parametrize("signer, name, at, needle", [
    ("stranger", "frank", NOW, "not signed by an approver's key"),
    ("serve", "frank", NOW, "not signed by an approver's key"),
    ("erin", "frank", NOW, "only for themself"),
    ("frank", "mallory", NOW, "not an approver"),
    ("frank", "frank", NOW + 901, "expired"),
])
def test_tokens_that_do_not_count(keys: Keys, anchors: TrustAnchors, signer: str, name: str,
                                  at: float, needle: str) -> None:
    token = make_enrolment_token(name, getattr(keys, signer), now=NOW)
    assert needle in verify_enrolment(token, anchors, at)


def test_a_bent_token_is_refused(keys: Keys, anchors: TrustAnchors) -> None:
    mine = make_enrolment_token("frank", keys.frank, now=NOW)
    theirs = make_enrolment_token("dave", keys.frank, now=NOW)
    spliced = theirs.split(".")[0] + "." + mine.split(".")[1]
    assert "does not verify" in verify_enrolment(spliced, anchors, NOW)
    for junk in ("", "x", "a.b.c", "!!.??", 5):
        assert verify_enrolment(junk, anchors, NOW) == "not an enrolment token"


def test_add_passkey_writes_the_trust_file_and_keeps_it_valid(
        keys: Keys, tmp_path: Path) -> None:
    path = tmp_path / "trust.yaml"
    path.write_text(yaml.safe_dump(trust_data(keys)))
    path.chmod(0o640)
    entry = SoftPasskey(label="frank's phone").anchor()
    anchors = add_passkey(path, "frank", PasskeyAnchor(**entry))
    assert anchors.passkey(entry["credential_id"])[0].identity == "frank"
    assert TrustAnchors.load(path).approver("frank").passkeys[0].label == "frank's phone"
    assert path.stat().st_mode & 0o777 == 0o640
    with pytest.raises(TrustFileError, match="listed twice"):
        add_passkey(path, "dave", PasskeyAnchor(**entry))
    with pytest.raises(TrustFileError, match="no approver"):
        add_passkey(path, "mallory", PasskeyAnchor(**SoftPasskey().anchor()))
    assert len(TrustAnchors.load(path).approver("dave").passkeys) == 0
