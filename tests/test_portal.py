"""The guard's one long-lived event loop for synchronous callers (``agentguard._portal``).

Synchronous callers from any thread share one loop per guard; closing the guard stops it and
refuses what still waits there; a forked child starts its own; a sync call inside a running
loop is a usage error. With PostgreSQL, one store serves an app's loop and the portal's at once.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import start_blocking_portal

from agentguard import Guard, Policy, UsageError, guarded, using_guard
from agentguard._portal import CrossLoopLock, SyncPortal
from agentguard.channels.scripted import ScriptedChannel
from agentguard.store.postgres import PostgresStore
from agentguard.types import ToolCall
from tests.pg_support import fresh_schema, reachable_dsn

REPO = Path(__file__).resolve().parents[1]

POLICY = """
defaults: {timeout: 60s}
rules:
  - {id: prod, match: {tool: deploy, args: {env: prod}}, class: destructive}
  - {id: rest, match: {tool: deploy}, class: read}
"""


class LoopRecordingGuard(Guard):
    """A real guard that notes the event loop each decision runs in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loops: list[asyncio.AbstractEventLoop] = []

    async def authorize(self, call: ToolCall, **kwargs: Any) -> Any:
        self.loops.append(asyncio.get_running_loop())
        return await super().authorize(call, **kwargs)


@guarded
def deploy(env: str, service: str = "api") -> str:
    return f"{service} -> {env}"


def portal_threads(guard: Guard) -> list[str]:
    """The running threads of this guard's portal (other tests' guards may have theirs)."""
    return [t.name for t in threading.enumerate() if t.name == guard._portal.name]


def test_sync_calls_from_many_threads_share_one_loop() -> None:
    guard = LoopRecordingGuard(Policy.from_yaml(POLICY),
                               channels=[ScriptedChannel([ScriptedChannel.vote("alice")])])

    def work(i: int) -> list[str]:
        with using_guard(guard):
            return [deploy("staging", f"s{i}-{j}") for j in range(5)] + [
                deploy("prod", f"p{i}")]  # held, approved by the scripted channel

    with ThreadPoolExecutor(8) as threads:
        results = list(threads.map(work, range(8)))
    assert results[3][-1] == "p3 -> prod" and results[5][0] == "s5-0 -> staging"
    assert len(guard.loops) == 48 and len(set(guard.loops)) == 1
    assert portal_threads(guard) == [guard._portal.name]
    guard.close_sync()
    assert portal_threads(guard) == []
    assert guard.loops[0].is_closed()


def test_a_guard_dropped_unclosed_stops_its_loop() -> None:
    guard = Guard(Policy.from_yaml(POLICY))
    assert guard.authorize_sync(ToolCall(tool="deploy", args={"env": "dev"})).allowed
    name = guard._portal.name
    del guard
    gc.collect()
    assert [t for t in threading.enumerate() if t.name == name] == []


def test_a_statically_allowed_call_never_starts_the_portal() -> None:
    guard = Guard(Policy.from_yaml("rules:\n  - {id: r, match: {tool: deploy}, class: read}\n"))
    with using_guard(guard):
        assert deploy("prod") == "api -> prod"
    assert not guard._portal.running


def test_closing_the_guard_stops_its_loop_and_refuses_a_call_still_held() -> None:
    guard = Guard(Policy.from_yaml(POLICY), channels=[ScriptedChannel([])])  # nobody answers
    call = ToolCall(tool="deploy", args={"env": "prod"})
    with ThreadPoolExecutor(1) as threads:
        held = threads.submit(guard.authorize_sync, call)
        deadline = time.monotonic() + 30
        while not anyio.run(guard.store.list_requests, "pending"):
            assert time.monotonic() < deadline, "the call was never held"
            time.sleep(0.01)
        guard.close_sync()
        auth = held.result(timeout=30)
    assert auth.outcome == "unreachable" and not auth.allowed
    assert "closed" in auth.reason
    assert portal_threads(guard) == []
    # The guard is usable again: the next synchronous call starts a new loop.
    again = guard.authorize_sync(ToolCall(tool="deploy", args={"env": "dev"}))
    assert again.allowed
    guard.close_sync()


def test_with_guard_closes_it_on_exit() -> None:
    with Guard(Policy.from_yaml(POLICY)) as guard:
        assert guard.authorize_sync(ToolCall(tool="deploy", args={"env": "dev"})).allowed
        assert portal_threads(guard) == [guard._portal.name]
    assert portal_threads(guard) == []


@pytest.mark.anyio
async def test_sync_api_inside_a_running_loop_refuses_clearly() -> None:
    guard = Guard(Policy.from_yaml(POLICY))
    with pytest.raises(UsageError, match="running event loop"):
        guard.authorize_sync(ToolCall(tool="deploy", args={"env": "dev"}))
    with pytest.raises(UsageError, match="running event loop"):
        guard.close_sync()
    assert not guard._portal.running
    # From a worker thread of the same app it is fine, and `await guard.close()` stops it.
    auth = await anyio.to_thread.run_sync(
        guard.authorize_sync, ToolCall(tool="deploy", args={"env": "dev"}))
    assert auth.allowed and portal_threads(guard) == [guard._portal.name]
    await guard.close()
    assert portal_threads(guard) == []


