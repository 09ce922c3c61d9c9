"""The signed bytes: domain-separated, canonical, one statement per byte string."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard.canonical import MAX_SAFE_INTEGER, sha256_hex
from agentguard.trust.statement import (
    DOMAIN,
    DOMAIN_V1,
    SignedVote,
    StatementError,
    VoteStatement,
    reason_digest,
)

BASE = VoteStatement(
    request_id="req_1", call_hash=sha256_hex(b"call"), rule_id="prod-deploy",
    settings_hash=sha256_hex(b"settings"), decision="approve", grant_ttl=900.0,
    at=1_765_000_000, approver="dave", reason_hash=reason_digest(""),
    shown_hash=sha256_hex(b"call as shown"))

# One change per field, each keeping the statement valid.
CHANGES = {
    "request_id": "req_2",
    "call_hash": sha256_hex(b"other call"),
    "rule_id": None,
    "settings_hash": sha256_hex(b"other settings"),
    "decision": "deny",
    "grant_ttl": 900.5,
    "at": 1_765_000_001,
    "approver": "erin",
    "reason_hash": reason_digest("looks fine"),
    "shown_hash": sha256_hex(b"another call shown"),
}


def test_every_field_is_covered_by_a_change() -> None:
    assert set(CHANGES) == {f.name for f in dataclasses.fields(VoteStatement)}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_statements_differing_in_any_field_give_different_bytes(name: str) -> None:
    other = dataclasses.replace(BASE, **{name: CHANGES[name]})
    assert other.to_bytes() != BASE.to_bytes()
    assert other.digest() != BASE.digest()


def test_bytes_are_domain_separated_canonical_json() -> None:
    data = BASE.to_bytes()
    assert data.startswith(b"agentguard-vote-v2\n")
    body = data[len(DOMAIN):]
    assert json.loads(body)["approver"] == "dave"
    assert body == json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    assert len(BASE.digest()) == 32


def test_bare_json_or_another_prefix_is_not_a_statement() -> None:
    body = BASE.to_bytes()[len(DOMAIN):]
    for data in (body, b"agentguard-vote-v3\n" + body, b"\n" + BASE.to_bytes()):
        with pytest.raises(StatementError, match="domain"):
            VoteStatement.from_bytes(data)


def test_a_statement_without_shown_hash_is_version_1_and_keeps_its_old_bytes() -> None:
    """Receipts signed before shown_hash existed still parse and verify to the same bytes;
    a version's body under the other version's prefix is refused."""
    old = dataclasses.replace(BASE, shown_hash=None)
    data = old.to_bytes()
    assert old.version == 1 and data.startswith(DOMAIN_V1) and b"shown_hash" not in data
    assert VoteStatement.from_bytes(data) == old
    assert VoteStatement.from_dict(old.to_dict()) == old
    for spliced in (DOMAIN + data[len(DOMAIN_V1):], DOMAIN_V1 + BASE.to_bytes()[len(DOMAIN):]):
        with pytest.raises(StatementError):
            VoteStatement.from_bytes(spliced)
    assert old.digest() != BASE.digest()


def test_non_canonical_spelling_of_the_same_json_is_refused() -> None:
    pretty = DOMAIN + json.dumps(BASE.to_dict(), indent=1).encode()
    with pytest.raises(StatementError, match="canonical"):
        VoteStatement.from_bytes(pretty)


@pytest.mark.parametrize("body", [
    b'{"a":1}', b"[1]", b"not json",
    # duplicate key: which "decision" did the signer mean?
    BASE.to_bytes()[len(DOMAIN):-1] + b',"decision":"deny"}',
])
def test_garbled_or_ambiguous_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(StatementError):
        VoteStatement.from_bytes(DOMAIN + body)


@pytest.mark.parametrize("field, value", [
    ("request_id", ""), ("request_id", 5), ("request_id", "a\nb"),
    ("call_hash", "ABC"), ("call_hash", sha256_hex(b"x").upper()),
    ("settings_hash", ""), ("reason_hash", "looks fine"), ("shown_hash", "ab"),
    ("decision", "approved"), ("decision", True),
    ("grant_ttl", -1.0), ("grant_ttl", float("nan")), ("grant_ttl", float("inf")),
    ("grant_ttl", True), ("grant_ttl", "900"),
    ("at", 1.5), ("at", True), ("at", -1), ("at", 2**60),
    ("approver", "user:dave"), ("approver", "Dave"), ("approver", ""),
])
def test_malformed_fields_are_refused(field: str, value: object) -> None:
    with pytest.raises(StatementError):
        dataclasses.replace(BASE, **{field: value})


def test_for_vote_canonicalises_the_approver_and_hashes_the_reason() -> None:
    s = VoteStatement.for_vote(request_id="r", call_hash=BASE.call_hash, rule_id=None,
                               settings_hash=BASE.settings_hash, approve=False,
                               approver="user:Dave ", at=1_765_000_000.9, reason="no",
                               shown_hash=BASE.call_hash)
    assert s.version == 2
    assert (s.approver, s.decision, s.at, s.grant_ttl) == ("dave", "deny", 1_765_000_000, 0.0)
    assert s.reason_hash == reason_digest("no") and not s.approve


hexes = st.text("0123456789abcdef", min_size=64, max_size=64)
texts = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")),
                min_size=1, max_size=40).filter(str.isprintable)
statements = st.builds(
    VoteStatement,
    request_id=texts, call_hash=hexes, rule_id=st.none() | texts, settings_hash=hexes,
    decision=st.sampled_from(["approve", "deny"]),
    grant_ttl=st.floats(min_value=0, max_value=MAX_SAFE_INTEGER, allow_nan=False)
    | st.integers(0, 10**9).map(float),
    at=st.integers(0, MAX_SAFE_INTEGER),
    approver=texts.map(str.strip).map(str.lower).filter(
        lambda s: s and not s.startswith(("user:", "os:", "human:"))
        and s.strip().lower() == s),
    reason_hash=hexes,
    shown_hash=st.none() | hexes,
)


@given(statements)
def test_round_trip(statement: VoteStatement) -> None:
    assert VoteStatement.from_bytes(statement.to_bytes()) == statement
    signed = SignedVote(statement, "0123456789abcdef", "c2ln")
    assert SignedVote.from_dict(json.loads(json.dumps(signed.to_dict()))) == signed


@pytest.mark.parametrize("data", [
    {}, {"statement": BASE.to_dict(), "key_id": "0123456789abcdef"},
    {"statement": BASE.to_dict(), "key_id": "XYZ", "signature": "c2ln"},
    {"statement": BASE.to_dict(), "key_id": "0123456789abcdef", "signature": 5},
    {"statement": {**BASE.to_dict(), "extra": 1}, "key_id": "0123456789abcdef",
     "signature": "c2ln"},
    {"statement": [], "key_id": "0123456789abcdef", "signature": "c2ln"},
])
def test_signed_vote_from_store_data_is_checked(data: dict) -> None:
    with pytest.raises(StatementError):
        SignedVote.from_dict(data)
