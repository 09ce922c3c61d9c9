"""The one rule for skipping the guard, and attacks on every route that could skip it.

:func:`agentguard.proxy.relay.may_skip_guard` is the only place that lets a ``tools/call``
run without the guard. The unit tests read its verdict and reason for each case; the attack
tests run a real proxy on every route a call can take (stdio relay, HTTP relay, SDK-server
relay, SDK forward, each client era against each upstream era, with and without
``--no-relay``) and show that a tool new since the pins, a tool whose definition changed,
and a call an argument-dependent rule decides are always held or refused, never relayed.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp.types import Tool, ToolAnnotations

from agentguard.guard import Guard
from agentguard.policy import Policy
from agentguard.proxy.catalog import Entry, hints_for
from agentguard.proxy.pins import PinStatus
from agentguard.proxy.relay import MustGuard, Skip, may_skip_guard, plain_call
from tests.proxy.conftest import (
    OPS_SERVER,
    POLICY_TEMPLATE,
    PYTHON,
    ProxyUnderTest,
    free_port,
    make_proxy,
    running,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

_POLICY = """
version: 1
mode: MODE
defaults: {unknown_tool: approve, timeout: 30s, on_timeout: deny}
classes:
  read: {require: allow}
  destructive: {require: approve, approvers: [alice]}
rules:
  - id: by-name
    match: {server: ops, tool: [get_status, debug_dump]}
    class: read
  - id: by-args
    match: {server: ops, tool: deploy, args: {env: staging}}
    class: read
