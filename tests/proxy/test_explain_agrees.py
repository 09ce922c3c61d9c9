"""`agentguard policy explain` answers what the proxy does: with the tool's annotations read
from the definitions the proxy pinned, its verdict (forwarded / held / refused) is the one the
proxy acted on, call by call."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.proxy.conftest import PYTHON, ProxyUnderTest

AGENTGUARD = str(Path(PYTHON).parent / "agentguard")
CALLS = [
    ("get_status", {"service": "api"}),                     # read rule: forwarded
    ("deploy", {"env": "staging", "service": "api", "version": "1"}),     # write rule
    ("deploy", {"env": "production", "service": "api", "version": "1"}),  # held
    ("purge_cache", {}),                                    # no rule, no annotations: held
    ("delete_file", {"path": "x.txt"}),                     # destructive: held
]


def _explain(proxy: ProxyUnderTest, tool: str, args: dict, *extra: str) -> dict:
    done = subprocess.run(
        [AGENTGUARD, "policy", "explain", str(proxy.policy), "--server", "ops", "--json",
         "--call", json.dumps({"tool": tool, "args": args}), *extra],
        env=proxy.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.anyio
@pytest.mark.timeout(180)
async def test_explain_from_the_pins_matches_what_the_proxy_did(proxy: ProxyUnderTest) -> None:
    did: list[str] = []
    async with proxy.client(proxy.ops(extra=("--answer-held-after", "1")), "legacy") as client:
        for tool, args in CALLS:
            result = await client.call_tool(tool, args)
            text = result.content[0].text
            did.append("forwarded" if not result.is_error else
                       "held" if "Retry later" in text else "refused")
    said = [_explain(proxy, tool, args, "--store", proxy.store_url)["proxy"]["action"]
            for tool, args in CALLS]
    assert said == did == ["forwarded", "forwarded", "held", "held", "held"]


def test_given_annotations_count_as_the_proxy_counts_them(proxy: ProxyUnderTest) -> None:
    # No annotations at all: MCP's defaults (destructive, open-world) - held.
    bare = _explain(proxy, "purge_cache", {}, "--annotations", "{}")
    assert bare["proxy"]["action"] == "held" and bare["proxy"]["hints"]["destructive"]
    honest = _explain(proxy, "get_status", {"service": "api"}, "--annotations",
                      '{"readOnlyHint": true, "openWorldHint": false}')
    assert honest["proxy"]["action"] == "forwarded"
    assert "without the guard" in honest["proxy"]["summary"]


def test_a_tool_the_store_never_saw_is_a_clear_error(proxy: ProxyUnderTest) -> None:
    done = subprocess.run(
        [AGENTGUARD, "policy", "explain", str(proxy.policy), "--server", "ops", "--call",
         '{"tool": "nope"}', "--store", proxy.store_url], env=proxy.env(),
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "holds no definition of ops/nope" in done.stderr


def test_check_warns_when_unknown_tool_allow_still_holds_unannotated_tools(
        tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\ndefaults: {unknown_tool: allow}\nclasses:\n"
                      "  read: {require: allow}\n  write: {require: allow}\n"
                      "  destructive: {require: approve, approvers: [alice]}\n")
    done = subprocess.run([AGENTGUARD, "policy", "check", str(policy)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    assert "without annotations counts as destructive" in done.stderr
