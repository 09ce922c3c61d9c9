"""End to end: a guarded function waits while ANOTHER PROCESS (`agentguard serve`) receives
the Slack click over HTTP and votes on the shared SQLite store; the function runs once."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from agentguard import Guard, Policy, guarded
from agentguard.audit.jsonl import JsonlAuditLog
from agentguard.audit.verify import verify_log
from agentguard.channels.slack import SlackChannel
from agentguard.channels.slack.blocks import ACTION_APPROVE, ACTION_DENY
from agentguard.channels.webhook import WebhookChannel, sign
from agentguard.context import acting_as
from agentguard.store import SQLiteStore
from tests.channels.slack.fake_slack import (
    BOT_TOKEN,
    SIGNING_SECRET,
    FakeSlack,
    block_actions,
    buttons,
    http_post,
    signed,
)
from tests.channels.slack.harness import POLICY, settings_for

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
WEBHOOK_SECRET = "whsec-end-to-end"


@asynccontextmanager
async def serve_process(tmp_path: Path, fake: FakeSlack) -> AsyncIterator[str]:
    """`agentguard serve --slack --webhook` in a subprocess; yield its base URL."""
    env = {**os.environ, "AGENTGUARD_HOME": str(tmp_path / "home"),
           "AGENTGUARD_SLACK_BOT_TOKEN": BOT_TOKEN,
           "AGENTGUARD_SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "AGENTGUARD_SLACK_API_URL": fake.base_url,
           "AGENTGUARD_WEBHOOK_SECRET": WEBHOOK_SECRET}
    env.pop("AGENTGUARD_SLACK_CONFIG", None)
    stderr = (tmp_path / "serve.stderr").open("wb")
    process: Process = await anyio.open_process(
        [sys.executable, "-c", "from agentguard.cli import main; main()",
         "serve", "--slack", "--webhook",
         "--port", "0", "--store", f"sqlite:///{tmp_path / 'state.db'}",
         "--audit", str(tmp_path / "audit.jsonl")],
        env=env, stderr=stderr, cwd=os.getcwd())
    try:
        seen = b""
        assert process.stdout is not None
        with anyio.fail_after(30):
            while not (found := re.search(rb"listening on (http://[\d.:]+)", seen)):
                chunk = await process.stdout.receive()
                seen += chunk
        yield found.group(1).decode()
    except BaseException:
        stderr.flush()
        print((tmp_path / "serve.stderr").read_text(errors="replace"), file=sys.stderr)
        raise
    finally:
        process.terminate()
        with anyio.move_on_after(10):
            await process.wait()
        stderr.close()


async def test_approval_arrives_from_another_process(tmp_path: Path, fake_slack: FakeSlack
                                                     ) -> None:
    ran: list[str] = []
    store = SQLiteStore(tmp_path / "state.db")
    audit = JsonlAuditLog(tmp_path / "audit.jsonl")
    guard = Guard(Policy.from_yaml(POLICY), store=store, audit=audit,
                  channels=[SlackChannel(settings_for(fake_slack))])

    @guarded(guard=guard)
    async def restart(svc: str) -> str:
        ran.append(svc)
        return f"restarted {svc}"

    async with guard, serve_process(tmp_path, fake_slack) as base:
        url = base + "/slack/interactions"
        async with anyio.create_task_group() as tg:
            result: dict[str, str] = {}

            async def agent() -> None:
                with acting_as("agent:support-bot"):
                    result["value"] = await restart("db")

            tg.start_soon(agent)
            (post,) = await fake_slack.wait("chat.postMessage")
            request_id = buttons(post)[ACTION_APPROVE]
            ts = post["response"]["ts"]
            assert ran == [], "held: nothing ran before the approval"
            body, headers = signed(block_actions("UALICE", ACTION_APPROVE, request_id, ts=ts))
            assert (await http_post(url, body, headers))[0] == 200
        assert result["value"] == "restarted db"
        assert ran == ["db"]

        # The serving process: replay ignored, a late click refused privately, forgery 401.
        assert (await http_post(url, body, headers))[0] == 200
        late, late_headers = signed(block_actions("UBOB", ACTION_DENY, request_id, ts=ts))
        assert (await http_post(url, late, late_headers))[0] == 200
        (ephemeral,) = await fake_slack.wait("chat.postEphemeral")
        assert ephemeral["params"]["user"] == "UBOB"
        assert "no longer pending" in ephemeral["params"]["text"]
        forged, forged_headers = signed(block_actions("UALICE", ACTION_APPROVE, request_id),
                                        secret="guessed")
        assert (await http_post(url, forged, forged_headers))[0] == 401
    assert ran == ["db"], "the function ran exactly once"
    request = await SQLiteStore(tmp_path / "state.db").get_request(request_id)
    assert request is not None and request.status == "consumed"
    assert [v.approver for v in request.votes] == ["slack:UALICE"]
    updates = [c["params"] for c in fake_slack.calls_to("chat.update")]
    assert updates and all(u["ts"] == ts for u in updates)
    report = verify_log(tmp_path / "audit.jsonl")
    assert report.ok, report.problems
    types = [json.loads(line)["type"] for line in (tmp_path / "audit.jsonl").read_text()
             .splitlines()]
    assert types.count("call.executed") == 1 and "vote.rejected" in types


async def test_webhook_decision_arrives_from_another_process(
    tmp_path: Path, fake_slack: FakeSlack
) -> None:
    received: list[dict] = []

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from tests.channels.slack.fake_slack import serving

    async def receiver(request: Request) -> Response:
        received.append(json.loads(await request.body()))
        return Response(status_code=204)

    store = SQLiteStore(tmp_path / "state.db")
    audit = JsonlAuditLog(tmp_path / "audit.jsonl")
    async with serving(Starlette(routes=[Route("/hook", receiver, methods=["POST"])])) as hook, \
            serve_process(tmp_path, fake_slack) as base:
        guard = Guard(Policy.from_yaml(POLICY), store=store, audit=audit,
                      channels=[WebhookChannel(hook + "/hook", WEBHOOK_SECRET,
                                               callback_url=base + "/webhook/callback")])

        @guarded(guard=guard)
        async def restart(svc: str) -> str:
            return f"restarted {svc}"

        async with guard, anyio.create_task_group() as tg:
            outcome: dict[str, str] = {}

            async def agent() -> None:
                outcome["value"] = await restart("db")

            tg.start_soon(agent)
            with anyio.fail_after(20):
                while not received:
                    await anyio.sleep(0.02)
            request = received[0]["request"]
            body = json.dumps({"request_id": request["id"], "approver": "slack:UBOB",
                               "decision": "approve"}).encode()
            stamp = str(int(time.time()))
            status, answer = await http_post(
                received[0]["callback_url"], body,
                {"X-Agentguard-Timestamp": stamp,
                 "X-Agentguard-Signature": sign(WEBHOOK_SECRET, stamp, body),
                 "Content-Type": "application/json"})
            assert status == 200 and json.loads(answer)["status"] == "approved"
    assert outcome == {"value": "restarted db"}
    assert [d["type"] for d in received] == ["approval_request", "approval_settled"]
    assert received[1]["status"] == "approved" and received[1]["decided_by"] == ["slack:UBOB"]
