"""What an approver signs: one vote on one held call, as unambiguous, domain-separated bytes.

A signature is only worth the statement it covers. :class:`VoteStatement` names the request,
the exact call (its hash), what the approver was shown of it (its ``shown_hash``: the stored
call with the policy's redactions, which is all an approver outside the guard can read), the
rule and that rule's approval settings, the decision, the grant asked for, the time, the
approver and (as a hash) the reason. :meth:`VoteStatement.to_bytes` is
``b"agentguard-vote-v2\\n"`` followed by RFC 8785 canonical JSON, so no other message of
agentguard or anyone else can be mistaken for a vote, and two different votes never share
bytes. Statements without ``shown_hash`` are version 1 (``b"agentguard-vote-v1\\n"``, the
bytes earlier releases signed): they still verify, so old receipts in an audit log stay
checkable, but the guard no longer counts them. :meth:`VoteStatement.from_bytes` accepts
exactly the bytes ``to_bytes`` makes (any other spelling of the same JSON is refused), so
parsing and signing agree one to one.

:class:`SignedVote` is the envelope that travels through the store (a mailbox): the statement,
the id of the key that signed it and the signature. It proves nothing until
:func:`agentguard.trust.verify.verify_vote` has checked it against the trust anchors.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from agentguard.canonical import (
    MAX_SAFE_INTEGER,
    CanonicalizationError,
    canonical_bytes,
    loads_strict,
)
from agentguard.errors import ConfigError
from agentguard.identity import canonical_identity

__all__ = [
    "DOMAIN",
    "DOMAIN_V1",
    "Decision",
    "SignedVote",
    "StatementError",
    "VoteStatement",
    "reason_digest",
]

DOMAIN = b"agentguard-vote-v2\n"
"""Prefix of a vote statement: the purpose and version of the bytes being signed."""
DOMAIN_V1 = b"agentguard-vote-v1\n"
"""Prefix of a version-1 statement (no ``shown_hash``): verifiable, no longer counted."""

Decision = Literal["approve", "deny"]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_MAX_TEXT = 1024  # ids and identities; a longer one is not ours


class StatementError(ConfigError, ValueError):
    """Bytes or fields that are not a well-formed vote statement."""


def reason_digest(reason: str) -> str:
    """Hex SHA-256 of the UTF-8 reason text (what a statement carries instead of the text)."""
    return hashlib.sha256(reason.encode("utf-8")).hexdigest()


def _text(name: str, value: Any, *, allow_empty: bool = False) -> None:
    if type(value) is not str:
        raise StatementError(f"{name} must be a string, not {type(value).__name__}")
    if not allow_empty and not value:
        raise StatementError(f"{name} must not be empty")
    if len(value) > _MAX_TEXT or not value.isprintable():
        raise StatementError(f"{name} must be printable text of at most {_MAX_TEXT} characters")


def _hex64(name: str, value: Any) -> None:
    if type(value) is not str or not _HEX64.fullmatch(value):
        raise StatementError(f"{name} must be 64 lower-case hex digits (a SHA-256)")


@dataclass(frozen=True, slots=True)
class VoteStatement:
    """One approver's decision on one held call: the exact content of a signature.

    Attributes:
        request_id: The approval request decided.
        call_hash: SHA-256 (hex) of the canonical call the request holds.
        rule_id: The rule that held the call (None when no rule id was set).
        settings_hash: :func:`agentguard.grants.settings_hash` of that rule's approval settings.
        decision: ``"approve"`` or ``"deny"``.
        grant_ttl: Seconds of "approve for N" asked for (0: this call only); finite, >= 0.
        at: Unix time (whole seconds) the approver signed.
        approver: Who signs, as :func:`agentguard.identity.canonical_identity` spells it.
        reason_hash: :func:`reason_digest` of the reason given (of ``""`` when none).
        shown_hash: :func:`agentguard.approvals.shown_hash` of the call as the approver's
            tool displayed it (redacted values masked); None only in version-1 statements.

    Raises:
        StatementError: a field has the wrong type or form (checked on construction).
    """

    request_id: str
    call_hash: str
    rule_id: str | None
    settings_hash: str
    decision: Decision
    grant_ttl: float
    at: int
    approver: str
    reason_hash: str
    shown_hash: str | None = None

    def __post_init__(self) -> None:
        _text("request_id", self.request_id)
        _hex64("call_hash", self.call_hash)
        if self.rule_id is not None:
            _text("rule_id", self.rule_id)
        _hex64("settings_hash", self.settings_hash)
        if self.decision not in ("approve", "deny") or type(self.decision) is not str:
            raise StatementError("decision must be 'approve' or 'deny'")
        ttl = self.grant_ttl
        if type(ttl) is int:
            object.__setattr__(self, "grant_ttl", float(ttl))
        elif type(ttl) is not float:
            raise StatementError("grant_ttl must be a number of seconds")
        if not (0.0 <= self.grant_ttl <= MAX_SAFE_INTEGER):  # also refuses NaN
            raise StatementError("grant_ttl must be finite and not negative")
        if self.grant_ttl == 0.0:
            object.__setattr__(self, "grant_ttl", 0.0)  # one zero: -0.0 and 0.0 sign alike
        if type(self.at) is not int or not (0 <= self.at <= MAX_SAFE_INTEGER):
            raise StatementError("at must be whole unix seconds (an int)")
        _text("approver", self.approver)
        if canonical_identity(self.approver) != self.approver:
            raise StatementError(
                f"approver must be a canonical identity "
                f"({canonical_identity(self.approver)!r}, not {self.approver!r})")
        _hex64("reason_hash", self.reason_hash)
        if self.shown_hash is not None:
            _hex64("shown_hash", self.shown_hash)

    @classmethod
    def for_vote(
        cls, *, request_id: str, call_hash: str, rule_id: str | None, settings_hash: str,
        approve: bool, approver: str, at: float, shown_hash: str, grant_ttl: float = 0.0,
        reason: str = "",
    ) -> VoteStatement:
        """A statement from the terms a channel speaks in (a bool, a free-text reason, an
        approver in any spelling, a float time)."""
        return cls(request_id=request_id, call_hash=call_hash, rule_id=rule_id,
                   settings_hash=settings_hash, decision="approve" if approve else "deny",
                   grant_ttl=float(grant_ttl), at=int(at),
                   approver=canonical_identity(approver), reason_hash=reason_digest(reason),
                   shown_hash=shown_hash)

    @property
    def approve(self) -> bool:
        """True for an approval, False for a deny."""
        return self.decision == "approve"

    @property
    def version(self) -> int:
        """2, or 1 for a statement without ``shown_hash`` (made by an earlier release)."""
        return 1 if self.shown_hash is None else 2

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON data (a version-1 statement has no ``shown_hash``)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.shown_hash is None:
            del data["shown_hash"]
        return data

    def to_bytes(self) -> bytes:
        """The version's domain + RFC 8785 canonical JSON of the fields: the bytes a key
        signs."""
        return (DOMAIN if self.version == 2 else DOMAIN_V1) + canonical_bytes(self.to_dict())

    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes` (32 bytes; the challenge of a WebAuthn assertion)."""
        return hashlib.sha256(self.to_bytes()).digest()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VoteStatement:
        """The statement with exactly these fields.

        Raises:
            StatementError: a field is missing, unknown or malformed.
        """
        if not isinstance(data, Mapping):
            raise StatementError("a vote statement is a JSON object")
        names = {f.name for f in fields(cls)}
        if "shown_hash" not in data:
            names.discard("shown_hash")  # version 1
        if set(data) != names:
            missing, extra = sorted(names - set(data)), sorted(set(data) - names)
            raise StatementError(f"vote statement fields: missing {missing}, unknown {extra}")
        return cls(**data)

    @classmethod
    def from_bytes(cls, data: bytes) -> VoteStatement:
        """Parse bytes made by :meth:`to_bytes`.

        Raises:
            StatementError: the bytes lack the domain prefix, are not strict JSON, do not
                hold exactly the statement's fields, or are not the canonical spelling.
        """
        if not isinstance(data, bytes | bytearray) or not (
                data.startswith(DOMAIN) or data.startswith(DOMAIN_V1)):
            raise StatementError("not an agentguard vote statement (domain prefix missing)")
        try:
            statement = cls.from_dict(loads_strict(bytes(data[len(DOMAIN):])))
        except CanonicalizationError as exc:
            raise StatementError(f"vote statement is not strict JSON: {exc}") from exc
        except TypeError as exc:
            raise StatementError(f"vote statement is malformed: {exc}") from exc
        if statement.to_bytes() != bytes(data):
            raise StatementError("vote statement is not in canonical form")
        return statement


