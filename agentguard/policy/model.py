"""The policy file, as pydantic models. This is the product's main user interface.

A policy reads aloud: ordered privilege classes each carry a base requirement; rules match
calls and set their class and labels; risk signals step the requirement up when they fire.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentguard.durations import parse_duration
from agentguard.policy.conditions import (
    ArgCondition,
    PathMatch,
    is_operator_mapping,
    validate_condition,
)
from agentguard.types import Requirement

__all__ = [
    "ApprovalFields",
    "ArgCondition",
    "ClassSpec",
    "Defaults",
    "MatchSpec",
    "PathMatch",
    "PolicyModel",
    "PrincipalMatch",
    "RateLimit",
    "RateSpec",
    "ReauthModel",
    "RuleSpec",
    "ScheduleSpec",
    "ServerSpec",
    "SignalSpec",
    "StepUp",
]

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Strict(BaseModel):
    # defer_build: validating a policy builds PolicyModel's validator with every nested
    # model's schema in it, so the nested models' own validators, built at import otherwise,
    # are mostly never needed (about 3 ms of start-up).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _seconds(value: Any) -> float:
    return parse_duration(value)


def _requirement(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a requirement is a string: allow, approve, reauth, approve+reauth, deny")
    Requirement.parse(value)
    return value


class ReauthModel(_Strict):
    """``reauth: {method: totp, max_age: 15m, subject: principal}``."""

    method: Literal["totp", "oauth", "passkey"] = Field(
        default="totp", description="totp: a code from the person's authenticator, typed on "
        "the terminal; oauth: the bearer token's auth_time and acr (HTTP proxy, RFC 9470); "
        "passkey: a passkey assertion bound to the held call (agentguard.reauth.passkey).")
    max_age: float = Field(default=0.0, description="A verification younger than this is "
                           "reused (step-up freshness); 0: every call re-authenticates.")
    subject: Literal["principal", "approver"] | None = Field(
        default=None,
        description="Who re-authenticates; default: the approver when the call is also "
        "approved, otherwise the principal (or the human it acts for).",
    )
    acr_values: list[str] = Field(default_factory=list, description="OAuth: the token's acr "
                                  "must be one of these (RFC 9470).")

    _v_age = field_validator("max_age", mode="before")(_seconds)


class ApprovalFields(_Strict):
    """Fields shared by classes and rules that describe who approves and how."""

    require: str | None = Field(
        default=None, description="allow, approve, reauth, approve+reauth or deny; "
        "requirements only ever go up (a rule's step-ups add to it)."
    )
    approvers: list[str] | None = Field(
        default=None, description="Who may approve: identities (alice, slack:U012ABC) "
        "or group:NAME; default: defaults.approvers."
    )
    quorum: int | None = Field(default=None, ge=1, description="Approvals needed from "
                               "distinct people (M of N; default 1).")
    separation_of_duties: bool | None = Field(
        default=None, description="The principal and the human it acts for may not approve."
    )
    timeout: float | None = Field(default=None, description="How long a held call waits "
                                  "(default: defaults.timeout).")
    max_grant: float | None = Field(
        default=None, description="Longest 'approve for N' an approver may give (0: "
        "each approval is for this one call)."
    )
    channels: list[str] | None = Field(
        default=None, description="Channels to ask (console, terminal, slack, webhook, "
        "mcp-elicitation); default: every configured verified channel."
    )
    reauth: ReauthModel | None = Field(
        default=None, description="How re-authentication is done, when the requirement "
        "includes reauth.")
    assurance: Literal["any", "signed"] | None = Field(
        default=None, description="signed: only votes signed by a key the trust file lists "
        "count (rules out the in-process console and unsigned terminal votes); any: every "
        "verified channel's vote counts (default)."
    )

    _v_req = field_validator("require", mode="before")(
        lambda v: v if v is None else _requirement(v)
    )
    _v_timeout = field_validator("timeout", "max_grant", mode="before")(
        lambda v: v if v is None else _seconds(v)
    )


class ClassSpec(ApprovalFields):
    """One privilege class, e.g. ``privileged: {require: approve+reauth, quorum: 2}``."""

    require: str = Field(default="allow", description="The class's base requirement: allow, "
                         "approve, reauth, approve+reauth or deny.")


class ScheduleSpec(_Strict):
    """A weekly time window in a named timezone.

    ``hours`` is ``START-END`` on the wall clock of ``tz``. When END is before START the window
    crosses midnight and runs into the next day: ``days: [mon], hours: "22:00-02:00"`` is
    Monday 22:00 to Tuesday 02:00 (a window belongs to the day it starts on). On nights the
    clocks change, the window runs from the first moment the clock reads START to the first
    moment after it that the clock reads END.
    """

    tz: str = Field(default="UTC", description="IANA timezone of the wall clock "
                    "(Europe/London).")
    days: list[Day] = Field(
        default_factory=lambda: list(DAYS), description="Days the window starts on."
    )
    hours: str = Field(default="00:00-24:00", pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$",
                       description="START-END on that clock. An END before START crosses "
                       "midnight and belongs to the day it starts on: days: [mon], hours: "
                       "22:00-02:00 is Monday 22:00 to Tuesday 02:00. On nights the clocks "
                       "change it runs from the first moment the clock reads START to the "
                       "first moment after that it reads END.")

    @field_validator("tz")
    @classmethod
    def _tz_exists(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value

    @field_validator("hours")
    @classmethod
    def _hours_valid(cls, value: str) -> str:
        start, end = value.split("-")
        for part in (start, end):
            hh, mm = (int(x) for x in part.split(":"))
            if hh > 24 or mm > 59 or (hh == 24 and mm):
                raise ValueError(f"invalid time {part!r}")
        if start == end:
            raise ValueError("hours must be START-END with START and END different (a whole "
                             "day is 00:00-24:00)")
        if start == "24:00":
            raise ValueError("hours: a window cannot start at 24:00 (write 00:00)")
        return value


class RateSpec(_Strict):
    """More than ``max`` calls carrying any of ``labels`` within ``per``."""

    labels: list[str] = Field(min_length=1, description="Calls carrying any of these labels "
                              "count.")
    max: int = Field(ge=0, description="Fires when this call makes more than max.")
    per: float = Field(description="The sliding window.")

    _v_per = field_validator("per", mode="before")(_seconds)


class PrincipalMatch(_Strict):
    """Match on the calling principal."""

    id: str | list[str] | None = Field(default=None, description="Glob(s) on the id.")
    kind: str | list[str] | None = Field(default=None, description="Kind(s): agent, "
                                         "service, user, ...")
    claims: dict[str, Any] | None = Field(
        default=None, description="Claim conditions (same operators as args but path)."
    )

    @field_validator("claims")
    @classmethod
    def _no_path_on_claims(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # A path refusal denies a call; claims come from the host, not the call, and a
        # principal signal has no call to deny.
        for name, cond in (value or {}).items():
            if is_operator_mapping(cond) and "path" in cond:
                raise ValueError(f"claims.{name}: the path operator reads call arguments, "
                                 "not claims (use glob)")
        return value


class SignalSpec(_Strict):
    """A named risk signal: a fact about the call that is true or false.

    Exactly one of the kinds is set. ``schedule`` is true inside the window and
    ``outside_schedule`` outside it; ``cidr`` is true when the source address is in one of
    the networks (and false when unknown), ``outside_cidr`` when it is not (or unknown);
    ``rate`` is true when this call makes more than ``max`` in the window; ``first_use`` is
    true the first time a principal calls a tool; ``principal`` matches the principal.
    """

    schedule: ScheduleSpec | None = Field(default=None, description="True inside the weekly "
                                          "window.")
    outside_schedule: ScheduleSpec | None = Field(default=None, description="True outside "
                                                  "the weekly window.")
    cidr: list[str] | None = Field(default=None, description="True when the source address "
                                   "is in one of these networks (false when unknown).")
    outside_cidr: list[str] | None = Field(default=None, description="True when the source "
                                           "address is in none of them, or unknown.")
    rate: RateSpec | None = Field(default=None, description="True when this call makes more "
                                  "than max calls with the labels within per.")
    first_use: bool | None = Field(default=None, description="true: fires the first time a "
                                   "principal calls a tool.")
    principal: PrincipalMatch | None = Field(default=None, description="True when the "
                                             "principal matches.")
    description: str = Field(default="", description="Shown by policy explain.")

    @model_validator(mode="after")
    def _exactly_one(self) -> SignalSpec:
        kinds = [k for k in ("schedule", "outside_schedule", "cidr", "outside_cidr", "rate",
                             "first_use", "principal") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "a signal needs exactly one of schedule, outside_schedule, cidr, outside_cidr, "
                f"rate, first_use, principal (got {kinds or 'none'})"
            )
        for nets in (self.cidr, self.outside_cidr):
            for net in nets or ():
                try:
                    ipaddress.ip_network(net, strict=False)
                except ValueError as exc:
                    raise ValueError(f"invalid network {net!r}") from exc
        return self

    @property
    def kind(self) -> str:
        """Which kind of signal this is."""
        for k in ("schedule", "outside_schedule", "cidr", "outside_cidr", "rate", "first_use",
                  "principal"):
            if getattr(self, k) is not None:
                return k
        raise AssertionError("validated")


class StepUp(_Strict):
    """``{when: signal, require: approve}`` or ``{unless: signal, require: reauth}``.

    With a list, every listed signal must fire (``when``) / every one must be false
    (``unless``).
    """

    when: str | list[str] | None = Field(default=None, description="Signal name, or a list "
                                         "that must all fire.")
    unless: str | list[str] | None = Field(default=None, description="Signal name, or a list "
                                           "none of which fires.")
    require: str = Field(description="Added to the requirement when the step applies "
                         "(exactly one of when and unless is given).")

    _v_req = field_validator("require", mode="before")(_requirement)

    @model_validator(mode="after")
    def _one_condition(self) -> StepUp:
        if (self.when is None) == (self.unless is None):
            raise ValueError("a step-up needs exactly one of 'when' or 'unless'")
        return self

    def signal_names(self) -> list[str]:
        """Signals this step refers to."""
        value = self.when if self.when is not None else self.unless
        return [value] if isinstance(value, str) else list(value or [])


class MatchSpec(_Strict):
    """What a rule matches. Every given field must match."""

    tool: str | list[str] | None = Field(default=None, description="Glob(s) on the tool name.")
    server: str | list[str] | None = Field(default=None, description="Glob(s) on the server.")
    args: dict[str, ArgCondition] | None = Field(
        default=None, description="Dotted argument paths to conditions: a literal (equal), or "
        "operators that must all hold: eq, ne, in, not_in, glob, regex, gt, ge, lt, le, "
        "exists, and path for file-like arguments (`{path: [prod, \"prod/**\"]}`, optionally "
        "with `case: insensitive`): the argument is normalised first (`\\` is a separator; "
        "`.`, `..`, `//` and a trailing `/` resolved), so `staging/../prod/db` is `prod/db`; "
        "`prod/**` does not match `prod` itself. A path climbing above its root, containing "
        "a NUL or not a string is refused (the call is denied, naming the argument), never "
        "passed on to a later rule. A pattern without a leading `/` also matches the path "
        "spelled with one; one with a leading `/` matches absolute paths only. Patterns are "
        "written in normal form (`prod/` and `./prod` are errors)."
    )
    labels: list[str] | None = Field(
        default=None, description="The tool declares any of these labels."
    )
    hints: dict[str, bool] | None = Field(
        default=None, description="Declared hints (read_only, destructive, idempotent, "
        "open_world) equal to these values."
    )
    principal: PrincipalMatch | None = Field(default=None, description="Conditions on the "
                                             "calling principal.")

    @field_validator("args")
    @classmethod
    def _valid_conditions(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for path, cond in (value or {}).items():
            validate_condition(path, cond)
        return value

    @field_validator("hints")
    @classmethod
    def _valid_hints(cls, value: dict[str, bool] | None) -> dict[str, bool] | None:
        bad = set(value or {}) - {"read_only", "destructive", "idempotent", "open_world"}
        if bad:
            raise ValueError(f"unknown hint(s) {sorted(bad)}")
        return value


class RuleSpec(ApprovalFields):
    """One rule: match, class, labels, requirement overrides, step-ups."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", description="Shown in every "
                    "decision and audit record.")
    description: str = Field(default="", description="Said in the decision's reason.")
    match: MatchSpec = Field(description="What the rule matches: every given condition "
                             "must hold.")
    class_: str | None = Field(default=None, alias="class", description="The call's privilege "
                               "class (one of classes).")
    labels: list[str] = Field(default_factory=list, description="Labels of the call (secret, "
                              "policy, credential, deploy, ...), read by rate signals.")
    step_up: list[StepUp] = Field(default_factory=list, description="Requirements added when "
                                  "signals fire; requirements only go up.")
    standards: list[str] = Field(default_factory=list, description="Tags such as "
                                 "OWASP-NHI-02, NIST-800-207 carried into decisions and audit.")
    redact: list[str] = Field(default_factory=list, description="Argument paths (`dsn`, "
                              "`auth.*.secret`, `**.ssn`) masked as `redacted:policy` before the "
                              "audit log, the store or any channel sees them (every rule naming "
                              "the tool counts).")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              defer_build=True)


