"""Votes confirmed with a passkey: a WebAuthn assertion whose challenge is the vote statement.

The web approval page (``agentguard serve --web``) asks the approver's authenticator for an
assertion whose challenge is :meth:`VoteStatement.digest() <agentguard.trust.VoteStatement.digest>`
(SHA-256 of the domain-separated statement bytes), with user verification required. The
assertion is then a signature over the statement by the credential's private key, made inside
the authenticator: a :class:`PasskeyVote` carries the statement and the assertion JSON as the
browser produced it (``PublicKeyCredential.toJSON()``), and anyone holding the trust file can
check it later, offline -- the store only carries it.

:func:`passkey_signer` is the passkey half of the one rule in :mod:`agentguard.trust.verify`:
which listed approver provably signed these statement bytes. It checks, with py_webauthn
(``webauthn`` on PyPI, the ``web`` extra): the credential is listed in the trust file, the
signature verifies with its public key, the challenge is this statement's digest, the relying
party id and origin are the ones the trust file lists for that credential, and the user was
present *and verified* (a PIN or biometric, not just a touch).

What it does not check: the authenticator's signature counter. The trust file is read-only and
the store is the agent's, so the guard has nowhere trustworthy to keep the last count; a replay
of an assertion can only repeat the very statement it signed (same request, same call hash,
same decision, same approver), which the quorum counts once. ``serve`` additionally refuses a
replayed assertion (counter and single use) before it records anything.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentguard.trust.anchors import ApproverAnchor, PasskeyAnchor, TrustAnchors
from agentguard.trust.statement import StatementError, VoteStatement

__all__ = [
    "PasskeyVote",
    "assertion_sign_count",
    "b64url_decode",
    "b64url_encode",
    "passkey_key_id",
    "passkey_signer",
    "verify_assertion",
]

_MAX_ASSERTION = 16 * 1024  # bytes of JSON; a real assertion is well under 2 KiB


def b64url_encode(raw: bytes) -> str:
    """Base64url without padding (how WebAuthn spells bytes in JSON)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Inverse of :func:`b64url_encode`.

    Raises:
        ValueError: not base64url text.
    """
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not base64url text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url text") from exc


def assertion_sign_count(assertion: Any) -> int | None:
    """The signature counter in an assertion's authenticator data (None when unreadable).

    Only meaningful once the assertion verified (the counter is inside what was signed).
    """
    try:
        data = b64url_decode(assertion["response"]["authenticatorData"])
    except (KeyError, TypeError, ValueError):
        return None
    return int.from_bytes(data[33:37], "big") if len(data) >= 37 else None


def passkey_key_id(credential_id: str) -> str:
    """The key id a passkey counts under in a quorum (one credential, one key)."""
    return f"passkey:{credential_id}"


@dataclass(frozen=True, slots=True)
class PasskeyVote:
    """A statement and the WebAuthn assertion over its digest: what the web page stores.

    Attributes:
        statement: What the approver confirmed.
        assertion: ``PublicKeyCredential.toJSON()`` of the assertion (untrusted JSON data).
    """

    statement: VoteStatement
    assertion: Mapping[str, Any]

    @property
    def credential_id(self) -> str:
        """The credential id the assertion claims (checked against the trust file)."""
        value = self.assertion.get("id")
        return value if isinstance(value, str) else ""

    def to_dict(self) -> dict[str, Any]:
        """JSON data for the store and the audit log."""
        return {"statement": self.statement.to_dict(), "passkey_assertion": dict(self.assertion)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PasskeyVote:
        """Read :meth:`to_dict`'s data (from the store: untrusted, checked strictly).

        Raises:
            StatementError: a field is missing, unknown or malformed.
        """
        if not isinstance(data, Mapping) or set(data) != {"statement", "passkey_assertion"}:
            raise StatementError("a passkey vote has exactly: statement, passkey_assertion")
        assertion = data["passkey_assertion"]
        if not isinstance(assertion, Mapping):
            raise StatementError("passkey_assertion must be a JSON object")
        try:
            size = len(json.dumps(assertion))
        except (TypeError, ValueError) as exc:
            raise StatementError("passkey_assertion must be JSON data") from exc
        if size > _MAX_ASSERTION:
            raise StatementError("passkey_assertion is too large")
        try:
            statement = VoteStatement.from_dict(data["statement"])
        except TypeError as exc:
            raise StatementError(f"vote statement is malformed: {exc}") from exc
        return cls(statement=statement, assertion=dict(assertion))


def verify_assertion(
    assertion: Mapping[str, Any], *, challenge: bytes, passkey: PasskeyAnchor,
    current_sign_count: int = 0,
) -> int | str:
    """Check a WebAuthn assertion by ``passkey`` over ``challenge``, user verification required.

    Returns:
        The authenticator's new signature counter, or a sentence saying why it does not verify.
    """
    try:
        from webauthn import verify_authentication_response
    except ImportError:
        return "passkey votes need py_webauthn (pip install 'agentguard[web]')"
    if not passkey.rp_id or not passkey.origin:
        return f"passkey {passkey.credential_id!r} has no rp_id and origin in the trust file"
    if assertion.get("id") != passkey.credential_id:
        return "the assertion was made with another credential"
    try:
        public_key = b64url_decode(passkey.public_key)
        verified = verify_authentication_response(
            credential=dict(assertion), expected_challenge=challenge,
            expected_rp_id=passkey.rp_id, expected_origin=passkey.origin,
            credential_public_key=public_key, credential_current_sign_count=current_sign_count,
            require_user_verification=True)
    except Exception as exc:  # py_webauthn raises several types; any failure refuses
        return f"the passkey assertion does not verify ({exc})"
    if not verified.user_verified:  # require_user_verification already checks; stay explicit
        return "the passkey assertion lacks user verification"
    return int(verified.new_sign_count)


def passkey_signer(
    vote: PasskeyVote, anchors: TrustAnchors,
) -> tuple[ApproverAnchor, str] | str:
    """Which approver's listed passkey signed ``vote.statement`` (and its quorum key id).

    Returns:
        ``(approver, key id)``, or a sentence saying why the assertion does not count.
    """
    found = anchors.passkey(vote.credential_id)
    if found is None:
        return f"passkey {vote.credential_id!r} is not in the trust file {anchors.source}"
    approver, passkey = found
    result = verify_assertion(vote.assertion, challenge=vote.statement.digest(), passkey=passkey)
    if isinstance(result, str):
        return result
    return approver, passkey_key_id(passkey.credential_id)
