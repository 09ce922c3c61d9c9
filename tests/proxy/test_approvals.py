"""Held calls through the proxy: the approver terminal, expiry, and MCP elicitation."""

from __future__ import annotations

import anyio
import pytest
from mcp.types import ElicitResult

from tests.proxy.conftest import MODES, Elicitations, ProxyUnderTest, make_proxy

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("approve", [True, False])
async def test_held_call_waits_for_the_approver_terminal(proxy: ProxyUnderTest, mode: str,
                                                         approve: bool) -> None:
    victim = proxy.sandbox / "keep.txt"
    victim.write_text("data")
    outcome: dict = {}
    async with proxy.client(proxy.ops(), mode) as client:
        async def call() -> None:
            outcome["result"] = await client.call_tool("delete_file", {"path": "keep.txt"})

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            request = await proxy.decide(approve, reason="" if approve else "not today")
    assert request.call["tool"] == "delete_file" and request.call["server"] == "ops"
    result = outcome["result"]
    if approve:
        assert not result.is_error and result.content[0].text == "deleted keep.txt"
        assert not victim.exists()
    else:
        assert result.is_error
        text = result.content[0].text
        assert "denied" in text and "not today" in text and "Nothing ran" in text
        assert victim.exists()
    assert proxy.audit_events("challenge.created")


@pytest.mark.parametrize("mode", MODES)
async def test_held_call_expires_and_says_so(tmp_path, mode: str) -> None:
    proxy = make_proxy(tmp_path, timeout="1s")
    async with proxy.client(proxy.ops(), mode) as client:
        result = await client.call_tool("deploy", {"env": "production", "service": "api",
                                                   "version": "2"})
        assert result.is_error
        text = result.content[0].text
        assert "expired" in text and "'prod-deploy'" in text and "will not help" in text
        status = await client.call_tool("get_status", {"service": "api"})
        assert "version 1.4.2" in status.content[0].text  # nothing was deployed
    assert proxy.audit_events("challenge.expired")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("approve", [True, False])
async def test_elicitation_channel_asks_the_clients_user(proxy: ProxyUnderTest, mode: str,
                                                         approve: bool) -> None:
    answers = Elicitations([ElicitResult(action="accept", content={"approve": approve})])
    async with proxy.client(proxy.ops(), mode, elicitation_callback=answers) as client:
        result = await client.call_tool("restart_service", {"service": "billing"})
        status = await client.call_tool("get_status", {"service": "billing"})
    assert len(answers.messages) == 1
    assert "restart_service" in answers.messages[0] and "billing" in answers.messages[0]
    if approve:
        assert result.content[0].text == "restarted billing (1 restarts)"
        assert "restarts 1" in status.content[0].text
    else:
        assert result.is_error and "denied" in result.content[0].text
        assert "restarts 0" in status.content[0].text
    voters = [e.get("approvers") for e in proxy.audit_events("call.executed")]
    assert voters == ([["mcp-client:mcp"]] if approve else [])


async def test_the_elicitation_form_shows_the_whole_call_never_a_cut_one(
        proxy: ProxyUnderTest) -> None:
    service = "billing-" + "x" * 2_181 + "-end"  # past the 2,000-character display limit
    answers = Elicitations([ElicitResult(action="accept", content={"approve": False})])
    async with proxy.client(proxy.ops(), "legacy", elicitation_callback=answers) as client:
        await client.call_tool("restart_service", {"service": service})
    assert len(answers.messages) == 1
    assert service in answers.messages[0] and "truncated" not in answers.messages[0]


@pytest.mark.parametrize("mode", MODES)
async def test_elicitation_is_never_asked_for_rules_with_approvers(proxy: ProxyUnderTest,
                                                                   mode: str) -> None:
    answers = Elicitations(default=ElicitResult(action="accept", content={"approve": True}))
    outcome: dict = {}
    async with proxy.client(proxy.ops(), mode, elicitation_callback=answers) as client:
        async def call() -> None:
            outcome["r"] = await client.call_tool("read_secret", {"path": "prod/db-password"})

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await proxy.decide(False, approver="carol")
    assert answers.messages == []  # the client's say-so cannot approve a secret read
    assert outcome["r"].is_error and "hunter2" not in outcome["r"].content[0].text


@pytest.mark.parametrize("mode", MODES)
async def test_a_held_call_reports_progress_while_it_waits(proxy: ProxyUnderTest,
                                                          mode: str) -> None:
    messages: list[str] = []
    waiting = anyio.Event()

    async def progress(p: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")
        if message and "waiting for approval" in message:
            waiting.set()

    outcome: dict = {}
    async with proxy.client(proxy.ops(), mode) as client:
        async def call() -> None:
            outcome["r"] = await client.call_tool(
                "deploy", {"env": "production", "service": "billing", "version": "7"},
                progress_callback=progress)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            with anyio.fail_after(30):
                await waiting.wait()  # the proxy says it is holding the call
            await proxy.decide(True, approver="alice")
    assert outcome["r"].content[0].text == "deployed billing 7 to production"
    assert any("held by agentguard" in m for m in messages)


async def test_request_state_is_a_single_use_key_bound_to_the_call(
        proxy: ProxyUnderTest) -> None:
    """2026-07-28: the client echoes requestState, but the ledger stays in the proxy."""
    from mcp.shared.exceptions import MCPError
    from mcp.types import InputRequiredResult

    # The callback only declares the capability; the rounds are driven by hand below.
    async with proxy.client(proxy.ops(), "auto", elicitation_callback=Elicitations()) as client:
        session = client.session
        args = {"service": "api"}
        first = await session.call_tool("restart_service", args, allow_input_required=True)
        assert isinstance(first, InputRequiredResult)
        (key, question), = first.input_requests.items()
        assert "restart_service" in question.params.message
        state = first.request_state
        yes = {key: ElicitResult(action="accept", content={"approve": True})}
        for bad_state, bad_args in ((state[:-2] + "xx", args), (state, {"service": "billing"})):
            with pytest.raises(MCPError) as err:
                await session.call_tool("restart_service", bad_args, input_responses=yes,
                                        request_state=bad_state, allow_input_required=True)
            assert err.value.error.code == -32602
        # The mismatched retry above burned the key: a stolen state cannot be raced either.
        with pytest.raises(MCPError):
            await session.call_tool("restart_service", args, input_responses=yes,
                                    request_state=state, allow_input_required=True)
        status = await client.call_tool("get_status", {"service": "billing"})
        assert "restarts 0" in status.content[0].text
        status = await client.call_tool("get_status", {"service": "api"})
        assert "restarts 0" in status.content[0].text  # nothing ran
