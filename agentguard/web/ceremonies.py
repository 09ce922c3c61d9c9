"""Server-side state of the web page: sign-in sessions, open WebAuthn ceremonies, counters.

None of this decides whether a vote counts -- the guard re-verifies every receipt against the
trust file (:mod:`agentguard.trust`) -- but it keeps the page honest on its own side:

- a session is an HMAC-signed cookie naming the approver who proved a passkey at sign-in,
  with a per-process secret (restarting ``serve`` signs everyone out);
- each ceremony (sign-in, vote, enrolment) has a random nonce, is bound to what it was opened
  for (the approver, the request, the exact statement) and can be completed once;
- each credential's signature counter must go up (a replayed assertion is refused before it
  reaches the store), except for authenticators that always report 0 (synced passkeys), for
  which the single-use ceremony is the replay guard.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Ceremonies", "Ceremony", "Sessions", "SignCounters"]

_CEREMONY_TTL = 300.0


@dataclass(frozen=True, slots=True)
class Ceremony:
    """One open WebAuthn ceremony.

    Attributes:
        kind: ``login``, ``vote`` or ``enrol``.
        challenge: The challenge the authenticator must sign.
        data: What the ceremony was opened for (approver, request id, statement, grant...).
        expires: Unix time after which it cannot be completed.
    """

    kind: str
    challenge: bytes
    data: dict[str, Any]
    expires: float


@dataclass
class Ceremonies:
    """Open ceremonies by nonce; each can be taken once."""

    _open: dict[str, Ceremony] = field(default_factory=dict)

    def open(self, kind: str, challenge: bytes, **data: Any) -> str:
        """Remember a ceremony; returns its nonce."""
        now = time.time()
        for nonce in [n for n, c in self._open.items() if c.expires < now]:
            del self._open[nonce]
        nonce = base64.urlsafe_b64encode(os.urandom(18)).decode("ascii")
        self._open[nonce] = Ceremony(kind, challenge, data, now + _CEREMONY_TTL)
        return nonce

    def take(self, nonce: object, kind: str) -> Ceremony | None:
        """The ceremony ``nonce`` of ``kind``, removed; None if unknown, used or expired."""
        if not isinstance(nonce, str):
            return None
        ceremony = self._open.pop(nonce, None)
        if ceremony is None or ceremony.kind != kind or ceremony.expires < time.time():
            return None
        return ceremony


@dataclass
class SignCounters:
    """The last signature counter seen per credential (in this process)."""

    _last: dict[str, int] = field(default_factory=dict)

    def advance(self, credential_id: str, count: int | None) -> str | None:
        """Record ``count``; a sentence when it did not go up (a replayed assertion)."""
        if count is None:
            return "the assertion has no readable signature counter"
        last = self._last.get(credential_id, 0)
        if (count or last) and count <= last:
            return (f"the passkey's signature counter went from {last} to {count}: "
                    "a replayed assertion")
        self._last[credential_id] = count
        return None


@dataclass
class Sessions:
    """Signed session cookies: ``base64url(json) "." hmac``."""

    ttl: float = 8 * 3600.0
    _secret: bytes = field(default_factory=lambda: os.urandom(32))

    def issue(self, identity: str) -> str:
        """A cookie value for ``identity``, valid for :attr:`ttl`."""
        body = base64.urlsafe_b64encode(json.dumps(
            {"sub": identity, "exp": int(time.time() + self.ttl)}).encode()).decode()
        return f"{body}.{self._mac(body)}"

    def identity(self, cookie: str | None) -> str | None:
        """Who the cookie names, or None when absent, forged or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        body, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body))
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("exp", 0) < time.time():
            return None
        sub = data.get("sub")
        return sub if isinstance(sub, str) else None

    def _mac(self, body: str) -> str:
        return hmac.new(self._secret, body.encode(), hashlib.sha256).hexdigest()
