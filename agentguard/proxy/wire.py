"""What the proxy accepts from a client, line by line (stdio) or body by body (HTTP).

The SDK's ``stdio_server`` hands undecodable lines to the server as exceptions, which the
server drops without an answer; peers have been seen crashing on a bare JSON number, a batch
array and a 10,000-deep array. The proxy answers every bad message itself with the matching
JSON-RPC error and keeps reading:

- invalid UTF-8, malformed JSON, NaN/Infinity, duplicate keys: ``-32700`` parse error;
- a message over ``max_message_bytes``, a batch array, a non-object value, nesting deeper
  than ``max_depth``, an unusable id, an object that is not a JSON-RPC 2.0 message:
  ``-32600`` invalid request (with the request's id when it can be read, else ``null``).

The transports using these checks are :mod:`agentguard.proxy.stdio` and
:mod:`agentguard.proxy.asgi`.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from mcp.shared.message import SessionMessage
from mcp.types import (
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError

from agentguard.errors import AgentGuardError

__all__ = ["DEFAULT_MAX_DEPTH", "DEFAULT_MAX_MESSAGE_BYTES", "WireError", "decode", "encode",
           "parse_line", "parse_value", "serialize", "to_message"]

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""Same default as the SDK's Streamable HTTP body limit."""
DEFAULT_MAX_DEPTH = 100
"""Envelope (3 levels) plus arguments; the guard refuses arguments deeper than 64 anyway."""


class WireError(AgentGuardError):
    """A line that cannot be served; ``error`` is what the peer gets back."""

    def __init__(self, code: int, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.error = ErrorData(code=code, message=message)
        self.request_id = request_id if _valid_id(request_id) else None


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:40]!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
"""Built once: ``json.loads`` with hooks builds a new decoder per call."""


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Iterative depth check (a recursive one is what the hostile input is aimed at)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def _compact(line: bytes) -> Any:
    """``line`` decoded by orjson if it is exactly what orjson writes for its value, else None.

    Such a line has no duplicate key (its value would be written shorter), no NaN or
    surrogate (orjson refuses them), no integer past 64 bits (it would be written as a float)
    and reads as :data:`_DECODER` reads it: the check the ``json`` module's hooks make, at a
    fraction of the cost, for what compact writers (the SDK's) send.
    """
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    try:
        return value if orjson.dumps(value) == line else None
    except orjson.JSONEncodeError:
        return None


def _strict(line: bytes, max_depth: int) -> Any:
    """Decode with the ``json`` module, refusing what the proxy refuses."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(PARSE_ERROR, f"Parse error: invalid UTF-8 at byte {exc.start}") from None
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise WireError(INVALID_REQUEST,
                        f"Invalid Request: nested deeper than {max_depth}") from None
    except ValueError as exc:
        raise WireError(PARSE_ERROR, f"Parse error: {str(exc)[:120]}") from None


def parse_value(line: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> dict[str, Any] | None:
    """Decode one wire line into a JSON-RPC-shaped object, ``None`` for a blank line.

    Raises:
        WireError: invalid UTF-8 or JSON, NaN, duplicate keys, not an object (batches
            included), too deep, or an unusable id.
    """
    value = _compact(line)
    if value is None:
        if not line.strip():
            return None
        value = _strict(line, max_depth)
    if isinstance(value, list):
        raise WireError(INVALID_REQUEST, "Invalid Request: JSON-RPC batches are not supported "
                        "(MCP removed them in 2025-06-18); send one message per line")
    if not isinstance(value, dict):
        raise WireError(INVALID_REQUEST, f"Invalid Request: expected a JSON-RPC object, got "
                        f"{type(value).__name__}")
    # Nesting cannot exceed the number of opening brackets; counting them is C-fast, so the
    # structural walk only runs for lines that could be too deep.
    if line.count(b"{") + line.count(b"[") > max_depth and _depth_exceeds(value, max_depth):
        raise WireError(INVALID_REQUEST, f"Invalid Request: nested deeper than {max_depth}",
                        value.get("id"))
    if "method" in value and "id" in value and not _valid_id(value["id"]):
        # Pydantic would read it as a notification (extra keys ignored) and nobody would answer.
        raise WireError(INVALID_REQUEST, "Invalid Request: id must be a string or an integer")
    return value


def to_message(value: dict[str, Any]) -> SessionMessage:
    """Validate a decoded object as a JSON-RPC 2.0 message.

    Raises:
        WireError: it is not one.
    """
    try:
        message = jsonrpc_message_adapter.validate_python(value, by_name=False)
    except ValidationError:
        raise WireError(INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message",
                        value.get("id")) from None
    return SessionMessage(message)


def parse_line(line: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> SessionMessage | None:
    """Turn one wire line into a message, ``None`` for a blank line.

    Raises:
        WireError: the line is not a JSON-RPC 2.0 message this proxy serves.
    """
    value = parse_value(line, max_depth=max_depth)
    return None if value is None else to_message(value)


def encode(value: dict[str, Any]) -> bytes:
    """One wire line for a plain JSON object.

    NaN and infinities are written as ``null``, as pydantic (and so the SDK's full path)
    writes them. orjson writes nearly every value; the rest (integers past 64 bits, keys that
    are not strings) take the ``json`` module, whose rules apply as before.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        pass
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode() + b"\n"


_DIGIT_MAP = bytes(0x39 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
"""Every ASCII digit to ``9``, every other byte to a space: a digit run becomes a run of 9s."""
_LONG_RUN = b"9" * 20


def decode(data: bytes) -> Any:
    """Decode an upstream's JSON exactly as ``json.loads`` would, faster where that is safe.

    orjson reads integers past 64 bits as floats and refuses NaN and lone surrogates: a body
    with a 20-digit run, or one orjson refuses, is read by ``json.loads``.

    Raises:
        ValueError: not JSON.
    """
    # A 20-digit run, found in C (a regular expression scanning for one costs more than
    # orjson's whole parse).
    if _LONG_RUN not in data.translate(_DIGIT_MAP):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


def serialize(message: SessionMessage) -> bytes:
    """One wire line for a message (same options as the SDK's stdio transport)."""
    return message.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
