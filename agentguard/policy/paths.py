"""Paths in call arguments: one spelling per path, so a rule sees what the tool will open.

A glob on the raw text is fooled by spelling: ``staging/../prod/db``, ``prod//db`` and
``./prod/db`` all name ``prod/db`` to the tool, yet ``prod/**`` matches none of them. The
``path`` operator normalises the argument first, then applies the same globs as ``glob``:

- ``\\`` is a separator too (an upstream on Windows reads it as one);
- empty segments (``//``, a trailing ``/``) and ``.`` segments are dropped;
- ``..`` removes the segment before it.

A leading ``/`` is a root like the start of a relative path: a ``..`` that would climb above
either root (``../x``, ``a/../../x``, ``/../etc``) is refused, as is a NUL character or a
value that is not a string. A refusal is never "no match" — no match would let the call fall
through to a later, more permissive rule — so the matcher raises :class:`ArgumentRefused` and
the classifier turns it into a refusal (see :meth:`Classifier.classify`).

Absolute paths: a pattern without a leading ``/`` (``prod/**``) is matched from the root
however the path is spelled, so ``prod/db`` and ``/prod/db`` alike (secret stores, object keys
and most tool roots read them as one); a pattern with a leading ``/`` (``/tmp/**``) matches
absolute paths only, so a relative ``tmp/x`` (resolved against a directory the policy cannot
know) never satisfies it.
"""

from __future__ import annotations

from agentguard.errors import AgentGuardError

__all__ = ["ArgumentRefused", "UnsafePath", "normalise_path", "pattern_problem"]


class UnsafePath(AgentGuardError, ValueError):
    """A path that names nothing a rule can reason about (climbs above its root, has a NUL)."""


class ArgumentRefused(AgentGuardError):
    """A rule cannot match this argument safely, so the call must be refused.

    Raised by a predicate while a rule is tried; caught once, by the classifier.

    Attributes:
        rule_id: The rule whose condition looked at the argument.
        arg: Dotted path of the argument (``path``, ``target.file``).
        why: What is wrong with it, e.g. ``climbs above its root``.
    """

    def __init__(self, rule_id: str | None, arg: str, why: str) -> None:
        self.rule_id = rule_id
        self.arg = arg
        self.why = why
        super().__init__(f"argument {arg!r} {why}")


def normalise_path(text: str) -> str:
    """The one spelling of ``text``: ``\\`` as ``/``; no ``.``, ``..``, empty segment or
    trailing ``/``; a leading ``/`` kept. The empty relative path is ``.``.

    Raises:
        UnsafePath: ``text`` contains a NUL or climbs above its root.
    """
    if "\x00" in text:
        raise UnsafePath("contains a NUL character")
    unified = text.replace("\\", "/")
    rooted = unified.startswith("/")
    kept: list[str] = []
    for segment in unified.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not kept:
                raise UnsafePath("climbs above its root ('..' past the start)")
            kept.pop()
        else:
            kept.append(segment)
    body = "/".join(kept)
    return "/" + body if rooted else body or "."


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be a ``path`` glob, or None when it can.

    A pattern is written in normal form: it is compared with normalised paths, so
    ``prod//db``, ``./prod`` or ``prod/`` would never match anything and ``..`` means nothing
    inside a glob.
    """
    if not pattern:
        return "a path pattern cannot be empty"
    try:
        normal = normalise_path(pattern)
    except UnsafePath as exc:
        return f"path pattern {pattern!r} {exc}"
    if normal != pattern:
        return (f"path pattern {pattern!r} is not in normal form (paths are compared "
                f"normalised): write {normal!r}")
    return None
