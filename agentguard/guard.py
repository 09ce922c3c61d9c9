"""The guard: validate -> classify -> evaluate -> challenge -> grant -> audit, written once.

Edges (decorator, adapters, MCP proxy) build a :class:`~agentguard.types.ToolCall`, await
:meth:`Guard.authorize`, then run the tool from the returned call or render the refusal. Any
error on the way is a refusal that says so (fail closed) and is audited.

What is approved is exactly what runs: the arguments are validated against the tool's schema
and frozen before any rule reads them; the frozen call is what is classified, hashed, shown,
approved, audited and returned for the edge to run.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any

import anyio

from agentguard._events import args_size, call_event
from agentguard._humans import OnWait, Verdict, wait_for_verdict
from agentguard._portal import CrossLoopLock, SyncPortal, refuse_inside_loop
from agentguard._stepup import reauthenticate
from agentguard.approvals import cast_vote, shown_call, shown_hash
from agentguard.audit._group import AuditLedger, current_ledger, record_event
from agentguard.audit.base import AuditSink
from agentguard.canonical import CanonicalizationError, call_hash, freeze
from agentguard.channels.base import ApprovalChannel, ChannelAnswer
from agentguard.engine import evaluate, signals_needed
from agentguard.errors import AgentGuardError, ArgumentValidationError, UsageError
from agentguard.grants import GrantBinding, glob_literal
from agentguard.policy import Policy
from agentguard.reauth.base import Reauthenticator
from agentguard.signals import SignalEvaluator
from agentguard.store.base import Store
from agentguard.types import (
    Allow,
    ApprovalRequest,
    ApprovalSpec,
    ApprovalVote,
    Authorization,
    Classification,
    Decision,
    Deny,
    Grant,
    Outcome,
    RequireApproval,
    RequireReauth,
    ToolCall,
    ToolHints,
    new_request_id,
)
from agentguard.validation import ArgumentValidator

__all__ = ["Guard", "OnWait"]

_MAX_EDITS = 3
_ROUTINE = frozenset({"read", "write"})
#: Requests of one call looked at when a retry comes back (newest first).
_RETRY_LOOKBACK = 20


def _edit_of(request: ApprovalRequest | None) -> ApprovalVote | None:
    """The deny vote that proposed edited arguments, if that is how the request ended."""
    if request is None or request.status != "denied":
        return None
    deny = [v for v in request.votes if not v.approve]
    return deny[-1] if deny and deny[-1].edited_args is not None else None


@dataclass(frozen=True, slots=True)
class _Attempt:
    """How one ``authorize`` call wants to be served (threaded through edits)."""

    validator: ArgumentValidator | None
    extra: Sequence[ApprovalChannel]
    on_wait: OnWait | None
    started: float
    #: Seconds the caller waits for a verdict; ``None``: until the request expires.
    wait: float | None
    #: Run now (claim the approval); ``False``: approve ahead, for a run that follows.
    claim: bool = True


@dataclass(frozen=True, slots=True)
class _Held:
    """A call that needs a human: the decision and what an approval of it is bound to."""

    call: ToolCall
    decision: RequireApproval | RequireReauth
    digest: str
    approval: ApprovalSpec | None
    binding: GrantBinding | None
    redact: tuple[str, ...]


class Guard:
    """Decides and enforces step-up authentication for tool calls.

    Args:
        policy: The compiled policy.
        store: Shared state (defaults to an in-memory store: single process only).
        audit: Audit sink (defaults to an in-memory chained log).
        channels: Approval channels asked for every held call (console, approver
            terminal, Slack...). A channel is trusted to vouch for who answered only if it
            declares ``verified = True``; other channels are used only when a rule names them
            and requires no particular approver.
        reauthenticators: Re-authentication by method name (``totp``...).
        clock: Source of Unix time (tests inject one).
    """

    def __init__(
        self,
        policy: Policy,
        *,
        store: Store | None = None,
        audit: AuditSink | None = None,
        channels: Sequence[ApprovalChannel] = (),
        reauthenticators: Mapping[str, Reauthenticator] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if store is None:
            from agentguard.store import MemoryStore

            store = MemoryStore()
        if audit is None:
            from agentguard.audit import MemoryAuditLog

            audit = MemoryAuditLog()
        self.policy = policy
        self.store = store
        self.audit = audit
        self.channels = list(channels)
        self.reauthenticators = dict(reauthenticators or {})
        self.clock = clock
        self.signals = SignalEvaluator(policy.model.signals, clock)
        self._opened = False
        # Held calls may be decided in the app's loop and in the portal's at once.
        self._request_lock = CrossLoopLock()
        self._portal = SyncPortal()

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Guard:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_sync()

    async def open(self) -> None:
        """Open the store (idempotent)."""
        if not self._opened:
            await self.store.open()
            self._opened = True

    async def close(self) -> None:
        """Close the store, and stop the event loop that served synchronous callers (calls
        still held there are refused). Idempotent; a later call opens the guard again."""
        if self._opened:
            self._opened = False
            await self.store.close()
        if self._portal.running and not self._portal.in_loop_thread():
            await anyio.to_thread.run_sync(self._portal.close)

    def close_sync(self) -> None:
        """Synchronous :meth:`close`, for code without an event loop (``with guard:`` calls
        it on exit).

        Raises:
            UsageError: called inside a running event loop (await :meth:`close` there).
        """
        refuse_inside_loop()
        if self._opened:
            self._portal.call(self.close)  # closes the store; the loop is stopped below
        self._portal.close()

    # ------------------------------------------------------------------ fast path
    def static_allow(self, server: str, tool: str, hints: ToolHints) -> bool:
        """True when the policy allows every call to this tool unconditionally (cached).

        Edges call this first: the allow path of a routine tool then costs one dict lookup,
        and neither validation nor a snapshot is needed (no argument can change the answer).
        """
        return self.policy.static_allow(server, tool, hints)

    # ------------------------------------------------------------------ entry points
    def authorize_sync(
        self, call: ToolCall, *, validator: ArgumentValidator | None = None,
        wait: float | None = None,
    ) -> Authorization:
        """Synchronous :meth:`authorize`, safe from any thread.

        Every synchronous caller of a guard is served by one long-lived event loop the guard
        starts on first use and stops on :meth:`close` (see :mod:`agentguard._portal`); a
        call still held when the guard closes is refused, never left hanging.

        Raises:
            UsageError: called inside a running event loop (await :meth:`authorize` there).
        """
        try:
            return self._portal.call(functools.partial(
                self.authorize, call, validator=validator, wait=wait))
        except UsageError:
            raise
        except Exception as exc:  # authorize never raises: the portal stopped under the call
            return self.refuse(
                call, f"the guard was closed before the call was decided ({type(exc).__name__})",
                outcome="unreachable")

    async def authorize(
        self, call: ToolCall, *, validator: ArgumentValidator | None = None,
        extra_channels: Sequence[ApprovalChannel] = (), on_wait: OnWait | None = None,
        wait: float | None = None,
    ) -> Authorization:
        """Decide, challenge if needed, and audit one call. Never raises for a refusal.

        The arguments are validated first (with ``validator``, the tool's schema) and frozen:
        the call the policy classifies, the approver sees, the hash binds and the audit log
        records is the returned ``Authorization.call``, whose ``args`` are a read-only
        snapshot. Edges run the tool with :func:`~agentguard.canonical.thaw` of that snapshot
        (or rebuild the call from it), never with the objects they were given.

        A held call is bound to its exact form: when the identical call (same hash,
        principal and human acted for, same rule) comes back, it joins the request already
        raised for it instead of asking again, and once that request is approved the first
        identical call to come back runs, exactly once.

        Args:
            call: The call.
            validator: Checks the arguments against the tool's schema before any rule reads
                them; a failure is refused as ``invalid``. ``None``: the arguments are only
                checked to be unambiguous JSON.
            extra_channels: Channels to ask besides the guard's own (an MCP client's
                elicitation, say).
            on_wait: Called about once a second while a human is asked (progress).
            wait: Seconds to wait for a human's verdict. ``None`` (the default) waits until
                the request expires. With a number the call is a **durable hold**: the
                request is presented on channels that can deliver it without this process
                (Slack, the approver terminal, a webhook) and, when no verdict arrives in
                time, the answer is ``pending`` while the request lives on for its policy
                timeout; call again with the identical call to run it once approved.
        """
        started = self.clock()
        attempt = _Attempt(validator, extra_channels, on_wait, started, wait)
        return await self._audited(call, attempt)

    async def preapprove(
        self, call: ToolCall, *, validator: ArgumentValidator | None = None,
        extra_channels: Sequence[ApprovalChannel] = (), on_wait: OnWait | None = None,
        wait: float | None = None,
    ) -> Authorization:
        """Get a held call approved ahead of its run, for a framework that asks before it
        invokes the tool (the Agents SDK's approval interruptions, say).

        Decides and challenges exactly like :meth:`authorize`; when approved (and
        re-authenticated where the rule asks), the approval becomes a single-use ``once``
        grant bound to the exact call, its rule and its human, which the run that follows
        (through a guarded tool) uses. Calls the policy allows need no grant.
        """
        started = self.clock()
        attempt = _Attempt(validator, extra_channels, on_wait, started, wait, claim=False)
        return await self._audited(call, attempt)

    async def grant_again(self, auth: Authorization, *, ttl: float = 600.0) -> str | None:
        """One more run of exactly the call ``auth`` approved: a single-use ``once`` grant in
        the store, bound like any grant (rule, its settings, principal and human, the call's
        hash), audited ``grant.created``. For a tool that runs in several rounds (an MCP
        tool asking its client for input), whose later rounds repeat the approved call.

        Returns:
            The grant id; ``None`` when there is nothing to grant (the call needed no
            approval, or its rule needs signed votes, under which no grant is made).
        """
        decision = auth.decision
        if auth.outcome != "approved" or not isinstance(decision, RequireApproval):
            return None
        held = self._held(auth.call, decision, call_hash(auth.call))
        if self._signed(held):
            return None
        binding = held.binding
        assert binding is not None
        now = self.clock()
        grant = Grant(
            id=new_request_id("grant"), scope="once", principal=binding.principal,
            acting_for=binding.acting_for, server=glob_literal(binding.server),
            tool=glob_literal(binding.tool), max_rank=binding.rank, expires_at=now + ttl,
            granted_by=",".join(auth.approvers), created_at=now, call_hash=held.digest,
            rule_id=binding.rule_id, settings_hash=binding.settings_hash,
            request_id=auth.request_id)
        await self.store.add_grant(grant)
        self._append(auth.call, decision, "grant.created", grant_id=grant.id, scope="once",
                     expires_at=grant.expires_at, granted_by=grant.granted_by,
                     call_hash=held.digest, detail="the next round of the same call")
        return grant.id

    def refuse(
        self, call: ToolCall, reason: str, *, outcome: Outcome = "denied",
        event: str = "call.denied", details: Mapping[str, Any] | None = None,
    ) -> Authorization:
        """Audit and return a refusal decided outside the policy (e.g. a changed MCP tool)."""
        c = Classification(privilege="unknown", rank=len(self.policy.classifier.rank),
                           reason=reason)
        decision = Deny(None, reason, c)
        try:
            self._append(call, decision, event, outcome=outcome, **(details or {}))
        except Exception as exc:
            reason = f"{reason} (and the audit log failed: {exc})"
        return Authorization(call, decision, outcome, reason)

    # ------------------------------------------------------------------ orchestration
    async def _audited(self, call: ToolCall, attempt: _Attempt) -> Authorization:
        """Authorize with the call's audit records group-committed: none goes on before
        every record it wrote is durable; a record not written refuses it."""
        ledger = AuditLedger()
        token = current_ledger.set(ledger)
        try:
            try:
                await self.open()
                auth = await self._authorize(call, attempt)
            except Exception as exc:  # fail closed: any failure is a refusal that says why
                auth = self._fail_closed(call, exc)
        finally:
            current_ledger.reset(token)
        try:
            await ledger.durable()
        except AgentGuardError as exc:
            if auth.allowed:
                return self._fail_closed(call, exc)  # outside the ledger: a fresh write
            return replace(auth, reason=f"{auth.reason} (and the audit log failed: {exc})")
        return auth

    def _append(self, call: ToolCall, decision: Decision | None, event: str, *,
                durable: bool = True, **kw: Any) -> None:
        redact = self.policy.redact_paths(call.server, call.tool)
        record_event(self.audit, call_event(call, decision, event, redact=redact, **kw),
                     durable=durable)

    def _fail_closed(self, call: ToolCall, exc: BaseException) -> Authorization:
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # task groups wrap the one real cause; report that
        kind: Outcome = "denied" if isinstance(exc, CanonicalizationError) else "unreachable"
        reason = str(exc) if isinstance(exc, AgentGuardError) else f"{type(exc).__name__}: {exc}"
        c = Classification(privilege="unknown", rank=len(self.policy.classifier.rank),
                           reason="error before classification completed")
        decision = Deny(None, f"failed closed: {reason}", c)
        with suppress(Exception):  # already refusing; a failing audit changes nothing more
            self._append(call, decision, "call.denied", outcome=kind, error=type(exc).__name__)
        return Authorization(call, decision, kind, f"failed closed: {reason}")

    async def _authorize(self, call: ToolCall, attempt: _Attempt) -> Authorization:
        size = args_size(call.args)
        limit = self.policy.model.defaults.max_args_bytes
        if size > limit or size < 0:
            c = Classification(privilege="unknown", rank=len(self.policy.classifier.rank),
                               reason="arguments too large")
            reason = (f"arguments are {size:,} bytes, over the policy's max_args_bytes "
                      f"({limit:,}): too large to show an approver or hash safely"
                      if size > 0 else "arguments are nested too deeply to show or hash")
            decision: Decision = Deny(None, reason, c)
            self._append(call, decision, "call.denied", outcome="denied")
            return Authorization(call, decision, "denied", reason)
        try:  # types before rules: no rule reads a value the tool would read differently
            validator = attempt.validator
            args = validator.validate(call.args) if validator is not None else call.args
            call = replace(call, args=freeze(args))
        except (ArgumentValidationError, CanonicalizationError) as exc:
            return self.refuse(call, f"the arguments do not fit the tool: {exc}",
                               outcome="invalid", event="call.invalid")
        classified = self.policy.classify(call)
        await self.signals.record(self.store, call, classified.classification)
        fired = await self.signals.evaluate(signals_needed(classified), call, self.store)
        decision = evaluate(self.policy.model, classified, fired).decision
        for name, value in fired.items():
            if value and name in self.signals.rate_labels:
                self._append(call, decision, "signal.burst", signal=name)

        if self.policy.shadow:
            self._append(call, decision, "call.shadow", outcome="allowed",
                         would_be=decision.kind)
            return Authorization(call, decision, "allowed",
                                 f"shadow mode, would be {decision.kind}: {decision.reason}",
                                 shadow=True)
        if isinstance(decision, Allow):
            if self.policy.model.defaults.log_allows:
                self._audit_or_refuse(call, decision, "call.allowed", outcome="allowed")
            return Authorization(call, decision, "allowed", decision.reason)
        if isinstance(decision, Deny):
            self._append(call, decision, "call.denied", outcome="denied")
            return Authorization(call, decision, "denied", decision.reason)

        digest = call_hash(call)
        cooldown = await self.store.get_cooldown(digest, self.clock())
        if cooldown is not None:
            reason = f"an identical call was just denied ({cooldown}); not asking again yet"
            self._append(call, decision, "call.denied", outcome="denied", call_hash=digest,
                         detail="cooldown")
            return Authorization(call, decision, "denied", reason)
        return await self._challenge(self._held(call, decision, digest), attempt)

    def _held(
        self, call: ToolCall, decision: RequireApproval | RequireReauth, digest: str
    ) -> _Held:
        approval = decision.approval if isinstance(decision, RequireApproval) else None
        binding = None
        if approval is not None:
            # Expand groups now: the stored request names exactly who may decide it.
            approval = replace(approval, approvers=tuple(sorted(
                self.policy.approver_identities(approval.approvers))))
            binding = GrantBinding.of(call, decision.rule_id, decision.classification.rank,
                                      approval, decision.reauth)
        return _Held(call, decision, digest, approval, binding,
                     self.policy.redact_paths(call.server, call.tool))

    def _audit_or_refuse(self, call: ToolCall, decision: Decision, event: str, **kw: Any) -> None:
        c = decision.classification
        durable = c.privilege not in _ROUTINE or bool(c.labels)
        try:
            self._append(call, decision, event, durable=durable, **kw)
        except Exception:
            if durable:
                raise

    async def _challenge(self, held: _Held, attempt: _Attempt) -> Authorization:
        call, decision, digest = held.call, held.decision, held.digest
        approvers: tuple[str, ...] = ()
        grant: Grant | None = None
        request: ApprovalRequest | None = None
        receipts: tuple[dict[str, Any], ...] = ()
        signers: tuple[str, ...] = ()
        # A grant row is the agent's to write; under signed assurance only a grant carrying
        # the signed votes that made it, verified again now, covers anything (_signed_grant).
        if held.binding is not None and not self._signed(held):
            if not attempt.claim and await self._grant_covers(held):
                # Approved ahead, and a grant already covers it: nothing to ask, and the
                # grant is left for the run that follows (using it here would spend it).
                return Authorization(call, decision, "approved",
                                     f"a grant covers this call: {decision.reason}")
            grant = await self.store.use_grant(held.binding.query(digest), now=self.clock())
        elif held.binding is not None:
            signed = await self._signed_grant(held)
            if signed is not None and not attempt.claim:
                return Authorization(call, decision, "approved",
                                     f"a signed grant covers this call: {decision.reason}")
            if signed is not None:
                grant, signers = signed
        if grant is not None:
            grant_proof: dict[str, Any] = (
                {"grant_receipts": list(grant.receipts), "grant_shown": grant.shown}
                if signers else {})
            self._append(call, decision, "grant.used", grant_id=grant.id, scope=grant.scope,
                         granted_by=grant.granted_by, call_hash=digest, **grant_proof)
            approvers = signers or tuple(grant.granted_by.split(","))
        elif held.approval is not None:
            found = await self._request_for(held, attempt)
            if isinstance(found, Authorization):
                return found
            request, fresh = found
            verdict = await self._wait(held, request, fresh, attempt)
            edit = _edit_of(verdict.request)
            if edit is not None:
                return await self._decide_edit(held, edit, attempt)
            refusal = self._settlement_refusal(held, request, verdict, attempt)
            if refusal is not None:
                if refusal.outcome == "denied":
                    await self.store.set_cooldown(
                        digest, self.clock() + self.policy.model.defaults.deny_cooldown,
                        refusal.reason)
                return refusal
            assert verdict.request is not None
            approvers = verdict.request.decided_by
            if self._signed(held):
                checked = self._check_signatures(held, request, verdict.request, attempt)
                if isinstance(checked, Authorization):
                    return checked
                approvers, receipts = checked
        else:  # re-authentication alone: nobody approves, the request only carries the call
            request = self._new_request(held)
        if decision.reauth is not None and not (grant is not None and grant.scope == "once"):
            assert request is not None or grant is not None
            failure = await reauthenticate(
                call=call, spec=decision.reauth, request=request or self._new_request(held),
                approvers=approvers, store=self.store, methods=self.reauthenticators,
                clock=self.clock, audit=functools.partial(self._append, call, decision))
            if failure is not None:
                subject, kind, reason = failure
                return Authorization(call, decision, "reauth_failed",
                                     f"re-authentication of {subject} failed ({kind}: {reason})",
                                     request.id if request else None, approvers)
        if request is not None and held.approval is not None:
            if not attempt.claim and self._signed(held):
                return self._approved_ahead(held, request, approvers, receipts)
            if not await self.store.consume(request.id, digest):
                self._append(call, decision, "call.denied", outcome="denied",
                             request_id=request.id, detail="approval already used")
                return Authorization(call, decision, "denied",
                                     "the approval was already used or no longer matches",
                                     request.id)
            if not attempt.claim:
                return await self._grant_once(held, request, approvers)
            if self._signed(held):
                await self._signed_ttl_grant(held, request, receipts)
            else:
                await self._maybe_grant(held, request)
        request_id = request.id if request is not None else None
        signed_grant: dict[str, Any] = (
            {"grant_receipts": list(grant.receipts), "grant_shown": grant.shown}
            if grant is not None and signers else {})
        proof: dict[str, Any] = {"receipts": list(receipts)} if receipts else {}
        self._append(call, decision, "call.executed", outcome="approved",
                     request_id=request_id, grant_id=grant.id if grant else None,
                     call_hash=digest, approvers=list(approvers),
                     waited_ms=round((self.clock() - attempt.started) * 1000, 1),
                     **proof, **signed_grant)
        who = ", ".join(approvers) or "fresh re-authentication"
        return Authorization(call, decision, "approved", f"approved by {who}: {decision.reason}",
                             request_id, approvers)

    # ------------------------------------------------------------------ signed votes
    def _signed(self, held: _Held) -> bool:
        return held.approval is not None and held.approval.assurance == "signed"

    def _check_signatures(
        self, held: _Held, request: ApprovalRequest, stored: ApprovalRequest,
        attempt: _Attempt,
    ) -> tuple[tuple[str, ...], tuple[dict[str, Any], ...]] | Authorization:
        """The approvers whose signed votes meet the quorum, or the refusal when the store
        says "approved" without them (a forged or unsigned vote: audited, nothing runs)."""
        from agentguard._signed import settle_signed

        anchors = self.policy.trust
        assert held.approval is not None and held.binding is not None
        if anchors is None:  # the policy loader requires a trust file for signed rules
            problems: tuple[str, ...] = ("no trust file is configured",)
        else:
            # What approvers were shown, rebuilt from the real call (never the store's copy):
            # a vote on a rewritten call, redacted arguments or not, names another hash.
            shown = shown_hash(_shown_view(held)) or "unshowable"
            settled = settle_signed(
                stored, request_id=request.id, call_hash=held.digest,
                rule_id=held.decision.rule_id, settings_hash=held.binding.settings_hash,
                approval=held.approval, principal=held.call.principal.id,
                acting_for=held.call.context.acting_for, anchors=anchors, shown_hash=shown)
            if settled.approved:
                return settled.approvers, settled.receipts
            problems = settled.problems
        why = "; ".join(problems) or "no signed approval from an eligible approver"
        self._append(held.call, held.decision, "challenge.unverified", outcome="denied",
                     request_id=request.id, call_hash=held.digest, detail=why,
                     waited_ms=round((self.clock() - attempt.started) * 1000, 1))
        return Authorization(
            held.call, held.decision, "denied",
            f"the store says approved, but the rule needs signed votes and they do not "
            f"meet the quorum ({why})", request.id)

    async def _signed_grant(self, held: _Held) -> tuple[Grant, tuple[str, ...]] | None:
        """A grant covering ``held`` under signed assurance, with the approvers whose
        signatures it carries: only grants whose receipts verify again now, against the trust
        file and the rule the guard holds (:func:`agentguard._signed.verify_grant`)."""
        from agentguard._signed import verify_grant
        from agentguard.store._rules import grant_covers

        anchors = self.policy.trust
        assert held.binding is not None and held.approval is not None
        if anchors is None or held.approval.max_grant <= 0:
            return None
        now = self.clock()
        query = held.binding.query(held.digest)
        for grant in await self.store.list_grants(now):
            if not grant.receipts or not grant_covers(grant, query, now):
                continue  # the row's own fields only narrow the search; signatures decide
            checked = verify_grant(
                grant, held.call, rank=held.decision.classification.rank,
                rank_of=self.policy.classifier.rank, rule_id=held.decision.rule_id,
                settings_hash=held.binding.settings_hash, approval=held.approval,
                anchors=anchors, now=now)
            if not isinstance(checked, str):
                return grant, checked
        return None

    async def _signed_ttl_grant(
        self, held: _Held, request: ApprovalRequest, receipts: tuple[dict[str, Any], ...],
    ) -> None:
        """"Approve for N" by signed votes: a grant carrying those votes and the view they
        name, so the guard can verify it again each time it is used."""
        from agentguard.trust.verify import receipt_from_dict

        assert held.binding is not None and held.approval is not None
        statements = [receipt_from_dict(r).statement for r in receipts]
        ttl = min((s.grant_ttl for s in statements), default=0.0)
        ttl = min(ttl, held.approval.max_grant)
        if ttl <= 0 or not statements:
            return
        until = min(s.at + min(s.grant_ttl, held.approval.max_grant) for s in statements)
        grant = replace(self._grant(held, request, [], scope="ttl", ttl=0.0),
                        expires_at=until, granted_by=",".join(
                            s.approver for s in statements),
                        receipts=tuple(receipts), shown=_shown_view(held))
        if until <= self.clock():
            return
        await self.store.add_grant(grant)
        self._append(held.call, held.decision, "grant.created", grant_id=grant.id,
                     scope="ttl", expires_at=grant.expires_at, granted_by=grant.granted_by,
                     signed=True)

    def _approved_ahead(
        self, held: _Held, request: ApprovalRequest, approvers: tuple[str, ...],
        receipts: tuple[dict[str, Any], ...],
    ) -> Authorization:
        """Signed and approved ahead of its run: the request itself stays approved for the
        identical call to claim (its signatures are checked again then)."""
        self._append(held.call, held.decision, "challenge.approved", outcome="approved",
                     request_id=request.id, call_hash=held.digest, approvers=list(approvers),
                     receipts=list(receipts))
        who = ", ".join(approvers) or "an approver"
        return Authorization(held.call, held.decision, "approved",
                             f"approved by {who} (runs once): {held.decision.reason}",
                             request.id, approvers)

    # ------------------------------------------------------------------ requests
    def _new_request(self, held: _Held, *, durable: bool = False,
                     window: float | None = None) -> ApprovalRequest:
        call, decision = held.call, held.decision
        c = decision.classification
        now = self.clock()
        # What the store keeps and channels show: the call with the policy's redact paths
        # masked (the hash is over the real call, which only this process holds).
        call_data = shown_call(call, held.redact) | {"call_id": call.id, "origin": call.origin}
        if durable:  # raised by a caller that may not wait for the verdict
            call_data["durable"] = True
            call_data["hold_window"] = window  # how long that caller waited (heard it?)
        approval = held.approval
        return ApprovalRequest(
            id=new_request_id(), call=call_data, call_hash=held.digest, created_at=now,
            expires_at=now + (approval.timeout if approval else 300.0),
            rule_id=decision.rule_id, reason=decision.reason, privilege=c.privilege,
            labels=tuple(sorted(c.labels)), approval=approval or ApprovalSpec(quorum=0),
            reauth=decision.reauth,
            settings_hash=held.binding.settings_hash if held.binding else "",
        )

    async def _request_for(
        self, held: _Held, attempt: _Attempt
    ) -> tuple[ApprovalRequest, bool] | Authorization:
        """The request this call waits on: the one already raised for the identical call
        (joined), or a new one (flood control first). A settled request of the identical
        call answers for it until it has been reported (a retry after a durable hold)."""
        call, decision = held.call, held.decision
        async with self._request_lock:
            # Look-then-create under one lock so concurrent calls of this process join one
            # request and cannot all slip past the pending limit (across processes the limit
            # is best effort).
            existing = await self._identical_request(held)
            if existing is not None:
                if existing.status in ("pending", "approved"):
                    return existing, False
                return self._retry_refusal(held, existing, attempt)
            flood = await self._flood_check(call, decision, held.digest)
            if flood is not None:
                return flood
            request = self._new_request(held, durable=attempt.wait is not None,
                                        window=attempt.wait)
            assert held.approval is not None
            # The record is durable before the request exists anywhere: no approver, other
            # process or crash ever finds a request the audit log does not hold.
            self._append(call, decision, "challenge.created", request_id=request.id,
                         call_hash=held.digest, expires_at=request.expires_at,
                         approvers=list(held.approval.approvers),
                         quorum=held.approval.quorum)
            ledger = current_ledger.get()
            if ledger is not None:  # an unaudited hold asks nobody
                await ledger.durable()
            await self.store.create_request(request)
        return request, True

    async def _identical_request(self, held: _Held) -> ApprovalRequest | None:
        """The newest request raised for this exact call under the same rule, if it can
        still answer: pending, approved and unclaimed, or a durable hold's settled request
        whose caller has not heard the verdict yet (until the request's own deadline, and at
        least for the policy's ``deny_cooldown`` after it was decided)."""
        now = self.clock()
        cooldown = self.policy.model.defaults.deny_cooldown
        acting_for = held.call.context.acting_for
        for request in await self.store.list_requests(call_hash=held.digest,
                                                      limit=_RETRY_LOOKBACK):
            context = request.call.get("context") or {}
            if (request.call_hash != held.digest or request.rule_id != held.decision.rule_id
                    or not isinstance(context, Mapping)
                    or context.get("acting_for") != acting_for
                    or request.call.get("principal") != held.call.principal.id):
                continue
            if request.status == "pending":
                return request
            if request.status == "approved":
                return request if now < request.expires_at else None
            if request.status in ("denied", "expired"):
                # A caller that waited heard the verdict (and a denial's cooldown refuses its
                # repeats); a durable hold's caller did not, so its retry hears it here.
                if not request.call.get("durable"):
                    return None
                settled = request.decided_at or request.expires_at
                window = request.call.get("hold_window")
                if isinstance(window, int | float) and \
                        settled <= request.created_at + window:
                    return None  # settled while its caller still waited: it heard it
                if now < max(request.expires_at, settled + cooldown):
                    return request
                return None
            return None  # consumed or cancelled: a new request for a new attempt
        return None

    def _retry_refusal(
        self, held: _Held, request: ApprovalRequest, attempt: _Attempt
    ) -> Authorization:
        verdict = Verdict(request, "")
        refusal = self._settlement_refusal(held, request, verdict, attempt)
        assert refusal is not None
        return refusal

    async def _wait(
        self, held: _Held, request: ApprovalRequest, fresh: bool, attempt: _Attempt
    ) -> Verdict:
        def cancelled() -> None:
            with suppress(Exception):  # the caller is gone; nothing else to refuse
                self._append(held.call, held.decision, "challenge.cancelled",
                             outcome="unreachable", request_id=request.id,
                             detail="the caller stopped waiting (cancelled or disconnected)")

        async def vote(answer: ChannelAnswer) -> None:
            await cast_vote(store=self.store, audit=self.audit, request_id=request.id,
                            approver=answer.approver, approve=answer.approve,
                            channel=answer.channel, reason=answer.reason,
                            grant_ttl=answer.grant_ttl, now=self.clock(),
                            edited_args=answer.edited_args)

        if request.status != "pending":
            return Verdict(request, "")
        return await wait_for_verdict(
            self.store, request, self._channels_for(request, attempt.extra), fresh=fresh,
            window=attempt.wait, clock=self.clock, vote=vote, on_wait=attempt.on_wait,
            on_cancelled=cancelled)

    async def _flood_check(
        self, call: ToolCall, decision: Decision, digest: str
    ) -> Authorization | None:
        """Approval fatigue: a limit of pending requests per principal and class, and a rate
        limit on requests; each refusal is audited as ``signal.flood``."""
        defaults = self.policy.model.defaults
        c = decision.classification
        pending = await self.store.count_pending(call.principal.id, c.privilege)
        reason = None
        if pending >= defaults.pending_per_class:
            reason = (f"{pending} {c.privilege} call(s) from this principal already wait "
                      "for approval; wait for them to be answered")
        else:
            key = f"flood|{call.principal.id}"
            now = self.clock()
            await self.store.record_event(key, now)
            count = await self.store.count_events(key, now - defaults.request_rate.per)
            if count > defaults.request_rate.max:
                reason = (f"{count} approval requests from this principal within "
                          f"{defaults.request_rate.per:.0f}s (limit {defaults.request_rate.max})")
        if reason is None:
            return None
        self._append(call, decision, "signal.flood", outcome="denied", call_hash=digest,
                     detail=reason, pending=pending)
        return Authorization(call, decision, "denied", f"approval flood control: {reason}")

    async def _decide_edit(
        self, held: _Held, edit: ApprovalVote, attempt: _Attempt
    ) -> Authorization:
        """An approver proposed other arguments: that is a new call, validated, classified
        and decided afresh (it may well need its own approval); never a way round a rule."""
        call, decision = held.call, held.decision
        depth = int(call.context.extra.get("agentguard_edit_depth", 0)) + 1
        if depth > _MAX_EDITS:
            return Authorization(call, decision, "denied",
                                 f"arguments were edited {_MAX_EDITS} times; start again")
        edited = replace(
            call, args=dict(edit.edited_args or {}), id=new_request_id("call"),
            context=replace(call.context, extra={**call.context.extra,
                                                 "agentguard_edit_depth": depth,
                                                 "edited_by": edit.approver,
                                                 "edited_from": call.id}))
        self._append(call, decision, "challenge.edited", approver=edit.approver,
                     new_call_id=edited.id,
                     new_args=_masked(edited.args, held.redact))
        return await self._authorize(edited, attempt)

    def _settlement_refusal(
        self, held: _Held, request: ApprovalRequest, verdict: Verdict, attempt: _Attempt,
    ) -> Authorization | None:
        call, decision = held.call, held.decision
        settled = verdict.request
        rid = request.id
        waited = round((self.clock() - attempt.started) * 1000, 1)
        if verdict.still_pending:
            self._append(call, decision, "challenge.pending", outcome="pending",
                         request_id=rid, call_hash=held.digest, waited_ms=waited,
                         expires_at=request.expires_at)
            return Authorization(call, decision, "pending",
                                 f"waiting for approval until {_when(request.expires_at)}", rid)
        status = settled.status if settled else "expired"
        if status == "approved":
            return None
        if status == "denied":
            assert settled is not None
            deny_votes = [v for v in settled.votes if not v.approve]
            who = deny_votes[-1].approver if deny_votes else "an approver"
            why = deny_votes[-1].reason if deny_votes and deny_votes[-1].reason else "no reason"
            self._append(call, decision, "challenge.denied", outcome="denied",
                         request_id=rid, approver=who, detail=why, waited_ms=waited)
            return Authorization(call, decision, "denied", f"denied by {who}: {why}", rid, (who,))
        if status == "consumed":  # an identical call that joined this request ran on it
            self._append(call, decision, "call.denied", outcome="denied", request_id=rid,
                         detail="approval already used")
            return Authorization(call, decision, "denied",
                                 "the approval was already used by an identical call", rid)
        if status == "cancelled":
            self._append(call, decision, "challenge.unreachable", outcome="unreachable",
                         request_id=rid, waited_ms=waited, detail=verdict.failures)
            return Authorization(call, decision, "unreachable",
                                 f"no approval channel could be reached ({verdict.failures})",
                                 rid)
        self._append(call, decision, "challenge.expired", outcome="expired",
                     request_id=rid, waited_ms=waited)
        return Authorization(call, decision, "expired",
                             "no decision before the approval timed out", rid)

    # ------------------------------------------------------------------ grants
    async def _grant_covers(self, held: _Held) -> bool:
        """Whether a grant covers the call, without using it."""
        from agentguard.store._rules import grant_covers

        assert held.binding is not None
        now = self.clock()
        query = held.binding.query(held.digest)
        return any(grant_covers(g, query, now) for g in await self.store.list_grants(now))

    async def _approvals(self, request: ApprovalRequest) -> list[ApprovalVote]:
        settled = await self.store.get_request(request.id)
        return [v for v in (settled.votes if settled else ()) if v.approve]

    async def _maybe_grant(self, held: _Held, request: ApprovalRequest) -> None:
        """"Approve for N": a ``ttl`` grant, never longer than every approver asked for nor
        than the rule's ``max_grant``, bound to the rule, its settings and the human. (Under
        signed assurance a grant row proves nothing: see :meth:`_signed_ttl_grant`.)"""
        assert held.binding is not None and held.approval is not None
        if self._signed(held):
            return
        votes = await self._approvals(request)
        ttl = min((v.grant_ttl for v in votes), default=0.0)
        ttl = min(ttl, held.approval.max_grant)
        if ttl <= 0:
            return
        grant = self._grant(held, request, votes, scope="ttl", ttl=ttl)
        await self.store.add_grant(grant)
        self._append(held.call, held.decision, "grant.created", grant_id=grant.id,
                     scope="ttl", expires_at=grant.expires_at, granted_by=grant.granted_by)

    async def _grant_once(
        self, held: _Held, request: ApprovalRequest, approvers: tuple[str, ...]
    ) -> Authorization:
        """Approved ahead of the run: a single-use grant for exactly this call."""
        votes = await self._approvals(request)
        grant = self._grant(held, request, votes, scope="once",
                            ttl=max(0.0, request.expires_at - self.clock()))
        await self.store.add_grant(grant)
        self._append(held.call, held.decision, "challenge.approved", outcome="approved",
                     request_id=request.id, grant_id=grant.id, call_hash=held.digest,
                     approvers=list(approvers), expires_at=grant.expires_at)
        who = ", ".join(approvers) or "an approver"
        return Authorization(held.call, held.decision, "approved",
                             f"approved by {who} (runs once): {held.decision.reason}",
                             request.id, approvers)

    def _grant(
        self, held: _Held, request: ApprovalRequest, votes: list[ApprovalVote], *,
        scope: str, ttl: float,
    ) -> Grant:
        binding = held.binding
        assert binding is not None
        now = self.clock()
        return Grant(
            id=new_request_id("grant"), scope=scope,  # type: ignore[arg-type]
            principal=binding.principal, acting_for=binding.acting_for,
            server=glob_literal(binding.server), tool=glob_literal(binding.tool),
            max_rank=binding.rank, expires_at=now + ttl,
            granted_by=",".join(v.approver for v in votes), created_at=now,
            call_hash=held.digest if scope == "once" else None,
            rule_id=binding.rule_id, settings_hash=binding.settings_hash,
            request_id=request.id)

    # ------------------------------------------------------------------ humans
    def _channels_for(
        self, request: ApprovalRequest, extra: Sequence[ApprovalChannel]
    ) -> list[ApprovalChannel]:
        named = set(request.approval.channels)
        out = []
        for ch in [*self.channels, *extra]:
            # Only a channel that says so vouches for who answered.
            verified = getattr(ch, "verified", False) is True
            if not verified and (ch.name not in named or request.approval.approvers):
                continue  # the client answers unverified channels: only when the rule opts in
            if named and ch.name not in named:
                continue
            out.append(ch)
        return out


def _shown_view(held: _Held) -> dict[str, Any]:
    """What approvers were shown of ``held`` (:func:`agentguard.approvals.shown_view`),
    rebuilt from the real call and its classification, never read from the store."""
    c = held.decision.classification
    return {"call": shown_call(held.call, held.redact), "privilege": c.privilege,
            "labels": sorted(c.labels)}


def _masked(args: Mapping[str, Any], paths: tuple[str, ...]) -> Any:
    from agentguard.audit.redact import mask_paths

    return mask_paths(args, paths)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))

