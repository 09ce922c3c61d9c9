"""Receipts: re-checking, offline, who approved each call the audit log says ran.

The hash chain proves the log was not edited *by someone without the ability to re-hash it*
-- and the agent, which writes the log through its own guard, can re-hash it. What the agent
cannot make is a signature. So when a call is settled by signed votes, the guard writes the
votes themselves (:class:`~agentguard.trust.SignedVote` or
:class:`~agentguard.trust.PasskeyVote`, as JSON) into the record that settles it, under
``receipts``; :func:`check_receipts` verifies each one against the trust anchors with the one
rule (:func:`agentguard.trust.verify_vote`), bound to the record's own ``request_id``,
``call_hash`` and ``rule_id``.

Problem kinds (added to :mod:`agentguard.audit.verify`'s):

* ``receipt_invalid`` a receipt is unreadable, or does not verify for this record (forged,
  signed by a key the trust file does not list, or made for another request or call);
* ``receipt_mismatch`` the record names approvers its verified receipts do not prove (or the
  receipts prove approvers it does not name, or a receipt is a deny);
* ``receipt_reused`` two records claim to have run the same request (one approval spent twice);
* ``unsigned`` a record says people approved but carries no receipt: an unsigned channel (the
  in-process console, a grant) or a forged record. An error unless unsigned approvals are
  allowed (``audit verify --allow-unsigned``), since the log cannot tell these apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agentguard.audit.verify import Problem
from agentguard.trust import TrustAnchors, receipt_from_dict, verify_vote

__all__ = ["SETTLING_EVENTS", "check_receipts"]

#: Records that say a call was approved, naming its approvers in ``approvers``.
SETTLING_EVENTS = frozenset({"call.executed", "challenge.approved"})


def _names(value: Any) -> list[str] | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return value


def _check_one(record: Mapping[str, Any], anchors: TrustAnchors, allow_unsigned: bool,
               ) -> list[tuple[str, str, str]]:
    """Problems of one settling record: ``(kind, detail, severity)``."""
    approvers = _names(record.get("approvers"))
    if approvers is None:
        return [("receipt_mismatch", "the record's approvers are not a list of names", "error")]
    if record.get("grant_receipts") is not None:
        return _check_grant(record, approvers, anchors)
    receipts = record.get("receipts")
    if receipts is None:
        if not approvers:
            return []  # re-authentication alone: nobody approved, nothing to prove
        return [("unsigned", f"approved by {approvers} with no signed receipt (an unsigned "
                 "channel, or a forged record)", "warning" if allow_unsigned else "error")]
    if not isinstance(receipts, list) or not receipts:
        return [("receipt_invalid", "receipts is not a non-empty list", "error")]
    request_id, call_hash = record.get("request_id"), record.get("call_hash")
    if not isinstance(request_id, str) or not isinstance(call_hash, str):
        return [("receipt_invalid", "the record lacks the request id or call hash its "
                 "receipts must name", "error")]
    out: list[tuple[str, str, str]] = []
    proven: list[str] = []
    settings: set[str] = set()
    for i, data in enumerate(receipts):
        try:
            signed = receipt_from_dict(data)
        except Exception as exc:  # the log is the agent's to write: anything may be there
            out.append(("receipt_invalid", f"receipt {i} is unreadable ({exc})", "error"))
            continue
        # The guard checked the settings hash against the policy in memory; offline, all the
        # receipts of one settlement must at least agree on it.
        settings.add(signed.statement.settings_hash)
        result = verify_vote(signed, request_id=request_id, call_hash=call_hash,
                             rule_id=record.get("rule_id"),
                             settings_hash=signed.statement.settings_hash, anchors=anchors)
        if isinstance(result, str):
            out.append(("receipt_invalid", f"receipt {i}: {result}", "error"))
        elif not result.approve:
            out.append(("receipt_mismatch", f"receipt {i} is a deny by {result.identity!r}",
                        "error"))
        else:
            proven.append(result.identity)
    if len(settings) > 1:
        out.append(("receipt_invalid", "the receipts were signed under different approval "
                    "settings", "error"))
    named = set(approvers)
    if not out and (named != set(proven) or len(proven) != len(set(proven))):
        out.append(("receipt_mismatch", f"the record names approvers {sorted(named)}; its "
                    f"receipts prove {sorted(proven)}", "error"))
    return out


def _check_grant(record: Mapping[str, Any], approvers: list[str], anchors: TrustAnchors,
                 ) -> list[tuple[str, str, str]]:
    """A call a signed grant covered: the grant's receipts name the request that made it and
    the view its approvers were shown (``grant_shown``), of this record's principal."""
    from agentguard.approvals import shown_hash

    view = record.get("grant_shown")
    shown = shown_hash(view) if isinstance(view, Mapping) else None
    receipts = record.get("grant_receipts")
    if shown is None or not isinstance(receipts, list) or not receipts:
        return [("receipt_invalid", "a signed grant's receipts or view are missing", "error")]
    assert isinstance(view, Mapping)
    if view["call"].get("principal") != record.get("principal"):
        return [("receipt_mismatch", "the grant's approvers were shown another caller",
                 "error")]
    out: list[tuple[str, str, str]] = []
    proven: list[str] = []
    for i, data in enumerate(receipts):
        try:
            signed = receipt_from_dict(data)
        except Exception as exc:  # the log is the agent's to write: anything may be there
            out.append(("receipt_invalid", f"grant receipt {i} is unreadable ({exc})", "error"))
            continue
        st = signed.statement
        result = verify_vote(signed, request_id=st.request_id, call_hash=st.call_hash,
                             rule_id=record.get("rule_id"), settings_hash=st.settings_hash,
                             anchors=anchors, shown_hash=shown)
        if isinstance(result, str):
            out.append(("receipt_invalid", f"grant receipt {i}: {result}", "error"))
        elif not result.approve or result.grant_ttl <= 0:
            out.append(("receipt_mismatch", f"grant receipt {i} grants nothing", "error"))
        else:
            proven.append(result.identity)
    if not out and set(approvers) != set(proven):
        out.append(("receipt_mismatch", f"the record names approvers {sorted(approvers)}; "
                    f"its grant's receipts prove {sorted(proven)}", "error"))
    return out


def check_receipts(
    records: Iterable[Mapping[str, Any]], anchors: TrustAnchors, *,
    allow_unsigned: bool = False,
) -> list[Problem]:
    """Verify the receipt of every record that says a call was approved.

    Args:
        records: The log's records, oldest first (chain checks are
            :func:`~agentguard.audit.verify_log`'s job, not this one's).
        anchors: The trust file the approvals were checked against.
        allow_unsigned: Report an approval without receipts as a warning, not an error.

    Returns:
        The problems found, in log order (see the module docstring for the kinds).
    """
    problems: list[Problem] = []
    ran: dict[str, int] = {}
    for record in records:
        if not isinstance(record, Mapping) or record.get("type") not in SETTLING_EVENTS:
            continue
        seq = record.get("seq") if isinstance(record.get("seq"), int) else None
        for kind, detail, severity in _check_one(record, anchors, allow_unsigned):
            problems.append(Problem(seq, None, kind, detail, severity))  # type: ignore[arg-type]
        request_id = record.get("request_id")
        if record.get("type") == "call.executed" and record.get("receipts") is not None \
                and isinstance(request_id, str):
            if request_id in ran:
                problems.append(Problem(seq, None, "receipt_reused", (
                    f"request {request_id[:16]}... already ran at record {ran[request_id]}: "
                    "one approval cannot run two calls")))
            else:
                ran[request_id] = seq or 0
    return problems
