"""Classification: which rule matches a call, its privilege class and labels.

Rules are tried in file order; the first whose every condition matches decides the class.
Tool annotations (MCP hints) may raise a class, never lower it below the policy's verdict;
for an untrusted server they cannot turn an unknown tool into a known, lower one.

A rule that cannot read an argument safely (a ``path`` that climbs above its root, holds a
NUL or is not a string) does not "not match": the call is refused, decided here and nowhere
else, and :func:`agentguard.engine.evaluate` turns the refusal into a Deny.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agentguard.policy.matchers import compile_args, compile_globs, compile_principal
from agentguard.policy.model import PolicyModel, RuleSpec
from agentguard.policy.paths import ArgumentRefused
from agentguard.types import Classification, Principal, ToolCall, ToolHints

__all__ = ["UNKNOWN_CLASS", "Classified", "Classifier", "CompiledRule", "hint_class"]

UNKNOWN_CLASS = "unknown"


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule with its conditions compiled into predicates."""

    spec: RuleSpec
    tool: Callable[[str], bool] | None
    server: Callable[[str], bool] | None
    args: Callable[[Mapping[str, Any]], bool]
    principal: Callable[[Principal], bool] | None
    labels: frozenset[str]
    hints: Mapping[str, bool] | None
    #: True when only the tool and server names decide whether the rule matches.
    by_name_only: bool

    @classmethod
    def compile(cls, spec: RuleSpec) -> CompiledRule:
        m = spec.match
        return cls(
            spec=spec,
            tool=compile_globs(m.tool),
            server=compile_globs(m.server),
            args=compile_args(m.args, rule_id=spec.id),
            principal=compile_principal(m.principal),
            labels=frozenset(m.labels or ()),
            hints=m.hints,
            by_name_only=not (m.args or m.principal or m.labels or m.hints),
        )

    def matches_name(self, server: str, tool: str) -> bool:
        """Whether the tool/server conditions hold."""
        return (self.tool is None or self.tool(tool)) and (
            self.server is None or self.server(server))

    def matches(self, call: ToolCall) -> bool:
        """Whether every condition holds for ``call``."""
        return self.matches_name(call.server, call.tool) and self.matches_rest(call)

    def matches_rest(self, call: ToolCall) -> bool:
        """Whether the conditions other than tool and server names hold."""
        if self.labels and not (self.labels & call.hints.labels):
            return False
        if self.hints and any(getattr(call.hints, k) is not v for k, v in self.hints.items()):
            return False
        if self.principal is not None and not self.principal(call.principal):
            return False
        return self.args(call.args)


@dataclass(frozen=True, slots=True)
class Classified:
    """Result of classifying one call.

    Attributes:
        classification: What the decision and audit record show.
        rule: The matched rule, if any.
        base_class: The class the policy gives (``None`` for an unknown tool).
        hinted_class: A higher class the tool's annotations point to, whose requirement is
            added (hints never lower a requirement).
        unpinned: The tool appeared after its server's tools were pinned: the unknown-tool
            requirement is added.
        approval_asked: The application asks for a human's approval of this call: approval
            is added.
        refusal: Set when a rule could not read an argument safely (say, a path climbing
            above its root): why the call is refused. The rule is named in
            ``classification.rule_id``; ``rule`` is None, since no rule matched.
    """

    classification: Classification
    rule: CompiledRule | None
    base_class: str | None
    hinted_class: str | None
    unpinned: bool = False
    refusal: str | None = None
    approval_asked: bool = False


def hint_class(hints: ToolHints, classes: Mapping[str, Any]) -> str | None:
    """The class tool annotations point to (read / write / destructive), if the policy has it."""
    if hints.read_only is True:
        name = "read"
    elif hints.destructive is True:
        name = "destructive"
    elif hints.read_only is False and hints.destructive is False:
        name = "write"
    else:
        return None
    return name if name in classes else None


