"""Answers typed by a human at a terminal: the console prompt and ``approvals watch``.

One parser for both, so ``a 15m`` or ``d not now`` mean the same wherever they are typed,
and a call whose arguments were cut to fit the screen cannot be approved before the whole
call was opened (``v``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agentguard.channels.render import denial_reason
from agentguard.durations import format_duration, parse_duration
from agentguard.errors import AgentGuardError
from agentguard.sanitize import escape_text

__all__ = [
    "AnswerRejected",
    "ParsedAnswer",
    "answer_help",
    "parse_answer",
    "wants_full_view",
]

_APPROVE = frozenset({"a", "approve", "y", "yes"})
_DENY = frozenset({"d", "deny", "n", "no"})
_HELP = frozenset({"?", "h", "help"})
_VIEW = frozenset({"v", "view"})


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    """An answer typed at a terminal.

    Attributes:
        approve: True to approve.
        grant_ttl: Seconds of "approve for N" (0: this call only).
        reason: Reason recorded with a deny (``no reason given`` when none was typed).
    """

    approve: bool
    grant_ttl: float = 0.0
    reason: str = ""


class AnswerRejected(AgentGuardError, ValueError):
    """The typed line is not an acceptable answer; the message says why (shown to the human)."""


def wants_full_view(line: str) -> bool:
    """Whether ``line`` asks to read the whole call (``v`` or ``view``)."""
    return line.strip().lower() in _VIEW


def answer_help(max_grant: float, allow_grants: bool = True, *, viewable: bool = False) -> str:
    """The one-line list of accepted answers.

    Args:
        max_grant: Longest grant the rule allows, in seconds.
        allow_grants: False when this prompt never gives grants.
        viewable: The display was cut: offer ``v`` to read the whole call.
    """
    grant = ""
    if allow_grants and max_grant > 0:
        example = format_duration(min(max_grant, 900.0))
        grant = f", 'a {example}' approve for {example} (max {format_duration(max_grant)})"
    view = ", 'v' read the whole call" if viewable else ""
    return f"answers: 'a' approve this call{grant}, 'd [reason]' deny{view}"


def parse_answer(
    line: str, *, max_grant: float = 0.0, allow_grants: bool = True, needs_view: bool = False,
) -> ParsedAnswer:
    """Parse one typed line into an answer.

    Accepted: ``a``/``approve``/``y`` (approve this call), ``a 15m``/``approve for 15m``
    (approve and grant for that long, up to ``max_grant``), ``d``/``deny``/``n`` optionally
    followed by a reason. Case is ignored. ``v`` (read the whole call) is the caller's to
    handle, see :func:`wants_full_view`.

    Args:
        line: What the human typed (without the newline).
        max_grant: Longest grant the rule allows, in seconds (0: single use only).
        allow_grants: False when this prompt never gives grants.
        needs_view: The arguments were cut to fit the screen and the whole call has not been
            opened yet: approving is refused until it is (denying is not).

    Raises:
        AnswerRejected: the line is not an answer, asks for a grant the rule does not allow,
            or approves a call nobody could read in full.
    """
    text = line.strip()
    word, _, rest = text.partition(" ")
    word, rest = word.lower(), rest.strip()
    usage = answer_help(max_grant, allow_grants, viewable=needs_view)
    if word in _DENY:
        return ParsedAnswer(approve=False, reason=denial_reason(rest))
    if word in _HELP:
        raise AnswerRejected(usage)
    if word not in _APPROVE:
        raise AnswerRejected(f"not an answer: '{escape_text(text)}'; {usage}")
    if needs_view:
        raise AnswerRejected(
            "the arguments were cut to fit the screen: type 'v' to read the whole call "
            "before approving it")
    if not rest:
        return ParsedAnswer(approve=True)
    spec = re.sub(r"^for\s+", "", rest, flags=re.IGNORECASE)
    try:
        ttl = parse_duration(spec)
    except ValueError as exc:
        raise AnswerRejected(f"{exc}; {usage}") from None
    if ttl == 0:
        return ParsedAnswer(approve=True)
    if not allow_grants:
        raise AnswerRejected("this prompt approves single calls only: type 'a'")
    if max_grant <= 0:
        raise AnswerRejected("this rule allows single-use approval only: type 'a'")
    if ttl > max_grant:
        raise AnswerRejected(
            f"{format_duration(ttl)} is longer than the rule's maximum of "
            f"{format_duration(max_grant)}: approve for at most {format_duration(max_grant)}"
        )
    return ParsedAnswer(approve=True, grant_ttl=ttl)
