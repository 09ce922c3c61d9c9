"""agentguard: step-up authentication for AI-agent tool calls.

A logged-in agent's session must not authorise every action. agentguard classifies each tool
call by privilege and, when risk rises, holds it until a human approves or someone re-proves
their identity. Routine calls pass at near-zero cost; every interruption is audited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentguard._lazy import lazy_getattr

if TYPE_CHECKING:
    from agentguard.context import acting_as, current_guard, set_default_guard, using_guard
    from agentguard.decorators import guarded
    from agentguard.errors import (
        AgentGuardError,
        ApprovalExpired,
        AuditError,
        CallDenied,
        ChannelUnreachable,
        ConfigError,
        PolicyError,
        ReauthFailed,
        StoreError,
        ToolCallRefused,
        UsageError,
    )
    from agentguard.guard import Guard
    from agentguard.policy import Policy, load_policy
    from agentguard.types import (
        Allow,
        ApprovalRequest,
        Authorization,
        CallContext,
        Classification,
        Decision,
        Deny,
        Grant,
        Principal,
        RequireApproval,
        RequireReauth,
        ToolCall,
        ToolHints,
    )


# What each name is imported from, on first use: `import agentguard` alone stays cheap (the
# proxy's command line starts its upstream before it imports pydantic, the guard or the SDK).
_SOURCES = {
    "acting_as": "agentguard.context",
    "current_guard": "agentguard.context",
    "set_default_guard": "agentguard.context",
    "using_guard": "agentguard.context",
    "guarded": "agentguard.decorators",
    "Guard": "agentguard.guard",
    "Policy": "agentguard.policy",
    "load_policy": "agentguard.policy",
    **dict.fromkeys(("AgentGuardError", "ApprovalExpired", "AuditError", "CallDenied",
                     "ChannelUnreachable", "ConfigError", "PolicyError", "ReauthFailed",
                     "StoreError", "ToolCallRefused", "UsageError"), "agentguard.errors"),
    **dict.fromkeys(("Allow", "ApprovalRequest", "Authorization", "CallContext",
                     "Classification", "Decision", "Deny", "Grant", "Principal",
                     "RequireApproval", "RequireReauth", "ToolCall", "ToolHints"),
                    "agentguard.types"),
}

__version__ = "0.1.0"

__all__ = [
    "AgentGuardError",
    "Allow",
    "ApprovalExpired",
    "ApprovalRequest",
    "AuditError",
    "Authorization",
    "CallContext",
    "CallDenied",
    "ChannelUnreachable",
    "Classification",
    "ConfigError",
    "Decision",
    "Deny",
    "Grant",
    "Guard",
    "Policy",
    "PolicyError",
    "Principal",
    "ReauthFailed",
    "RequireApproval",
    "RequireReauth",
    "StoreError",
    "ToolCall",
    "ToolCallRefused",
    "ToolHints",
    "UsageError",
    "__version__",
    "acting_as",
    "current_guard",
    "guarded",
    "load_policy",
    "set_default_guard",
    "using_guard",
]


__getattr__ = lazy_getattr(__name__, _SOURCES, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
