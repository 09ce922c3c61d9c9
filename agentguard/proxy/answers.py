"""The one answer shaper: what the client gets back for a relayed or forwarded call.

Every route that carries a ``tools/call`` to the upstream shapes the upstream's answer here,
so a relayed call and the same call on the SDK route answer the client alike:

- the upstream's ``serverInfo`` stamp (``SERVER_INFO_META_KEY``) is removed: the client talks
  to the proxy, and a 2026-07-28 client gets the proxy's stamp instead;
- a result is converted with :func:`mcp.types.methods.serialize_server_result` only when the
  client's era differs from the upstream's (the conversion costs more than the rest of the
  relay's Python work together);
- an upstream connection that closed mid-call, a timeout and a result that cannot be shaped
  are answered with the SDK route's own words (:data:`LOST`, :func:`timed_out`,
  :data:`INVALID_RESULT`);
- an ``input_required`` result is not answered here: the SDK route relays the questions.

The lane hands its answer over as the JSON-RPC message it read (or None: the connection
closed); :func:`read_answer` turns that into an :data:`UpstreamAnswer`, and :func:`shape` into
the message for the client, with the HTTP status the SDK's app would give it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal, TypeVar

from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS
from mcp.types import INTERNAL_ERROR, SERVER_INFO_META_KEY
from mcp.types import methods as wire_methods
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel

from agentguard.proxy.jsontypes import JsonObject, JsonValue, RequestId

__all__ = [
    "INVALID_RESULT",
    "LOST",
    "InputRequired",
    "Lost",
    "Reply",
    "Result",
    "RpcError",
    "UpstreamAnswer",
    "error_object",
    "lost_message",
    "read_answer",
    "shape",
    "shape_result",
    "timed_out",
    "unstamped",
    "unstamped_model",
]

logger = logging.getLogger(__name__)

LOST = ("closed the connection during the request (it is being restarted); the request may "
        "or may not have taken effect")
"""What happened to a call whose upstream connection closed (after ``upstream server 'x'``)."""
INVALID_RESULT = "Handler returned an invalid result"
"""The SDK server's words for a result it cannot serialize for the client."""


def lost_message(server: str) -> str:
    """The error message for a call whose upstream connection closed mid-call."""
    return f"upstream server {server!r} {LOST}"


def timed_out(method: str) -> str:
    """The SDK client's words when ``request_timeout`` runs out (code ``REQUEST_TIMEOUT``)."""
    return f"Request {method!r} timed out"


def error_object(code: int, message: str, data: object = None) -> JsonObject:
    """A JSON-RPC ``error`` member."""
    error: JsonObject = {"code": code, "message": message}
    if data is not None:
        error["data"] = data  # type: ignore[assignment]  # data came off the wire: JSON
    return error


# ---------------------------------------------------------------------- what the lane got


@dataclass(frozen=True, slots=True)
class Result:
    """A complete result (the upstream's ``serverInfo`` stamp still in it)."""

    body: JsonObject
    kind: Literal["result"] = "result"


@dataclass(frozen=True, slots=True)
class RpcError:
    """A JSON-RPC error from the upstream (or said for it: a timeout, a dropped stream)."""

    error: JsonObject
    kind: Literal["error"] = "error"


@dataclass(frozen=True, slots=True)
class InputRequired:
    """The upstream wants input from the client: the SDK route relays the questions."""

    body: JsonObject
    kind: Literal["input_required"] = "input_required"


@dataclass(frozen=True, slots=True)
class Lost:
    """The upstream connection closed before the answer: the call may or may not have run."""

    kind: Literal["lost"] = "lost"


UpstreamAnswer = Result | RpcError | InputRequired | Lost
"""The upstream's answer to one relayed request."""


def read_answer(message: JsonObject | None) -> UpstreamAnswer:
    """The lane's JSON-RPC answer (None: the connection closed) as an :data:`UpstreamAnswer`.

    A result that is not an object, or not ``complete``, is handed to the SDK route, which
    reads it with the SDK's models and answers in its own words.
    """
    if message is None:
        return Lost()
    if "error" in message:
        error = message["error"]
        return RpcError(error if isinstance(error, dict) else {})
    result = message.get("result")
    if isinstance(result, dict) and result.get("resultType", "complete") == "complete":
        return Result(result)
    return InputRequired(result if isinstance(result, dict) else {})


# ---------------------------------------------------------------------- what the client gets


def unstamped(result: JsonObject) -> JsonObject:
    """``result`` without the upstream's ``serverInfo`` stamp (the client talks to the proxy).

    The result is not changed: a copy is made when there is a stamp to remove.
    """
    return _unstamped(result)[0]


def _unstamped(result: JsonObject) -> tuple[JsonObject, bool]:
    """:func:`unstamped`, and whether the result (and its ``_meta``) are copies made here."""
    meta = result.get("_meta")
    if isinstance(meta, dict) and SERVER_INFO_META_KEY in meta:
        rest = {k: v for k, v in meta.items() if k != SERVER_INFO_META_KEY}
        result = {k: v for k, v in result.items() if k != "_meta"}
        if rest:
            result["_meta"] = rest
        return result, True
    return result, False


M = TypeVar("M", bound=BaseModel)


def unstamped_model(result: M) -> M:
    """:func:`unstamped` for a result the SDK client returned as a model (the SDK route)."""
    meta = getattr(result, "meta", None)
    if meta and SERVER_INFO_META_KEY in meta:
        rest = {k: v for k, v in meta.items() if k != SERVER_INFO_META_KEY}
        return result.model_copy(update={"meta": rest or None})
    return result


