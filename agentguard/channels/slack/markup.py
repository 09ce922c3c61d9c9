"""Untrusted text made inert for Slack: plain_text objects and code blocks.

Untrusted text (tool, server, principal, reason, arguments, identities) never becomes Slack
markup. It goes into ``plain_text`` objects (``emoji: false``; Slack parses no mentions,
links or formatting there) after :func:`~agentguard.sanitize.escape_text`. Arguments and the
whole call need a code block, hence ``mrkdwn``: there ``&``, ``<`` and ``>`` become entities
(so ``<!channel>`` or ``<https://evil|ok>`` show literally), every backtick becomes ``\\x60``
(a value cannot close the fence) and ``verbatim`` stops auto-linking.
"""

from __future__ import annotations

import re
from typing import Any

from agentguard.sanitize import escape_text

__all__ = [
    "FIELD_LIMIT",
    "HEADER_LIMIT",
    "TEXT_LIMIT",
    "TOKEN",
    "code_block",
    "code_escape",
    "code_sections",
    "cut",
    "entities",
    "esc",
    "mrkdwn_escape",
    "plain",
    "prefix",
]

#: Slack's limits (Block Kit reference): section text 3000, field 2000, header 150.
TEXT_LIMIT = 3000
FIELD_LIMIT = 2000
HEADER_LIMIT = 150
#: One displayed character of escaped text: a backslash escape, an entity, or one character.
TOKEN = re.compile(r"\\(?:\\|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})|&(?:amp|lt|gt);|.", re.S)
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_FENCE = "```\n{}\n```"


def entities(text: str) -> str:
    """``& < >`` as entities (the only characters mrkdwn needs escaped)."""
    return "".join(_ENTITIES.get(ch, ch) for ch in text)


def mrkdwn_escape(text: str) -> str:
    """Escape untrusted text for a ``mrkdwn`` object: invisible characters shown as escapes,
    ``& < >`` as entities. Mentions and links can then not be formed."""
    return entities(escape_text(text))


def code_escape(rendered: str) -> str:
    """Escape already-rendered (escape_text'ed) text for a code block."""
    return entities(rendered).replace("`", "\\x60")


def prefix(text: str, limit: int) -> str:
    """The longest prefix of escaped text within ``limit`` characters that splits no escape."""
    out, used = [], 0
    for match in TOKEN.finditer(text):
        token = match.group()
        if used + len(token) > limit:
            break
        out.append(token)
        used += len(token)
    return "".join(out)


def cut(text: str, limit: int) -> str:
    """Cut escaped text to at most ``limit`` characters (ending with …) if it is longer."""
    return text if len(text) <= limit else prefix(text, limit - 1) + "…"


def plain(text: str, limit: int = TEXT_LIMIT) -> dict[str, Any]:
    """A ``plain_text`` object; ``text`` must already be escaped."""
    return {"type": "plain_text", "text": cut(text, limit) or " ", "emoji": False}


def esc(value: Any) -> str:
    """``escape_text`` of a value's string form."""
    return escape_text(value if isinstance(value, str) else str(value))


def code_block(code: str) -> dict[str, Any]:
    """A ``mrkdwn`` section holding ``code`` (already code-escaped) in a fenced block."""
    return {"type": "section",
            "text": {"type": "mrkdwn", "verbatim": True, "text": _FENCE.format(code)}}


def code_sections(rendered: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Cut rendered (escape_text'ed) text into code-escaped pieces that each fit one fenced
    section of at most ``limit`` characters, never inside an escape or an entity, at a line
    end where one is in the second half of the piece. Together the pieces hold every
    character of ``rendered``; a line end falls between two pieces or inside one.
    """
    budget = limit - len(_FENCE.format(""))
    pieces: list[str] = []
    piece = ""
    for match in TOKEN.finditer(rendered):
        token = "\n" if match.group() == "\n" else code_escape(match.group())
        if len(piece) + len(token) > budget:
            at = piece.rfind("\n")
            if at >= budget // 2:  # end the section at that line end; the rest carries on
                pieces.append(piece[:at])
                piece = piece[at + 1 :]
            else:
                pieces.append(piece)
                piece = ""
        piece += token
    if piece.strip("\n"):
        pieces.append(piece)
    return pieces
