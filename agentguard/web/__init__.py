"""The web approval page of ``agentguard serve --web``: approvers sign in and confirm each
vote with a passkey (WebAuthn, user verification required) whose challenge is the vote's
statement digest, so the store receives a receipt the guard verifies against the trust file.

Needs the ``web`` extra (``pip install 'agentguard[web]'``: starlette, jinja2, py_webauthn).
See :mod:`agentguard.web.app` for the routes and README "Approving on the web" for deployment.
"""

from __future__ import annotations

from agentguard.web.app import WebApproval

__all__ = ["WebApproval"]
