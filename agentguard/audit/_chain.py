"""The hash chain shared by every audit sink: JSON-safe copies, the chain encoding, sealing.

**Chain encoding.** A record's ``hash`` is the SHA-256 hex of its *chain encoding* without the
``hash`` member: ``json.dumps(record, sort_keys=True, separators=(",", ":"),
ensure_ascii=True, allow_nan=False)`` as ASCII bytes. This is deliberately not RFC 8785
(:func:`agentguard.canonical.canonical_bytes`): the pure-Python JCS encoder costs ~40 µs per
record, more than the whole append budget (≥20,000 events/s), while this encoding is done in
C. It is just as deterministic for the values a record can hold, because every value is first
copied into plain JSON data (:class:`JsonSafe`: finite floats, integers within ±2**53-1,
string keys, bounded depth), and Python floats round-trip exactly through ``repr``. Keys sort
by code point. ``ensure_ascii`` also keeps the log file pure ASCII, so ``cat``-ing a log cannot
replay ANSI, bidi or other invisible characters an attacker put into a tool argument.

A line on disk is the chain encoding with ``,"hash":"<hex>"`` spliced in before the final
brace; a verifier re-encodes the parsed record and also requires the line to be byte-for-byte
that form, so reformatting and duplicate keys are caught too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from agentguard.canonical import MAX_DEPTH, MAX_SAFE_INTEGER
from agentguard.errors import AgentGuardError

__all__ = [
    "GENESIS_HASH",
    "RESERVED_FIELDS",
    "ChainError",
    "JsonSafe",
    "check_line",
    "check_record",
    "encode",
    "head_path",
    "seal",
    "utc_now",
]

#: ``prev_hash`` of the first record.
GENESIS_HASH = "0" * 64
#: Fields every sink sets itself; values passed in an event are replaced.
RESERVED_FIELDS = ("seq", "at", "prev_hash", "hash")
TOO_DEEP = f"<nested deeper than {MAX_DEPTH} levels>"
_SAFE_INT = (-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)

_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)
_HEX = frozenset("0123456789abcdef")


class ChainError(AgentGuardError, ValueError):
    """A stored line is not a well-formed, correctly hashed record.

    Attributes:
        kind: ``malformed`` (not a record) or ``edited`` (a record whose hash or form is wrong).
        detail: One sentence for a human.
        record: The parsed record, when the line was one (``edited``).
    """

    def __init__(self, kind: str, detail: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail
        self.record = record


def encode(value: Any) -> bytes:
    """Chain encoding of JSON-safe data (see the module docstring)."""
    return _ENCODER.encode(value).encode("ascii")


def head_path(path: str | os.PathLike[str]) -> str:
    """Path of the sidecar head file of the log at ``path``."""
    return os.fspath(path) + ".head"


_second: tuple[int, str] = (-1, "")


def utc_now(clock: Callable[[], float] | None = None) -> str:
    """The current time, RFC 3339 UTC with microseconds (``2025-01-31T09:00:00.000000Z``).

    Args:
        clock: Source of Unix time (a sink's injected clock); the system clock when ``None``.
    """
    global _second
    now_us = time.time_ns() // 1000 if clock is None else round(clock() * 1_000_000)
    seconds, micros = divmod(now_us, 1_000_000)
    cached = _second
    if cached[0] != seconds:  # format the date once a second, not once a record
        cached = _second = (seconds, f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}")
    return f"{cached[1]}.{micros:06d}Z"


def seal(data: dict[str, Any], seq: int, prev_hash: str,
         clock: Callable[[], float] | None = None) -> tuple[dict[str, Any], bytes]:
    """Chain a JSON-safe event: add ``seq``, ``at``, ``prev_hash`` and ``hash`` in place.

    ``at`` is read from ``clock`` (Unix time) when given, else from the system clock.

    Returns:
        The record and its line (chain encoding with the hash, ending in a newline).
    """
    data.pop("hash", None)
    data["seq"] = seq
    data["at"] = utc_now(clock)
    data["prev_hash"] = prev_hash
    body = encode(data)
    digest = hashlib.sha256(body).hexdigest()
    data["hash"] = digest
    return data, _line(body, digest)


def _line(body: bytes, digest: str) -> bytes:
    return body[:-1] + b',"hash":"' + digest.encode("ascii") + b'"}\n'


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and _HEX.issuperset(value)


def check_record(record: Any) -> tuple[dict[str, Any], bytes]:
    """Check a parsed record's fields and hash; return it and its chain encoding.

    Raises:
        ChainError: the record is malformed, or edited.
    """
    if not isinstance(record, dict):
        raise ChainError("malformed", "line is not a JSON object")
    seq, stored = record.get("seq"), record.get("hash")
    if type(seq) is not int or seq < 1:
        raise ChainError("malformed", "record has no positive integer 'seq'")
    if not _is_hash(stored) or not _is_hash(record.get("prev_hash")):
        raise ChainError("malformed", "record lacks a 64-hex 'hash' or 'prev_hash'")
    body = dict(record)
    del body["hash"]
    try:
        encoded = encode(body)
    except (ValueError, RecursionError) as exc:  # NaN, Infinity, absurd nesting
        raise ChainError(
            "edited", f"record holds a value no sink writes: {exc}", record
        ) from exc
    if hashlib.sha256(encoded).hexdigest() != stored:
        raise ChainError("edited", "hash does not match the record's content", record)
    return record, encoded


def check_line(raw: bytes) -> dict[str, Any]:
    """Parse one stored line (with its newline) and check it is a sealed record, unaltered.

    Raises:
        ChainError: as :func:`check_record`; also when the line is not byte-for-byte the form
            a sink writes (reformatted, duplicate keys, missing newline).
    """
    if not raw.endswith(b"\n"):
        raise ChainError("malformed", "last line has no newline (torn write?)")
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ChainError("malformed", f"not valid JSON: {exc}") from exc
    record, encoded = check_record(parsed)
    if _line(encoded, record["hash"]) != raw:
        raise ChainError(
            "edited", "line is not in the form a sink writes (reformatted or duplicate keys)",
            record,
        )
    return record


def _text_of(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__ must not stop the audit write
        return f"<unprintable {type(value).__name__}>"


class JsonSafe:
    """Copies any value into plain JSON data that the chain encoding accepts.

    Mappings become dicts with string keys, tuples lists, sets sorted lists and dataclasses
    dicts of their fields; integers beyond ±2**53-1, NaN, infinities and any other object
    become strings; nesting deeper than the canonical limit is cut. Nothing raises.

    Subclasses hook :meth:`_text` (string values and keys), :meth:`_classify` (each key name,
    cached), :meth:`_hide_path` (each dotted key path, when ``track_paths``) and
    :meth:`_hidden` (what replaces a hidden value).
    """

    #: Whether :meth:`_hide_path` is consulted (costs a tuple per key).
    track_paths = False
    _KEY_CACHE_LIMIT = 4096

    def __init__(self) -> None:
        self._keys: dict[str, tuple[str, bool]] = {}
        # Strings known to need no change from _text (hot path: skip the call).
        self._clean: set[str] = set()

    def convert(self, value: Any) -> Any:
        """Return a JSON-safe copy of ``value``."""
        return self._walk(value, 0, ())

    def _text(self, text: str) -> str:
        return text

    def _classify(self, key: str) -> tuple[str, bool]:
        """The key to store for ``key`` and whether to hide the value under it."""
        return self._text(key), False

    def _hide_path(self, path: tuple[str, ...]) -> bool:
        return False

    def _hidden(self, value: Any) -> Any:
        return value

    def _walk(self, value: Any, depth: int, path: tuple[str, ...]) -> Any:
        kind = type(value)
        # Exact types first: they are nearly all an event holds, and the cheapest to test.
        if kind is str:
            return value if value in self._clean else self._text(value)
        if value is None or kind is bool or (kind is int and _SAFE_INT[0] <= value <= _SAFE_INT[1]):
            return value
        if depth >= MAX_DEPTH:
            return TOO_DEEP
        if kind is dict:
            return self._mapping(value.items(), depth, path)
        if kind is list:
            return [self._walk(item, depth + 1, path) for item in value]
        return self._other(value, depth, path)

    def _other(self, value: Any, depth: int, path: tuple[str, ...]) -> Any:
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, int):
            if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
                return int(value)
            return self._text(str(int(value)))
        if isinstance(value, float):
            return float(value) if math.isfinite(value) else str(value)
        if isinstance(value, Mapping):
            return self._mapping(value.items(), depth, path)
        if isinstance(value, list | tuple):
            return [self._walk(item, depth + 1, path) for item in value]
        if isinstance(value, set | frozenset):
            items = [self._walk(item, depth + 1, path) for item in value]
            return sorted(items, key=_ENCODER.encode)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = ((f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value))
            return self._mapping(fields, depth, path)
        return self._text(_text_of(value))

    def _mapping(self, items: Any, depth: int, path: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        keys, clean, walk, track = self._keys, self._clean, self._walk, self.track_paths
        for key, item in items:
            name = key if type(key) is str else _text_of(key)
            known = keys.get(name)
            if known is None:
                known = self._classify(name)
                # A key that had to change (it held a secret) is not kept around.
                if known[0] == name and len(keys) < self._KEY_CACHE_LIMIT:
                    keys[name] = known
            stored, hide = known
            sub = path
            if track:
                sub = (*path, name)
                hide = hide or self._hide_path(sub)
            if hide:
                out[stored] = self._hidden(item)
            elif type(item) is str and item in clean:
                out[stored] = item
            else:
                out[stored] = walk(item, depth + 1, sub)
        return out