@dataclass(frozen=True, slots=True)
class SignedVote:
    """A statement with the signature of one key: what a channel leaves in the mailbox.

    Attributes:
        statement: What was signed.
        key_id: Id of the signing key (first 16 hex digits of SHA-256 of the raw public key);
            a claim, checked by looking the key up in the trust anchors.
        signature_b64: Standard base64 of the 64-byte Ed25519 signature of
            ``statement.to_bytes()``.
    """

    statement: VoteStatement
    key_id: str
    signature_b64: str

    def to_dict(self) -> dict[str, Any]:
        """JSON data for the store: the statement as its fields, the key id, the signature."""
        return {"statement": self.statement.to_dict(), "key_id": self.key_id,
                "signature": self.signature_b64}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SignedVote:
        """Read :meth:`to_dict`'s data (from the store: untrusted, checked strictly).

        Raises:
            StatementError: a field is missing, unknown or malformed.
        """
        if not isinstance(data, Mapping) or set(data) != {"statement", "key_id", "signature"}:
            raise StatementError("a signed vote has exactly: statement, key_id, signature")
        key_id, signature = data["key_id"], data["signature"]
        if type(key_id) is not str or not _KEY_ID.fullmatch(key_id):
            raise StatementError("key_id must be 16 lower-case hex digits")
        if type(signature) is not str or len(signature) > 200:
            raise StatementError("signature must be base64 text")
        try:
            statement = VoteStatement.from_dict(data["statement"])
        except TypeError as exc:
            raise StatementError(f"vote statement is malformed: {exc}") from exc
        return cls(statement=statement, key_id=key_id, signature_b64=signature)
