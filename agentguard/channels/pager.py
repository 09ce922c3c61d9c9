"""Screenfuls of text for a terminal prompt that must not lose its countdown.

The console reads keys itself (non-canonical mode on the terminal device), so it pages the
whole call by itself instead of handing the terminal to ``less``: the prompt keeps its
countdown, ends when the request settles elsewhere, and restores the terminal as always.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

__all__ = ["Pages"]

#: Keys that show the next screenful, and keys that leave the pager.
NEXT_KEYS = frozenset(" \r\nfj")
QUIT_KEYS = frozenset("qQ")


def _columns(ch: str) -> int:
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _rows(line: str, columns: int) -> list[str]:
    """``line`` cut into rows of at most ``columns`` terminal cells."""
    rows: list[str] = []
    row: list[str] = []
    used = 0
    for ch in line:
        width = _columns(ch)
        if used + width > columns and row:
            rows.append("".join(row))
            row, used = [], 0
        row.append(ch)
        used += width
    rows.append("".join(row))
    return rows


@dataclass
class Pages:
    """Text cut into screenfuls.

    Attributes:
        rows: Screen rows (long lines already wrapped at the terminal's width).
        height: Rows per screenful.
        shown: Rows shown so far.
    """

    rows: list[str]
    height: int
    shown: int = 0

    @classmethod
    def of(cls, text: str, *, columns: int, lines: int) -> Pages:
        """Cut ``text`` for a terminal of ``columns`` x ``lines`` (two lines stay for the
        prompt)."""
        columns = max(columns, 20)
        rows = [row for line in text.split("\n") for row in _rows(line, columns)]
        return cls(rows, max(1, lines - 2))

    @property
    def done(self) -> bool:
        """Every row has been shown."""
        return self.shown >= len(self.rows)

    def next_page(self) -> str:
        """The next screenful, newline-terminated (empty when done)."""
        chunk = self.rows[self.shown : self.shown + self.height]
        self.shown += len(chunk)
        return "".join(row + "\n" for row in chunk)

    def position(self) -> str:
        """``lines 1-22 of 240``."""
        return f"lines 1-{self.shown} of {len(self.rows)}"
