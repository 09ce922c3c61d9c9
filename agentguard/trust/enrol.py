"""Enrolling a passkey: an authenticated step, then a write to the trust file only.

A new passkey is a new way to approve, so registering one must be proven by a factor the
trust file already lists, never by the agent's store. ``agentguard approvers enroll-link NAME``
signs an :class:`EnrolmentGrant` with an Ed25519 key the trust file lists -- the approver's own
key, or the key of an approver the file names under ``admins:`` -- and prints a link to the web
page carrying it. :func:`verify_enrolment` is the one rule for whether such a token lets
someone register a passkey for ``NAME``: the signature verifies with a listed key, that key is
NAME's or an admin's, and it has not expired. (``serve --web`` also keeps each token single-use
for as long as it runs.)

:func:`add_passkey` then writes the credential into the trust file, which only ``serve`` (as
its own OS user) can write; the agent reads the file read-only and so cannot enrol anything.

Token format: ``base64url(payload) "." base64url(signature)``, where the signature covers
``b"agentguard-enrol-v1\\n" + payload`` and the payload is RFC 8785 JSON of
``{approver, key_id, expires, nonce}``.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentguard.canonical import CanonicalizationError, canonical_bytes, loads_strict
from agentguard.identity import canonical_identity
from agentguard.trust.anchors import PasskeyAnchor, TrustAnchors, TrustFileError
from agentguard.trust.keys import key_id
from agentguard.trust.passkey import b64url_decode, b64url_encode

__all__ = [
    "ENROL_DOMAIN",
    "EnrolmentGrant",
    "add_passkey",
    "make_enrolment_token",
    "registered_passkey",
    "verify_enrolment",
]

ENROL_DOMAIN = b"agentguard-enrol-v1\n"
_MAX_TOKEN = 2048


@dataclass(frozen=True, slots=True)
class EnrolmentGrant:
    """Permission to register one passkey for ``approver`` until ``expires``.

    Attributes:
        approver: Canonical identity the passkey will belong to.
        key_id: The listed key that signed the grant.
        expires: Unix time after which the grant is void.
        nonce: Random hex (makes each grant single-use on the server).
    """

    approver: str
    key_id: str
    expires: int
    nonce: str


def make_enrolment_token(approver: str, key: Ed25519PrivateKey, *, ttl: float = 900.0,
                         now: float | None = None) -> str:
    """Sign a grant for ``approver`` with ``key`` (the approver's own, or an admin's)."""
    payload = canonical_bytes({
        "approver": canonical_identity(approver), "key_id": key_id(key.public_key()),
        "expires": int((time.time() if now is None else now) + ttl),
        "nonce": os.urandom(16).hex()})
    return f"{b64url_encode(payload)}.{b64url_encode(key.sign(ENROL_DOMAIN + payload))}"


def verify_enrolment(token: str, anchors: TrustAnchors,
                     now: float | None = None) -> EnrolmentGrant | str:
    """Whether ``token`` lets someone register a passkey, and for whom.

    Returns:
        The grant, or a sentence saying why the token does not count.
    """
    if not isinstance(token, str) or len(token) > _MAX_TOKEN or token.count(".") != 1:
        return "not an enrolment token"
    head, _, tail = token.partition(".")
    try:
        payload, signature = b64url_decode(head), b64url_decode(tail)
        data = loads_strict(payload)
    except (ValueError, CanonicalizationError):
        return "not an enrolment token"
    if (not isinstance(data, dict) or set(data) != {"approver", "key_id", "expires", "nonce"}
            or not all(isinstance(data[k], str) for k in ("approver", "key_id", "nonce"))
            or type(data["expires"]) is not int):
        return "not an enrolment token"
    binding = anchors.key(data["key_id"])
    if binding is None or binding.approver is None:
        return "the enrolment token was not signed by an approver's key in the trust file"
    try:
        binding.public_key.verify(signature, ENROL_DOMAIN + payload)
    except InvalidSignature:
        return "the enrolment token's signature does not verify"
    approver = canonical_identity(data["approver"])
    if anchors.approver(approver) is None:
        return f"{approver!r} is not an approver in the trust file"
    signer = binding.approver.identity
    if signer != approver and signer not in anchors.admins:
        return f"{signer!r} may enrol passkeys only for themself (not an admin)"
    if (time.time() if now is None else now) > data["expires"]:
        return "the enrolment token has expired"
    return EnrolmentGrant(approver, binding.key_id, data["expires"], data["nonce"])


def registered_passkey(
    credential: Any, *, challenge: bytes, rp_id: str, origin: str, label: str = "",
) -> PasskeyAnchor | str:
    """Check a WebAuthn registration response (user verification required) and return the
    trust-file entry for the new credential, or a sentence saying why it is refused."""
    try:
        from webauthn import verify_registration_response
    except ImportError:
        return "passkeys need py_webauthn (pip install 'agentguard[web]')"
    if not isinstance(credential, dict):
        return "not a registration response"
    try:
        verified = verify_registration_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp_id,
            expected_origin=origin, require_user_verification=True)
    except Exception as exc:  # py_webauthn raises several types; any failure refuses
        return f"the passkey registration does not verify ({exc})"
    return PasskeyAnchor(credential_id=b64url_encode(verified.credential_id),
                         public_key=b64url_encode(verified.credential_public_key),
                         label=label, rp_id=rp_id, origin=origin)


def add_passkey(path: str | Path, approver: str, passkey: PasskeyAnchor) -> TrustAnchors:
    """Append ``passkey`` to ``approver``'s entry in the trust file at ``path``, atomically.

    The new file is validated as a whole before it replaces the old one (a credential listed
    twice is refused). YAML comments are not kept.

    Raises:
        TrustFileError: the file cannot be read, written or would become invalid.
    """
    path = Path(path)
    TrustAnchors.load(path)  # the current file must be valid
    data: Any = yaml.safe_load(path.read_bytes()) or {}
    ident = canonical_identity(approver)
    entry = next((a for a in data.get("approvers", [])
                  if canonical_identity(str(a.get("id", ""))) == ident), None)
    if entry is None:
        raise TrustFileError(f"trust file {path}: no approver {ident!r}")
    entry.setdefault("passkeys", []).append(
        {"credential_id": passkey.credential_id, "public_key": passkey.public_key,
         "label": passkey.label, "rp_id": passkey.rp_id, "origin": passkey.origin})
    anchors = TrustAnchors.from_mapping(data, source=str(path))
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(data, fh, sort_keys=False)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise TrustFileError(f"trust file {path}: cannot write it ({exc.strerror})") from exc
    return anchors
