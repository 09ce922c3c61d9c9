"""The generic signed webhook channel: signed POST out, signed decision back."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agentguard import Guard, Policy
from agentguard.audit.memory import MemoryAuditLog
from agentguard.channels.fallback import Fallback
from agentguard.channels.scripted import ScriptedChannel
from agentguard.channels.webhook import (
    ReplayCache,
    WebhookCallback,
    WebhookChannel,
    check_signature,
    sign,
)
from agentguard.errors import ConfigError
from agentguard.store import MemoryStore
from agentguard.types import Authorization, CallContext, Principal, ToolCall

pytestmark = pytest.mark.anyio

SECRET = "whsec-test-secret"
POLICY = """
defaults: {timeout: 20s, deny_cooldown: 1s}
groups: {oncall: ["ops:alice", "ops:bob", "portal:ops:carol"]}
classes:
  read: {require: allow}
  write: {require: allow}
  destructive: {require: approve, approvers: [group:oncall], max_grant: 10m}
  privileged: {require: approve, approvers: [group:oncall], separation_of_duties: true}
rules:
  - {id: restart, match: {tool: restart}, class: destructive}
  - {id: iam, match: {tool: iam.update}, class: privileged}
"""


def call(tool: str, acting_for: str | None = None, **args: Any) -> ToolCall:
    return ToolCall(tool=tool, args=args, principal=Principal("agent:bot"),
                    context=CallContext(acting_for=acting_for))


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True


@dataclass
class Receiver:
    """The team's own tool: receives signed POSTs and checks them like a receiver must."""

    status: int = 204
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        stamp = request.headers.get("x-agentguard-timestamp", "")
        expected = "v1=" + hmac.new(SECRET.encode(), f"v1:{stamp}:".encode() + body,
                                    hashlib.sha256).hexdigest()
        if request.headers.get("x-agentguard-signature") != expected:
            self.bad.append("signature")
        if abs(time.time() - int(stamp)) > 300:
            self.bad.append("timestamp")
        self.deliveries.append(json.loads(body))
        return Response(status_code=self.status)

    async def wait(self, count: int = 1) -> list[dict[str, Any]]:
        with anyio.fail_after(15):
            while len(self.deliveries) < count:
                await anyio.sleep(0.02)
        return self.deliveries


