"""The chain encoding is deterministic through a round trip for anything an event can hold."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard.audit import MemoryAuditLog, verify_records
from agentguard.audit._chain import JsonSafe, check_line, encode, seal

leaves = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text() | st.binary(max_size=8)
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=10), values, max_size=6))
def test_sealed_lines_parse_back_to_the_same_record(fields: dict[str, Any]) -> None:
    data = JsonSafe().convert({**fields, "type": "call.denied"})
    record, line = seal(data, 7, "a" * 64)
    assert line.isascii() and line.count(b"\n") == 1  # nothing invisible, one line
    assert check_line(line) == record
    assert encode(JsonSafe().convert(record)) == encode(record)  # converting is idempotent


@settings(max_examples=50, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=6), values, max_size=4), max_size=6))
def test_memory_chains_of_arbitrary_events_verify(events: list[dict[str, Any]]) -> None:
    log = MemoryAuditLog()
    for fields in events:
        log.append({**fields, "type": "call.allowed"})
    assert verify_records(log.events).ok
