"""Who a human is, as one string: the single rule every approver check and vote count uses.

Policies, channels and the approver terminal spell people differently (``alice``,
``user:alice``, ``Alice``). Authorisation and counting must agree on who is who, or one
person voting as ``carol`` and again as ``user:carol`` meets a quorum of two.
"""

from __future__ import annotations

__all__ = ["canonical_identity", "same_identity"]

_PERSON_PREFIXES = ("user:", "os:", "human:")


def canonical_identity(identity: str) -> str:
    """One spelling per person: trimmed, lower case, without a ``user:`` / ``os:`` /
    ``human:`` prefix. Other prefixes (``slack:U012ABC``) name another namespace and stay."""
    ident = identity.strip().lower()
    for prefix in _PERSON_PREFIXES:
        if ident.startswith(prefix):
            return ident[len(prefix):].strip()
    return ident


def same_identity(a: str | None, b: str | None) -> bool:
    """Whether two identity strings name the same human (``user:alice`` == ``alice``)."""
    if not a or not b:
        return False
    return canonical_identity(a) == canonical_identity(b)
