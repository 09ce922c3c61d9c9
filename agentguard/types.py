"""Core value types shared by every part of agentguard.

Dataclasses inside, pydantic only at the boundaries. Outcomes are tagged unions with a
``kind`` literal so that edges can ``match`` on them.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentguard.errors import refusal_for

__all__ = [
    "Allow",
    "ApprovalRequest",
    "ApprovalSpec",
    "ApprovalVote",
    "Authorization",
    "CallContext",
    "Classification",
    "Decision",
    "Deny",
    "Grant",
    "GrantQuery",
    "GrantScope",
    "Outcome",
    "Principal",
    "ReauthSpec",
    "RequestStatus",
    "RequireApproval",
    "RequireReauth",
    "Requirement",
    "ToolCall",
    "ToolHints",
    "new_request_id",
]


def new_request_id(prefix: str = "req") -> str:
    """Return an unguessable id: a prefix and 192 bits of randomness, URL-safe.

    The prefix also keeps an id from starting with ``-``, which a command line would read as
    an option.
    """
    return f"{prefix}_{secrets.token_urlsafe(24)}"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is making the call: an agent, service account, pipeline or human.

    Attributes:
        id: Stable identifier, e.g. ``agent:support-bot`` or ``svc:deploy-bot``.
        kind: ``agent``, ``service``, ``pipeline`` or ``user``.
        claims: Verified attributes (team, acting-for user, token claims...).
    """

    id: str
    kind: str = "agent"
    claims: Mapping[str, Any] = field(default_factory=dict)


ANONYMOUS = Principal(id="anonymous", kind="agent")


@dataclass(frozen=True, slots=True)
class ToolHints:
    """What a tool says about itself (MCP annotations or decorator arguments).

    Hints are untrusted unless the server is trusted: they may raise a class, never lower it.

    Attributes:
        read_only: The tool does not modify its environment.
        destructive: The tool may perform destructive updates.
        idempotent: Repeating the call has no additional effect.
        open_world: The tool interacts with external entities.
        privilege: A privilege class declared by the tool's author (decorator only).
        labels: Labels declared by the tool's author (``secret``, ``deploy``...).
        unpinned: The tool appeared after its server's tools were first pinned (MCP); the
            policy's unknown-tool requirement applies at least.
        requires_approval: The application asks a human to approve this call (the Agents
            SDK's ``needs_approval``); the policy's requirement is raised to approval at
            least (the stricter of the two wins).
    """

    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None
    open_world: bool | None = None
    privilege: str | None = None
    labels: frozenset[str] = frozenset()
    unpinned: bool = False
    requires_approval: bool = False


