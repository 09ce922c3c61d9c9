"""Re-authentication: someone re-proves who they are, outside the model's reach.

- :class:`Reauthenticator` / :class:`ReauthResult` — the protocol and its outcome.
- :class:`TotpVerifier` — enrolment and single-use code checks with lockout.
- :class:`TotpReauthenticator` — asks the human for a code through a channel hook.
- :class:`~agentguard.reauth.passkey.PasskeyReauthenticator` — a passkey assertion bound to the
  held call (``agentguard.reauth.passkey``; needs the ``web`` extra).
"""

from __future__ import annotations

from agentguard.reauth.base import Reauthenticator, ReauthResult
from agentguard.reauth.totp import (
    AskCode,
    Enrollment,
    TotpReauthenticator,
    TotpVerifier,
    render_qr,
)

__all__ = [
    "AskCode",
    "Enrollment",
    "ReauthResult",
    "Reauthenticator",
    "TotpReauthenticator",
    "TotpVerifier",
    "render_qr",
]
