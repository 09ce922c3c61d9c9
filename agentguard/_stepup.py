"""Re-authentication of a held call: who must re-prove, and whether a recent proof still
counts (step-up freshness)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agentguard.reauth.base import Reauthenticator
from agentguard.store.base import Store
from agentguard.types import ApprovalRequest, ReauthSpec, ToolCall

__all__ = ["reauthenticate"]

Audit = Callable[..., None]


async def reauthenticate(
    *, call: ToolCall, spec: ReauthSpec, request: ApprovalRequest,
    approvers: tuple[str, ...], store: Store, methods: Mapping[str, Reauthenticator],
    clock: Callable[[], float], audit: Audit,
) -> tuple[str, str, str] | None:
    """Have the subjects of ``spec`` re-prove who they are.

    ``audit(event_type, **fields)`` records each verification and failure.

    Returns:
        ``None`` when every subject is verified, else ``(subject, kind, reason)`` of the
        first failure (kind: ``failed``, ``locked`` or ``unreachable``).
    """
    if spec.subject == "approver" and approvers:
        subjects = list(approvers)
    else:
        subjects = [call.context.acting_for or call.principal.id]
    method = methods.get(spec.method)
    # A reauthenticator whose proof carries its own freshness (an OAuth token's auth_time
    # and acr) must be asked every time: a stored "verified at" would let one rule's step-up
    # stand in for a stricter rule's.
    reuse = getattr(method, "reuse_recent_verification", True)
    common: dict[str, Any] = {"method": spec.method, "request_id": request.id}
    for subject in subjects:
        last = await store.last_reauth(subject, spec.method) if reuse else None
        if spec.max_age > 0 and last is not None and clock() - last <= spec.max_age:
            audit("reauth.verified", subject=subject, detail="fresh", **common)
            continue
        if method is None:
            kind, reason = "unreachable", f"no {spec.method} re-authentication is set up"
        else:
            result = await method.reauthenticate(subject, request)
            kind, reason = result.kind, result.reason
        if kind == "verified":
            await store.record_reauth(subject, spec.method, clock())
            audit("reauth.verified", subject=subject, **common)
            continue
        event = "reauth.locked" if kind == "locked" else "reauth.failed"
        audit(event, outcome="reauth_failed", subject=subject, detail=reason, **common)
        return subject, kind, reason
    return None
