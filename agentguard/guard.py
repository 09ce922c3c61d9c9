"""The guard: classify -> evaluate -> challenge -> grant -> audit, written once, async.

Edges (decorator, adapters, MCP proxy) build a :class:`~agentguard.types.ToolCall`, await
:meth:`Guard.authorize`, then run the tool or render the refusal. Any error on the way is a
refusal that says so (fail closed) and is audited.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing, suppress
from dataclasses import replace
from typing import Any

import anyio

from agentguard.approvals import cast_vote
from agentguard.audit.base import AuditSink
from agentguard.canonical import CanonicalizationError, call_hash, call_to_dict
from agentguard.channels.base import ApprovalChannel, ChannelAnswer
from agentguard.engine import evaluate, signals_needed
from agentguard.errors import AgentGuardError, UsageError
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

__all__ = ["Guard", "OnWait"]

_MAX_EDITS = 3


def _glob_literal(name: str) -> str:
    """Quote glob characters: a grant for a tool named ``k8s.*`` covers that tool only."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _edit_of(request: ApprovalRequest | None) -> ApprovalVote | None:
    """The deny vote that proposed edited arguments, if that is how the request ended."""
    if request is None or request.status != "denied":
        return None
    deny = [v for v in request.votes if not v.approve]
    return deny[-1] if deny and deny[-1].edited_args is not None else None

OnWait = Callable[[float, float], Awaitable[None]]
_ROUTINE = frozenset({"read", "write"})


_AUDIT_ARGS_LIMIT = 16_384


