"""Load: 1,000 concurrent guarded calls through the decorator's async path, 100 of them held
for approval, every decision audited and the hash chain valid afterwards. Counts, not times:
the figures (calls/s against a bare async function) come from benchmarks/bench_load.py."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
import pytest

from agentguard import Guard, Policy, ToolCallRefused, acting_as, guarded
from agentguard.audit import JsonlAuditLog, read_events, verify_log
from agentguard.channels.scripted import ScriptedChannel
from tests.adversarial.helpers import POLICY

pytestmark = pytest.mark.anyio

CALLS, HELD = 1000, 100


async def test_1000_concurrent_calls_100_held_all_audited_chain_valid(store,
                                                                      tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    policy = Policy.from_yaml(POLICY.replace("deny_cooldown: 1m}", "deny_cooldown: 1m, "
                                             "log_allows: true}"))
    approver = ScriptedChannel([ScriptedChannel.vote("alice")])
    guard = Guard(policy, store=store, audit=JsonlAuditLog(log), channels=[approver])
    ran: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()

    @guarded(guard=guard)
    async def get_status(n: int) -> int:
        ran["get_status"] += 1
        return n

    @guarded(guard=guard)
    async def restart(service: str) -> str:
        ran["restart"] += 1
        return service

    async def one(n: int) -> None:
        # One held call per principal: flood control must not collapse distinct agents.
        with acting_as(f"agent:worker-{n % HELD}"):
            try:
                if n < HELD:
                    assert await restart(f"svc-{n}") == f"svc-{n}"
                else:
                    assert await get_status(n) == n
                outcomes["ran"] += 1
            except ToolCallRefused as exc:
                outcomes[exc.kind] += 1

    async with guard, anyio.create_task_group() as tg:
        for n in range(CALLS):
            tg.start_soon(one, n)
    assert outcomes == {"ran": CALLS}
    assert ran == {"restart": HELD, "get_status": CALLS - HELD}
    assert len(approver.settled_requests) == HELD
    types = Counter(e["type"] for e in read_events(log))
    assert types == {"call.allowed": CALLS - HELD, "challenge.created": HELD,
                     "call.executed": HELD}
    report = verify_log(log)
    assert report.ok and report.records == CALLS + HELD
    consumed = await guard.store.list_requests("consumed", limit=10 * HELD)
    assert len(consumed) == HELD and len({r.call["principal"] for r in consumed}) == HELD