@dataclass(frozen=True, slots=True)
class CallContext:
    """Facts about where a call comes from, used by risk signals.

    Attributes:
        source_ip: Address the request came from, if known.
        acting_for: The human the agent acts for (separation of duties uses it).
        extra: Free-form facts (ticket id, user agent...), shown to approvers.
    """

    source_ip: str | None = None
    acting_for: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool invocation, as the guard sees it.

    Attributes:
        tool: Tool name (without server namespace).
        args: Arguments, JSON-compatible.
        principal: Who calls.
        server: Logical server name (``local`` for decorated functions).
        session_id: Session the call belongs to (grants may be scoped to it).
        id: Unique id of this call.
        origin: Which edge built the call (``decorator``, ``mcp-proxy``, ``langchain``...).
        hints: What the tool says about itself.
        context: Where the call comes from.
        tool_definition_hash: Hash of the tool's full definition, when known (MCP pinning).
    """

    tool: str
    args: Mapping[str, Any]
    principal: Principal = ANONYMOUS
    server: str = "local"
    session_id: str | None = None
    id: str = field(default_factory=lambda: new_request_id("call"))
    origin: str = "api"
    hints: ToolHints = ToolHints()
    context: CallContext = CallContext()
    tool_definition_hash: str | None = None


# --------------------------------------------------------------------------- requirements


@dataclass(frozen=True, slots=True)
class ApprovalSpec:
    """How a held call is approved.

    Attributes:
        approvers: Identities or ``group:NAME`` entries allowed to decide (empty: anyone
            the channel verifies, which the policy loader only permits when explicit).
        quorum: Number of distinct approvals needed (M of N).
        separation_of_duties: The principal and the human it acts for may not approve.
        timeout: Seconds to wait before the request expires (a deny).
        channels: Channel names to ask; empty means every configured channel.
        max_grant: Longest "approve for N seconds" an approver may give (0: single use only).
        assurance: ``signed``: only votes signed by a key the trust file lists count;
            ``any``: every verified channel's vote counts.
    """

    approvers: tuple[str, ...] = ()
    quorum: int = 1
    separation_of_duties: bool = False
    timeout: float = 300.0
    channels: tuple[str, ...] = ()
    max_grant: float = 0.0
    assurance: Literal["any", "signed"] = "any"


@dataclass(frozen=True, slots=True)
class ReauthSpec:
    """How someone re-proves their identity.

    Attributes:
        method: ``totp`` (or ``oauth`` on the HTTP proxy).
        max_age: A verification younger than this many seconds satisfies the step-up.
        subject: Who re-authenticates: the ``principal`` (or the human it acts for), or the
            ``approver`` who approved the call.
        acr_values: OAuth step-up (RFC 9470): authentication context classes the token's
            ``acr`` must be one of (empty: any).
    """

    method: str = "totp"
    max_age: float = 0.0
    subject: Literal["principal", "approver"] = "principal"
    acr_values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Stores decode JSON lists: keep a tuple so a stored spec equals (and hashes like) the
        # original.
        if not isinstance(self.acr_values, tuple):
            object.__setattr__(self, "acr_values", tuple(self.acr_values))


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a call needs before it may run. Requirements only ever go up (union of steps).

    Attributes:
        approve: A human must approve.
        reauth: Someone must re-authenticate.
        deny: The call is refused outright.
    """

    approve: bool = False
    reauth: bool = False
    deny: bool = False

    @classmethod
    def parse(cls, text: str) -> Requirement:
        """Parse ``allow``, ``approve``, ``reauth``, ``approve+reauth`` or ``deny``."""
        steps = {s.strip() for s in text.split("+")}
        unknown = steps - {"allow", "approve", "reauth", "deny"}
        if unknown or not steps:
            raise ValueError(
                f"unknown requirement {text!r}: use allow, approve, reauth, approve+reauth or deny"
            )
        return cls(approve="approve" in steps, reauth="reauth" in steps, deny="deny" in steps)

    def __or__(self, other: Requirement) -> Requirement:
        return Requirement(
            self.approve or other.approve, self.reauth or other.reauth, self.deny or other.deny
        )

    @property
    def rank(self) -> int:
        """Total order for display and comparison: allow < approve < reauth < both < deny."""
        if self.deny:
            return 4
        return (1 if self.approve else 0) + (2 if self.reauth else 0)

    def __str__(self) -> str:
        if self.deny:
            return "deny"
        steps = [s for s, on in (("approve", self.approve), ("reauth", self.reauth)) if on]
        return "+".join(steps) or "allow"


ALLOW_REQUIREMENT = Requirement()


@dataclass(frozen=True, slots=True)
class Classification:
    """Privilege class and labels of a call, and which rule said so.

    Attributes:
        privilege: Class name (``read``, ``write``, ``destructive``, ``privileged``...).
        rank: Position of the class in the policy's ordering (higher is more privileged).
        labels: Labels such as ``secret``, ``policy``, ``credential``, ``deploy``.
        rule_id: Id of the rule that matched, ``None`` when defaults applied.
        reason: Why the call got this class.
        standards: Standards tags of the rule (``OWASP-NHI-02``...).
    """

    privilege: str
    rank: int
    labels: frozenset[str] = frozenset()
    rule_id: str | None = None
    reason: str = ""
    standards: tuple[str, ...] = ()


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class Allow:
    """The call may run.

    Attributes:
        rule_id: Deciding rule.
        reason: Human-readable reason.
        classification: The call's class.
        signals: Signals that fired.
        grant_id: Id of the grant that satisfied a requirement, if any.
    """

    rule_id: str | None
    reason: str
    classification: Classification
    signals: tuple[str, ...] = ()
    grant_id: str | None = None
    kind: Literal["allow"] = "allow"
    requirement: Requirement = ALLOW_REQUIREMENT


@dataclass(frozen=True, slots=True)
class Deny:
    """The call is refused by policy (no human is asked)."""

    rule_id: str | None
    reason: str
    classification: Classification
    signals: tuple[str, ...] = ()
    kind: Literal["deny"] = "deny"
    requirement: Requirement = Requirement(deny=True)


@dataclass(frozen=True, slots=True)
class RequireApproval:
    """A human must approve (and then, if ``reauth`` is set, re-authenticate)."""

    rule_id: str | None
    reason: str
    classification: Classification
    approval: ApprovalSpec
    signals: tuple[str, ...] = ()
    reauth: ReauthSpec | None = None
    requirement: Requirement = Requirement(approve=True)
    kind: Literal["require_approval"] = "require_approval"


