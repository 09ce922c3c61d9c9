"""Approve or deny held calls on the controlling terminal.

The prompt opens the terminal device (``/dev/tty``), never stdin/stdout, which an MCP stdio
server uses for protocol traffic. Typed-ahead input is discarded before each prompt so that a
keystroke meant for something else cannot approve a call; a live countdown shows the time
left; the terminal mode is restored however the prompt ends.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass

import anyio

from agentguard.approvals import approver_problem
from agentguard.channels.answers import (
    AnswerRejected,
    ParsedAnswer,
    answer_help,
    parse_answer,
    wants_full_view,
)
from agentguard.channels.base import ChannelAnswer
from agentguard.channels.pager import NEXT_KEYS, QUIT_KEYS, Pages
from agentguard.channels.render import arguments_truncated, render_request, render_status
from agentguard.channels.tty import (
    CLEAR_LINE,
    LineEditor,
    Terminal,
    TerminalClosed,
    TerminalUnavailable,
)
from agentguard.durations import format_duration
from agentguard.sanitize import escape_text
from agentguard.types import ApprovalRequest

__all__ = ["ConsoleChannel"]

_SETTLED_MEMORY = 256
_VIEW_HINT = "type 'v' to read the whole call"


@dataclass
class _Prompt:
    """State of one open prompt, shared with :meth:`ConsoleChannel.settled`.

    Attributes:
        terminal: The open terminal.
        ended: Nothing more is read or yielded.
        voted: The answer given (one per prompt).
        refused: Why that vote will not count, when known before it was handed over.
        truncated: The arguments were cut to fit the screen.
        viewed: The whole call was opened (``v``); approving a truncated call needs it.
        pages: The whole call being paged through, while the pager is open.
        scope: Cancels the current read (the countdown tick, or :meth:`settled`).
    """

    terminal: Terminal
    ended: bool = False
    voted: ParsedAnswer | None = None
    refused: str | None = None
    truncated: bool = False
    viewed: bool = False
    pages: Pages | None = None
    scope: anyio.CancelScope | None = None


class ConsoleChannel:
    """Ask the human at the controlling terminal (implements ``ApprovalChannel``).

    One prompt is shown at a time; further requests wait their turn (and expire if their
    time runs out while waiting). When the arguments are too long for the screen, ``v``
    pages through the whole call, and approving needs that first. Also provides
    :meth:`ask_code`, the ``ask_code`` callable the TOTP reauthenticator takes.

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
    ) -> AsyncGenerator[ChannelAnswer, None]:
        term = prompt.terminal
        max_grant = request.approval.max_grant if self.allow_grants else 0.0
        prompt.truncated = arguments_truncated(request)
        editor = LineEditor()
        try:
            term.set_mode(echo=False, canonical=False)
            shown = render_request(request, now=self.clock(), full_hint=_VIEW_HINT)
            await term.write("\n" + shown + "\n")
            usage = answer_help(max_grant, self.allow_grants, viewable=prompt.truncated)
            await term.write(f"answering as {escape_text(who)}; {usage}\n")
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
            await term.write(
                f"{CLEAR_LINE}[{format_duration(max(1, int(remaining)))} left] "
                f"{self._status(prompt, editor)}"
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
            if prompt.pages is not None:
                await self._page(prompt, data)
                continue
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
                if wants_full_view(line):
                    editor.buffer = ""  # keys typed along with 'v' were meant for the old screen
                    await self._open_pages(request, prompt)
                    break
                try:
                    parsed = parse_answer(
                        line, max_grant=max_grant, allow_grants=self.allow_grants,
                        needs_view=prompt.truncated and not prompt.viewed)
                except AnswerRejected as exc:
                    await term.write(f"{exc}\n")
                    continue
                prompt.voted = parsed
                # The guard counts the vote (cast_vote) and does not tell a channel how that
                # went; the approver check is the one cast_vote applies, asked here so the
                # human is never told "approved" for a vote that will not count.
                prompt.refused = approver_problem(request, who)
                if prompt.refused is not None:
                    await term.write(f"vote not counted: {escape_text(prompt.refused)}\n")
                else:
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

    @staticmethod
    def _status(prompt: _Prompt, editor: LineEditor) -> str:
        if prompt.pages is not None:
            return f"-- {prompt.pages.position()}: space for more, q to answer --"
        if prompt.refused is not None:
            return "your vote was not counted; waiting for the request to settle"
        if prompt.voted:
            return "vote recorded; waiting for the request to settle"
        return f"> {escape_text(editor.buffer)}"

    async def _open_pages(self, request: ApprovalRequest, prompt: _Prompt) -> None:
        """Start paging through the whole call (``v``)."""
        columns, lines = prompt.terminal.size()
        whole = render_request(request, arg_limit=2**62, now=self.clock())
        prompt.pages = Pages.of(whole, columns=columns, lines=lines)
        prompt.viewed = True
        await prompt.terminal.write(f"{CLEAR_LINE}--- the whole call ---\n")
        await self._page(prompt, b" ")

    async def _page(self, prompt: _Prompt, data: bytes) -> None:
        """Keys while paging: space or Enter shows the next screenful, q goes back."""
        pages = prompt.pages
        assert pages is not None
        for key in data.decode("utf-8", "replace"):
            if key in QUIT_KEYS:
                await prompt.terminal.write(
                    f"{CLEAR_LINE}--- stopped at {pages.position()}; 'v' shows it again ---\n")
                prompt.pages = None
                return
            if key in NEXT_KEYS:
                await prompt.terminal.write(CLEAR_LINE + pages.next_page())
                if pages.done:
                    await prompt.terminal.write("--- end of the call ---\n")
                    prompt.pages = None
                    return

    def _finish(self, request: ApprovalRequest, prompt: _Prompt) -> None:
        """Say how the prompt ended (when we know and have not said it) and restore the tty."""
        term = prompt.terminal
        if not prompt.ended:
            prompt.ended = True
            status = self._settled.get(request.id)
            if status is None and prompt.refused is not None:
                status = "prompt closed; your vote was not counted"
            elif status is None:
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
        return f"denied by {name}: {escape_text(parsed.reason)}"
    if parsed.grant_ttl:
        return f"approved by {name} for {format_duration(parsed.grant_ttl)}"
    return f"approved by {name} (this call only)"
