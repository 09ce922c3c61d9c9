"""A software authenticator: makes WebAuthn assertions the way a passkey does (ES256, CTAP2
authenticator data, the browser's client data JSON), for tests and benchmarks that need no
browser. Needs ``cbor2`` (installed with the ``web`` extra).

The browser tests (``tests/web/test_browser.py``) check the same verifier against assertions
made by Chromium's virtual authenticator, so this helper is not the only source of truth.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from agentguard.trust.passkey import b64url_encode

__all__ = ["ORIGIN", "RP_ID", "SoftPasskey"]

RP_ID = "localhost"
ORIGIN = "http://localhost:8765"


@dataclass
class SoftPasskey:
    """One ES256 credential, scoped to ``rp_id``."""

    rp_id: str = RP_ID
    origin: str = ORIGIN
    label: str = "test key"
    credential_id: str = field(default_factory=lambda: b64url_encode(os.urandom(16)))
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    sign_count: int = 0

    def cose_public_key(self) -> str:
        """Base64url of the COSE_Key (EC2, P-256, ES256), as the trust file lists it."""
        import cbor2

        numbers = self.private_key.public_key().public_numbers()
        cose = {1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big")}
        return b64url_encode(cbor2.dumps(cose))

    def anchor(self) -> dict[str, str]:
        """The trust file entry for this credential."""
        return {"credential_id": self.credential_id, "public_key": self.cose_public_key(),
                "label": self.label, "rp_id": self.rp_id, "origin": self.origin}

    def assert_(self, challenge: bytes, *, user_verified: bool = True,
                origin: str | None = None, rp_id: str | None = None,
                type_: str = "webauthn.get") -> dict[str, Any]:
        """An assertion over ``challenge``, as ``PublicKeyCredential.toJSON()`` spells it."""
        self.sign_count += 1
        flags = 0x01 | (0x04 if user_verified else 0)
        auth_data = (hashlib.sha256((rp_id or self.rp_id).encode()).digest()
                     + bytes([flags]) + self.sign_count.to_bytes(4, "big"))
        client_data = json.dumps({"type": type_, "challenge": b64url_encode(challenge),
                                  "origin": origin or self.origin,
                                  "crossOrigin": False}).encode()
        signature = self.private_key.sign(auth_data + hashlib.sha256(client_data).digest(),
                                          ec.ECDSA(hashes.SHA256()))
        return {"id": self.credential_id, "rawId": self.credential_id, "type": "public-key",
                "authenticatorAttachment": "platform", "clientExtensionResults": {},
                "response": {"authenticatorData": b64url_encode(auth_data),
                             "clientDataJSON": b64url_encode(client_data),
                             "signature": b64url_encode(signature), "userHandle": None}}
