"""Pure evaluation: (classification, fired signals) -> Decision. No I/O, no clock.

Every decision carries the deciding rule and one human-readable reason, so ``agentguard
policy explain`` and the audit log can say in one line why a call was held.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentguard.policy.classifier import Classified
from agentguard.policy.model import ApprovalFields, PolicyModel, ReauthModel
from agentguard.types import (
    Allow,
    ApprovalSpec,
    Decision,
    Deny,
    ReauthSpec,
    RequireApproval,
    Requirement,
    RequireReauth,
)

__all__ = ["Evaluation", "evaluate", "signals_needed"]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A decision and the requirement it came from (kept for explain and audit)."""

    decision: Decision
    requirement: Requirement
    fired: tuple[str, ...]


def signals_needed(classified: Classified) -> list[str]:
    """Names of the signals the matched rule's step-ups refer to."""
    rule = classified.rule
    if rule is None:
        return []
    return [n for step in rule.spec.step_up for n in step.signal_names()]


def _pick(name: str, *sources: ApprovalFields | None) -> Any:
    for src in sources:
        if src is not None and getattr(src, name) is not None:
            return getattr(src, name)
    return None


def evaluate(model: PolicyModel, classified: Classified, signals: Mapping[str, bool]) -> Evaluation:
    """Decide what ``classified`` needs, given which signals fired.

    Args:
        model: The validated policy.
        classified: Output of the classifier for the call.
        signals: Values of (at least) the signals named by :func:`signals_needed`.

    A call the classifier refused (``classified.refusal``: an argument no rule may read, such
    as a path climbing above its root) is denied, whatever the signals.
    """
    c = classified.classification
    if classified.refusal is not None:
        reason = f"refused: {classified.refusal}"
        return Evaluation(Deny(c.rule_id, reason, c), Requirement(deny=True), ())
    rule = classified.rule.spec if classified.rule else None
    cls_spec = model.classes.get(c.privilege)
    base_spec = model.classes.get(classified.base_class) if classified.base_class else None

    if rule is not None and rule.require is not None:
        requirement = Requirement.parse(rule.require)
        why = [f"rule requires {rule.require}"]
    elif classified.base_class is None:
        requirement = Requirement.parse(model.defaults.unknown_tool)
        # Rules that name the tool but match none of its arguments: say so, not "unknown".
        # Only the classifier's first clause: what follows (annotations) differs by edge.
        named = c.reason.split("; ", 1)[0] if c.reason.startswith("no rule matches") else None
        why = [f"{named}: unknown-tool default {model.defaults.unknown_tool}" if named
               else f"unknown tool: default {model.defaults.unknown_tool}"]
    else:
        assert base_spec is not None
        requirement = Requirement.parse(base_spec.require)
        why = [f"class {classified.base_class!r} requires {base_spec.require}"]
    if classified.hinted_class is not None:
        hinted = model.classes[classified.hinted_class]
        extra = Requirement.parse(hinted.require)
        if (requirement | extra) != requirement:
            why.append(f"annotations ({classified.hinted_class}) require {hinted.require}")
        requirement = requirement | extra

    if classified.unpinned:
        extra = Requirement.parse(model.defaults.unknown_tool)
        if (requirement | extra) != requirement:
            why.append(f"new since the server's tools were pinned: unknown-tool default "
                       f"{model.defaults.unknown_tool}")
        requirement = requirement | extra
    if classified.approval_asked and not requirement.approve:
        why.append("the application asks for approval of this call (needs_approval)")
        requirement = requirement | Requirement(approve=True)

    fired: list[str] = []
    for step in rule.step_up if rule else ():
        names = step.signal_names()
        hit = (all(signals.get(n, False) for n in names) if step.when is not None
               else not any(signals.get(n, False) for n in names))
        if hit:
            label = "+".join(names) if step.when is not None else "+".join(
                f"not_{n}" for n in names)
            fired.extend(n if step.when is not None else f"not_{n}" for n in names
                         if (n if step.when is not None else f"not_{n}") not in fired)
            stepped = Requirement.parse(step.require)
            if (requirement | stepped) != requirement:
                why.append(f"{label} requires {step.require}")
            requirement = requirement | stepped

    where = f"rule {c.rule_id!r}" if c.rule_id else "default"
    labels = f", labels {','.join(sorted(c.labels))}" if c.labels else ""
    reason = f"{where} (class {c.privilege}{labels}): {'; '.join(why)} -> {requirement}"
    fired_t = tuple(fired)

    if requirement.deny:
        return Evaluation(Deny(c.rule_id, reason, c, fired_t), requirement, fired_t)
    if not requirement.approve and not requirement.reauth:
        return Evaluation(Allow(c.rule_id, reason, c, fired_t), requirement, fired_t)

    reauth_model: ReauthModel = _pick("reauth", rule, cls_spec, base_spec) or ReauthModel()
    reauth = ReauthSpec(
        method=reauth_model.method,
        max_age=reauth_model.max_age,
        subject=reauth_model.subject or ("approver" if requirement.approve else "principal"),
        acr_values=tuple(reauth_model.acr_values),
    ) if requirement.reauth else None
    if not requirement.approve:
        assert reauth is not None
        return Evaluation(
            RequireReauth(c.rule_id, reason, c, reauth, fired_t, requirement), requirement, fired_t)
    approval = ApprovalSpec(
        approvers=tuple(_pick("approvers", rule, cls_spec, base_spec) or model.defaults.approvers),
        quorum=_pick("quorum", rule, cls_spec, base_spec) or 1,
        separation_of_duties=bool(_pick("separation_of_duties", rule, cls_spec, base_spec)),
        timeout=_pick("timeout", rule, cls_spec, base_spec) or model.defaults.timeout,
        channels=tuple(_pick("channels", rule, cls_spec, base_spec) or ()),
        max_grant=_pick("max_grant", rule, cls_spec, base_spec) or 0.0,
        assurance=_pick("assurance", rule, cls_spec, base_spec) or "any",
    )
    return Evaluation(
        RequireApproval(c.rule_id, reason, c, approval, fired_t, reauth, requirement),
        requirement, fired_t,
    )
