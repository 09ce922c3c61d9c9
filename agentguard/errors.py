"""Exceptions raised by agentguard: every one derives from :class:`AgentGuardError`.

This is the one place the tree is written down (``tests/test_public_api.py`` checks that
every exception class agentguard defines is in it and derives from the root). Most are raised
to you; the few marked *internal* are caught inside agentguard and turned into a refusal or a
message, and are listed so that nothing escapes the root unnoticed::

    AgentGuardError
     ├── PolicyError              a policy file is invalid (names file, rule, field)
     ├── ConfigError              runtime configuration is invalid or a plug-in is missing
     │    ├── TrustFileError        the trust file is invalid           (agentguard.trust)
     │    ├── KeyFileError          an approver/service key file is invalid (agentguard.trust)
     │    └── StatementError        a vote statement is malformed       (agentguard.trust)
     ├── UsageError               the API was used wrongly (e.g. sync call inside a running loop)
     ├── StoreError               the store failed; the guard turns this into a refusal
     │    └── ConflictError       an atomic claim lost (already decided, consumed or expired)
     ├── AuditError               an audit write failed; privileged calls are refused
     ├── ChainError               the audit log's hash chain does not verify (agentguard.audit)
     ├── CanonicalizationError    a value has no unambiguous JSON form   (agentguard.canonical)
     ├── ArgumentValidationError  arguments do not fit the tool's schema (raised by validators)
     ├── UnsafePath               a path climbs above its root or has a NUL (agentguard.policy)
     ├── ArgumentRefused          internal: a path operator refuses an argument
     ├── SealError                a sealed TOTP seed cannot be opened    (agentguard.reauth)
     ├── TokenError               an OAuth access token is refused       (agentguard.oauth)
     │    ├── MalformedToken, UnsupportedAlgorithm, UnknownKey, InvalidSignature,
     │    └── TokenExpired, TokenNotYetValid, InvalidIssuer, InvalidAudience, MissingClaim
     ├── KeySetUnavailable        the OAuth issuer's key set cannot be fetched
     ├── AnswerRejected           internal: an approver's typed answer is not understood
     ├── Refused                  internal: a request the web page refuses (with its status)
     ├── TerminalUnavailable      internal: no controlling terminal (also an ``OSError``)
     ├── TerminalClosed           internal: the terminal hung up (also an ``EOFError``)
     ├── WireError                internal: a malformed JSON-RPC message (agentguard.proxy)
     ├── UnsafeHeader             internal: a header the proxy's HTTP relay will not send
     ├── SseTooLarge              internal: an upstream's event-stream event is too large
     ├── UpstreamUnavailable      an MCP upstream is down (also the MCP SDK's ``MCPError``)
     └── ToolCallRefused          the guard refused a call; ``kind`` says why
          ├── CallDenied            kind == "denied"
          ├── ApprovalExpired       kind == "expired"
          ├── ChannelUnreachable    kind == "unreachable"
          ├── ReauthFailed          kind == "reauth_failed"
          ├── ArgumentsInvalid      kind == "invalid"
          └── ApprovalPending       kind == "pending" (held; retry the identical call later)

Several also derive from the built-in exception callers already catch (``ValueError`` for
``CanonicalizationError``, ``ChainError``, ``UnsafePath``, ``SealError`` and the trust
errors), so older ``except ValueError`` code keeps working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from agentguard.types import Authorization

__all__ = [
    "AgentGuardError",
    "ApprovalExpired",
    "ApprovalPending",
    "ArgumentValidationError",
    "ArgumentsInvalid",
    "AuditError",
    "CallDenied",
    "ChannelUnreachable",
    "ConfigError",
    "ConflictError",
    "PolicyError",
    "ReauthFailed",
    "RefusalKind",
    "StoreError",
    "ToolCallRefused",
    "UsageError",
    "refusal_for",
]

RefusalKind = Literal[
    "denied", "expired", "unreachable", "reauth_failed", "invalid", "pending"]


class AgentGuardError(Exception):
    """Base class of every error agentguard raises."""


class PolicyError(AgentGuardError):
    """A policy file failed to load or validate.

    Attributes:
        file: Path of the policy file, if known.
        rule: Id of the offending rule, if the error is inside a rule.
        field: Dotted path of the offending field.
    """

    def __init__(
        self, message: str, *, file: str | None = None, rule: str | None = None,
        field: str | None = None,
    ) -> None:
        self.file = file
        self.rule = rule
        self.field = field
        where = [p for p in (file, f"rule {rule!r}" if rule else None,
                             f"field {field!r}" if field else None) if p]
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class ConfigError(AgentGuardError):
    """Runtime configuration is invalid, or an optional integration is not installed."""


class UsageError(AgentGuardError):
    """The API was used in a way that cannot work (for example a sync call inside a loop)."""


class StoreError(AgentGuardError):
    """The approval/grant store failed. The guard refuses the call (fail closed)."""


class ConflictError(StoreError):
    """An atomic transition lost: the request was already decided, consumed or expired."""


class AuditError(AgentGuardError):
    """An audit record could not be written. Privileged calls are refused."""


class ArgumentValidationError(AgentGuardError):
    """A call's arguments do not fit the tool's schema; the guard refuses it as ``invalid``.

    Raised by argument validators (:mod:`agentguard.validation`) before the policy reads the
    arguments, so a rule never sees a value the tool would read differently.
    """


class ToolCallRefused(AgentGuardError):
    """The guard refused a tool call; nothing ran.

    Attributes:
        kind: One of ``denied``, ``expired``, ``unreachable``, ``reauth_failed``, ``invalid``.
        reason: Human-readable reason, naming the rule that decided.
        rule_id: Id of the deciding rule (``None`` for defaults).
        request_id: Id of the approval request, when the call was held.
        authorization: The full :class:`~agentguard.types.Authorization`.
    """

    kind: RefusalKind = "denied"

    def __init__(self, authorization: Authorization) -> None:
        self.authorization = authorization
        self.reason = authorization.reason
        self.rule_id = authorization.rule_id
        self.request_id = authorization.request_id
        super().__init__(authorization.message())

    @property
    def decision(self) -> Any:
        """The policy decision that led to the refusal."""
        return self.authorization.decision


class CallDenied(ToolCallRefused):
    """The policy or a human denied the call."""

    kind: RefusalKind = "denied"


class ApprovalExpired(ToolCallRefused):
    """Nobody answered before the approval timed out."""

    kind: RefusalKind = "expired"


class ChannelUnreachable(ToolCallRefused):
    """No approval channel could be reached (or the store/audit failed)."""

    kind: RefusalKind = "unreachable"


class ReauthFailed(ToolCallRefused):
    """Re-authentication was required and did not succeed."""

    kind: RefusalKind = "reauth_failed"


class ArgumentsInvalid(ToolCallRefused):
    """The arguments did not fit the tool's schema (or were not unambiguous JSON)."""

    kind: RefusalKind = "invalid"


class ApprovalPending(ToolCallRefused):
    """The call is held for approval and nothing ran yet; the identical call runs once
    approved (a durable hold: see ``Guard.authorize(wait=...)``)."""

    kind: RefusalKind = "pending"


_BY_KIND: dict[str, type[ToolCallRefused]] = {
    "invalid": ArgumentsInvalid,
    "pending": ApprovalPending,
    "denied": CallDenied,
    "expired": ApprovalExpired,
    "unreachable": ChannelUnreachable,
    "reauth_failed": ReauthFailed,
}


def refusal_for(authorization: Authorization) -> ToolCallRefused:
    """Build the exception matching a refused authorization's outcome."""
    return _BY_KIND.get(authorization.outcome, CallDenied)(authorization)
