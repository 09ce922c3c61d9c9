"""Keys, a trust file and a held call's terms, shared by the trust tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentguard.canonical import sha256_hex
from agentguard.trust.anchors import TrustAnchors
from agentguard.trust.keys import public_key_text
from agentguard.trust.statement import VoteStatement


@dataclass(frozen=True)
class Held:
    """What the guard holds in memory for one held call."""

    request_id: str = "req_7Hk2mQ9xLp0aVb3Rt5Yw8z"
    call_hash: str = sha256_hex(b"deploy prod v42")
    rule_id: str | None = "prod-deploy"
    settings_hash: str = sha256_hex(b"approvers: dave, erin, frank; quorum 2")
    shown_hash: str = sha256_hex(b"deploy prod v42, as shown")

    def terms(self) -> dict[str, object]:
        return {"request_id": self.request_id, "call_hash": self.call_hash,
                "rule_id": self.rule_id, "settings_hash": self.settings_hash,
                "shown_hash": self.shown_hash}

    def statement(self, approver: str, *, approve: bool = True, grant_ttl: float = 0.0,
                  at: float = 1_765_000_000, reason: str = "", **override) -> VoteStatement:
        terms = self.terms() | override
        return VoteStatement.for_vote(approve=approve, approver=approver, at=at,
                                      grant_ttl=grant_ttl, reason=reason, **terms)


@dataclass
class Keys:
    dave: Ed25519PrivateKey
    dave2: Ed25519PrivateKey
    erin: Ed25519PrivateKey
    frank: Ed25519PrivateKey
    serve: Ed25519PrivateKey
    stranger: Ed25519PrivateKey


@pytest.fixture
def held() -> Held:
    return Held()


@pytest.fixture
def keys() -> Keys:
    return Keys(*(Ed25519PrivateKey.generate() for _ in range(6)))


def trust_data(keys: Keys) -> dict[str, object]:
    def pub(k: Ed25519PrivateKey) -> str:
        return public_key_text(k.public_key())

    return {
        "approvers": [
            {"id": "dave", "keys": [pub(keys.dave), pub(keys.dave2)]},
            {"id": "user:Erin", "keys": [pub(keys.erin)]},
            {"id": "frank", "keys": [pub(keys.frank)], "passkeys": []},
        ],
        "services": [{"name": "serve", "key": pub(keys.serve),
                      "may_vouch_for": ["slack:*", "webhook:*"]}],
    }


@pytest.fixture
def anchors(keys: Keys) -> TrustAnchors:
    return TrustAnchors.from_mapping(trust_data(keys), source="test-trust.yaml")