class ServerSpec(_Strict):
    """How far a server's tool annotations are trusted."""

    trust: Literal["trusted", "untrusted"] = Field(
        default="untrusted", description="Annotations of untrusted servers may raise a class, "
        "never lower it (local, the decorator's server, is trusted).")


class RateLimit(_Strict):
    """At most ``max`` events per ``per``."""

    max: int = Field(ge=1, description="At most this many.")
    per: float = Field(description="The sliding window.")

    _v_per = field_validator("per", mode="before")(_seconds)


class Defaults(_Strict):
    """Defaults that apply where classes and rules are silent."""

    unknown_tool: str = Field(
        default="approve", description="Requirement for a tool no rule or class covers."
    )
    timeout: float = Field(default=300.0, description="How long a held call waits.")
    on_timeout: Literal["deny"] = Field(
        default="deny", description="Always deny: a timeout never lets a call run."
    )
    log_allows: bool = Field(default=False, description="Also audit uninterrupted calls.")
    max_args_bytes: int = Field(
        default=1_048_576, ge=1024, description="Arguments larger than this (as JSON) are "
        "refused: too large to show an approver or hash safely.")
    pending_per_class: int = Field(
        default=5, ge=1, description="Distinct held calls one principal may have waiting per "
        "class (identical calls join one request); more are refused at once (approval "
        "fatigue). The default lets a model turn's parallel calls each be held.")
    request_rate: RateLimit = Field(
        default_factory=lambda: RateLimit(max=20, per=600.0),
        description="Approval requests one principal may raise per window; more are refused "
        "and audited as a flood.")
    deny_cooldown: float = Field(
        default=120.0, description="An identical call just denied is refused for this long."
    )
    approvers: list[str] = Field(
        default_factory=list, description="Approvers when a class or rule names none."
    )

    _v_req = field_validator("unknown_tool", mode="before")(_requirement)
    _v_times = field_validator("timeout", "deny_cooldown", mode="before")(_seconds)


