"""Approve or deny held calls on the controlling terminal.

The prompt opens the terminal device (``/dev/tty``), never stdin/stdout, which an MCP stdio
server uses for protocol traffic. Typed-ahead input is discarded before each prompt so that a
keystroke meant for something else cannot approve a call; a live countdown shows the time
left; the terminal mode is restored however the prompt ends.
"""

from __future__ import annotations

import getpass
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass

import anyio

from agentguard.channels.base import ChannelAnswer
from agentguard.channels.render import render_request, render_status
from agentguard.channels.tty import (
    CLEAR_LINE,
    LineEditor,
    Terminal,
    TerminalClosed,
    TerminalUnavailable,
)
from agentguard.durations import format_duration, parse_duration
from agentguard.sanitize import escape_text
from agentguard.types import ApprovalRequest

__all__ = ["AnswerRejected", "ConsoleChannel", "ParsedAnswer", "parse_answer"]

_APPROVE = frozenset({"a", "approve", "y", "yes"})
_DENY = frozenset({"d", "deny", "n", "no"})
_HELP = frozenset({"?", "h", "help"})
_SETTLED_MEMORY = 256


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    """An answer typed at the console.

    Attributes:
        approve: True to approve.
        grant_ttl: Seconds of "approve for N" (0: this call only).
        reason: Reason given with a deny.
    """

    approve: bool
    grant_ttl: float = 0.0
    reason: str = ""


class AnswerRejected(ValueError):
    """The typed line is not an acceptable answer; the message says why (shown to the human)."""


def answer_help(max_grant: float, allow_grants: bool = True) -> str:
    """The one-line list of accepted answers."""
    grant = ""
    if allow_grants and max_grant > 0:
        example = format_duration(min(max_grant, 900.0))
        grant = f", 'a {example}' approve for {example} (max {format_duration(max_grant)})"
    return f"answers: 'a' approve this call{grant}, 'd [reason]' deny"


def parse_answer(line: str, *, max_grant: float = 0.0, allow_grants: bool = True) -> ParsedAnswer:
    """Parse one typed line into an answer.

    Accepted: ``a``/``approve``/``y`` (approve this call), ``a 15m``/``approve for 15m``
    (approve and grant for that long, up to ``max_grant``), ``d``/``deny``/``n`` optionally
    followed by a reason. Case is ignored.

    Args:
        line: What the human typed (without the newline).
        max_grant: Longest grant the rule allows, in seconds (0: single use only).
        allow_grants: False when this console never gives grants.

    Raises:
        AnswerRejected: the line is not an answer, or asks for a grant the rule does not allow.
    """
    text = line.strip()
    word, _, rest = text.partition(" ")
    word, rest = word.lower(), rest.strip()
    if word in _DENY:
        return ParsedAnswer(approve=False, reason=rest)
    if word in _HELP:
        raise AnswerRejected(answer_help(max_grant, allow_grants))
    if word not in _APPROVE:
        raise AnswerRejected(
            f"not an answer: '{escape_text(text)}'; {answer_help(max_grant, allow_grants)}"
        )
    if not rest:
        return ParsedAnswer(approve=True)
    spec = re.sub(r"^for\s+", "", rest, flags=re.IGNORECASE)
    try:
        ttl = parse_duration(spec)
    except ValueError as exc:
        raise AnswerRejected(f"{exc}; {answer_help(max_grant, allow_grants)}") from None
    if ttl == 0:
        return ParsedAnswer(approve=True)
    if not allow_grants:
        raise AnswerRejected("this console approves single calls only: type 'a'")
    if max_grant <= 0:
        raise AnswerRejected("this rule allows single-use approval only: type 'a'")
    if ttl > max_grant:
        raise AnswerRejected(
            f"{format_duration(ttl)} is longer than the rule's maximum of "
            f"{format_duration(max_grant)}: approve for at most {format_duration(max_grant)}"
        )
    return ParsedAnswer(approve=True, grant_ttl=ttl)


@dataclass
class _Prompt:
    """State of one open prompt, shared with :meth:`ConsoleChannel.settled`."""

    terminal: Terminal
    ended: bool = False
    voted: ParsedAnswer | None = None
    scope: anyio.CancelScope | None = None