class Classifier:
    """Classifies calls against a validated policy model."""

    def __init__(self, model: PolicyModel) -> None:
        self.model = model
        self.rank = {name: i for i, name in enumerate(model.classes)}
        self.top_rank = len(self.rank) - 1
        self.rules = [CompiledRule.compile(r) for r in model.rules]
        # Rules that can match a tool name, computed once per name: evaluation cost stays
        # flat as the policy grows instead of scanning every rule on every call.
        self._candidates: dict[tuple[str, str], tuple[CompiledRule, ...]] = {}
        self._server_trust = [(compile_globs(name), spec.trust)
                              for name, spec in model.servers.items() if name != "*"]
        self._default_trust = model.servers["*"].trust if "*" in model.servers else None

    def server_trust(self, server: str) -> str:
        """``trusted`` or ``untrusted``. The decorator's ``local`` server is trusted unless
        the policy says otherwise; any other server is untrusted unless listed."""
        for match, trust in self._server_trust:
            if match is not None and match(server):
                return trust
        if self._default_trust is not None and server != "local":
            return self._default_trust
        return "trusted" if server == "local" else (self._default_trust or "untrusted")

    def candidates(self, server: str, tool: str) -> tuple[CompiledRule, ...]:
        """Rules whose tool and server conditions hold for this name, in file order."""
        key = (server, tool)
        found = self._candidates.get(key)
        if found is None:
            found = tuple(r for r in self.rules if r.matches_name(server, tool))
            if len(self._candidates) > 65_536:  # bound memory against hostile tool names
                self._candidates.clear()
            self._candidates[key] = found
        return found

    def match_rule(self, call: ToolCall) -> CompiledRule | None:
        """The first rule whose conditions all hold.

        A rule that matches on hints is skipped for an untrusted server: the server's own
        claims about its tool must not select a rule (say, ``read_only: true`` -> read).
        Its annotations can still only raise the class (see :meth:`classify`).

        Raises:
            ArgumentRefused: a rule tried before any matched refuses an argument.
        """
        trusted: bool | None = None
        for rule in self.candidates(call.server, call.tool):
            if rule.hints:
                if trusted is None:
                    trusted = self.server_trust(call.server) == "trusted"
                if not trusted:
                    continue
            if rule.matches_rest(call):
                return rule
        return None

    def classify(self, call: ToolCall) -> Classified:
        """Classify ``call``: first matching rule, class, labels, and annotation effects.

        A refused argument gives a :class:`Classified` whose ``refusal`` says why (class
        ``unknown`` at the top rank); :func:`~agentguard.engine.evaluate` denies it.
        """
        try:
            rule = self.match_rule(call)
        except ArgumentRefused as exc:
            return self._refused(call, exc)
        hinted = hint_class(call.hints, self.model.classes)
        trusted = self.server_trust(call.server) == "trusted"
        declared = call.hints.privilege if call.hints.privilege in self.rank else None
        labels = call.hints.labels
        if rule is not None:
            labels = labels | frozenset(rule.spec.labels)
            base = rule.spec.class_ or declared or (hinted if trusted else None)
            why = f"rule {rule.spec.id!r}"
            if rule.spec.description:
                why += f" ({rule.spec.description})"
        elif declared is not None:
            base, why = declared, "class declared by the tool"
        elif hinted is not None and trusted:
            base, why = hinted, f"annotations of trusted server {call.server!r}"
        else:
            base, why = None, self._why_no_rule(call)
        # Hints only ever add requirements: a higher hinted class replaces the base class;
        # on an unknown tool the hinted class's requirement is added to the unknown default.
        also: str | None = None
        if hinted is not None and (base is None or self.rank[hinted] > self.rank[base]):
            also = hinted
            why += f"; annotations add class {hinted!r}"
        privilege = (also if base is not None and also else base) or UNKNOWN_CLASS
        if call.hints.unpinned:
            why += "; tool appeared after the server's tools were pinned"
        rank = self.rank.get(privilege, self.top_rank)
        return Classified(
            Classification(
                privilege=privilege,
                rank=rank,
                labels=labels,
                rule_id=rule.spec.id if rule else None,
                reason=why,
                standards=tuple(rule.spec.standards) if rule else (),
            ),
            rule,
            base,
            also,
            call.hints.unpinned,
            approval_asked=call.hints.requires_approval,
        )

    def _why_no_rule(self, call: ToolCall) -> str:
        """Why no rule matched: none names the tool, or the ones naming it did not match."""
        named = self.candidates(call.server, call.tool)
        if not named:
            return "no rule covers this tool"
        ids = ", ".join(repr(r.spec.id) for r in named[:3]) + (", ..." if len(named) > 3 else "")
        what = ("these arguments" if all(not (r.spec.match.principal or r.spec.match.labels
                                              or r.spec.match.hints) for r in named)
                else "this call (arguments, principal, labels or annotations)")
        return f"no rule matches {what} of {call.tool!r} (rules naming it: {ids})"

    def _refused(self, call: ToolCall, exc: ArgumentRefused) -> Classified:
        where = f"rule {exc.rule_id!r}" if exc.rule_id else "a rule"
        why = f"{where} cannot read argument {exc.arg!r}: it {exc.why}"
        return Classified(
            Classification(privilege=UNKNOWN_CLASS, rank=self.top_rank,
                           labels=call.hints.labels, rule_id=exc.rule_id, reason=why),
            None, None, None, call.hints.unpinned, refusal=why,
        )
