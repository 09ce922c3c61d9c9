"""What every adapter shares: who is calling (per call, per run, ambient, default), the
call the guard sees, and lazy optional imports with install hints."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from agentguard import ConfigError, Guard, acting_as, using_guard
from agentguard.adapters._common import (
    Edge,
    RunContext,
    fill_schema_defaults,
    principal_from,
    run_context_from,
)
from agentguard.context import current_caller
from agentguard.types import ANONYMOUS, Principal, ToolHints

from .conftest import events

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("pid", ["svc:deploy", "user:bob", "ci:main", "agent:x", "plain",
                                 "odd:kind"])
def test_principal_ids_are_read_like_acting_as(pid: str) -> None:
    with acting_as(pid):
        assert principal_from(pid) == current_caller().principal


def test_claims_travel_with_their_principal() -> None:
    with pytest.raises(ConfigError, match="needs the principal"):
        RunContext(claims={"team": "ops"})
    edge = Edge("test", run=RunContext(principal="agent:default", claims={"team": "ops"}))
    call = edge.build_call("t", {}, RunContext(principal="agent:run"))
    assert call.principal == Principal("agent:run", "agent")  # no claims borrowed
    call = edge.build_call("t", {})
    assert call.principal.claims == {"team": "ops"}
    base = Principal("user:bob", "user", {"team": "dev", "level": 2})
    assert principal_from(base, {"team": "ops"}).claims == {"team": "ops", "level": 2}


def test_each_fact_comes_from_the_most_specific_level_that_sets_it() -> None:
    edge = Edge("test", run=RunContext(principal="agent:default", session_id="default",
                                       source_ip="10.0.0.1", extra={"ticket": "T-0"}))
    with acting_as("agent:ambient", session_id="ambient", acting_for="user:carol"):
        call = edge.build_call("t", {"a": 1}, RunContext(source_ip="192.0.2.7"),
                               RunContext(principal="agent:run"))
    assert call.principal.id == "agent:run"
    assert call.session_id == "ambient"
    assert call.context.source_ip == "192.0.2.7"
    assert call.context.acting_for == "user:carol"
    assert call.context.extra == {"ticket": "T-0"}
    assert (call.origin, call.server, dict(call.args)) == ("test", "local", {"a": 1})
    nobody = Edge("test").build_call("t", {})
    assert nobody.principal == ANONYMOUS and nobody.session_id is None


def test_run_contexts_are_found_in_framework_context_objects() -> None:
    run = RunContext(principal="agent:x")

    class AppContext:
        def __init__(self) -> None:
            self.agentguard = {"principal": "agent:y", "session_id": "s"}

    assert run_context_from(run) is run
    assert run_context_from({"agentguard": run}) is run
    assert run_context_from(AppContext()) == RunContext(principal="agent:y", session_id="s")
    assert run_context_from({"user": "bob"}) is None and run_context_from(None) is None
    with pytest.raises(ConfigError, match="unknown RunContext fields: nope"):
        RunContext.coerce({"nope": 1})
    with pytest.raises(ConfigError, match="expected a RunContext"):
        RunContext.coerce(42)


def test_hints_combine_what_the_framework_reports_with_configuration() -> None:
    edge = Edge("test", hints={"delete": ToolHints(privilege="destructive",
                                                    labels=frozenset({"data"}))})
    merged = edge.hints_for("delete", ToolHints(read_only=False, labels=frozenset({"fs"})))
    assert merged == ToolHints(read_only=False, privilege="destructive",
                               labels=frozenset({"data", "fs"}))
    assert edge.hints_for("other") == ToolHints()
    assert Edge("test", hints=ToolHints(destructive=True)).hints_for("x").destructive


def test_schema_defaults_fill_only_missing_arguments() -> None:
    schema = {"type": "object", "properties": {
        "path": {"type": "string"}, "recursive": {"default": False},
        "tags": {"default": ["a"]}}}
    filled = fill_schema_defaults({"path": "/x", "recursive": True}, schema)
    assert filled == {"path": "/x", "recursive": True, "tags": ["a"]}
    filled["tags"].append("b")
    assert schema["properties"]["tags"]["default"] == ["a"]  # defaults are copied
    assert fill_schema_defaults({"a": 1}, None) == {"a": 1}


async def test_without_a_guard_the_edge_fails_closed() -> None:
    with pytest.raises(ConfigError, match="no agentguard Guard is configured"):
        await Edge("test").authorize("delete", {"path": "/x"})


async def test_the_ambient_guard_is_used_when_none_is_given(guard: Guard) -> None:
    with using_guard(guard):
        auth = await Edge("test").authorize("drop", {"table": "t"})
    assert auth is not None and auth.outcome == "denied"
    assert events(guard, "call.denied")[0]["origin"] == "test"


async def test_statically_allowed_tools_skip_the_guard(guard: Guard) -> None:
    assert await Edge("test", guard=guard).authorize("get_user", {"id": 1}) is None
    assert events(guard) == []


def test_sync_authorization_inside_a_running_loop_is_a_usage_error(guard: Guard) -> None:
    import anyio

    from agentguard import UsageError

    async def inside() -> None:
        with pytest.raises(UsageError, match="running event loop"):
            Edge("test", guard=guard).authorize_sync("delete", {"path": "/x"})

    anyio.run(inside)


ISOLATED = """
import sys
for name in {hidden!r}:
    sys.modules[name] = None  # as if not installed
import agentguard.adapters
try:
    import agentguard.adapters.{module} as m
    {touch}
except Exception as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize(("module", "hidden", "touch", "extra"), [
    ("langchain", ["langchain_core"], "pass", "langchain"),
    ("langchain", ["langchain", "langchain.agents"], "m.GuardMiddleware", "langchain"),
    ("openai", ["agents"], "m.guard_function_tool", "openai"),
    ("anthropic", ["anthropic"], "m.guard_beta_tools", "anthropic"),
])
def test_missing_frameworks_fail_with_an_install_hint(
    module: str, hidden: list[str], touch: str, extra: str,
) -> None:
    code = textwrap.dedent(ISOLATED.format(hidden=hidden, module=module, touch=touch))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.startswith("ConfigError")
    assert f"pip install 'agentguard[{extra}]'" in out


def test_dispatchers_and_the_package_need_no_framework() -> None:
    code = textwrap.dedent("""
        import sys
        for name in ("openai", "anthropic", "agents", "langchain_core", "langchain"):
            sys.modules[name] = None
        import agentguard.adapters
        from agentguard.adapters.openai import ToolDispatcher
        from agentguard.adapters.anthropic import ToolDispatcher as A
        def f(x: int) -> int:
            return x
        print(ToolDispatcher([f]).chat_tools()[0]["function"]["name"], A([f]).tools()[0]["name"])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.split() == ["f", "f"]