"""


def _guard(mode: str = "enforce") -> Guard:
    return Guard(Policy.from_yaml(_POLICY.replace("MODE", mode)))


def _entry(name: str, state: str | None = "pinned") -> Entry[Tool]:
    tool = Tool(name=name, input_schema={"type": "object"},
                annotations=ToolAnnotations(read_only_hint=True))
    pin = None if state is None else PinStatus(state, "a" * 64, "b" * 64)  # type: ignore[arg-type]
    return Entry("ops", name, name, tool, hints_for(tool, unpinned=state == "unpinned"), pin)


def test_a_pinned_tool_the_policy_allows_by_name_skips_with_its_reason() -> None:
    decision = may_skip_guard(_guard(), _entry("get_status"))
    assert isinstance(decision, Skip) and decision.kind == "skip"
    assert "static allow" in decision.reason and "pinned aaaaaaaaaaaa" in decision.reason


@pytest.mark.parametrize(("entry", "why"), [
    (_entry("get_status", "unpinned"), "new since"),
    (_entry("get_status", "changed"), "changed since it was pinned"),
    (_entry("get_status", None), "no pin status"),
    (_entry("deploy"), "decides per call"),  # a rule reads the arguments
    (_entry("unknown_tool"), "decides per call"),  # unknown: approve
])
def test_everything_else_must_be_guarded(entry: Entry[Tool], why: str) -> None:
    decision = may_skip_guard(_guard(), entry)
    assert isinstance(decision, MustGuard) and why in decision.reason


def test_shadow_mode_decides_and_audits_every_call() -> None:
    assert isinstance(may_skip_guard(_guard("shadow"), _entry("get_status")), MustGuard)


def test_a_pinned_entry_carrying_unpinned_hints_is_not_trusted() -> None:
    entry = _entry("get_status")
    forged = Entry(entry.server, entry.name, entry.exposed, entry.item,
                   hints_for(entry.item, unpinned=True), entry.pin)
    assert isinstance(may_skip_guard(_guard(), forged), MustGuard)


@pytest.mark.parametrize(("params", "plain"), [
    ({"name": "x"}, True),
    ({"name": "x", "arguments": {}, "_meta": {"a": 1}}, True),
    ({"name": "x", "arguments": [1]}, False),
    ({"name": "x", "_meta": {"progressToken": 1}}, False),
    ({"name": "x", "_meta": "m"}, False),
    ({"name": "x", "task": {}}, False),
])
def test_only_plain_calls_are_relayed(params: dict[str, object], plain: bool) -> None:
    assert plain_call(params) is plain


# ---------------------------------------------------------------------- attacks, every route

# (transport, client era, upstream era, relay on): together every route of today's proxy.
ROUTES = [
    ("stdio", "auto", "auto", True),      # stdio relay (2026 both sides)
    ("stdio", "legacy", "auto", True),    # stdio relay with era conversion
    ("stdio", "legacy", "legacy", True),  # SDK-server relay
    ("stdio", "auto", "legacy", True),    # stdio relay, promoted to the ledger if it asks
    ("stdio", "auto", "auto", False),     # --no-relay: SDK forward
    ("stdio", "legacy", "legacy", False),
    ("http", "auto", "auto", True),       # connection-level HTTP relay
    ("http", "legacy", "auto", True),     # SDK-server relay over HTTP
    ("http", "auto", "legacy", True),
]


def _attack_proxy(tmp_path: Path) -> ProxyUnderTest:
    proxy = make_proxy(tmp_path)
    # The test policy plus a name-only read rule for the tool that appears later: if the
    # pin were ignored, nothing else would stop debug_dump from skipping the guard.
    text = POLICY_TEMPLATE.read_text().replace("TIMEOUT", "30s")
    text = text.replace("rules:\n", "rules:\n  - id: debug-reads\n    match: {server: ops, "
                                    "tool: debug_dump}\n    class: read\n", 1)
    proxy.policy.write_text(text)
    return proxy


async def _denied(proxy: ProxyUnderTest, client: object, tool: str,
                  args: dict[str, object]) -> str:
    """Call ``tool``; the guard must hold it (a pending request appears): deny it."""
    async with anyio.create_task_group() as tg:
        box: list[object] = []

        async def call() -> None:
            box.append(await client.call_tool(tool, args))  # type: ignore[attr-defined]

        tg.start_soon(call)
        await proxy.decide(False, timeout=60)
    result = box[0]
    assert result.is_error, result  # type: ignore[attr-defined]
    return result.content[0].text  # type: ignore[attr-defined]


@pytest.mark.parametrize(("transport", "mode", "upstream_mode", "relay"), ROUTES)
async def test_no_route_skips_the_guard_for_an_unpinned_tool_or_an_argument_rule(
        tmp_path: Path, transport: str, mode: str, upstream_mode: str, relay: bool) -> None:
    proxy = _attack_proxy(tmp_path)
    extra = ("--upstream-mode", upstream_mode,  # the legacy case: the old, hidden spelling
             *(() if relay else ("--no-relay" if mode == "auto" else "--no-fast-path",)))
    upstream = (PYTHON, OPS_SERVER, "--root", str(proxy.sandbox))
    if transport == "stdio":
        async with proxy.client(proxy.params(*upstream, name="ops", extra=extra),
                                mode) as client:
            await _attacks(proxy, client)
        return
    port = free_port()
    argv = [PYTHON, *proxy.args(*upstream, name="ops",
                                extra=(*extra, "--listen", f"127.0.0.1:{port}"))]
    async with running(argv, proxy.env(), port), \
            proxy.client(f"http://127.0.0.1:{port}/mcp", mode) as client:
        await _attacks(proxy, client)


async def _attacks(proxy: ProxyUnderTest, client: object) -> None:
    c: object = client
    ok = await c.call_tool("get_status", {"service": "api"})  # type: ignore[attr-defined]
    assert not ok.is_error  # the control: a pinned, statically allowed tool runs
    # An argument-dependent rule: the guard decides every call (production is held).
    text = await _denied(proxy, c, "deploy",
                         {"env": "production", "service": "api", "version": "1.2"})
    assert "denied" in text.lower() or "rejected" in text.lower(), text
    # A tool new since the pins, which a name-only rule would allow: held, never relayed.
    await c.call_tool("enable_debug_tools", {})  # type: ignore[attr-defined]
    names = {t.name for t in (await c.list_tools()).tools}  # type: ignore[attr-defined]
    assert "debug_dump" in names
    for _ in range(2):  # the second time meets whatever the first one left cached
        await _denied(proxy, c, "debug_dump", {})
    assert not any(e.get("tool") == "debug_dump" and e.get("outcome") == "allowed"
                   for e in proxy.audit_events())


@pytest.mark.parametrize(("transport", "mode", "upstream_mode", "relay"),
                         [r for r in ROUTES if r[3]])
async def test_no_route_runs_a_tool_whose_definition_changed(
        tmp_path: Path, transport: str, mode: str, upstream_mode: str, relay: bool) -> None:
    proxy = make_proxy(tmp_path)
    extra = ("--upstream-mode", upstream_mode)
    from tests.proxy.conftest import WEATHER_SERVER

    async def attack(client: object) -> None:
        c: object = client
        first = await c.call_tool("fetch_weather", {"city": "Oslo"})  # type: ignore
        assert not first.is_error
        await c.call_tool("rotate_keys", {})  # type: ignore[attr-defined]
        await c.list_tools()  # type: ignore[attr-defined]
        for _ in range(2):
            refused = await c.call_tool("fetch_weather", {"city": "Oslo"})  # type: ignore
            assert refused.is_error and "pins approve" in refused.content[0].text

    if transport == "stdio":
        async with proxy.client(proxy.params(PYTHON, WEATHER_SERVER, name="weather",
                                             extra=extra), mode) as client:
            await attack(client)
        return
    port = free_port()
    argv = [PYTHON, *proxy.args(PYTHON, WEATHER_SERVER, name="weather",
                                extra=(*extra, "--listen", f"127.0.0.1:{port}"))]
    async with running(argv, proxy.env(), port), \
            proxy.client(f"http://127.0.0.1:{port}/mcp", mode) as client:
        await attack(client)
