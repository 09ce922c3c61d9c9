"""Load through the MCP proxy: 1,000 concurrent ``tools/call`` requests on one client session,
100 of them held until approved through the shared SQLite store, every decision audited and
the hash chain valid afterwards. Counts, not times: the figures (calls/s against the direct
upstream) come from benchmarks/bench_proxy_load.py.

Transport: stdio, the way an agent host (Claude Desktop, Cursor) runs the proxy. All 1,000
requests are in flight at once on one session, which is what the proxy itself must carry
(multiplexing, its guard and store under concurrency); over HTTP the same run mostly measures
1,000 SSE connections in the HTTP server, which the proxy's HTTP tests already exercise.

Flood control: the proxy runs every call as its one configured principal, so the default
limits (one pending request per principal and class, 20 requests per 10 minutes) refuse every
held call raised while another waits, and all past the 20th (81 of the 100 in a trial run).
``LOAD_POLICY`` raises both to exactly 100: the flood limits stay on, and one request too
many would still be refused and fail the counts. Both protocol eras are run.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentguard.audit import read_events, verify_log
from agentguard.store import SQLiteStore
from tests.adversarial.proxy_helpers import (
    LOAD_POLICY,
    UPSTREAM,
    approve_all,
    executed,
    setup_proxy,
)
from tests.proxy.conftest import MODES

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

CALLS, HELD = 1000, 100


@pytest.mark.parametrize("mode", MODES)
async def test_1000_concurrent_calls_through_the_proxy_100_held_all_audited(
        tmp_path: Path, mode: str) -> None:
    proxy = setup_proxy(tmp_path, LOAD_POLICY.replace("HELD", str(HELD)))
    log = tmp_path / "executed.jsonl"
    params = proxy.params(*UPSTREAM, "--log", str(log), name="counter")
    texts: dict[int, str] = {}
    errors: list[Any] = []
    voted: list[Any] = []
    finished = anyio.Event()  # every call answered: stop voting (a failed run fails fast)

    async with proxy.client(params, mode) as client:
        async def one(n: int) -> None:
            result = await client.call_tool("purge" if n < HELD else "get_item", {"n": n})
            if result.is_error:
                errors.append((n, result.content[0].text))
            texts[n] = result.content[0].text
            if len(texts) == CALLS:
                finished.set()

        async def vote() -> None:
            voted.extend(await approve_all(proxy, HELD, timeout=100, stop=finished))

        async with anyio.create_task_group() as tg:
            tg.start_soon(vote)
            for n in range(CALLS):
                tg.start_soon(one, n)

    assert errors == []
    assert texts == {n: f"purged {n}" if n < HELD else f"item {n}" for n in range(CALLS)}
    # The upstream ran each call exactly once: the held ones only after their approval.
    ran = Counter((e["tool"], e["args"]["n"]) for e in executed(log))
    assert sorted(ran) == sorted(("purge" if n < HELD else "get_item", n)
                                 for n in range(CALLS))
    assert set(ran.values()) == {1}
    assert sorted(r.call["args"]["n"] for r in voted) == list(range(HELD))

    events = list(read_events(proxy.audit))
    types = Counter(e["type"] for e in events)
    assert types == {"call.allowed": CALLS - HELD, "challenge.created": HELD,
                     "call.executed": HELD}
    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_type.setdefault(e["type"], []).append(e)
    assert {e["tool"] for e in by_type["call.allowed"]} == {"get_item"}
    assert {e["tool"] for e in by_type["challenge.created"]} == {"purge"}
    # Each held call ran on alice's approval of its own request, recorded after the hold.
    held_at = {e["request_id"]: i for i, e in enumerate(events)
               if e["type"] == "challenge.created"}
    ran_at = {e["request_id"]: i for i, e in enumerate(events) if e["type"] == "call.executed"}
    assert set(held_at) == set(ran_at) == {r.id for r in voted}
    assert all(held_at[rid] < ran_at[rid] for rid in ran_at)
    assert all(e["approvers"] == ["alice"] for e in by_type["call.executed"])
    report = verify_log(proxy.audit)
    assert report.ok, report
    assert report.records == CALLS + HELD

    store = SQLiteStore(str(proxy.db))
    async with store:
        consumed = await store.list_requests("consumed", limit=10 * HELD)
        assert len(consumed) == HELD
        assert {r.call["principal"] for r in consumed} == {"agent:mcp-client"}
        assert await store.list_requests("pending") == []
