"""What a grant is bound to, decided in one place.

A grant ("approve for 15m", or the single-use approval of a call that runs later) must never
cover more than its rule and its human. It is bound to the rule that held the call and a hash
of that rule's approval settings, the principal and the human it acts for, the server and the
tool; :func:`~agentguard.store._rules.grant_covers` applies the binding in every store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agentguard.canonical import canonical_bytes, sha256_hex
from agentguard.identity import canonical_identity
from agentguard.types import ApprovalSpec, GrantQuery, ReauthSpec, ToolCall

__all__ = ["GrantBinding", "glob_literal", "settings_hash"]


def glob_literal(name: str) -> str:
    """Quote glob characters: a grant for a tool named ``k8s.*`` covers that tool only."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def settings_hash(
    rule_id: str | None, approval: ApprovalSpec, reauth: ReauthSpec | None
) -> str:
    """SHA-256 over what the approvers of ``rule_id`` agreed to: who may approve (groups
    expanded), the quorum, separation of duties, the longest grant and the re-authentication.

    A policy edit that changes any of these changes the hash, which retires the rule's grants.
    """
    data = {
        "rule": rule_id,
        "approvers": sorted({canonical_identity(a) for a in approval.approvers}),
        "quorum": approval.quorum,
        "separation_of_duties": approval.separation_of_duties,
        "max_grant": approval.max_grant,
        "assurance": approval.assurance,
        "reauth": None if reauth is None else {
            "method": reauth.method, "max_age": reauth.max_age, "subject": reauth.subject,
            "acr_values": sorted(reauth.acr_values),
        },
    }
    return sha256_hex(canonical_bytes(data))


@dataclass(frozen=True, slots=True)
class GrantBinding:
    """Everything a grant for one held call is bound to.

    Attributes:
        principal: The calling principal's id.
        acting_for: The human it acts for.
        server: Server name.
        tool: Tool name.
        rule_id: The rule that held the call.
        settings_hash: :func:`settings_hash` of that rule now.
        rank: The call's privilege rank.
        session_id: The call's session.
    """

    principal: str
    acting_for: str | None
    server: str
    tool: str
    rule_id: str | None
    settings_hash: str
    rank: int
    session_id: str | None

    @classmethod
    def of(
        cls, call: ToolCall, rule_id: str | None, rank: int, approval: ApprovalSpec,
        reauth: ReauthSpec | None,
    ) -> GrantBinding:
        """The binding of ``call`` held by ``rule_id`` with these (expanded) settings."""
        return cls(
            principal=call.principal.id, acting_for=call.context.acting_for,
            server=call.server, tool=call.tool, rule_id=rule_id,
            settings_hash=settings_hash(rule_id, approval, reauth), rank=rank,
            session_id=call.session_id)

    def query(self, call_hash: str) -> GrantQuery:
        """The store query for a grant covering the call with ``call_hash``."""
        return GrantQuery(
            principal=self.principal, acting_for=self.acting_for, server=self.server,
            tool=self.tool, rule_id=self.rule_id, settings_hash=self.settings_hash,
            rank=self.rank, call_hash=call_hash, session_id=self.session_id)