def test_the_portal_cannot_be_stopped_or_called_from_its_own_loop() -> None:
    portal = SyncPortal()

    async def inside() -> str:
        with pytest.raises(UsageError):
            portal.close()
        with pytest.raises(UsageError, match="running event loop"):
            portal.call(anyio.sleep, 0)
        return "ok"

    assert portal.call(inside) == "ok"
    portal.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_its_own_loop() -> None:
    guard = LoopRecordingGuard(Policy.from_yaml(POLICY))
    call = ToolCall(tool="deploy", args={"env": "dev"})
    assert guard.authorize_sync(call).allowed
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        status = b"?"
        try:
            ok = guard.authorize_sync(call).allowed and guard.authorize_sync(call).allowed
            fresh = guard.loops[-1] is not guard.loops[0] and guard.loops[-1] is guard.loops[-2]
            guard.close_sync()
            status = b"ok" if ok and fresh else b"wrong loop"
        except BaseException as exc:
            status = repr(exc).encode()
        finally:
            os.write(write, status)
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1000)
    os.waitpid(pid, 0)
    assert answer == b"ok"
    assert guard.authorize_sync(call).allowed  # the parent's loop is untouched
    assert len(set(guard.loops)) == 1
    guard.close_sync()


def test_an_unclosed_guard_does_not_hold_up_interpreter_exit() -> None:
    script = textwrap.dedent("""
        import threading, time
        import anyio
        from agentguard import Guard, Policy
        from agentguard.channels.scripted import ScriptedChannel
        from agentguard.types import ToolCall
        guard = Guard(Policy.from_yaml(
            "defaults: {timeout: 3600s}\\n"
            "rules: [{id: one, match: {tool: t, args: {n: 1}}, class: read}]\\n"),
            channels=[ScriptedChannel([])])
        assert guard.authorize_sync(ToolCall(tool="t", args={"n": 1})).allowed
        # Held for an hour in a daemon thread when the interpreter exits:
        held = threading.Thread(target=guard.authorize_sync,
                                args=(ToolCall(tool="t", args={"n": 2}),), daemon=True)
        held.start()
        while not anyio.run(guard.store.list_requests, "pending"):
            time.sleep(0.01)
        print("started")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "started"


def test_the_cross_loop_lock_excludes_tasks_of_two_loops() -> None:
    lock = CrossLoopLock()
    inside = 0
    most = 0

    async def critical() -> None:
        nonlocal inside, most
        async with lock:
            inside += 1
            most = max(most, inside)
            await anyio.sleep(0.001)
            inside -= 1

    async def many() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(critical)

    with start_blocking_portal("asyncio") as one, start_blocking_portal("asyncio") as two:
        first, second = one.start_task_soon(many), two.start_task_soon(many)
        first.result(timeout=60)
        second.result(timeout=60)
    assert most == 1 and inside == 0


# --------------------------------------------------------------------- PostgreSQL, mixed app
@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    dsn = reachable_dsn()
    with fresh_schema(dsn) as name:
        yield dsn, name


def listeners(dsn: str, schema: str) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                           (f"agentguard listener {schema}",)).fetchone()
    return int(row[0]) if row else 0


@guarded(name="deploy")
async def deploy_async(env: str, service: str = "api") -> str:
    return f"{service} -> {env} (async)"


@pytest.mark.postgres
@pytest.mark.anyio
async def test_a_mixed_app_shares_one_guard_and_one_postgres_store(
    pg_schema: tuple[str, str],
) -> None:
    dsn, schema = pg_schema
    guard = LoopRecordingGuard(
        Policy.from_yaml(POLICY), store=PostgresStore(dsn, schema=schema, poll=3600),
        channels=[ScriptedChannel([ScriptedChannel.vote("alice")])])
    app_loop = asyncio.get_running_loop()
    results: list[str] = []

    async def async_tool(i: int) -> None:
        results.append(await deploy_async("prod", f"a{i}"))

    async def sync_tool(i: int) -> None:  # a framework running a sync tool in a worker thread
        results.append(await anyio.to_thread.run_sync(deploy, "prod", f"s{i}"))

    async with guard:  # the store opens in the app's loop
        with using_guard(guard), anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(async_tool, i)
                    tg.start_soon(sync_tool, i)
        assert sorted(results) == sorted(
            [f"a{i} -> prod (async)" for i in range(4)] + [f"s{i} -> prod" for i in range(4)])
        loops = set(guard.loops)
        assert app_loop in loops and len(loops) == 2  # the app's and the portal's
        assert listeners(dsn, schema) == 1  # one store, one listener, whatever the loop
        consumed = await guard.store.list_requests("consumed")
        assert len(consumed) == 8
    assert listeners(dsn, schema) == 0 and portal_threads(guard) == []


@pytest.mark.postgres
@pytest.mark.anyio
async def test_a_store_first_opened_by_sync_callers_serves_the_app_loop_too(
    pg_schema: tuple[str, str],
) -> None:
    dsn, schema = pg_schema
    guard = LoopRecordingGuard(
        Policy.from_yaml(POLICY), store=PostgresStore(dsn, schema=schema, poll=3600),
        channels=[ScriptedChannel([ScriptedChannel.vote("alice")])])
    with using_guard(guard), anyio.fail_after(60):
        # A worker thread calls first: the store opens in the guard's portal loop...
        assert await anyio.to_thread.run_sync(deploy, "prod", "first") == "first -> prod"
        # ...and the app's own loop is served by it from then on.
        assert await deploy_async("prod", "second") == "second -> prod (async)"
        assert await anyio.to_thread.run_sync(deploy, "prod", "third") == "third -> prod"
    assert len(set(guard.loops)) == 2 and listeners(dsn, schema) == 1
    await guard.close()  # closes the store in the portal's loop, then stops that loop
    assert listeners(dsn, schema) == 0 and portal_threads(guard) == []
