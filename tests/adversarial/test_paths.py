"""Attack: reach a production secret through a spelling of its path the policy did not write.

The agent controls every argument. Where a rule says ``prod/**`` is privileged and every
other secret is a routine read, the agent asks for ``staging/../prod/db``, ``./prod/db`` or
``prod\\db`` — the tool opens ``prod/db`` — or climbs out of the tree with ``../``. Each must
be held as prod (or refused outright), never run as a routine read: through ``@guarded``
against the shipped scenarios policy, through the adversarial policy's ``/tmp`` allow rule,
and through the real ``agentguard policy explain`` on the shipped proxy policy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentguard import Guard, ToolCallRefused, guarded, load_policy
from agentguard.audit import MemoryAuditLog
from agentguard.policy import Policy
from agentguard.store import MemoryStore
from tests.adversarial.helpers import Recorder, cli, vote

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "examples" / "policies" / "scenarios.yaml"
OPS_POLICY = ROOT / "examples" / "proxy" / "ops-policy.yaml"

#: Each names prod/db to the tool, and none is matched by a glob on the raw text.
DISGUISED = ["staging/../prod/db", "./prod/db", "prod\\db", "/prod/db", "PROD/db",
             "staging/x/../../prod/db"]
#: Each climbs above the root the policy reasons about.
CLIMBING = ["../prod/db", "staging/../../prod/db", "/../etc/shadow", "..\\prod\\db"]


async def test_disguised_prod_path_is_held_for_security_never_a_routine_read() -> None:
    ran: list[str] = []
    security = Recorder(lambda request: [vote("carol", approve=False, reason="not today")])
    audit = MemoryAuditLog()
    async with Guard(load_policy(SCENARIOS), store=MemoryStore(), audit=audit,
                     channels=[security]) as guard:

        @guarded(guard=guard, name="secrets.read")
        async def read_secret(path: str) -> str:
            ran.append(path)
            return "s3cret"

        assert await read_secret("staging/db") == "s3cret"  # a routine read still runs
        for spelling in DISGUISED:
            with pytest.raises(ToolCallRefused) as refused:
                await read_secret(spelling)
            assert refused.value.kind == "denied" and "carol" in str(refused.value), spelling
    assert ran == ["staging/db"]
    assert [(r.rule_id, r.privilege, r.call["args"]["path"]) for r in security.asked] == [
        ("prod-secrets", "privileged", spelling) for spelling in DISGUISED]


async def test_path_climbing_above_its_root_is_refused_before_anyone_is_asked() -> None:
    ran: list[str] = []
    security = Recorder(lambda request: [vote("carol")])
    audit = MemoryAuditLog()
    async with Guard(load_policy(SCENARIOS), store=MemoryStore(), audit=audit,
                     channels=[security]) as guard:

        @guarded(guard=guard, name="secrets.read")
        async def read_secret(path: object) -> str:
            ran.append(str(path))
            return "s3cret"

        for value in [*CLIMBING, "prod/db\x00.bak", 3, None, ["prod/db"]]:
            with pytest.raises(ToolCallRefused) as refused:
                await read_secret(value)
            assert refused.value.kind == "denied", value
            assert refused.value.rule_id == "prod-secrets"
            assert "argument 'path'" in refused.value.reason, value
    assert ran == [] and security.asked == []
    denied = [e for e in audit.events if e["type"] == "call.denied"]
    assert len(denied) == len(CLIMBING) + 4
    assert all(e["rule_id"] == "prod-secrets" for e in denied)
    assert "climbs above its root" in denied[0]["reason"]


async def test_tmp_allow_rule_cannot_be_walked_out_of(policy: Policy) -> None:
    """The adversarial policy lets anyone delete under /tmp; /tmp/../etc is not under /tmp."""
    ran: list[str] = []
    oncall = Recorder(lambda request: [vote("alice", approve=False)])
    async with Guard(policy, store=MemoryStore(), channels=[oncall]) as guard:

        @guarded(guard=guard, name="delete")
        async def delete(path: str) -> None:
            ran.append(path)

        await delete("/tmp/scratch")
        for path in ["/tmp/../etc/passwd", "/tmp/", "\\tmp\\..\\etc", "tmp/x"]:
            with pytest.raises(ToolCallRefused) as refused:
                await delete(path)
            assert refused.value.rule_id == "delete", path  # destructive: held for oncall
        with pytest.raises(ToolCallRefused) as refused:
            await delete("/tmp/../../etc/passwd")
        assert refused.value.rule_id == "delete-tmp" and refused.value.kind == "denied"
    assert ran == ["/tmp/scratch"]
    assert [r.rule_id for r in oncall.asked] == ["delete"] * 4


def test_proxy_policy_through_the_real_cli(tmp_path: Path) -> None:
    """The shipped proxy policy, decided by the real ``agentguard policy explain``."""
    def explain(path: str) -> dict:
        call = {"tool": "read_secret", "server": "ops", "args": {"path": path}}
        done = cli("policy", "explain", str(OPS_POLICY), "--call", json.dumps(call), "--json",
                   home=tmp_path)
        assert done.returncode == 0, done.stderr.decode()
        return json.loads(done.stdout)

    for spelling in ("staging/../prod/db", "prod//db", "./prod/db"):
        out = explain(spelling)
        assert (out["rule"], out["class"], out["decision"]) == (
            "prod-secrets", "privileged", "require_approval"), spelling
    out = explain("../prod/db")
    assert (out["rule"], out["decision"]) == ("prod-secrets", "deny")
    assert "climbs above its root" in out["reason"]
