"""What the human sees is what runs: escaping is visible and exactly reversible."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agentguard.sanitize import escape_text, render_args, unescape

HOSTILE = [
    "\x1b[2J\x1b[31mAPPROVED\x1b[0m",     # CSI: clear screen, colour
    "\x1b]8;;https://evil\x07ok\x1b]8;;\x07",  # OSC 8 hyperlink
    "safe\rrm -rf /",                      # carriage return overwrite
    "file\u202egnp.exe",                   # bidi override
    "a\u200bb\u200dc\ufeff",               # zero-width
    "tag\U000e0041\U000e0042",             # tag characters
    "line1\nline2\u2028line3",             # newlines and line separator
    "\x00\x07\x08\x7f",                    # NUL, BEL, BS, DEL
]


def test_hostile_characters_are_shown_escaped() -> None:
    for text in HOSTILE:
        shown = escape_text(text)
        assert shown.isprintable(), repr(shown)
        assert "\x1b" not in shown and "\u202e" not in shown
        assert unescape(shown) == text


@given(st.text())
def test_escaping_round_trips(text: str) -> None:
    shown = escape_text(text)
    assert shown.isprintable() or shown == ""
    assert unescape(shown) == text


def test_rendered_arguments_unescape_to_what_runs() -> None:
    args = {"path": HOSTILE[0], "nested": {"list": [HOSTILE[3], 1, None]}}
    text, truncated = render_args(args)
    assert not truncated
    assert all(ch.isprintable() or ch == "\n" for ch in text)
    shown_path = text.split('"path": "', 1)[1].split('"', 1)[0]
    assert unescape(shown_path) == HOSTILE[0]


def test_long_values_are_truncated_and_say_so() -> None:
    text, truncated = render_args({"blob": "x" * 5000}, limit=100)
    assert truncated and len(text) == 100


def test_quotes_cannot_close_the_displayed_string() -> None:
    text, _ = render_args({"a": 'x", "approved": "yes'})
    assert text.count('"') == 4  # key and value quotes only