@dataclass(frozen=True, slots=True)
class RequireReauth:
    """Someone must re-prove their identity."""

    rule_id: str | None
    reason: str
    classification: Classification
    reauth: ReauthSpec
    signals: tuple[str, ...] = ()
    requirement: Requirement = Requirement(reauth=True)
    kind: Literal["require_reauth"] = "require_reauth"


Decision = Allow | Deny | RequireApproval | RequireReauth


# --------------------------------------------------------------------------- approvals


RequestStatus = Literal["pending", "approved", "denied", "expired", "consumed", "cancelled"]


@dataclass(frozen=True, slots=True)
class ApprovalVote:
    """One approver's answer to a request.

    Attributes:
        approver: Verified identity of the approver (``alice``, ``slack:U123``).
        approve: True to approve, False to deny.
        at: Unix time of the vote.
        channel: Channel that carried the vote (``console``, ``cli``, ``slack``...).
        reason: Free text given with a deny.
        grant_ttl: Seconds of "approve for N" the approver asked for (0: single use).
        edited_args: Arguments the approver proposes instead (a deny vote: the original call
            is refused and the edited call is classified and decided afresh).
        receipt: The signed vote (:class:`agentguard.trust.SignedVote` or, from the web page,
            :class:`agentguard.trust.PasskeyVote`, as a dict), when the approver signed; the
            guard verifies it against the trust file, never the row.
    """

    approver: str
    approve: bool
    at: float
    channel: str
    reason: str = ""
    grant_ttl: float = 0.0
    edited_args: Mapping[str, Any] | None = None
    receipt: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """A held call waiting for humans, as stored.

    Attributes:
        id: Unguessable request id (>= 128 bits).
        call: The call, as JSON-compatible data (see :func:`agentguard.canonical.call_to_dict`).
        call_hash: SHA-256 over the canonical call; an approval is valid for this hash only.
        created_at: Unix time the request was made.
        expires_at: Unix time after which it can no longer be approved.
        rule_id: Deciding rule.
        reason: Why the call was held (rule, signals).
        privilege: Class of the call.
        labels: Labels of the call.
        approval: Who may approve and how many.
        reauth: Re-authentication that must follow approval, if any.
        status: Lifecycle state.
        votes: Votes so far, oldest first.
        decided_by: Approvers whose votes settled the request.
        decided_at: Unix time the request left ``pending``.
        settings_hash: Hash of the rule's approval settings (what a signed vote names).
    """

    id: str
    call: Mapping[str, Any]
    call_hash: str
    created_at: float
    expires_at: float
    rule_id: str | None
    reason: str
    privilege: str
    labels: tuple[str, ...]
    approval: ApprovalSpec
    reauth: ReauthSpec | None = None
    status: RequestStatus = "pending"
    votes: tuple[ApprovalVote, ...] = ()
    decided_by: tuple[str, ...] = ()
    decided_at: float | None = None
    settings_hash: str = ""

    def is_expired(self, now: float | None = None) -> bool:
        """True once the request can no longer be approved."""
        return (time.time() if now is None else now) >= self.expires_at


GrantScope = Literal["once", "session", "ttl"]