def _args_for_audit(args: Mapping[str, Any]) -> Any:
    """Arguments as recorded: in full when small, else a marked preview (the call hash in the
    same record identifies the exact call)."""
    try:
        text = json.dumps(args, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        return {"unserialisable": True}
    if len(text) <= _AUDIT_ARGS_LIMIT:
        return dict(args)
    return {"truncated": True, "bytes": len(text.encode()),
            "preview": text[:_AUDIT_ARGS_LIMIT // 4]}


def _args_size(args: Mapping[str, Any]) -> int:
    """Size of the arguments as JSON (C encoder: cheap even for large values)."""
    try:
        return len(json.dumps(args, ensure_ascii=False, default=repr).encode())
    except (TypeError, ValueError):
        return 0  # canonicalisation refuses it later with the precise reason
    except RecursionError:
        return -1


def _event(call: ToolCall, decision: Decision | None, event_type: str, **extra: Any) -> dict:
    event: dict[str, Any] = {
        "type": event_type,
        "call_id": call.id,
        "principal": call.principal.id,
        "principal_kind": call.principal.kind,
        "acting_for": call.context.acting_for,
        "source_ip": call.context.source_ip,
        "session_id": call.session_id,
        "server": call.server,
        "tool": call.tool,
        "origin": call.origin,
        "args": _args_for_audit(call.args),
    }
    if decision is not None:
        c = decision.classification
        event.update(
            privilege=c.privilege, labels=sorted(c.labels), rule_id=decision.rule_id,
            reason=decision.reason, signals=list(decision.signals),
            requirement=str(decision.requirement), standards=list(c.standards),
        )
    event.update(extra)
    return event


class Guard:
    """Decides and enforces step-up authentication for tool calls.

    Args:
        policy: The compiled policy.
        store: Shared state (defaults to an in-memory store: single process only).
        audit: Audit sink (defaults to an in-memory chained log).
        channels: Approval channels asked for every held call (console, approver
            terminal, Slack...). Channels with ``verified = False`` are used only when a rule
            names them and requires no particular approver.
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
        self._request_lock = anyio.Lock()

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Guard:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the store (idempotent)."""
        if not self._opened:
            await self.store.open()
            self._opened = True

    async def close(self) -> None:
        """Close the store."""
        if self._opened:
            await self.store.close()
            self._opened = False

    # ------------------------------------------------------------------ fast path
    def static_allow(self, server: str, tool: str, hints: ToolHints) -> bool:
        """True when the policy allows every call to this tool unconditionally (cached).

        Edges call this first: the allow path of a routine tool then costs one dict lookup.
        """
        return self.policy.static_allow(server, tool, hints)

    # ------------------------------------------------------------------ entry points
    def authorize_sync(self, call: ToolCall) -> Authorization:
        """Synchronous :meth:`authorize`. Refuses to run inside a running event loop."""
        try:
            import asyncio

            asyncio.get_running_loop()
        except RuntimeError:
            return anyio.run(self.authorize, call)
        raise UsageError(
            "a synchronous guarded call was made inside a running event loop; await the async "
            "API instead (e.g. `await guard.authorize(call)` or decorate an async function)"
        )

    async def authorize(
        self, call: ToolCall, *, extra_channels: Sequence[ApprovalChannel] = (),
        on_wait: OnWait | None = None,
    ) -> Authorization:
        """Decide, challenge if needed, and audit one call. Never raises for a refusal."""
        started = self.clock()
        try:
            await self.open()
            return await self._authorize(call, extra_channels, on_wait, started)
        except Exception as exc:  # fail closed: any failure is a refusal that says why
            return self._fail_closed(call, exc)

    def refuse(
        self, call: ToolCall, reason: str, *, outcome: Outcome = "denied",
        event: str = "call.denied", details: Mapping[str, Any] | None = None,
    ) -> Authorization:
        """Audit and return a refusal decided outside the policy (e.g. a changed MCP tool)."""
        c = Classification(privilege="unknown", rank=len(self.policy.classifier.rank),
                           reason=reason)
        decision = Deny(None, reason, c)
        try:
            self.audit.append(_event(call, decision, event, outcome=outcome, **(details or {})))
        except Exception as exc:
            reason = f"{reason} (and the audit log failed: {exc})"
        return Authorization(call, decision, outcome, reason)

    # ------------------------------------------------------------------ orchestration
    def _fail_closed(self, call: ToolCall, exc: BaseException) -> Authorization:
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # task groups wrap the one real cause; report that
        kind = "denied" if isinstance(exc, CanonicalizationError) else "unreachable"
        reason = str(exc) if isinstance(exc, AgentGuardError) else f"{type(exc).__name__}: {exc}"
        c = Classification(privilege="unknown", rank=len(self.policy.classifier.rank),
                           reason="error before classification completed")
        decision = Deny(None, f"failed closed: {reason}", c)
        with suppress(Exception):  # already refusing; a failing audit changes nothing more
            self.audit.append(_event(call, decision, "call.denied", outcome=kind,
                                     error=type(exc).__name__))
        return Authorization(call, decision, kind, f"failed closed: {reason}")  # type: ignore[arg-type]

    async def _authorize(
        self, call: ToolCall, extra: Sequence[ApprovalChannel], on_wait: OnWait | None,
        started: float,
    ) -> Authorization:
        size = _args_size(call.args)
        limit = self.policy.model.defaults.max_args_bytes
        if size > limit or size < 0:
            c = Classification(privilege="unknown", rank=len(self.policy.classifier.rank),
                               reason="arguments too large")
            reason = (f"arguments are {size:,} bytes, over the policy's max_args_bytes "
                      f"({limit:,}): too large to show an approver or hash safely"
                      if size > 0 else "arguments are nested too deeply to show or hash")
            decision = Deny(None, reason, c)
            self.audit.append(_event(call, decision, "call.denied", outcome="denied"))
            return Authorization(call, decision, "denied", reason)
        classified = self.policy.classify(call)
        await self.signals.record(self.store, call, classified.classification)
        fired = await self.signals.evaluate(signals_needed(classified), call, self.store)
        decision = evaluate(self.policy.model, classified, fired).decision
        for name, value in fired.items():
            if value and name in self.signals.rate_labels:
                self.audit.append(_event(call, decision, "signal.burst", signal=name))

        if self.policy.shadow:
            self.audit.append(_event(call, decision, "call.shadow", outcome="allowed",
                                     would_be=decision.kind))
            return Authorization(call, decision, "allowed",
                                 f"shadow mode, would be {decision.kind}: {decision.reason}",
                                 shadow=True)
        if isinstance(decision, Allow):
            if self.policy.model.defaults.log_allows:
                self._audit_or_refuse(call, decision, "call.allowed", outcome="allowed")
            return Authorization(call, decision, "allowed", decision.reason)
        if isinstance(decision, Deny):
            self.audit.append(_event(call, decision, "call.denied", outcome="denied"))
            return Authorization(call, decision, "denied", decision.reason)

        digest = call_hash(call)
        cooldown = await self.store.get_cooldown(digest, self.clock())
        if cooldown is not None:
            reason = f"an identical call was just denied ({cooldown}); not asking again yet"
            self.audit.append(_event(call, decision, "call.denied", outcome="denied",
                                     call_hash=digest, detail="cooldown"))
            return Authorization(call, decision, "denied", reason)
        return await self._challenge(call, decision, digest, extra, on_wait, started)

    def _audit_or_refuse(self, call: ToolCall, decision: Decision, event: str, **kw: Any) -> None:
        c = decision.classification
        try:
            self.audit.append(_event(call, decision, event, **kw))
        except Exception:
            if c.privilege not in _ROUTINE or c.labels:
                raise

    async def _challenge(
        self, call: ToolCall, decision: RequireApproval | RequireReauth, digest: str,
        extra: Sequence[ApprovalChannel], on_wait: OnWait | None, started: float,
    ) -> Authorization:
        now = self.clock()
        c = decision.classification
        approval = decision.approval if isinstance(decision, RequireApproval) else None
        if approval is not None:
            # Expand groups now: the stored request names exactly who may decide it.
            approval = replace(approval, approvers=tuple(sorted(
                self.policy.approver_identities(approval.approvers))))
        grant: Grant | None = None
        if approval is not None:
            grant = await self.store.use_grant(
                principal=call.principal.id, server=call.server, tool=call.tool, rank=c.rank,
                call_hash=digest, session_id=call.session_id, kind="approval", now=now)
        call_data = call_to_dict(call) | {
            "call_id": call.id, "origin": call.origin,
            "context": {"source_ip": call.context.source_ip,
                        "acting_for": call.context.acting_for,
                        "extra": dict(call.context.extra)},
        }
        request = ApprovalRequest(
            id=new_request_id(), call=call_data, call_hash=digest, created_at=now,
            expires_at=now + (approval.timeout if approval else 300.0),
            rule_id=decision.rule_id, reason=decision.reason, privilege=c.privilege,
            labels=tuple(sorted(c.labels)), approval=approval or ApprovalSpec(quorum=0),
            reauth=decision.reauth,
        )
        approvers: tuple[str, ...] = ()
        if grant is not None:
            self.audit.append(_event(call, decision, "grant.used", grant_id=grant.id,
                                     granted_by=grant.granted_by, call_hash=digest))
            approvers = (grant.granted_by,)
        elif approval is not None:
            # Check-then-create under one lock so concurrent calls of this process cannot all
            # slip past the pending limit (across processes the limit is best effort).
            async with self._request_lock:
                flood = await self._flood_check(call, decision, digest)
                if flood is not None:
                    return flood
                await self.store.create_request(request)
            self.audit.append(_event(call, decision, "challenge.created", request_id=request.id,
                                     call_hash=digest, expires_at=request.expires_at,
                                     approvers=list(approval.approvers), quorum=approval.quorum))
            settled, failures = await self._wait_for_humans(request, extra, on_wait)
            edit = _edit_of(settled)
            if edit is not None:
                return await self._decide_edit(call, decision, edit, extra, on_wait, started)
            refusal = self._settlement_refusal(call, decision, settled, started, failures)
            if refusal is not None:
                if refusal.outcome == "denied":
                    await self.store.set_cooldown(
                        digest, self.clock() + self.policy.model.defaults.deny_cooldown,
                        refusal.reason)
                return refusal
            assert settled is not None
            approvers = settled.decided_by
        if decision.reauth is not None:
            failure = await self._reauthenticate(call, decision, request, approvers)
            if failure is not None:
                return failure
        if approval is not None and grant is None:
            if not await self.store.consume(request.id, digest):
                self.audit.append(_event(call, decision, "call.denied", outcome="denied",
                                         request_id=request.id, detail="approval already used"))
                return Authorization(call, decision, "denied",
                                     "the approval was already used or no longer matches",
                                     request.id)
            await self._maybe_grant(call, decision, request)
        self.audit.append(_event(
            call, decision, "call.executed", outcome="approved", request_id=request.id,
            call_hash=digest, approvers=list(approvers),
            waited_ms=round((self.clock() - started) * 1000, 1)))
        return Authorization(call, decision, "approved",
                             f"approved by {', '.join(approvers) or 'fresh re-authentication'}: "
                             f"{decision.reason}", request.id, approvers)

    async def _flood_check(
        self, call: ToolCall, decision: Decision, digest: str
    ) -> Authorization | None:
        """Approval fatigue: collapse duplicates, one pending request per principal and
        class, and a rate limit on requests; each refusal is audited as ``signal.flood``."""
        defaults = self.policy.model.defaults
        c = decision.classification
        pending = [r for r in await self.store.list_requests("pending", limit=10_000)
                   if r.call.get("principal") == call.principal.id and r.privilege == c.privilege]
        reason = None
        if any(r.call_hash == digest for r in pending):
            reason = "an identical call is already waiting for approval; not asking again"
        elif len(pending) >= defaults.pending_per_class:
            reason = (f"{len(pending)} {c.privilege} call(s) from this principal already wait "
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
        self.audit.append(_event(call, decision, "signal.flood", outcome="denied",
                                 call_hash=digest, detail=reason, pending=len(pending)))
        return Authorization(call, decision, "denied", f"approval flood control: {reason}")

    async def _decide_edit(
        self, call: ToolCall, decision: Decision, edit: ApprovalVote,
        extra: Sequence[ApprovalChannel], on_wait: OnWait | None, started: float,
    ) -> Authorization:
        """An approver proposed other arguments: that is a new call, classified and decided
        afresh (it may well need its own approval); never a way round a rule."""
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
        self.audit.append(_event(call, decision, "challenge.edited", approver=edit.approver,
                                 new_call_id=edited.id, new_args=dict(edited.args)))
        return await self._authorize(edited, extra, on_wait, started)

    def _settlement_refusal(
        self, call: ToolCall, decision: Decision, settled: ApprovalRequest | None,
        started: float, failures: str,
    ) -> Authorization | None:
        status = settled.status if settled else "expired"
        if status == "approved":
            return None
        rid = settled.id if settled else None
        waited = round((self.clock() - started) * 1000, 1)
        if status == "denied":
            assert settled is not None
            deny_votes = [v for v in settled.votes if not v.approve]
            who = deny_votes[-1].approver if deny_votes else "an approver"
            why = deny_votes[-1].reason if deny_votes and deny_votes[-1].reason else "no reason"
            self.audit.append(_event(call, decision, "challenge.denied", outcome="denied",
                                     request_id=rid, approver=who, detail=why, waited_ms=waited))
            return Authorization(call, decision, "denied", f"denied by {who}: {why}", rid, (who,))
        if status == "cancelled":
            self.audit.append(_event(call, decision, "challenge.unreachable",
                                     outcome="unreachable", request_id=rid, waited_ms=waited,
                                     detail=failures))
            return Authorization(call, decision, "unreachable",
                                 f"no approval channel could be reached ({failures})", rid)
        self.audit.append(_event(call, decision, "challenge.expired", outcome="expired",
                                 request_id=rid, waited_ms=waited))
        return Authorization(call, decision, "expired",
                             "no decision before the approval timed out", rid)

    async def _maybe_grant(
        self, call: ToolCall, decision: Decision, request: ApprovalRequest
    ) -> None:
        settled = await self.store.get_request(request.id)
        votes = [v for v in (settled.votes if settled else ()) if v.approve]
        ttl = min((v.grant_ttl for v in votes), default=0.0)
        ttl = min(ttl, request.approval.max_grant)
        if ttl <= 0:
            return
        now = self.clock()
        grant = Grant(
            id=new_request_id("grant"), scope="ttl", principal=call.principal.id,
            server=_glob_literal(call.server), tool=_glob_literal(call.tool),
            max_rank=decision.classification.rank, expires_at=now + ttl,
            granted_by=",".join(v.approver for v in votes), created_at=now)
        await self.store.add_grant(grant)
        self.audit.append(_event(call, decision, "grant.created", grant_id=grant.id,
                                 expires_at=grant.expires_at, granted_by=grant.granted_by))

    # ------------------------------------------------------------------ humans
    def _channels_for(
        self, request: ApprovalRequest, extra: Sequence[ApprovalChannel]
    ) -> list[ApprovalChannel]:
        named = set(request.approval.channels)
        out = []
        for ch in [*self.channels, *extra]:
            verified = getattr(ch, "verified", True)
            if not verified and (ch.name not in named or request.approval.approvers):
                continue  # the client answers unverified channels: only when the rule opts in
            if named and ch.name not in named:
                continue
            out.append(ch)
        return out

    async def _wait_for_humans(
        self, request: ApprovalRequest, extra: Sequence[ApprovalChannel],
        on_wait: OnWait | None,
    ) -> tuple[ApprovalRequest | None, str]:
        """Run the channels until the request settles; return it and why channels failed."""
        channels = self._channels_for(request, extra)
        unreachable: list[str] = []
        done = anyio.Event()

        async def run_channel(ch: ApprovalChannel, scope: anyio.CancelScope) -> None:
            try:
                async with aclosing(ch.ask(request)) as answers:
                    async for answer in answers:
                        if answer.kind != "vote":
                            if answer.kind == "unreachable":
                                unreachable.append(f"{ch.name}: {answer.reason}")
                            break
                        await self._vote(request, answer)
            except Exception as exc:  # a broken channel counts as unreachable
                unreachable.append(f"{ch.name}: {type(exc).__name__}: {exc}")
            else:
                if not any(u.startswith(ch.name + ":") for u in unreachable):
                    return
            if len(unreachable) >= len(channels):
                done.set()
                scope.cancel()  # every channel failed: refuse now, not at the next poll

        async def watch_store(scope: anyio.CancelScope) -> None:
            total = request.expires_at - request.created_at
            while True:
                remaining = request.expires_at - self.clock()
                if remaining <= 0 or done.is_set():
                    break
                current = await self.store.wait_for_change(request.id, min(1.0, remaining))
                if current is not None and current.status != "pending":
                    break
                if on_wait is not None:
                    await on_wait(self.clock() - request.created_at, total)
            scope.cancel()

        if not channels:
            unreachable.append("no approval channel is configured for this rule")
            done.set()
        else:
            async with anyio.create_task_group() as tg:
                for ch in channels:
                    tg.start_soon(run_channel, ch, tg.cancel_scope)
                tg.start_soon(watch_store, tg.cancel_scope)
        current = await self.store.get_request(request.id)
        if current is not None and current.status == "pending":
            if not (done.is_set() and await self.store.cancel(request.id)):
                await self.store.expire(request.id)
            current = await self.store.get_request(request.id)
        for ch in channels:
            try:
                with anyio.move_on_after(5):
                    await ch.settled(current or request)
            except Exception:
                continue
        return current, "; ".join(unreachable)

    async def _vote(self, request: ApprovalRequest, answer: ChannelAnswer) -> None:
        await cast_vote(store=self.store, audit=self.audit,
                        request_id=request.id, approver=answer.approver, approve=answer.approve,
                        channel=answer.channel, reason=answer.reason,
                        grant_ttl=answer.grant_ttl, now=self.clock(),
                        edited_args=answer.edited_args)

    async def _reauthenticate(
        self, call: ToolCall, decision: RequireApproval | RequireReauth,
        request: ApprovalRequest, approvers: tuple[str, ...],
    ) -> Authorization | None:
        spec = decision.reauth
        assert spec is not None
        if spec.subject == "approver" and approvers:
            subjects = list(approvers)
        else:
            subjects = [call.context.acting_for or call.principal.id]
        method = self.reauthenticators.get(spec.method)
        # A reauthenticator whose proof carries its own freshness (an OAuth token's auth_time
        # and acr) must be asked every time: a stored "verified at" would let one rule's
        # step-up stand in for a stricter rule's.
        reuse = getattr(method, "reuse_recent_verification", True)
        for subject in subjects:
            last = await self.store.last_reauth(subject, spec.method) if reuse else None
            if spec.max_age > 0 and last is not None and self.clock() - last <= spec.max_age:
                self.audit.append(_event(call, decision, "reauth.verified", subject=subject,
                                         method=spec.method, detail="fresh", request_id=request.id))
                continue
            if method is None:
                result_kind, reason = "unreachable", f"no {spec.method} re-authentication is set up"
            else:
                result = await method.reauthenticate(subject, request)
                result_kind, reason = result.kind, result.reason
            if result_kind == "verified":
                await self.store.record_reauth(subject, spec.method, self.clock())
                self.audit.append(_event(call, decision, "reauth.verified", subject=subject,
                                         method=spec.method, request_id=request.id))
                continue
            event = "reauth.locked" if result_kind == "locked" else "reauth.failed"
            self.audit.append(_event(call, decision, event, outcome="reauth_failed",
                                     subject=subject, method=spec.method, detail=reason,
                                     request_id=request.id))
            return Authorization(call, decision, "reauth_failed",
                                 f"re-authentication of {subject} failed ({result_kind}: {reason})",
                                 request.id, approvers)
        return None