def signed_decision(decision: dict[str, Any], *, secret: str = SECRET,
                    at: float | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(decision).encode()
    stamp = str(int(time.time() if at is None else at))
    return body, {"X-Agentguard-Timestamp": stamp, "Content-Type": "application/json",
                  "X-Agentguard-Signature": sign(secret, stamp, body)}


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.request

    def go() -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    return await anyio.to_thread.run_sync(go)


@asynccontextmanager
async def webhook_setup(receiver: Receiver, **callback_kw: Any) -> AsyncIterator[dict[str, Any]]:
    store, audit = MemoryStore(), MemoryAuditLog()
    callback = WebhookCallback(store=store, audit=audit, secret=SECRET, **callback_kw)
    async with serving(Starlette(routes=[Route("/hook", receiver.endpoint, methods=["POST"])])
                       ) as hook, serving(callback.app()) as back:
        channel = WebhookChannel(hook + "/hook", SECRET, callback_url=back + "/webhook/callback")
        guard = Guard(Policy.from_yaml(POLICY), store=store, audit=audit, channels=[channel])
        async with guard:
            yield {"guard": guard, "store": store, "audit": audit, "channel": channel,
                   "callback": back + "/webhook/callback"}


async def held(
    env: dict[str, Any], receiver: Receiver, the_call: ToolCall, decide: Any
) -> tuple[Authorization, Any]:
    box: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:
        async def run() -> None:
            box["auth"] = await env["guard"].authorize(the_call)

        tg.start_soon(run)
        delivery = (await receiver.wait())[0]
        box["answers"] = await decide(delivery)
    return box["auth"], box["answers"]


async def test_signed_post_out_and_signed_decision_back() -> None:
    receiver = Receiver()
    async with webhook_setup(receiver) as env:
        async def decide(delivery: dict[str, Any]) -> Any:
            assert delivery["type"] == "approval_request"
            request = delivery["request"]
            assert request["tool"] == "restart" and request["args"] == {"svc": "<!channel>"}
            assert request["approvers"] == ["ops:alice", "ops:bob", "portal:ops:carol"]
            assert "restart on server local" in request["text"]
            assert delivery["callback_url"] == env["callback"]
            body, headers = signed_decision({"request_id": request["id"],
                                             "approver": "ops:alice", "decision": "approve"})
            return await post(env["callback"], body, headers)

        auth, answer = await held(env, receiver, call("restart", svc="<!channel>"), decide)
    assert answer == (200, {"ok": True, "status": "approved"})
    assert auth.outcome == "approved" and auth.approvers == ("ops:alice",)
    assert receiver.bad == []
    settled = (await receiver.wait(2))[1]
    assert settled["type"] == "approval_settled" and settled["status"] == "approved"


async def test_deny_and_grant_through_the_callback() -> None:
    receiver = Receiver()
    async with webhook_setup(receiver) as env:
        async def deny(delivery: dict[str, Any]) -> Any:
            body, headers = signed_decision({
                "request_id": delivery["request"]["id"], "approver": "ops:bob",
                "decision": "deny", "reason": "not during the incident"})
            return await post(env["callback"], body, headers)

        auth, _ = await held(env, receiver, call("restart", svc="db"), deny)
        assert auth.outcome == "denied" and "not during the incident" in auth.reason

        receiver.deliveries.clear()

        async def grant(delivery: dict[str, Any]) -> Any:
            body, headers = signed_decision({
                "request_id": delivery["request"]["id"], "approver": "ops:alice",
                "decision": "approve", "grant_ttl": 600})
            return await post(env["callback"], body, headers)

        auth, _ = await held(env, receiver, call("restart", svc="cache"), grant)
        assert auth.outcome == "approved"
        assert [g.granted_by for g in await env["store"].list_grants()] == ["ops:alice"]


async def test_bad_signature_stale_replay_and_unauthorised_are_rejected() -> None:
    receiver = Receiver()
    async with webhook_setup(receiver) as env:
        async def attempts(delivery: dict[str, Any]) -> Any:
            rid = delivery["request"]["id"]
            url = env["callback"]
            results = {}
            body, headers = signed_decision(
                {"request_id": rid, "approver": "ops:alice", "decision": "approve"},
                secret="wrong")
            results["forged"] = await post(url, body, headers)
            body, headers = signed_decision(
                {"request_id": rid, "approver": "ops:alice", "decision": "approve"},
                at=time.time() - 600)
            results["stale"] = await post(url, body, headers)
            tampered_body, headers = signed_decision(
                {"request_id": rid, "approver": "ops:mallory", "decision": "approve"})
            results["tampered"] = await post(
                url, tampered_body.replace(b"mallory", b"alice\x00"), headers)
            body, headers = signed_decision(
                {"request_id": rid, "approver": "ops:eve", "decision": "approve"})
            results["unauthorised"] = await post(url, body, headers)
            results["pending"] = (await env["store"].get_request(rid)).status
            body, headers = signed_decision(
                {"request_id": rid, "approver": "ops:bob", "decision": "deny"})
            results["deny"] = await post(url, body, headers)
            results["replay"] = await post(url, body, headers)
            results["junk"] = await post(url, b"{", signed_decision({})[1] | {
                "X-Agentguard-Signature": sign(SECRET, signed_decision({})[1][
                    "X-Agentguard-Timestamp"], b"{")})
            return results

        auth, results = await held(env, receiver, call("restart", svc="db"), attempts)
    assert results["forged"][0] == 401 and results["stale"][0] == 401
    assert results["tampered"][0] == 401
    assert results["unauthorised"][0] == 403
    assert "not an approver" in results["unauthorised"][1]["error"]
    assert results["pending"] == "pending"
    assert results["deny"] == (200, {"ok": True, "status": "denied"})
    assert results["replay"][0] == 409 and results["junk"][0] == 400
    assert auth.outcome == "denied"
    rejected = [(e["approver"], e["detail"]) for e in env["audit"].events
                if e["type"] == "vote.rejected"]
    assert rejected[0][0] == "ops:eve" and rejected[1] == (
        "ops:bob", "replayed webhook delivery ignored")


async def test_separation_of_duties_through_the_webhook() -> None:
    receiver = Receiver()
    async with webhook_setup(receiver) as env:
        async def decide(delivery: dict[str, Any]) -> Any:
            rid = delivery["request"]["id"]
            body, headers = signed_decision(
                {"request_id": rid, "approver": "ops:alice", "decision": "approve"})
            own = await post(env["callback"], body, headers)
            body, headers = signed_decision(
                {"request_id": rid, "approver": "ops:bob", "decision": "approve"})
            return own, await post(env["callback"], body, headers)

        auth, (own, other) = await held(
            env, receiver, call("iam.update", acting_for="ops:alice", role="admin"), decide)
    assert own[0] == 403 and "separation of duties" in own[1]["error"]
    assert other[0] == 200 and auth.approvers == ("ops:bob",)


async def test_identity_prefix_keeps_integrations_apart() -> None:
    receiver = Receiver()
    async with webhook_setup(receiver, identity_prefix="portal:") as env:
        async def decide(delivery: dict[str, Any]) -> Any:
            rid = delivery["request"]["id"]
            body, headers = signed_decision(
                {"request_id": rid, "approver": "ops:alice", "decision": "approve"})
            first = await post(env["callback"], body, headers)
            body, headers = signed_decision(
                {"request_id": rid, "approver": "ops:carol", "decision": "deny"})
            return first, await post(env["callback"], body, headers)

        auth, (first, second) = await held(env, receiver, call("restart", svc="db"), decide)
    assert first[0] == 403 and "portal:ops:alice" in first[1]["error"]
    assert second[0] == 200 and auth.outcome == "denied" and "portal:ops:carol" in auth.reason
    assert auth.reason.endswith(": no reason given"), "a deny without a reason says so"


@pytest.mark.parametrize("status", [500, 404, 302])
async def test_a_failing_receiver_makes_the_channel_unreachable(status: int) -> None:
    receiver = Receiver(status=status)
    async with webhook_setup(receiver) as env:
        auth = await env["guard"].authorize(call("restart", svc="db"))
    assert auth.outcome == "unreachable"
    detail = next(e for e in env["audit"].events
                  if e["type"] == "challenge.unreachable")["detail"]
    assert f"HTTP {status}" in detail


async def test_no_receiver_at_all_is_unreachable_and_fallback_answers() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    store, audit = MemoryStore(), MemoryAuditLog()
    dead = WebhookChannel(url, SECRET, timeout=2)
    async with Guard(Policy.from_yaml(POLICY), store=store, audit=audit,
                     channels=[dead]) as guard:
        refused = await guard.authorize(call("restart", svc="db"))
    assert refused.outcome == "unreachable"
    backup = ScriptedChannel([ScriptedChannel.vote("ops:bob")], name="console")
    async with Guard(Policy.from_yaml(POLICY), store=MemoryStore(), audit=MemoryAuditLog(),
                     channels=[Fallback(dead, backup)]) as guard:
        approved = await guard.authorize(call("restart", svc="db"))
    assert approved.outcome == "approved" and approved.approvers == ("ops:bob",)


def test_signature_helpers() -> None:
    body = b'{"a":1}'
    sig = sign(SECRET, 1700000000, body)
    assert sig == "v1=" + hmac.new(SECRET.encode(), b'v1:1700000000:{"a":1}',
                                   hashlib.sha256).hexdigest()
    now = 1_700_000_100.0
    assert check_signature(SECRET, "1700000000", sig, body, now=now) is None
    assert check_signature(SECRET, "1700000000", sig, body + b" ", now=now) == "bad signature"
    assert "window" in check_signature(SECRET, "1700000000", sig, body, now=now + 400)
    assert check_signature(SECRET, "17e8", sig, body, now=now) == "malformed timestamp"
    assert check_signature(SECRET, None, sig, body, now=now) is not None
    with pytest.raises(ConfigError):
        WebhookChannel("file:///etc/passwd", SECRET)
    with pytest.raises(ConfigError):
        WebhookChannel("https://example.invalid/hook", "")


def test_replay_cache_forgets_only_what_can_no_longer_verify() -> None:
    cache = ReplayCache(max_entries=2)
    assert cache.claim("a", now=0) and not cache.claim("a", now=100)
    assert cache.claim("b", now=100)
    assert not cache.claim("c", now=100), "full of live entries: refuse rather than forget"
    assert cache.claim("c", now=700), "a's entry expired (600 s) and made room"
    assert cache.claim("a", now=1400)