def shape_result(result: JsonObject, version: str, *, modern: bool, upstream_modern: bool,
                 server_info: JsonObject) -> JsonObject:
    """An upstream ``tools/call`` result made to fit the client's era, as the proxy's.

    Args:
        result: The upstream's result.
        version: The client's protocol version.
        modern: The client speaks 2026-07-28.
        upstream_modern: The upstream speaks 2026-07-28.
        server_info: The proxy's ``serverInfo`` stamp (for a 2026-07-28 client).

    Raises:
        pydantic.ValidationError: the result does not fit the client's era.
    """
    result, fresh_meta = _unstamped(result)
    if not modern:
        if not upstream_modern:
            return result
        plain = _handshake_result(result, version)
        return plain if plain is not None else \
            wire_methods.serialize_server_result("tools/call", version, result)
    if "resultType" not in result:
        result = {**result, "resultType": "complete"}  # a handshake-era result is complete
    if not upstream_modern:
        result = wire_methods.serialize_server_result("tools/call", version, result)
        fresh_meta = False
    return _stamped(result, server_info, fresh=fresh_meta)


def _stamped(result: JsonObject, server_info: JsonObject, *, fresh: bool) -> JsonObject:
    """``result`` with the proxy's stamp last in its ``_meta`` (set in place; the ``_meta``
    is copied unless ``fresh`` says it was made by the shaper)."""
    meta = result.get("_meta")
    stamped: JsonObject = (meta if fresh else dict(meta)) if isinstance(meta, dict) else {}
    stamped[SERVER_INFO_META_KEY] = server_info
    result["_meta"] = stamped
    return result


_HANDSHAKE_VERSIONS = frozenset(HANDSHAKE_PROTOCOL_VERSIONS)
"""Handshake-era versions whose ``tools/call`` result :func:`_handshake_result` writes as the
SDK's model does (tests/proxy/test_answers_plain.py compares the two)."""
_PLAIN_KEYS = frozenset({"_meta", "content", "isError", "structuredContent", "resultType"})


def _handshake_result(result: JsonObject, version: str) -> JsonObject | None:
    """A 2026-07-28 result of text content for a handshake-era client, as
    ``serialize_server_result`` writes it (fields in its order, ``resultType`` and ``None``
    members dropped), without its models; None for anything else (the SDK converts it).

    Only values the model keeps as they are take this path: text blocks of exactly ``type``
    and ``text`` (a string), a real bool ``isError``, object ``structuredContent`` and
    ``_meta`` (JSON values, dumped as they are).
    """
    if version not in _HANDSHAKE_VERSIONS or not result.keys() <= _PLAIN_KEYS or \
            result.get("resultType", "complete") != "complete":
        return None
    content = result.get("content")
    if not isinstance(content, list):
        return None
    blocks: list[JsonValue] = []
    for block in content:
        if not isinstance(block, dict) or len(block) != 2 or block.get("type") != "text":
            return None
        text = block.get("text")
        if not isinstance(text, str):
            return None
        blocks.append({"text": text, "type": "text"})
    meta, is_error, structured = (result.get("_meta"), result.get("isError"),
                                  result.get("structuredContent"))
    if not (meta is None or isinstance(meta, dict)) or \
            not (is_error is None or type(is_error) is bool) or \
            not (structured is None or isinstance(structured, dict)) or \
            not _all_finite([meta, structured]):
        return None
    out: JsonObject = {}
    if meta is not None:
        out["_meta"] = meta
    out["content"] = blocks
    if is_error is not None:
        out["isError"] = is_error
    if structured is not None:
        out["structuredContent"] = structured
    return out


def _all_finite(value: JsonValue) -> bool:
    """No infinite float anywhere in ``value`` (the SDK's model writes one as ``null``; an
    upstream's ``1e999`` parses as one)."""
    stack: list[JsonValue] = [value]
    while stack:
        item = stack.pop()
        if type(item) is float:
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


@dataclass(frozen=True, slots=True)
class Reply:
    """The JSON-RPC message for the client, and what else the route must do.

    Attributes:
        message: The response (``result`` or ``error``) with the client's id.
        status: The HTTP status the SDK's app gives this answer.
        lost: The upstream connection closed: the caller has the upstream restarted.
    """

    message: JsonObject
    status: int = 200
    lost: bool = False


def shape(answer: UpstreamAnswer, rid: RequestId, *, server: str, version: str, modern: bool,
          upstream_modern: bool, server_info: JsonObject) -> Reply | None:
    """The client's answer to a relayed call, or None when the SDK route must take over.

    Args:
        answer: What the upstream answered.
        rid: The client's request id.
        server: The upstream's name (for the words of a lost connection).
        version: The client's protocol version.
        modern: The client speaks 2026-07-28.
        upstream_modern: The upstream speaks 2026-07-28.
        server_info: The proxy's ``serverInfo`` stamp.
    """
    if isinstance(answer, InputRequired):
        return None
    if isinstance(answer, Lost):
        return Reply(_error(rid, error_object(INTERNAL_ERROR, lost_message(server))), lost=True)
    if isinstance(answer, RpcError):
        code = answer.error.get("code")
        status = ERROR_CODE_HTTP_STATUS.get(code, 200) if isinstance(code, int) else 200
        return Reply(_error(rid, answer.error), status)
    try:
        shaped = shape_result(answer.body, version, modern=modern,
                              upstream_modern=upstream_modern, server_info=server_info)
    except Exception:
        logger.exception("upstream %r returned an invalid tools/call result", server)
        return Reply(_error(rid, error_object(INTERNAL_ERROR, INVALID_RESULT)))
    return Reply({"jsonrpc": "2.0", "id": rid, "result": shaped})


def _error(rid: RequestId, error: JsonObject) -> JsonObject:
    return {"jsonrpc": "2.0", "id": rid, "error": error}