class ConsoleChannel:
    """Ask the human at the controlling terminal (implements ``ApprovalChannel``).

    One prompt is shown at a time; further requests wait their turn (and expire if their
    time runs out while waiting). Also provides :meth:`ask_code`, the ``ask_code`` callable
    the TOTP reauthenticator takes.

    Args:
        approver: Identity recorded for votes; defaults to the OS user.
        tty_path: Terminal device to open (a pty slave in tests).
        allow_grants: Offer "approve for N" when the rule allows it.
        clock: Unix time source.
        code_attempts: Attempts the TOTP reauthenticator allows, shown as ``attempt n/N``.
    """

    name = "console"
    #: Vouches for the OS account at this terminal (or ``AGENTGUARD_APPROVER``), no more.
    verified = True

    def __init__(
        self,
        *,
        approver: str | None = None,
        tty_path: str = "/dev/tty",
        allow_grants: bool = True,
        clock: Callable[[], float] = time.time,
        code_attempts: int = 3,
    ) -> None:
        self.approver = approver
        self.tty_path = tty_path
        self.allow_grants = allow_grants
        self.clock = clock
        self.code_attempts = code_attempts
        self._prompts: dict[str, _Prompt] = {}
        self._settled: dict[str, str] = {}
        self._busy = False
        self._free: anyio.Event | None = None  # created inside the event loop, when needed

    # ------------------------------------------------------------------ identity and turn

    def _identity(self) -> str:
        if self.approver:
            return self.approver
        return getpass.getuser()

    async def _take_turn(self, deadline: float) -> bool:
        """Wait until no other prompt uses the terminal; False if ``deadline`` passed."""
        while self._busy:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return False
            if self._free is None:
                self._free = anyio.Event()
            with anyio.move_on_after(min(remaining, 1.0)):
                await self._free.wait()
        self._busy = True
        return True

    def _release_turn(self) -> None:
        self._busy = False
        if self._free is not None:
            self._free.set()
            self._free = None

    # ------------------------------------------------------------------ approvals

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        """Show ``request`` on the terminal and yield the human's vote.

        Yields ``unreachable`` when the terminal cannot be used, nothing when the request
        expires first (the prompt then says "expired: nothing ran"), ``closed`` if the human
        ends input (Ctrl-D) or the terminal hangs up.
        """
        try:
            who = self._identity()
        except Exception as exc:  # getpass raises OSError/KeyError without a user entry
            yield ChannelAnswer(
                kind="unreachable", channel=self.name, reason=f"no OS user to answer as: {exc}"
            )
            return
        if not await self._take_turn(request.expires_at):
            return
        try:
            if request.id in self._settled:
                return
            try:
                terminal = Terminal.open(self.tty_path)
            except TerminalUnavailable as exc:
                yield ChannelAnswer(kind="unreachable", channel=self.name, reason=str(exc))
                return
            prompt = _Prompt(terminal)
            self._prompts[request.id] = prompt
            try:
                async with aclosing(self._converse(request, prompt, who)) as answers:
                    async for answer in answers:
                        yield answer
            finally:
                self._prompts.pop(request.id, None)
                self._finish(request, prompt)
        finally:
            self._release_turn()

    async def _converse(
        self, request: ApprovalRequest, prompt: _Prompt, who: str
    ) -> AsyncIterator[ChannelAnswer]:
        term = prompt.terminal
        max_grant = request.approval.max_grant if self.allow_grants else 0.0
        editor = LineEditor()
        try:
            term.set_mode(echo=False, canonical=False)
            await term.write("\n" + render_request(request, now=self.clock()) + "\n")
            await term.write(
                f"answering as {escape_text(who)}; {answer_help(max_grant, self.allow_grants)}\n"
            )
            term.discard_input()
        except (OSError, TerminalClosed) as exc:
            prompt.ended = True
            yield ChannelAnswer(kind="unreachable", channel=self.name, reason=str(exc))
            return
        while not prompt.ended:
            remaining = request.expires_at - self.clock()
            if remaining <= 0:
                prompt.ended = True
                await term.write(f"{CLEAR_LINE}expired: nothing ran\n")
                return
            status = (
                "vote recorded; waiting for the request to settle"
                if prompt.voted
                else (f"> {escape_text(editor.buffer)}")
            )
            await term.write(
                f"{CLEAR_LINE}[{format_duration(max(1, int(remaining)))} left] {status}"
            )
            data = b""
            hangup: TerminalClosed | None = None
            # Cancelled by the deadline (countdown tick) or by settled(); never spans a yield.
            with anyio.CancelScope(deadline=anyio.current_time() + min(remaining, 1.0)) as scope:
                prompt.scope = scope
                try:
                    data = await term.read()
                except TerminalClosed as exc:
                    hangup = exc
            prompt.scope = None
            if hangup is not None:
                prompt.ended = True
                yield ChannelAnswer(kind="closed", channel=self.name, reason=str(hangup))
                return
            if prompt.voted:
                continue  # one vote per prompt; later keys are ignored
            for line in editor.feed(data):
                if line is None:
                    prompt.ended = True
                    await term.write(f"{CLEAR_LINE}prompt dismissed: no vote given\n")
                    yield ChannelAnswer(kind="closed", channel=self.name, reason="dismissed")
                    return
                if not line.strip():
                    continue
                # Echo is off: keep what was typed visible above the answer to it.
                await term.write(f"{CLEAR_LINE}> {escape_text(line)}\n")
                try:
                    parsed = parse_answer(line, max_grant=max_grant, allow_grants=self.allow_grants)
                except AnswerRejected as exc:
                    await term.write(f"{exc}\n")
                    continue
                prompt.voted = parsed
                await term.write(f"{_describe_vote(parsed, who)}\n")
                yield ChannelAnswer(
                    kind="vote",
                    channel=self.name,
                    approver=who,
                    approve=parsed.approve,
                    grant_ttl=parsed.grant_ttl,
                    reason=parsed.reason,
                )
                break

    def _finish(self, request: ApprovalRequest, prompt: _Prompt) -> None:
        """Say how the prompt ended (when we know and have not said it) and restore the tty."""
        term = prompt.terminal
        if not prompt.ended:
            prompt.ended = True
            status = self._settled.get(request.id)
            if status is None:
                status = (
                    "prompt closed after your vote"
                    if prompt.voted
                    else "prompt closed: answered elsewhere or cancelled"
                )
            term.write_nowait(f"{CLEAR_LINE}{status}\n")
        term.close()

    async def settled(self, request: ApprovalRequest) -> None:
        """Print how ``request`` ended if its prompt is still open, and end that prompt."""
        status = render_status(request)
        self._settled[request.id] = status
        while len(self._settled) > _SETTLED_MEMORY:
            self._settled.pop(next(iter(self._settled)))
        prompt = self._prompts.get(request.id)
        if prompt is None or prompt.ended:
            return
        prompt.ended = True
        prompt.terminal.write_nowait(f"{CLEAR_LINE}{status}\n")
        if prompt.scope is not None:
            prompt.scope.cancel()

    # ------------------------------------------------------------------ TOTP codes

    async def ask_code(self, subject: str, request: ApprovalRequest, attempt: int) -> str | None:
        """Ask for a one-time code on the terminal, with echo off.

        Args:
            subject: Whose code is asked for (shown escaped).
            request: The call being re-authenticated (shown in full on the first attempt).
            attempt: 1-based attempt number.

        Returns:
            The typed code (stripped), or ``None`` when there is no usable terminal or the
            request expired before a code was typed. The code is never echoed or logged.
        """
        if not await self._take_turn(request.expires_at):
            return None
        try:
            try:
                term = Terminal.open(self.tty_path)
            except TerminalUnavailable:
                return None
            try:
                return await self._read_code(term, subject, request, attempt)
            except (OSError, TerminalClosed):
                return None
            finally:
                term.close()
        finally:
            self._release_turn()

    async def _read_code(
        self, term: Terminal, subject: str, request: ApprovalRequest, attempt: int
    ) -> str | None:
        term.set_mode(echo=False, canonical=True)
        if attempt <= 1:
            await term.write("\n" + render_request(request, now=self.clock()) + "\n")
        term.discard_input()
        await term.write(
            f"TOTP code for {escape_text(subject)} (attempt {attempt}/{self.code_attempts}): "
        )
        buffer = b""
        while b"\n" not in buffer and b"\x04" not in buffer:
            remaining = request.expires_at - self.clock()
            if remaining <= 0:
                await term.write("\nexpired: nothing ran\n")
                return None
            with anyio.move_on_after(min(remaining, 1.0)):
                chunk = await term.read()
                buffer += chunk
                if len(buffer) > 256:
                    buffer = buffer[-256:]
        await term.write("\n")
        return buffer.split(b"\n", 1)[0].decode("utf-8", "replace").strip()


def _describe_vote(parsed: ParsedAnswer, who: str) -> str:
    name = escape_text(who)
    if not parsed.approve:
        why = f": {escape_text(parsed.reason)}" if parsed.reason else ""
        return f"denied by {name}{why}"
    if parsed.grant_ttl:
        return f"approved by {name} for {format_duration(parsed.grant_ttl)}"
    return f"approved by {name} (this call only)"
