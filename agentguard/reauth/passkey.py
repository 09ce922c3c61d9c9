"""Passkey step-up: the human re-proves with a passkey whose assertion is bound to the call.

``reauth: {method: passkey}`` beside TOTP. For each attempt the guard makes, **in memory**, a
:class:`ReauthStatement` naming the held request, its call hash (the guard's, not the
store's), the subject and the time, and asks the human's authenticator for a WebAuthn
assertion whose challenge is the statement's digest, with user verification required. The
assertion is then checked against the passkeys the trust file lists **for that subject** (the
same py_webauthn check as passkey votes, :func:`agentguard.trust.passkey.verify_assertion`).

Why the agent cannot pass it: it cannot write the trust file (no passkey of its own counts),
cannot use the human's authenticator, and cannot reuse an assertion: each attempt's statement
carries a fresh time, so an assertion made for another call, another request, another person
or an earlier attempt signs another challenge. Nothing here is stored, so there is no seed to
steal (unlike TOTP).

How the assertion reaches the guard is the channel's job (:data:`AskAssertion`): a browser
page that runs ``navigator.credentials.get`` with the challenge and hands back
``PublicKeyCredential.toJSON()``. Domain separation: the signed bytes start
``b"agentguard-reauth-v1\\n"``, so a vote's assertion is never a step-up and vice versa.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from agentguard.canonical import canonical_bytes
from agentguard.reauth.base import ReauthResult
from agentguard.trust.anchors import ApproverAnchor, PasskeyAnchor, TrustAnchors
from agentguard.trust.passkey import verify_assertion
from agentguard.types import ApprovalRequest

__all__ = [
    "CLOCK_SKEW",
    "METHOD",
    "REAUTH_DOMAIN",
    "AskAssertion",
    "PasskeyReauthenticator",
    "ReauthStatement",
    "StepUpProof",
    "verify_reauth_assertion",
]

METHOD = "passkey"
REAUTH_DOMAIN = b"agentguard-reauth-v1\n"

AskAssertion = Callable[
    [str, ApprovalRequest, "ReauthStatement", tuple[PasskeyAnchor, ...]],
    Awaitable["Mapping[str, Any] | StepUpProof | None"]]
"""``ask(subject, request, statement, passkeys)``: have the human's authenticator assert
``statement.digest()`` (allowing ``passkeys``) and return ``PublicKeyCredential.toJSON()`` of
the assertion; or return a :class:`StepUpProof` whose statement a page made itself (it must
name this request, call hash and subject, and a time since the guard asked); or ``None`` when
nobody could be asked."""

#: Seconds a page's clock may be behind the guard's (serve on another host).
CLOCK_SKEW = 30


@dataclass(frozen=True, slots=True)
class ReauthStatement:
    """What a passkey step-up signs.

    Attributes:
        request_id: The held request.
        call_hash: SHA-256 (hex) of the exact call held.
        subject: Who re-proves (canonical identity).
        at: Unix seconds the guard asked (fresh per attempt: the replay guard).
    """

    request_id: str
    call_hash: str
    subject: str
    at: int

    def to_bytes(self) -> bytes:
        """``REAUTH_DOMAIN`` + RFC 8785 JSON of the fields."""
        return REAUTH_DOMAIN + canonical_bytes({f.name: getattr(self, f.name)
                                                for f in fields(self)})

    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes`: the WebAuthn challenge."""
        return hashlib.sha256(self.to_bytes()).digest()

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON data."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Any) -> ReauthStatement:
        """Read :meth:`to_dict`'s data (untrusted).

        Raises:
            ValueError: not exactly the fields, or of the wrong types.
        """
        names = {f.name for f in fields(cls)}
        if not isinstance(data, Mapping) or set(data) != names:
            raise ValueError(f"a step-up statement has exactly: {', '.join(sorted(names))}")
        if any(type(data[n]) is not str for n in ("request_id", "call_hash", "subject")) \
                or type(data["at"]) is not int:
            raise ValueError("a step-up statement has three strings and an integer time")
        return cls(**data)