@dataclass(frozen=True, slots=True)
class Grant:
    """Standing permission created by an approval ("approve for 15m", this call once, this
    session) or a re-authentication.

    A grant is bound to what its approvers decided: the rule that held the call and a hash of
    that rule's approval settings (approvers, quorum, separation of duties, re-authentication,
    longest grant), the principal **and** the human it acts for, the server and the tool. It
    never covers a call another rule decides, another human's call, or a more privileged
    class; a policy edit that changes the rule's approval settings retires it.

    Attributes:
        id: Grant id.
        scope: ``once`` (single use), ``session`` (this session) or ``ttl`` (until expiry).
        principal: Principal id covered.
        server: Server name or glob.
        tool: Tool name or glob.
        max_rank: Highest privilege rank covered.
        expires_at: Unix time of expiry.
        granted_by: Who created it.
        call_hash: For ``once`` grants, the exact call allowed.
        session_id: For ``session`` grants.
        kind: ``approval`` or ``reauth`` (a reauth grant is step-up freshness).
        created_at: Unix time of creation.
        uses: Times the grant was used.
        rule_id: The rule whose approval created it (``None``: the policy's defaults).
        settings_hash: Hash of that rule's approval settings when the grant was made
            (:func:`agentguard.grants.settings_hash`).
        acting_for: The human the principal acted for (``None``: nobody).
        request_id: The approval request the grant came from.
        receipts: Under ``assurance: signed``, the signed votes that made it ("approve for
            N"): the guard uses such a grant only after verifying them again
            (:func:`agentguard._signed.verify_grant`), and never a signed rule's grant
            without them.
        shown: With ``receipts``: the held call as its approvers were shown it
            (:func:`agentguard.approvals.shown_view`), whose hash the receipts name.
    """

    id: str
    scope: GrantScope
    principal: str
    server: str
    tool: str
    max_rank: int
    expires_at: float
    granted_by: str
    call_hash: str | None = None
    session_id: str | None = None
    kind: Literal["approval", "reauth"] = "approval"
    created_at: float = 0.0
    uses: int = 0
    rule_id: str | None = None
    settings_hash: str = ""
    acting_for: str | None = None
    request_id: str | None = None
    receipts: tuple[dict[str, Any], ...] = ()
    shown: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class GrantQuery:
    """What a call needs a grant to cover (see :meth:`agentguard.store.Store.use_grant`).

    Attributes:
        principal: The calling principal's id.
        acting_for: The human it acts for, if any.
        server: Server name.
        tool: Tool name.
        rule_id: The rule that holds the call.
        settings_hash: Hash of that rule's approval settings now.
        rank: The call's privilege rank.
        call_hash: The exact call.
        session_id: The call's session.
        kind: ``approval`` or ``reauth``.
    """

    principal: str
    server: str
    tool: str
    rank: int
    call_hash: str
    rule_id: str | None = None
    settings_hash: str = ""
    acting_for: str | None = None
    session_id: str | None = None
    kind: Literal["approval", "reauth"] = "approval"


# --------------------------------------------------------------------------- outcomes


Outcome = Literal[
    "allowed", "approved", "denied", "expired", "unreachable", "reauth_failed", "invalid",
    "pending",
]


@dataclass(frozen=True, slots=True)
class Authorization:
    """What the guard answers for one call. Edges render it in their own idiom.

    Attributes:
        call: The call that may run (an approver may have edited the arguments; the edited
            call was re-decided).
        decision: The policy decision.
        outcome: ``allowed`` / ``approved`` may run; ``pending``: held for approval, nothing
            ran, the identical call runs once approved; the rest are refusals.
        reason: Human-readable reason for the outcome.
        request_id: Approval request id, when the call was held.
        approvers: Who approved.
        shadow: True when the policy runs in shadow mode and the decision was not enforced.
    """

    call: ToolCall
    decision: Decision
    outcome: Outcome
    reason: str
    request_id: str | None = None
    approvers: tuple[str, ...] = ()
    shadow: bool = False

    @property
    def allowed(self) -> bool:
        """True when the call may run."""
        return self.outcome in ("allowed", "approved")

    @property
    def rule_id(self) -> str | None:
        """The rule that decided."""
        return self.decision.rule_id

    def message(self) -> str:
        """One line for the agent: what happened, which rule, and whether retrying helps.

        Only a ``pending`` hold says to try again later (the identical call runs once
        approved); every other refusal says that retrying the same call will not help.
        """
        from agentguard.sanitize import escape_text

        if self.allowed:
            return f"allowed: {escape_text(self.reason)}"
        rule = f" by rule {escape_text(self.rule_id)!r}" if self.rule_id else ""
        tool = escape_text(self.call.tool)
        if self.outcome == "pending":
            return (
                f"agentguard is holding {tool!r} for approval{rule} under request "
                f"{escape_text(self.request_id or '?')}: {escape_text(self.reason)}. Nothing ran "
                "yet. Retry later: the identical call runs once it is approved (a changed "
                "call needs its own approval)."
            )
        what = {
            "denied": "denied",
            "expired": "expired: no approval arrived in time",
            "unreachable": "unreachable: no approval could be obtained",
            "reauth_failed": "re-authentication failed",
            "invalid": "invalid arguments",
        }[self.outcome]
        return (
            f"agentguard refused {tool!r} ({what}){rule}: "
            f"{escape_text(self.reason)}. "
            "Nothing ran. Retrying the same call will not help; ask a human operator."
        )

    def raise_for_refusal(self) -> None:
        """Raise the matching :class:`~agentguard.errors.ToolCallRefused` if refused."""
        if not self.allowed:
            raise refusal_for(self)