def _default_classes() -> dict[str, ClassSpec]:
    return {
        "read": ClassSpec(require="allow"),
        "write": ClassSpec(require="allow"),
        "destructive": ClassSpec(require="approve"),
        "privileged": ClassSpec(require="approve+reauth"),
    }


class PolicyModel(_Strict):
    """The whole policy file."""

    version: Literal[1] = Field(default=1, description="The policy format.")
    mode: Literal["enforce", "shadow"] = Field(
        default="enforce", description="shadow: decide and audit (`call.shadow`, "
        "with `would_be`), never block."
    )
    defaults: Defaults = Field(default_factory=Defaults, description="Defaults that apply "
                               "where classes and rules are silent.")
    groups: dict[str, list[str]] = Field(default_factory=dict, description="Identities "
                                         "(alice, slack:U012ABC) named as group:NAME.")
    classes: dict[str, ClassSpec] = Field(
        default_factory=_default_classes, description="Privilege classes, ordered low to high."
    )
    signals: dict[str, SignalSpec] = Field(default_factory=dict, description="Named risk "
                                           "signals; each sets exactly one kind.")
    servers: dict[str, ServerSpec] = Field(default_factory=dict, description="Per server "
                                           "name (glob, \"*\" for the rest).")
    rules: list[RuleSpec] = Field(default_factory=list, description="Tried in order; the "
                                  "first that matches decides.")
    trust: str | None = Field(
        default=None, description="The trust file (approvers' public keys), relative to the "
        "policy file; deploy it read-only to the agent. Needed by assurance: signed.")

    @model_validator(mode="after")
    def _cross_references(self) -> PolicyModel:
        if not self.classes:
            raise ValueError("classes: at least one privilege class is needed")
        signed = [name for name, spec in [*self.classes.items(),
                                          *((r.id, r) for r in self.rules)]
                  if spec.assurance == "signed"]
        if signed and not self.trust:
            raise ValueError(f"assurance: signed ({', '.join(signed)}) needs a trust file: "
                             "add 'trust: approvers.yaml' naming the approvers' keys")
        seen: set[str] = set()
        for rule in self.rules:
            where = f"rules[{rule.id}]"
            if rule.id in seen:
                raise ValueError(f"{where}: duplicate rule id {rule.id!r}")
            seen.add(rule.id)
            if rule.class_ is not None and rule.class_ not in self.classes:
                raise ValueError(
                    f"{where}.class: unknown class {rule.class_!r} "
                    f"(classes: {', '.join(self.classes)})"
                )
            for step in rule.step_up:
                for name in step.signal_names():
                    if name not in self.signals:
                        raise ValueError(
                            f"{where}.step_up: unknown signal {name!r} "
                            f"(signals: {', '.join(self.signals) or 'none defined'})"
                        )
        for owner, spec in [*(("classes." + k, v) for k, v in self.classes.items()),
                            *(("rules[" + r.id + "]", r) for r in self.rules)]:
            for approver in spec.approvers or ():
                if approver.startswith("group:") and approver[6:] not in self.groups:
                    raise ValueError(f"{owner}.approvers: unknown group {approver!r}")
        return self