@dataclass(frozen=True, slots=True)
class StepUpProof:
    """A statement and the assertion over its digest, as a page hands it back."""

    statement: ReauthStatement
    assertion: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON data for the mailbox."""
        return {"statement": self.statement.to_dict(), "assertion": dict(self.assertion)}

    @classmethod
    def from_dict(cls, data: Any) -> StepUpProof:
        """Read :meth:`to_dict`'s data (untrusted).

        Raises:
            ValueError: malformed.
        """
        if not isinstance(data, Mapping) or set(data) != {"statement", "assertion"} \
                or not isinstance(data["assertion"], Mapping):
            raise ValueError("a step-up proof has exactly: statement, assertion")
        return cls(ReauthStatement.from_dict(data["statement"]), dict(data["assertion"]))


def verify_reauth_assertion(
    assertion: Mapping[str, Any], statement: ReauthStatement, subject: ApproverAnchor,
) -> str | None:
    """Why ``assertion`` is not ``subject``'s passkey confirming ``statement``, or None."""
    if not isinstance(assertion, Mapping):
        return "the assertion is not a JSON object"
    credential = assertion.get("id")
    passkey = next((p for p in subject.passkeys if p.credential_id == credential), None)
    if passkey is None:
        return f"the assertion was not made with a passkey the trust file lists for " \
               f"{subject.identity!r}"
    result = verify_assertion(assertion, challenge=statement.digest(), passkey=passkey)
    return result if isinstance(result, str) else None


def _fits(made: ReauthStatement, expected: ReauthStatement, earliest: float,
          latest: float) -> str | None:
    """Why a page's statement is not about this request, call and subject, now."""
    if type(made) is not ReauthStatement:
        return "not a step-up statement"
    if made.request_id != expected.request_id:
        return "the passkey confirmed another request"
    if made.call_hash != expected.call_hash:
        return "the passkey confirmed another call (the call hash differs)"
    if made.subject != expected.subject:
        return f"the passkey confirmed {made.subject!r}, not {expected.subject!r}"
    if not earliest <= made.at <= latest:
        return "the step-up was made before this one was asked for (a replay?)"
    return None


class PasskeyReauthenticator:
    """The :class:`~agentguard.reauth.base.Reauthenticator` for passkeys.

    Args:
        anchors: The trust file (the subjects' passkeys).
        ask: Channel hook that obtains the assertion (see :data:`AskAssertion`).
        max_attempts: Assertions asked for per request before giving up.
        clock: Unix time (the statement's ``at``).
    """

    method: str = METHOD

    def __init__(self, anchors: TrustAnchors, ask: AskAssertion, *, max_attempts: int = 3,
                 clock: Callable[[], float] = time.time) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self._anchors, self._ask, self._attempts, self._clock = anchors, ask, max_attempts, clock

    async def reauthenticate(self, subject: str, request: ApprovalRequest) -> ReauthResult:
        """Ask ``subject`` for an assertion bound to ``request`` until one verifies."""
        anchor = self._anchors.approver(subject)
        if anchor is None or not anchor.passkeys:
            return ReauthResult("failed", subject, METHOD,
                                f"no passkey for {subject!r} in the trust file")
        result = ReauthResult("failed", subject, METHOD, "no assertion given")
        for _ in range(self._attempts):
            asked = int(self._clock())
            statement = ReauthStatement(request_id=request.id, call_hash=request.call_hash,
                                        subject=anchor.identity, at=asked)
            answer = await self._ask(subject, request, statement, anchor.passkeys)
            if answer is None:
                return ReauthResult("unreachable", subject, METHOD, "nobody could be asked")
            if isinstance(answer, StepUpProof):
                why = _fits(answer.statement, statement, asked - CLOCK_SKEW,
                            self._clock() + CLOCK_SKEW)
                why = why or verify_reauth_assertion(answer.assertion, answer.statement, anchor)
            else:
                why = verify_reauth_assertion(answer, statement, anchor)
            if why is None:
                return ReauthResult("verified", subject, METHOD)
            result = ReauthResult("failed", subject, METHOD, why)
        return result
