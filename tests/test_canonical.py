"""Canonical call hashing: what an approval binds to."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard.canonical import CanonicalizationError, call_hash, canonical_bytes, loads_strict
from agentguard.types import Principal, ToolCall

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_key_order_does_not_change_the_hash(args: dict) -> None:
    a = ToolCall(tool="t", args=args, id="1")
    b = ToolCall(tool="t", args=dict(reversed(list(args.items()))), id="2")
    assert call_hash(a) == call_hash(b)


def test_every_bound_field_changes_the_hash() -> None:
    base = ToolCall(tool="deploy", args={"env": "prod"}, principal=Principal("a"),
                    server="s", session_id="x", tool_definition_hash="h")
    variants = [
        ToolCall(tool="deploy2", args={"env": "prod"}, principal=Principal("a"), server="s",
                 session_id="x", tool_definition_hash="h"),
        ToolCall(tool="deploy", args={"env": "prod "}, principal=Principal("a"), server="s",
                 session_id="x", tool_definition_hash="h"),
        ToolCall(tool="deploy", args={"env": "prod"}, principal=Principal("b"), server="s",
                 session_id="x", tool_definition_hash="h"),
        ToolCall(tool="deploy", args={"env": "prod"}, principal=Principal("a"), server="t",
                 session_id="x", tool_definition_hash="h"),
        ToolCall(tool="deploy", args={"env": "prod"}, principal=Principal("a"), server="s",
                 session_id="y", tool_definition_hash="h"),
        ToolCall(tool="deploy", args={"env": "prod"}, principal=Principal("a"), server="s",
                 session_id="x", tool_definition_hash="i"),
    ]
    hashes = {call_hash(v) for v in variants}
    assert call_hash(base) not in hashes and len(hashes) == len(variants)


def test_numbers_are_canonicalised() -> None:
    assert canonical_bytes({"n": 1.0}) == canonical_bytes({"n": 1}) == b'{"n":1}'
    assert canonical_bytes({"n": 1e21}) == b'{"n":1e+21}'


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 2**53, -(2**60), {1: "x"}, object()])
def test_ambiguous_values_are_rejected(bad: object) -> None:
    with pytest.raises(CanonicalizationError):
        canonical_bytes({"v": bad})


@pytest.mark.parametrize("text", ['{"a": 1, "a": 2}', '{"a": NaN}', '{"a": Infinity}',
                                  '{"a": 123456789012345678901234567890}', "{"])
def test_loads_strict_rejects_ambiguous_json(text: str) -> None:
    with pytest.raises(CanonicalizationError):
        loads_strict(text)


def test_deep_nesting_is_rejected_not_a_crash() -> None:
    with pytest.raises(CanonicalizationError):
        loads_strict("[" * 10_000 + "]" * 10_000)
