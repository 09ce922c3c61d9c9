"""The shaper's plain paths write what the SDK's conversion (and the shaper before them) wrote.

:func:`agentguard.proxy.answers.shape_result` converts a 2026-07-28 result of text content for
a handshake-era client without the SDK's models, and copies a result and its ``_meta`` once.
Generated results (the plain shapes and their near misses: other content, lax values the
models would coerce, ``None`` members, extra fields, stamps) must come out as the same JSON
text, keys in the same order, and fail where the SDK's conversion fails.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mcp.types import SERVER_INFO_META_KEY
from mcp.types import methods as wire_methods
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS

from agentguard.proxy.answers import shape_result, unstamped

PROXY_INFO = {"name": "agentguard", "version": "1"}
UPSTREAM_INFO = {"name": "ops", "version": "9"}
MODERN = "2026-07-28"

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                     | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)
_text_block = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=8)})
_near_miss_block = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=4)},
                          optional={"annotations": st.just({"priority": 0.5}),
                                    "_meta": st.none() | st.just({"k": 1}),
                                    "extra": _json}),
    st.fixed_dictionaries({"text": st.text(max_size=4), "type": st.just("text")}),
    st.fixed_dictionaries({"type": st.just("text"), "text": st.integers()}),
    st.fixed_dictionaries({"type": st.just("image"), "data": st.just("AA=="),
                           "mimeType": st.just("image/png")}),
    _json)
_meta = st.none() | st.dictionaries(
    st.sampled_from(["trace", "k", SERVER_INFO_META_KEY]), _json, max_size=3) | _json
_result = st.fixed_dictionaries({}, optional={
    "content": st.lists(_text_block, max_size=3) | st.lists(_near_miss_block, max_size=2)
    | _json,
    "isError": st.booleans() | st.none() | st.sampled_from(["true", 1, 0, "no"]),
    "structuredContent": st.none() | st.dictionaries(st.text(max_size=3), _json, max_size=3)
    | _json,
    "_meta": _meta,
    "resultType": st.sampled_from(["complete", "input_required", 3]),
    "unknownField": _json,
})

_plain_result = st.fixed_dictionaries({"content": st.lists(_text_block, max_size=3) | st.lists(
    _text_block | _near_miss_block, min_size=1, max_size=2)}, optional={
    "isError": st.booleans() | st.none() | st.sampled_from(["true", 1, 0, 1.0]),
    "structuredContent": st.none() | st.dictionaries(st.text(max_size=3), _json, max_size=3),
    "_meta": st.none() | st.dictionaries(st.sampled_from(["trace", "k", SERVER_INFO_META_KEY]),
                                         _json, max_size=3),
    "resultType": st.just("complete"),
})
"""Results the plain conversion writes, and near misses (in generated key orders)."""


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", _text(fn())
    except Exception as exc:  # the kind of failure is compared
        return "error", type(exc).__name__


@settings(max_examples=400, deadline=None)
@given(result=_result | _plain_result | _plain_result.map(lambda r: dict(reversed(r.items()))),
       version=st.sampled_from(sorted(HANDSHAKE_PROTOCOL_VERSIONS)))
@example(result={"content": [], "structuredContent": {"": float("inf")}}, version="2024-11-05")
@example(result={"content": [], "_meta": {"k": [float("-inf")]}}, version="2025-11-25")
def test_a_modern_result_for_a_handshake_client_is_the_sdks_conversion(
        result: dict[str, Any], version: str) -> None:
    expected = _outcome(lambda: wire_methods.serialize_server_result(
        "tools/call", version, unstamped(result)))
    before = _text(result)
    got = _outcome(lambda: shape_result(result, version, modern=False, upstream_modern=True,
                                        server_info=PROXY_INFO))
    assert got == expected
    assert _text(result) == before  # the upstream's result is not changed


def _previous(result: dict[str, Any], version: str, *, modern: bool, upstream_modern: bool,
              server_info: dict[str, Any]) -> dict[str, Any]:
    """The shaper before the plain paths (the reference for the JSON text)."""
    result = unstamped(result)
    if modern and "resultType" not in result:
        result = {**result, "resultType": "complete"}
    if modern != upstream_modern:
        result = wire_methods.serialize_server_result("tools/call", version, result)
    if modern:
        meta = result.get("_meta")
        stamped = dict(meta) if isinstance(meta, dict) else {}
        stamped[SERVER_INFO_META_KEY] = server_info
        result["_meta"] = stamped
    return result


@pytest.mark.parametrize(("modern", "upstream_modern"),
                         [(True, True), (True, False), (False, False)])
@settings(max_examples=200, deadline=None)
@given(result=_result)
def test_every_other_era_pair_writes_what_it_wrote_before(
        result: dict[str, Any], modern: bool, upstream_modern: bool) -> None:
    version = MODERN if modern else "2025-11-25"
    copy = json.loads(_text(result))
    expected = _outcome(lambda: _previous(copy, version, modern=modern,
                                          upstream_modern=upstream_modern,
                                          server_info=PROXY_INFO))
    got = _outcome(lambda: shape_result(result, version, modern=modern,
                                        upstream_modern=upstream_modern,
                                        server_info=PROXY_INFO))
    assert got == expected


def test_the_plain_conversion_keeps_the_sdks_field_order() -> None:
    result = {"resultType": "complete", "structuredContent": {"b": None, "a": 1},
              "isError": False, "content": [{"type": "text", "text": "ok"}],
              "_meta": {SERVER_INFO_META_KEY: UPSTREAM_INFO, "trace": None}}
    shaped = shape_result(result, "2025-11-25", modern=False, upstream_modern=True,
                          server_info=PROXY_INFO)
    assert _text(shaped) == _text({"_meta": {"trace": None},
                                   "content": [{"text": "ok", "type": "text"}],
                                   "isError": False, "structuredContent": {"b": None, "a": 1}})
