"""Policy file: model, loading, classification."""

from agentguard.policy.classifier import Classified
from agentguard.policy.model import PolicyModel
from agentguard.policy.policy import Policy, load_policy

__all__ = ["Classified", "Policy", "PolicyModel", "load_policy"]
