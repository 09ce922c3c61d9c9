"""The official MCP conformance suite scores ``agentguard proxy`` as it scores the server behind
it (issue 18): every check that passes direct passes through the proxy, on both upstream
transports and both protocol eras towards the upstream.

Needs Node 22 and npm ``@modelcontextprotocol/conformance`` in the cache
(``python -m tests.conformance.run --install``; CI's ``.ci/run`` does it). Skipped without them,
a failure with ``AGENTGUARD_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import services_required

from .run import MODES, Counts, Suite, find_suite, run_mode, total

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# Server scenarios of @modelcontextprotocol/conformance 0.1.16 (`conformance list --server`).
SCENARIOS = (
    "server-initialize", "logging-set-level", "ping", "completion-complete", "tools-list",
    "tools-call-simple-text", "tools-call-image", "tools-call-audio",
    "tools-call-embedded-resource", "tools-call-mixed-content", "tools-call-with-logging",
    "tools-call-error", "tools-call-with-progress", "tools-call-sampling",
    "tools-call-elicitation", "json-schema-2020-12", "elicitation-sep1034-defaults",
    "server-sse-polling", "server-sse-multiple-streams", "elicitation-sep1330-enums",
    "resources-list", "resources-read-text", "resources-read-binary", "resources-templates-read",
    "resources-subscribe", "resources-unsubscribe", "prompts-list", "prompts-get-simple",
    "prompts-get-with-args", "prompts-get-embedded-resource", "prompts-get-with-image",
    "dns-rebinding-protection",
)
PROXY_MODES = tuple(m for m in MODES if m != "direct")

# Where the proxy scores differently from direct today: (mode, scenario) -> why. Strict: when
# a fix lands the test XPASSes, fails, and the entry must go.
KNOWN_PROXY_DIFFERENCES: dict[tuple[str, str], str] = {}


class Runs:
    """Each mode run once per module, on first use."""

    def __init__(self, suite: Suite, out: Path) -> None:
        self.suite, self.out = suite, out
        self._scores: dict[str, dict[str, Counts] | Exception] = {}

    def __getitem__(self, mode: str) -> dict[str, Counts]:
        if mode not in self._scores:
            try:
                self._scores[mode] = run_mode(self.suite, mode, self.out)
            except Exception as exc:  # reported by every test of the mode, run once
                self._scores[mode] = exc
        found = self._scores[mode]
        if isinstance(found, Exception):
            raise RuntimeError(f"running the suite against {mode} failed") from found
        return found


@pytest.fixture(scope="module")
def suite() -> Suite:
    found = find_suite()
    if found is None:
        reason = ("Node 22 + the MCP conformance suite are not installed "
                  "(python -m tests.conformance.run --install, with npm)")
        if services_required():
            pytest.fail(f"{reason}; AGENTGUARD_REQUIRE_SERVICES=1 requires them")
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def runs(suite: Suite, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(suite, tmp_path_factory.mktemp("conformance"))


def test_suite_has_the_scenarios_we_compare(suite: Suite) -> None:
    listed = subprocess.run(suite.command("list", "--server"), capture_output=True, text=True,
                            check=True, timeout=120).stdout
    names = {line.strip()[2:].split()[0] for line in listed.splitlines()
             if line.strip().startswith("- ")}
    assert names == set(SCENARIOS)


def test_direct_passes_every_check(runs: Runs) -> None:
    direct = runs["direct"]
    assert set(direct) == set(SCENARIOS)
    failing = {s: c for s, c in direct.items() if c[1]}
    assert not failing, f"our target server fails (success, failure, warning): {failing}"
    assert total(direct) == (44, 0)


def _cases() -> list[object]:
    cases = []
    for mode in PROXY_MODES:
        for scenario in SCENARIOS:
            marks = []
            if (mode, scenario) in KNOWN_PROXY_DIFFERENCES:
                marks.append(pytest.mark.xfail(reason=KNOWN_PROXY_DIFFERENCES[mode, scenario],
                                               strict=True))
            cases.append(pytest.param(mode, scenario, marks=marks, id=f"{mode}:{scenario}"))
    return cases


@pytest.mark.parametrize(("mode", "scenario"), _cases())
def test_proxy_scores_what_direct_scores(runs: Runs, mode: str, scenario: str) -> None:
    direct, proxied = runs["direct"][scenario], runs[mode].get(scenario)
    assert proxied == direct, (
        f"{scenario} through {mode}: {proxied} against {direct} direct (success, failure, "
        f"warning); see {runs.out / mode / 'suite.txt'}")
