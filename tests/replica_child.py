"""One agentguard replica on PostgreSQL, run by the tests in a separate OS process.

Not a test module. Usage (DSN and SCHEMA name the shared database schema):

    replica_child.py wait DSN SCHEMA TIMEOUT MARKER
        a Guard holds a production deploy for approval (nobody answers on this replica);
        when approved, the "tool" appends this pid to MARKER. Prints the outcome.
    replica_child.py vote DSN SCHEMA REQUEST_ID APPROVER approve|deny
        a second Guard casts a vote through agentguard.approvals.cast_vote.
    replica_child.py race DSN SCHEMA approve|deny GO IDS HASHES SUBJECTS
        four rounds, each started together with the other racing replicas (this one creates
        GO.<round>.ready-<pid>, then waits for GO.<round>): vote on each request of IDS,
        consume each of them, use the once grant bound to each call hash of HASHES, use
        TOTP step 1 of each subject of SUBJECTS (lists are comma-separated).
    replica_child.py approve-all DSN SCHEMA COUNT
        wait until COUNT requests are pending, then approve them all concurrently.

Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from agentguard import Guard, Policy
from agentguard.approvals import cast_vote
from agentguard.audit.postgres import PostgresAuditLog
from agentguard.channels.scripted import ScriptedChannel
from agentguard.errors import ConflictError
from agentguard.store.postgres import PostgresStore
from agentguard.types import ApprovalVote, CallContext, GrantQuery, Principal, ToolCall

POLICY = """
defaults: {{timeout: {timeout}s}}
groups: {{oncall: [alice, bob]}}
classes:
  read: {{require: allow}}
  write: {{require: allow}}
  destructive: {{require: approve, approvers: [group:oncall]}}
  privileged: {{require: approve, approvers: [group:oncall], quorum: 2}}
rules:
  - {{id: prod-deploy, match: {{tool: deploy, args: {{env: production}}}}, class: destructive}}
"""

# The call every "wait" replica makes: the same call each time, as after a restart.
CALL = {"tool": "deploy", "args": {"env": "production", "service": "billing"}}


def guard(dsn: str, schema: str, timeout: float = 30.0) -> Guard:
    return Guard(
        Policy.from_yaml(POLICY.format(timeout=timeout)),
        store=PostgresStore(dsn, schema=schema, pool_max=3),
        audit=PostgresAuditLog(dsn, schema=schema),
        channels=[ScriptedChannel([], name="replica")],
    )


async def wait(dsn: str, schema: str, timeout: str, marker: str) -> dict[str, Any]:
    async with guard(dsn, schema, float(timeout)) as g:
        call = ToolCall(tool=CALL["tool"], args=CALL["args"],
                        principal=Principal("agent:deploy-bot"),
                        context=CallContext(acting_for="carol"), origin="replica")
        auth = await g.authorize(call)
        if auth.allowed:
            with open(marker, "a") as out:  # the tool's side effect
                out.write(f"{os.getpid()} {auth.request_id}\n")
        return {"outcome": auth.outcome, "request_id": auth.request_id,
                "approvers": list(auth.approvers), "pid": os.getpid(),
                "reason": auth.reason}


async def vote(dsn: str, schema: str, request_id: str, approver: str,
               choice: str) -> dict[str, Any]:
    async with guard(dsn, schema) as g:
        request, problem = await cast_vote(
            store=g.store, audit=g.audit, request_id=request_id, approver=approver,
            approve=choice == "approve", channel="slack")
        return {"problem": problem, "status": request.status if request else None}


ROUNDS = ("vote", "consume", "grant", "otp")


async def barrier(go: str, name: str) -> None:
    """Say this replica is ready for round ``name``, then wait until the test says go."""
    Path(f"{go}.{name}.ready-{os.getpid()}").touch()
    with anyio.fail_after(60):
        while not Path(f"{go}.{name}").exists():
            await anyio.sleep(0.001)


async def race(dsn: str, schema: str, role: str, go: str, ids: str, hashes: str,
               subjects: str) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {name: {} for name in ROUNDS}
    async with PostgresStore(dsn, schema=schema, pool_max=2) as store:
        await barrier(go, "vote")
        # Approvers and deniers walk the list from opposite ends, so they meet on a request.
        order = ids.split(",") if role == "approve" else ids.split(",")[::-1]
        for item in order:
            ballot = ApprovalVote(approver=f"pid{os.getpid()}", approve=role == "approve",
                                  at=time.time(), channel="test")
            try:
                results["vote"][item] = (await store.record_vote(item, ballot)).request.status
            except ConflictError:
                results["vote"][item] = "conflict"
        await barrier(go, "consume")
        for item in ids.split(","):
            request = await store.get_request(item)
            assert request is not None
            results["consume"][item] = await store.consume(item, request.call_hash)
        await barrier(go, "grant")
        for item in hashes.split(","):
            used = await store.use_grant(
                GrantQuery(principal="agent:bot", server="git", tool="push", rank=2,
                           call_hash=item), now=time.time())
            results["grant"][item] = None if used is None else used.id
        await barrier(go, "otp")
        for item in subjects.split(","):
            results["otp"][item] = await store.use_otp(item, 1)
    return results


async def approve_all(dsn: str, schema: str, count: str) -> dict[str, Any]:
    expected = int(count)
    async with PostgresStore(dsn, schema=schema, pool_max=8) as store:
        with anyio.fail_after(60):
            while len(pending := await store.list_requests("pending", limit=expected)) < expected:
                await anyio.sleep(0.05)
        statuses: list[str] = []

        async def approve(request_id: str) -> None:
            ballot = ApprovalVote(approver="alice", approve=True, at=time.time(), channel="test")
            statuses.append((await store.record_vote(request_id, ballot)).request.status)

        async with anyio.create_task_group() as tg:
            for request in pending:
                tg.start_soon(approve, request.id)
    return {"approved": statuses.count("approved")}


def main(argv: list[str]) -> None:
    modes = {"wait": wait, "vote": vote, "race": race, "approve-all": approve_all}
    if not argv or argv[0] not in modes:
        raise SystemExit(f"usage: replica_child.py {'|'.join(modes)} ...")
    print(json.dumps(anyio.run(modes[argv[0]], *argv[1:])), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
