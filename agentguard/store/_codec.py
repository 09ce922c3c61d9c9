"""Serialise store records to JSON-compatible dicts and back (shared by every backend).

Decoding is strict: an unknown field (written by a newer agentguard) or a missing required
field raises :class:`~agentguard.errors.StoreError` rather than silently dropping a constraint
such as an approver list or a quorum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from agentguard.errors import StoreError
from agentguard.types import ApprovalRequest, ApprovalSpec, ApprovalVote, Grant, ReauthSpec

__all__ = [
    "approval_spec_from_dict",
    "approval_spec_to_dict",
    "grant_from_dict",
    "grant_to_dict",
    "plain",
    "reauth_spec_from_dict",
    "reauth_spec_to_dict",
    "request_from_dict",
    "request_to_dict",
    "vote_from_dict",
    "vote_to_dict",
]

T = TypeVar("T")


def plain(value: Any) -> Any:
    """Return ``value`` with mappings as dicts and tuples/lists/sets as lists (JSON shapes)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted(plain(v) for v in value)
    return value


def _dump(obj: Any) -> dict[str, Any]:
    return {f.name: plain(getattr(obj, f.name)) for f in fields(obj)}


def _load(cls: type[T], data: Mapping[str, Any], tuples: tuple[str, ...] = ()) -> T:
    if not isinstance(data, Mapping):
        raise StoreError(f"stored {cls.__name__} is not an object")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise StoreError(
            f"stored {cls.__name__} has unknown fields {unknown}: written by a newer agentguard?"
        )
    kwargs = {k: (tuple(v) if k in tuples and v is not None else v) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise StoreError(f"stored {cls.__name__} is malformed: {exc}") from None


def approval_spec_to_dict(spec: ApprovalSpec) -> dict[str, Any]:
    """Encode an :class:`ApprovalSpec`."""
    return _dump(spec)


def approval_spec_from_dict(data: Mapping[str, Any]) -> ApprovalSpec:
    """Decode an :class:`ApprovalSpec`."""
    return _load(ApprovalSpec, data, ("approvers", "channels"))


def reauth_spec_to_dict(spec: ReauthSpec) -> dict[str, Any]:
    """Encode a :class:`ReauthSpec`."""
    return _dump(spec)


def reauth_spec_from_dict(data: Mapping[str, Any]) -> ReauthSpec:
    """Decode a :class:`ReauthSpec`."""
    return _load(ReauthSpec, data)


def vote_to_dict(vote: ApprovalVote) -> dict[str, Any]:
    """Encode an :class:`ApprovalVote`."""
    return _dump(vote)


def vote_from_dict(data: Mapping[str, Any]) -> ApprovalVote:
    """Decode an :class:`ApprovalVote`."""
    return _load(ApprovalVote, data)


def request_to_dict(request: ApprovalRequest) -> dict[str, Any]:
    """Encode an :class:`ApprovalRequest` (the call, votes and specs included)."""
    data = _dump(request)
    data["approval"] = approval_spec_to_dict(request.approval)
    data["reauth"] = None if request.reauth is None else reauth_spec_to_dict(request.reauth)
    data["votes"] = [vote_to_dict(v) for v in request.votes]
    return data


def request_from_dict(data: Mapping[str, Any]) -> ApprovalRequest:
    """Decode an :class:`ApprovalRequest`."""
    if not isinstance(data, Mapping):
        raise StoreError("stored ApprovalRequest is not an object")
    fixed = dict(data)
    if "approval" in fixed:
        fixed["approval"] = approval_spec_from_dict(fixed["approval"])
    if fixed.get("reauth") is not None:
        fixed["reauth"] = reauth_spec_from_dict(fixed["reauth"])
    if "votes" in fixed:
        fixed["votes"] = tuple(vote_from_dict(v) for v in fixed["votes"])
    return _load(ApprovalRequest, fixed, ("labels", "decided_by"))


def grant_to_dict(grant: Grant) -> dict[str, Any]:
    """Encode a :class:`Grant`."""
    return _dump(grant)


def grant_from_dict(data: Mapping[str, Any]) -> Grant:
    """Decode a :class:`Grant`."""
    return _load(Grant, data, ("receipts",))
