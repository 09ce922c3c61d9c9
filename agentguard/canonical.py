"""Canonical JSON (RFC 8785), the frozen argument snapshot, and the call hash an approval is
bound to.

Arguments are canonicalised before hashing: NaN and infinities are rejected, integers outside
the IEEE-754 safe range are rejected (two parsers could read them differently), keys must be
strings. Duplicate keys cannot survive in a Python mapping; edges that parse raw JSON use
:func:`loads_strict` to reject them (and number literals that overflow to infinity) before a
``ToolCall`` is built.

:func:`freeze` makes the snapshot the guard classifies, hashes, shows and audits: a deep copy
in read-only containers that no caller holds a reference to. Edges run the tool with
:func:`thaw` of that snapshot (a fresh, mutable copy), never with the objects they were given,
so a value changed while a human reads the call cannot reach the tool.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import rfc8785

from agentguard.errors import AgentGuardError
from agentguard.types import ToolCall

__all__ = [
    "MAX_SAFE_INTEGER",
    "CanonicalizationError",
    "FrozenDict",
    "FrozenList",
    "call_hash",
    "call_to_dict",
    "canonical_bytes",
    "freeze",
    "loads_strict",
    "sha256_hex",
    "thaw",
]

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 64


class CanonicalizationError(AgentGuardError, ValueError):
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


def _read_only(self: Any, *args: Any, **kwargs: Any) -> Any:
    raise TypeError("a frozen call snapshot cannot be changed; thaw() it for a mutable copy")


class FrozenDict(dict):  # type: ignore[type-arg]
    """A read-only ``dict`` (JSON encoders and pydantic still see a dict)."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict:
        return self


class FrozenList(list):  # type: ignore[type-arg]
    """A read-only ``list`` (it still compares equal to a list with the same items)."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = clear = extend = insert = pop = remove = reverse = sort = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenList, (list(self),))

    def __copy__(self) -> FrozenList:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenList:
        return self


def _freeze(value: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise CanonicalizationError(f"arguments nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)  # a str subclass could carry behaviour; keep the plain text
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalizationError(
                f"integer {str(value)[:40]} is outside the safe range (±2**53-1); "
                "pass it as a string"
            )
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CanonicalizationError("NaN and infinity are not valid JSON numbers")
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalizationError(f"object key {key!r} is not a string")
            out[str(key)] = _freeze(item, depth + 1)
        return FrozenDict(out)
    if isinstance(value, list | tuple):
        return FrozenList(_freeze(item, depth + 1) for item in value)
    raise CanonicalizationError(f"value of type {type(value).__name__} is not JSON")


def freeze(args: Mapping[str, Any]) -> FrozenDict:
    """A deep, read-only copy of ``args`` made of plain JSON values.

    Raises:
        CanonicalizationError: a value is not unambiguous JSON (NaN, infinity, an integer
            outside ±2**53-1, a non-string key, an object that is not JSON, nesting deeper
            than 64 levels).
    """
    if isinstance(args, FrozenDict):
        return args
    if not isinstance(args, Mapping):
        raise CanonicalizationError(f"arguments must be an object, not {type(args).__name__}")
    frozen: FrozenDict = _freeze(args, 0)
    return frozen


def thaw(value: Any) -> Any:
    """A fresh, mutable deep copy of a frozen snapshot (plain dicts and lists)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


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


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 overflows to infinity: not the number that was sent
        raise CanonicalizationError(
            f"number {text[:24]} is outside the range of a double (it would read as infinity)")
    return value


def _parse_int(text: str) -> int:
    # Refuse long digit strings before int() does: Python's own limit raises ValueError, and
    # anything past 16 digits is outside the safe range anyway.
    if len(text.lstrip("-")) > 16:
        raise CanonicalizationError(f"integer {text[:20]}... is outside the safe range")
    return int(text)


def loads_strict(text: str | bytes) -> Any:
    """Parse JSON, rejecting duplicate keys, NaN/Infinity, numbers that overflow a double and
    unsafe integers.

    Raises:
        CanonicalizationError: the document is ambiguous or invalid.
    """
    try:
        value = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant,
            parse_int=_parse_int, parse_float=_parse_float,
        )
    except json.JSONDecodeError as exc:
        raise CanonicalizationError(f"invalid JSON: {exc}") from exc
    except RecursionError as exc:
        raise CanonicalizationError("JSON nested too deeply") from exc
    _check(value)
    return value
