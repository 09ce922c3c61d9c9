"""The event-stream decoder the relay's HTTP lane reads upstream answers with."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard.proxy.sse import SseDecoder, SseTooLarge

STREAM = (b"\xef\xbb\xbf: ping\r\n\r\n"
          b"event: message\r\ndata: {\"a\":\r\ndata:  1}\r\n\r\n"
          b"data: plain\n\n"
          b"event: other\rdata: x\r\r"
          b"id: 7\nretry: 10\n\n"
          b"data:no-space\n\n")
EVENTS = [("message", '{"a":\n 1}'), ("message", "plain"), ("other", "x"),
          ("message", "no-space")]


def test_decodes_every_line_ending_comments_and_multi_line_data() -> None:
    assert SseDecoder().feed(STREAM) == EVENTS


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), unique=True))
def test_any_split_of_the_stream_decodes_the_same(cuts: list[int]) -> None:
    decoder, events, last = SseDecoder(), [], 0
    for cut in [*sorted(cuts), len(STREAM)]:
        events += decoder.feed(STREAM[last:cut])
        last = cut
    assert events == EVENTS


def test_a_cr_at_the_end_of_a_chunk_waits_for_a_possible_lf() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n\r\n") == [("message", "a")]


def test_an_event_over_the_limit_is_refused() -> None:
    decoder = SseDecoder(max_event_bytes=16)
    assert decoder.feed(b"data: 12345\n\n") == [("message", "12345")]
    with pytest.raises(SseTooLarge):
        decoder.feed(b"data: 1234567890\ndata: 1234567890\n")
    with pytest.raises(SseTooLarge):
        SseDecoder(max_event_bytes=16).feed(b"data: " + b"x" * 40)  # one unterminated line
