"""Canonical JSON (RFC 8785) and the call hash an approval is bound to.

Arguments are canonicalised before hashing: NaN and infinities are rejected, integers outside
the IEEE-754 safe range are rejected (two parsers could read them differently), keys must be
strings. Duplicate keys cannot survive in a Python mapping; edges that parse raw JSON use
:func:`loads_strict` to reject them before a ``ToolCall`` is built.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import rfc8785

from agentguard.types import ToolCall

__all__ = [
    "MAX_SAFE_INTEGER",
    "CanonicalizationError",
    "call_hash",
    "call_to_dict",
    "canonical_bytes",
    "loads_strict",
    "sha256_hex",
]

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 64


class CanonicalizationError(ValueError):
    """A value cannot be canonicalised unambiguously, so it cannot be approved."""


def _check(value: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise CanonicalizationError(f"arguments nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalizationError(
                f"integer {str(value)[:40]} is outside the safe range (±2**53-1); "
                "pass it as a string"
            )
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CanonicalizationError("NaN and infinity are not valid JSON numbers")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalizationError(f"object key {key!r} is not a string")
            _check(item, depth + 1)
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check(item, depth + 1)
        return
    raise CanonicalizationError(f"value of type {type(value).__name__} is not JSON")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def canonical_bytes(value: Any) -> bytes:
    """Serialise ``value`` as RFC 8785 canonical JSON.

    Raises:
        CanonicalizationError: the value is not unambiguous JSON.
    """
    _check(value)
    try:
        return rfc8785.dumps(_plain(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CanonicalizationError(str(exc)) from exc


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def call_to_dict(call: ToolCall) -> dict[str, Any]:
    """The fields of a call that an approval binds to, as plain JSON data."""
    return {
        "server": call.server,
        "tool": call.tool,
        "tool_definition_hash": call.tool_definition_hash,
        "args": _plain(call.args),
        "principal": call.principal.id,
        "session_id": call.session_id,
    }


def call_hash(call: ToolCall) -> str:
    """SHA-256 over the canonical JSON of (server, tool, definition hash, args, principal,
    session). Editing any of them gives a different hash, hence a new decision."""
    return sha256_hex(canonical_bytes(call_to_dict(call)))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise CanonicalizationError(f"duplicate key {key!r} in JSON object")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise CanonicalizationError(f"{name} is not valid JSON")


def _parse_int(text: str) -> int:
    # Refuse long digit strings before int() does: Python's own limit raises ValueError, and
    # anything past 16 digits is outside the safe range anyway.
    if len(text.lstrip("-")) > 16:
        raise CanonicalizationError(f"integer {text[:20]}... is outside the safe range")
    return int(text)


def loads_strict(text: str | bytes) -> Any:
    """Parse JSON, rejecting duplicate keys, NaN/Infinity and unsafe integers.

    Raises:
        CanonicalizationError: the document is ambiguous or invalid.
    """
    try:
        value = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant,
            parse_int=_parse_int,
        )
    except json.JSONDecodeError as exc:
        raise CanonicalizationError(f"invalid JSON: {exc}") from exc
    except RecursionError as exc:
        raise CanonicalizationError("JSON nested too deeply") from exc
    _check(value)
    return value
