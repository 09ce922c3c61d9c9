"""Make untrusted text safe to show a human: what the approver sees is what runs.

Every character that could hide, reorder or restyle text on a terminal or in a chat client
is replaced by a visible escape (``\\x1b``, ``\\u202e``...). The escape is reversible: the
backslash itself is escaped, so :func:`unescape` gives back the exact original string.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

__all__ = ["escape_text", "render_args", "truncate", "unescape"]

# Bidi controls, zero-width and other invisible format characters are category Cf; they are
# escaped along with controls (Cc), separators that break lines (Zl, Zp), surrogates (Cs),
# private use (Co) and unassigned (Cn) code points.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_cache: dict[str, bool] = {}


def _unsafe(ch: str) -> bool:
    hit = _cache.get(ch)
    if hit is None:
        hit = unicodedata.category(ch) in _UNSAFE_CATEGORIES or (
            ch != " " and unicodedata.category(ch) == "Zs"
        )
        if len(_cache) < 4096:
            _cache[ch] = hit
    return hit


def escape_text(text: str) -> str:
    """Escape control, ANSI, bidi, zero-width, tag and other invisible characters.

    Printable text (including non-Latin scripts) is kept as is; the backslash is doubled so
    that the escaping can be undone exactly.
    """
    out: list[str] = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif _unsafe(ch):
            code = ord(ch)
            if code <= 0xFF:
                out.append(f"\\x{code:02x}")
            elif code <= 0xFFFF:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def unescape(text: str) -> str:
    """Invert :func:`escape_text` exactly."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < len(text) else ""
        width = {"x": 2, "u": 4, "U": 8}.get(nxt)
        if nxt == "\\":
            out.append("\\")
            i += 2
        elif width:
            out.append(chr(int(text[i + 2 : i + 2 + width], 16)))
            i += 2 + width
        else:
            raise ValueError(f"invalid escape at position {i}")
    return "".join(out)


def truncate(text: str, limit: int) -> tuple[str, bool]:
    """Cut ``text`` to ``limit`` characters; return it and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def _render(value: Any, indent: int, out: list[str]) -> None:
    pad = "  " * indent
    if isinstance(value, str):
        # Quotes become \x22 so a value cannot close its own string on screen.
        out.append('"' + escape_text(value).replace('"', "\\x22") + '"')
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        out.append("{\n")
        for i, (key, item) in enumerate(sorted(value.items(), key=lambda kv: str(kv[0]))):
            out.append(f"{pad}  ")
            _render(str(key), indent + 1, out)
            out.append(": ")
            _render(item, indent + 1, out)
            out.append(",\n" if i < len(value) - 1 else "\n")
        out.append(pad + "}")
    elif isinstance(value, list | tuple):
        if not value:
            out.append("[]")
            return
        out.append("[\n")
        for i, item in enumerate(value):
            out.append(f"{pad}  ")
            _render(item, indent + 1, out)
            out.append(",\n" if i < len(value) - 1 else "\n")
        out.append(pad + "]")
    elif value is None or isinstance(value, bool | int | float):
        out.append(json.dumps(value))
    else:
        out.append(escape_text(repr(value)))


def render_args(args: Any, *, limit: int = 2000) -> tuple[str, bool]:
    """Render arguments as escaped JSON-like text for a human; return (text, truncated).

    Each string is escaped with :func:`escape_text` (and its quotes shown as ``\\x22``), so a
    newline in a value shows as ``\\x0a`` and cannot fake a new line of the prompt;
    :func:`unescape` of a shown string gives back exactly the value that runs.
    """
    out: list[str] = []
    _render(args, 0, out)
    return truncate("".join(out), limit)
