"""Start stdio upstreams before the proxy imports anything heavy, and hand them over.

``agentguard proxy ... -- CMD ARGS`` spends most of its start-up importing (the MCP SDK alone
takes about half a second), and its upstream, often a Python server importing the same SDK,
takes as long again. So the command line starts the upstream processes first, from what it
can read off its arguments (and a ``--config`` file) with nothing heavy imported, and the
upstream transport (:class:`~agentguard.proxy.upstream_io.RawStdio`) adopts a process started
here instead of spawning its own. The two start-ups overlap instead of adding up.

Fail closed: a process is adopted only when its command, arguments, environment and working
directory are exactly those the transport would have used (:func:`claim` compares all four);
otherwise the transport spawns as it always did. A command line this module does not fully
understand starts nothing early. A process nobody adopted is killed (:func:`discard`, run
once the proxy's upstreams are connected, and at exit); a restart after a crash never adopts
(each early process is claimed at most once).
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import NamedTuple

__all__ = [
    "INHERITED_ENV_VARS",
    "EarlyProcess",
    "Launch",
    "claim",
    "discard",
    "plan",
    "spawn",
    "start_early",
    "upstream_env",
]

INHERITED_ENV_VARS = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER")
"""What a stdio upstream inherits of the proxy's environment: the MCP SDK's
``get_default_environment`` (read here without importing the SDK; a difference would only
mean nothing is adopted, and a test keeps the two equal)."""

_VALUE_OPTIONS = frozenset({
    "--policy", "--config", "--store", "--audit", "--listen", "--public-url", "--passkey-page",
    "--trusted-proxy", "--name", "--principal", "--env", "--upstream-mode",
    "--answer-held-after", "--log-level"})
_FLAGS = frozenset({"--fast-path", "--no-fast-path", "--relay", "--no-relay"})


class Launch(NamedTuple):
    """How a stdio upstream is started: what :class:`RawStdio` would pass to the OS."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str


class EarlyProcess:
    """A started upstream awaiting adoption: the process and the proxy's ends of its pipes.

    Attributes:
        launch: How it was started.
        process: The child.
        to_child: Write end of the child's stdin.
        from_child: Read end of the child's stdout.
    """

    # A plain class: importing dataclasses would delay the spawn it describes.
    def __init__(self, launch: Launch, process: subprocess.Popen[bytes], to_child: int,
                 from_child: int) -> None:
        self.launch = launch
        self.process = process
        self.to_child = to_child
        self.from_child = from_child


_waiting: list[EarlyProcess] = []


def upstream_env(extra: Mapping[str, str], environ: Mapping[str, str] | None = None
                 ) -> dict[str, str]:
    """The environment of a stdio upstream: the inherited variables (never a shell function,
    ``()...``), unbuffered Python output, then the server's own ``env``."""
    environ = os.environ if environ is None else environ
    env = {key: value for key in INHERITED_ENV_VARS
           if (value := environ.get(key)) is not None and not value.startswith("()")}
    return env | {"PYTHONUNBUFFERED": "1"} | dict(extra)


def plan(args: Sequence[str]) -> list[Launch]:
    """The stdio upstreams ``agentguard proxy ARGS`` will start, or ``[]`` when the arguments
    are not plainly understood (then nothing starts early and the proxy spawns as usual).

    Understood: the options of ``agentguard proxy``, a ``-- CMD ARGS`` upstream and the stdio
    servers of a ``--config`` file.
    """
    try:
        split = list(args).index("--")
    except ValueError:
        split = len(args)
    options, command = list(args[:split]), list(args[split + 1:])
    values: dict[str, list[str]] = {}
    i = 0
    while i < len(options):
        token = options[i]
        name, eq, value = token.partition("=")
        if name in _FLAGS and not eq:
            i += 1
            continue
        if name not in _VALUE_OPTIONS:
            return []  # --help, --upstream-url, a positional, an option added later...
        if not eq:
            if i + 1 >= len(options):
                return []
            i += 1
            value = options[i]
        values.setdefault(name, []).append(value)
        i += 1
    launches: list[Launch] = []
    if "--config" in values:
        from_file = _from_config(values["--config"][-1])
        if from_file is None:
            return []
        launches += from_file
    if command:
        env: dict[str, str] = {}
        for pair in values.get("--env", []):
            key, sep, value = pair.partition("=")
            if not sep or not key:
                return []
            env[key] = value
        launches.append(Launch(tuple(command), upstream_env(env), os.getcwd()))
    return launches


def _from_config(path: str) -> list[Launch] | None:
    """The stdio servers of a config file, resolved as the proxy resolves them (None: the
    file does not load; the command line reports why, and nothing starts early)."""
    try:
        from agentguard.proxy.config import load_config

        config = load_config(path)
    except Exception:
        return None
    return [Launch((server.command, *server.args), upstream_env(server.env),
                   server.cwd or os.getcwd())
            for server in config.servers if server.command is not None]


def spawn(launch: Launch) -> EarlyProcess | None:
    """Start one upstream as :class:`RawStdio` would (its own session, stderr shared), and
    keep it for :func:`claim`. None if it cannot start (the transport will say why)."""
    child_in, to_child = os.pipe()
    from_child, child_out = os.pipe()
    try:
        process = subprocess.Popen(
            list(launch.argv), env=dict(launch.env), cwd=launch.cwd, stdin=child_in,
            stdout=child_out, stderr=sys.stderr, start_new_session=True)
    except (OSError, ValueError):
        os.close(to_child)
        os.close(from_child)
        return None
    finally:
        os.close(child_in)
        os.close(child_out)
    early = EarlyProcess(launch, process, to_child, from_child)
    if not _waiting:
        atexit.register(discard)
    _waiting.append(early)
    return early


def start_early(args: Sequence[str]) -> None:
    """Start the stdio upstreams of ``agentguard proxy ARGS`` now (see the module doc).

    Never raises: whatever goes wrong here, the proxy starts its upstreams as it always did
    and reports what it finds then."""
    try:
        for launch in plan(args):
            spawn(launch)
    except Exception:  # e.g. a working directory that no longer exists
        return


def claim(launch: Launch) -> EarlyProcess | None:
    """Take the early process started exactly as ``launch`` says, if there is one (each is
    taken at most once). One that already exited is taken too: the transport then meets its
    end as it would have met its own child's, and the supervisor counts the restart."""
    for early in _waiting:
        if early.launch.argv == tuple(launch.argv) and dict(early.launch.env) == dict(
                launch.env) and early.launch.cwd == launch.cwd:
            _waiting.remove(early)
            return early
    return None


def discard(grace: float = 1.0) -> int:
    """Stop every early process nobody adopted: its stdin closed, then SIGTERM to its process
    group, SIGKILL after ``grace`` seconds. Returns how many there were."""
    stopped = list(_waiting)
    _waiting.clear()
    for early in stopped:
        for fd in (early.to_child, early.from_child):
            with suppress(OSError):
                os.close(fd)
        _signal(early.process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for early in stopped:
        while early.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if early.process.poll() is None:
            _signal(early.process, signal.SIGKILL)
            early.process.wait()
    return len(stopped)


def _signal(process: subprocess.Popen[bytes], sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
