"""Low-level I/O on a terminal device (the controlling terminal, or a pty in tests).

An MCP stdio server owns stdin and stdout, so prompts open the terminal device itself. The
descriptor is non-blocking and awaited with anyio, so a prompt never blocks the event loop
and can be cancelled at once.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import unicodedata
from dataclasses import dataclass, field

import anyio

from agentguard.errors import AgentGuardError

try:
    import termios
except ImportError:  # pragma: no cover - Windows has no termios; the console is POSIX only
    termios = None  # type: ignore[assignment]

__all__ = [
    "CLEAR_LINE",
    "LineEditor",
    "Terminal",
    "TerminalClosed",
    "TerminalUnavailable",
]

#: Carriage return and "erase entire line": redraws the status line in place.
CLEAR_LINE = "\r\x1b[2K"

_READ_SIZE = 4096


class TerminalUnavailable(AgentGuardError, OSError):
    """The terminal cannot be opened or used (no controlling terminal, not a tty...)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class TerminalClosed(AgentGuardError, EOFError):
    """The terminal hung up while we were reading from it."""


class Terminal:
    """An open terminal device with its original mode saved for restoring.

    Use :meth:`open`; always :meth:`close` (which restores the mode) in a ``finally``.
    """

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self._saved: list | None = None
        self._closed = False

    @classmethod
    def open(cls, path: str) -> Terminal:
        """Open ``path`` read/write, non-blocking, without making it our controlling terminal.

        Raises:
            TerminalUnavailable: the device cannot be opened, is not a terminal, or belongs to
                another foreground process group (reading it would stop this process).
        """
        if termios is None:
            raise TerminalUnavailable(errno.ENOTSUP, "terminal prompts need POSIX termios")
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise TerminalUnavailable(exc.errno, f"cannot open {path}: {exc.strerror}") from exc
        try:
            if not os.isatty(fd):
                raise TerminalUnavailable(errno.ENOTTY, f"{path} is not a terminal")
            try:
                foreground = os.tcgetpgrp(fd)
            except OSError:
                foreground = None  # not our controlling terminal: no job control applies
            if foreground is not None and foreground != os.getpgrp():
                raise TerminalUnavailable(
                    errno.EBUSY,
                    f"{path} belongs to another foreground process group "
                    "(this process runs in the background)",
                )
            termios.tcgetattr(fd)
        except termios.error as exc:
            os.close(fd)
            raise TerminalUnavailable(errno.ENOTTY, f"{path}: {exc}") from exc
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path)

    def set_mode(self, *, echo: bool, canonical: bool) -> None:
        """Switch echo and line mode, saving the original mode once; flushes pending input.

        Raises:
            TerminalUnavailable: the mode cannot be changed.
        """
        try:
            self._set_mode(echo=echo, canonical=canonical)
        except termios.error as exc:
            raise TerminalUnavailable(errno.EIO, f"{self.path}: {exc}") from exc

    def _set_mode(self, *, echo: bool, canonical: bool) -> None:
        attrs = termios.tcgetattr(self.fd)
        if self._saved is None:
            self._saved = [list(a) if isinstance(a, list) else a for a in attrs]
        lflag = attrs[3]
        lflag = lflag | termios.ECHO if echo else lflag & ~termios.ECHO
        lflag = lflag | termios.ICANON if canonical else lflag & ~termios.ICANON
        attrs[3] = lflag
        if not canonical:
            attrs[6] = list(attrs[6])
            attrs[6][termios.VMIN] = 1
            attrs[6][termios.VTIME] = 0
        termios.tcsetattr(self.fd, termios.TCSAFLUSH, attrs)

    def size(self) -> tuple[int, int]:
        """(columns, lines) of the terminal; 80 x 24 when it does not say (a fresh pty)."""
        try:
            columns, lines = os.get_terminal_size(self.fd)
        except OSError:
            columns = lines = 0
        return columns or 80, lines or 24

    def restore(self) -> None:
        """Put back the mode saved by the first :meth:`set_mode` (idempotent, never raises)."""
        if self._saved is None or self._closed:
            return
        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(self.fd, termios.TCSANOW, self._saved)
        self._saved = None

    def discard_input(self) -> None:
        """Throw away anything typed ahead, so an old keystroke cannot answer a new prompt.

        Raises:
            TerminalUnavailable: the input queue cannot be flushed.
        """
        try:
            termios.tcflush(self.fd, termios.TCIFLUSH)
        except termios.error as exc:
            raise TerminalUnavailable(errno.EIO, f"{self.path}: {exc}") from exc

    async def write(self, text: str) -> None:
        """Write all of ``text``, waiting (without blocking the loop) while the device is full."""
        data = text.encode("utf-8", "replace")
        while data:
            try:
                written = os.write(self.fd, data)
            except BlockingIOError:
                await anyio.wait_writable(self.fd)
                continue
            except OSError as exc:
                raise TerminalClosed(f"{self.path}: {exc.strerror}") from exc
            data = data[written:]

    def write_nowait(self, text: str) -> None:
        """Best-effort write for cleanup paths that cannot await (never raises)."""
        if self._closed:
            return
        with contextlib.suppress(OSError):
            os.write(self.fd, text.encode("utf-8", "replace"))

    async def read(self) -> bytes:
        """Wait until input is available and return it.

        Raises:
            TerminalClosed: the terminal hung up.
        """
        while True:
            await anyio.wait_readable(self.fd)
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                continue
            except OSError as exc:  # EIO once the other side of a pty is gone
                raise TerminalClosed(f"{self.path}: {exc.strerror}") from exc
            if not data:
                raise TerminalClosed(f"{self.path}: end of input")
            return data

    def close(self) -> None:
        """Restore the saved mode and close the descriptor (idempotent, never raises)."""
        if self._closed:
            return
        self.restore()
        self._closed = True
        # Raises without an event loop (closed from a finaliser): then nothing is waiting.
        with contextlib.suppress(Exception):
            anyio.notify_closing(self.fd)
        with contextlib.suppress(OSError):
            os.close(self.fd)


@dataclass
class LineEditor:
    """Minimal line editing for a terminal in non-canonical mode.

    Handles backspace, Ctrl-U (erase line), Enter (``\\r`` or ``\\n``) and Ctrl-D on an empty
    line (end of input); swallows escape sequences (arrow keys) and other control
    characters, so the buffer only ever holds printable text.

    Attributes:
        buffer: The text typed so far on the current line.
        max_length: Longest line kept; extra characters are dropped.
    """

    buffer: str = ""
    max_length: int = 500
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )
    _escape: str = ""

    def feed(self, data: bytes) -> list[str | None]:
        """Consume typed bytes; return completed lines (``None`` for end of input)."""
        events: list[str | None] = []
        for ch in self._decoder.decode(data):
            if self._escape:
                self._escape += ch
                if self._escape_done():
                    self._escape = ""
                continue
            if ch in "\r\n":
                events.append(self.buffer)
                self.buffer = ""
            elif ch in "\x7f\x08":
                self.buffer = self.buffer[:-1]
            elif ch == "\x15":
                self.buffer = ""
            elif ch == "\x04":
                if not self.buffer:
                    events.append(None)
            elif ch == "\x1b":
                self._escape = ch
            elif unicodedata.category(ch)[0] == "C":
                continue
            elif len(self.buffer) < self.max_length:
                self.buffer += ch
        return events

    def _escape_done(self) -> bool:
        seq = self._escape
        if len(seq) == 2:
            return seq[1] not in "[O"  # ESC x: a two-character sequence
        return "\x40" <= seq[-1] <= "\x7e" or len(seq) > 16
