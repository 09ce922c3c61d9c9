"""agentguard: step-up authentication for AI-agent tool calls.

A logged-in agent's session must not authorise every action. agentguard classifies each tool
call by privilege and, when risk rises, holds it until a human approves or someone re-proves
their identity. Routine calls pass at near-zero cost; every interruption is audited.
"""

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
