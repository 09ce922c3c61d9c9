"""The PostgreSQL roles recipe (``examples/postgres/roles.sql``, issue 14), applied to the real
server: the agent's database role runs its guard (holds, settles, consumes, audits) but cannot
write a vote, a TOTP seed, or change or delete an audit row; approvers' role votes."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from agentguard import Guard, load_policy
from agentguard.approvals import cast_vote
from agentguard.audit import MemoryAuditLog
from agentguard.audit.postgres import PostgresAuditLog
from agentguard.errors import StoreError
from agentguard.store.postgres import PostgresStore
from agentguard.trust import generate_key
from agentguard.trust.keys import public_key_text
from agentguard.types import ApprovalVote
from tests.adversarial.test_signed_votes import POLICY, Mailbox, rotate
from tests.pg_support import drop_schema, new_schema_name, reachable_dsn

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]
RECIPE = Path(__file__).parents[2] / "examples" / "postgres" / "roles.sql"


def recipe(schema: str, agent: str, approver: str) -> str:
    """The recipe with this test's names (roles are cluster-wide: never the real ones)."""
    text = RECIPE.read_text()
    text = text.replace("agentguard_agent", agent).replace("agentguard_approver", approver)
    return re.sub(r"\bagentguard\.", f"{schema}.", re.sub(
        r"SCHEMA agentguard\b", f"SCHEMA {schema}", text))


@pytest.fixture
def roles() -> Iterator[dict[str, str]]:
    dsn = reachable_dsn()
    schema, tag = new_schema_name(), secrets.token_hex(4)
    agent, approver = f"ag_agent_{tag}", f"ag_approver_{tag}"
    with psycopg.connect(dsn, autocommit=True) as conn:  # the owner creates the schema
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield {"owner": dsn, "schema": schema, "agent": agent, "approver": approver}
    finally:
        drop_schema(dsn, schema)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for role in (agent, approver):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def as_role(dsn: str, role: str) -> str:
    info = conninfo_to_dict(dsn)
    info["user"] = role
    return make_conninfo(**info)


async def test_the_agents_role_cannot_vote_enrol_or_erase(
    roles: dict[str, str], tmp_path: Path
) -> None:
    owner, schema = roles["owner"], roles["schema"]
    async with PostgresStore(owner, schema=schema):  # created and migrated by the owner
        pass
    PostgresAuditLog(owner, schema=schema).close()
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(recipe(schema, roles["agent"], roles["approver"]))
    try:
        with psycopg.connect(as_role(owner, roles["agent"]), autocommit=True) as c:
            c.execute("SELECT 1")
    except psycopg.OperationalError as exc:  # a server that wants passwords for new roles
        pytest.skip(f"cannot log in as a new role without a password: {exc}")

    keys = {who: generate_key(tmp_path / "keys" / f"{who}.key") for who in ("dave", "erin")}
    (tmp_path / "trust.yaml").write_text(yaml.safe_dump({"version": 1, "approvers": [
        {"id": w, "keys": [public_key_text(k.public_key())]} for w, k in keys.items()]}))
    (tmp_path / "policy.yaml").write_text(POLICY)
    agent_dsn = as_role(owner, roles["agent"])
    audit = PostgresAuditLog(agent_dsn, schema=schema)
    agent_store = PostgresStore(agent_dsn, schema=schema)
    async with agent_store:
        guard = Guard(load_policy(tmp_path / "policy.yaml"), store=agent_store, audit=audit,
                      channels=[Mailbox()])
        first = await guard.authorize(rotate(), wait=0)
        assert first.outcome == "pending" and first.request_id
        rid = first.request_id

        # The agent's role writing votes into the store: refused by the database itself.
        with pytest.raises(StoreError, match="permission denied"):
            await agent_store.record_vote(rid, ApprovalVote(
                approver="dave", approve=True, at=time.time(), channel="cli"))
        forbidden: list[tuple[str, tuple[Any, ...]]] = [
            (f"UPDATE {schema}.requests SET doc = doc WHERE id = %s", (rid,)),
            (f"INSERT INTO {schema}.secrets (name, value) VALUES ('totp:carol', 'x')", ()),
            (f"UPDATE {schema}.audit_log SET line = line", ()),
            (f"DELETE FROM {schema}.audit_log", ()),
            (f"DELETE FROM {schema}.requests", ()),
        ]
        with psycopg.connect(agent_dsn, autocommit=True) as conn:
            for statement, params in forbidden:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement, params)

        # Approvers, on their own role and with their own keys, vote; the agent's guard runs it.
        async with PostgresStore(as_role(owner, roles["approver"]), schema=schema) as votes:
            for who in ("dave", "erin"):
                _, problem = await cast_vote(store=votes, audit=MemoryAuditLog(),
                                             request_id=rid, approver=who, approve=True,
                                             channel="cli", key=keys[who])
                assert problem is None
        run = await guard.authorize(rotate(), wait=0)
        assert run.outcome == "approved" and set(run.approvers) == {"dave", "erin"}
    audit.close()
