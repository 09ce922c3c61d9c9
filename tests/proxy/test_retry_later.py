"""Holds longer than the client's patience: the proxy answers a held call before the client
gives up ("waits for approval under request X; the identical call runs once approved"), the
request lives on for its policy timeout, and the identical call made again after a CLI
verdict runs exactly once, or hears the denial or expiry."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from agentguard.proxy.config import DEFAULT_ANSWER_HELD_AFTER, ProxyConfig
from tests.proxy.conftest import MODES, PYTHON, ProxyUnderTest, make_proxy

AGENTGUARD = str(Path(PYTHON).parent / "agentguard")
DEPLOY = {"env": "production", "service": "api", "version": "1.2"}
WINDOW = ("--answer-held-after", "1")


def _cli(proxy: ProxyUnderTest, *args: str, audit: bool = True
         ) -> subprocess.CompletedProcess[str]:
    """`agentguard ARGS` from another terminal on the proxy's store and audit log."""
    where = ["--store", proxy.store_url] + (["--audit", str(proxy.audit)] if audit else [])
    return subprocess.run([AGENTGUARD, *args, *where], env=proxy.env(), capture_output=True,
                          text=True, timeout=60)


def _pending(proxy: ProxyUnderTest) -> list[dict[str, Any]]:
    done = _cli(proxy, "approvals", "list", "--json", audit=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["requests"]


def _held_id(result: Any) -> str:
    text = result.content[0].text
    assert result.is_error, text
    assert "Retry later" in text and "will not help" not in text, text
    match = re.search(r"under request (\S+):", text)
    assert match, text
    return match.group(1)


def test_the_default_answers_before_common_clients_give_up() -> None:
    assert ProxyConfig().answer_held_after == DEFAULT_ANSWER_HELD_AFTER < 60


@pytest.mark.anyio
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", MODES)
async def test_an_approved_retry_runs_exactly_once(proxy: ProxyUnderTest, mode: str) -> None:
    async with proxy.client(proxy.ops(extra=WINDOW), mode) as client:
        first = await client.call_tool("deploy", DEPLOY)
        request_id = _held_id(first)
        assert [r["id"] for r in _pending(proxy)] == [request_id]  # alive after the answer
        # Asked again before anyone decided: the same request, still waiting.
        assert _held_id(await client.call_tool("deploy", DEPLOY)) == request_id
        approved = _cli(proxy, "approvals", "approve", request_id, "--as", "alice")
        assert approved.returncode == 0, approved.stderr
        ran = await client.call_tool("deploy", DEPLOY)
        assert not ran.is_error, ran.content[0].text
        assert "deployed api 1.2 to production" in ran.content[0].text
        # The approval was spent: the identical call once more is a new hold.
        again = _held_id(await client.call_tool("deploy", DEPLOY))
        assert again != request_id
        # A changed call does not ride the approval either.
        other = await client.call_tool("deploy", {**DEPLOY, "version": "1.3"})
        assert _held_id(other) not in (request_id, again)
    executed = [e for e in proxy.audit_events("call.executed") if e.get("tool") == "deploy"]
    assert [e["request_id"] for e in executed] == [request_id]


@pytest.mark.anyio
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", MODES)
async def test_a_denial_answers_the_retry_with_its_reason(proxy: ProxyUnderTest,
                                                          mode: str) -> None:
    async with proxy.client(proxy.ops(extra=WINDOW), mode) as client:
        request_id = _held_id(await client.call_tool("deploy", DEPLOY))
        denied = _cli(proxy, "approvals", "deny", request_id, "--as", "bob", "--reason",
                      "freeze until Monday")
        assert denied.returncode == 0, denied.stderr
        retry = await client.call_tool("deploy", DEPLOY)
        text = retry.content[0].text
        assert retry.is_error and "denied" in text and "freeze until Monday" in text, text
        assert "will not help" in text and "Retry later" not in text
    assert not proxy.audit_events("call.executed")


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_an_expired_hold_answers_the_retry_with_the_expiry(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, timeout="3s")
    # The retry hears the expiry for the policy's deny_cooldown after it (then a retry is a
    # new request); the test policy sets none.
    proxy.policy.write_text(proxy.policy.read_text().replace("deny_cooldown: 0s",
                                                             "deny_cooldown: 2m"))
    async with proxy.client(proxy.ops(extra=WINDOW), "legacy") as client:
        request_id = _held_id(await client.call_tool("deploy", DEPLOY))
        [request] = _pending(proxy)
        time.sleep(max(0.0, request["expires_at"] - time.time()) + 0.2)
        retry = await client.call_tool("deploy", DEPLOY)
        text = retry.content[0].text
        assert retry.is_error and "expired" in text and request_id in proxy.audit.read_text()
        assert "will not help" in text and "Retry later" not in text
    assert not proxy.audit_events("call.executed")


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_zero_waits_for_the_verdict(proxy: ProxyUnderTest) -> None:
    async with proxy.client(proxy.ops(extra=("--answer-held-after", "0")), "legacy") as client:
        import anyio

        async with anyio.create_task_group() as tg:
            tg.start_soon(proxy.decide, True)
            result = await client.call_tool("deploy", DEPLOY)
        assert not result.is_error, result.content[0].text


@pytest.mark.anyio
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", MODES)
async def test_over_streamable_http_the_retry_runs_once_approved(proxy: ProxyUnderTest,
                                                                 mode: str) -> None:
    from tests.proxy.conftest import OPS_SERVER, free_port, running

    port = free_port()
    argv = [PYTHON, *proxy.params(PYTHON, OPS_SERVER, "--root", str(proxy.sandbox), name="ops",
                                  extra=("--listen", f"127.0.0.1:{port}", *WINDOW)).args]
    async with running(argv, proxy.env(), port), \
            proxy.client(f"http://127.0.0.1:{port}/mcp", mode) as client:
        request_id = _held_id(await client.call_tool("deploy", DEPLOY))
        approved = _cli(proxy, "approvals", "approve", request_id, "--as", "alice")
        assert approved.returncode == 0, approved.stderr
        ran = await client.call_tool("deploy", DEPLOY)
        assert "deployed api 1.2 to production" in ran.content[0].text
        assert _held_id(await client.call_tool("deploy", DEPLOY)) != request_id
    executed = [e for e in proxy.audit_events("call.executed") if e.get("tool") == "deploy"]
    assert [e["request_id"] for e in executed] == [request_id]
