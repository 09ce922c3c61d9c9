"""The compiled policy: model + classifier + signal specs, with a cached fast path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentguard.policy.classifier import Classified, Classifier
from agentguard.policy.loader import parse_policy_text, read_policy_file
from agentguard.policy.model import PolicyModel
from agentguard.types import ToolCall, ToolHints

if TYPE_CHECKING:
    from agentguard.trust import TrustAnchors

__all__ = ["Policy", "load_policy"]


class Policy:
    """A validated, compiled policy. Build with :func:`load_policy` or :meth:`from_yaml`.

    Attributes:
        model: The validated policy model.
        source: Where it was loaded from (for messages).
    """

    def __init__(self, model: PolicyModel, source: str | None = None) -> None:
        self.model = model
        self.source = source
        self.classifier = Classifier(model)
        self._static: dict[tuple[str, str, ToolHints], bool] = {}
        self._rate_labels = frozenset(
            label for spec in model.signals.values() if spec.rate for label in spec.rate.labels)
        self.trust = self._load_trust()

    def _load_trust(self) -> TrustAnchors | None:
        """The trust file the policy names, relative to the policy file (read once)."""
        if not self.model.trust:
            return None
        from agentguard.errors import PolicyError
        from agentguard.trust import TrustAnchors, TrustFileError

        path = Path(self.model.trust).expanduser()
        if not path.is_absolute() and self.source and Path(self.source).exists():
            path = Path(self.source).resolve().parent / path
        try:
            return TrustAnchors.load(path)
        except (TrustFileError, OSError) as exc:
            raise PolicyError(f"trust file: {exc}", file=self.source, field="trust") from exc

    @classmethod
    def from_yaml(cls, text: str, source: str | None = None) -> Policy:
        """Parse policy YAML text."""
        return cls(parse_policy_text(text, source), source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> Policy:
        """Build from a mapping (as YAML would give)."""
        return cls.from_yaml(json.dumps(data), source)

    @property
    def shadow(self) -> bool:
        """True in shadow mode: decide and audit, never block."""
        return self.model.mode == "shadow"

    def server_trust(self, server: str) -> str:
        """``trusted`` or ``untrusted``."""
        return self.classifier.server_trust(server)

    def classify(self, call: ToolCall) -> Classified:
        """Classify a call (first matching rule wins)."""
        return self.classifier.classify(call)

    def approver_identities(self, entries: tuple[str, ...] | list[str]) -> frozenset[str]:
        """Expand ``group:NAME`` entries into identities."""
        out: set[str] = set()
        for entry in entries:
            if entry.startswith("group:"):
                out.update(self.model.groups.get(entry[6:], ()))
            else:
                out.add(entry)
        return frozenset(out)

    def redact_paths(self, server: str, tool: str) -> tuple[str, ...]:
        """Argument paths the policy's ``redact:`` names for this tool (every rule that names
        the tool counts, whichever rule decides the call): they never reach the audit log,
        the store or a channel."""
        paths = {p for rule in self.classifier.candidates(server, tool) for p in rule.spec.redact}
        return tuple(sorted(paths))

    def static_allow(self, server: str, tool: str, hints: ToolHints) -> bool:
        """True when every call to this tool is allowed whatever its arguments, principal and
        context: the allow path then skips classification entirely. Cached per tool."""
        key = (server, tool, hints)
        cached = self._static.get(key)
        if cached is None:
            cached = self._compute_static(server, tool, hints)
            if len(self._static) > 65_536:  # bound memory against hostile tool names
                self._static.clear()
            self._static[key] = cached
        return cached

    def _compute_static(self, server: str, tool: str, hints: ToolHints) -> bool:
        if (self.shadow or self.model.defaults.log_allows or hints.unpinned
                or hints.requires_approval):
            return False
        candidates = self.classifier.candidates(server, tool)
        if candidates and not candidates[0].by_name_only:
            return False
        from agentguard.engine import evaluate

        probe = ToolCall(tool=tool, args={}, server=server, hints=hints, id="static")
        classified = self.classify(probe)
        if classified.rule is not (candidates[0] if candidates else None):
            return False
        if classified.classification.labels & self._rate_labels:
            return False
        if classified.rule is not None and classified.rule.spec.step_up:
            return False
        return evaluate(self.model, classified, {}).decision.kind == "allow"

    @staticmethod
    def json_schema() -> dict[str, Any]:
        """JSON Schema of the policy file, for editors."""
        return PolicyModel.model_json_schema(by_alias=True)


def load_policy(path: str | Path) -> Policy:
    """Load and validate a policy file.

    Raises:
        PolicyError: the file is unreadable or invalid (message names file, rule, field).
    """
    text, name = read_policy_file(path)
    return Policy.from_yaml(text, name)
