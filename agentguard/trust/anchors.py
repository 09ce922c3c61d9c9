"""Trust anchors: who may sign votes, with which keys. A file the agent can read, not write.

The policy names the file (``trust: path``); it is deployed read-only to the agent, like git's
allowed-signers file or ssh's ``authorized_keys``::

    approvers:
      - id: dave
        keys: ["ed25519:Jq3X...="]        # from `agentguard approvers keygen`
        passkeys:                        # WebAuthn credentials (`agentguard serve --web`)
          - credential_id: "q1Xc..."     # base64url, as the authenticator made it
            public_key: "pQECAy..."      # base64url of the COSE public key
            label: "dave's laptop"
            rp_id: approvals.example.com # the WebAuthn relying party the credential is for
            origin: https://approvals.example.com  # the page it may be used from
    services:
      - name: serve                      # `agentguard serve`, as its own OS user
        key: "ed25519:9Yk2...="
        may_vouch_for: ["slack:*", "webhook:*"]
    admins: [dave]                       # may sign passkey enrolment links for others

One key, one person: a key appears once in the whole file (approvers and services alike), and
an approver id appears once (compared as :func:`~agentguard.identity.canonical_identity`).
A service key votes *for* someone it verified on another channel, so it may only vouch for
namespaced identities (``slack:U012``, ``webhook:ops``) matching its ``may_vouch_for``
globs, never for a plain person name: a person is proven by their own key.

:meth:`TrustAnchors.load` also returns warnings (not errors) when the file or its directory is
something this process could change: the agent must not be able to write its own anchors.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentguard.errors import ConfigError
from agentguard.identity import canonical_identity
from agentguard.trust.keys import key_id, parse_public_key

__all__ = [
    "ApproverAnchor",
    "KeyBinding",
    "PasskeyAnchor",
    "ServiceAnchor",
    "TrustAnchors",
    "TrustFileError",
    "writable_warnings",
]

_MAX_FILE = 1024 * 1024
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_PERSON_NAMESPACES = ("user:", "os:", "human:")


class TrustFileError(ConfigError, ValueError):
    """A trust file that cannot be used (the message names the file and the field)."""


# ---------------------------------------------------------------- the file, at the boundary
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class _Passkey(_Model):
    credential_id: str = Field(min_length=1, max_length=1024)
    public_key: str = Field(min_length=1, max_length=4096)
    label: str = ""
    rp_id: str = Field(min_length=1, max_length=253)
    origin: str = Field(min_length=1, max_length=2048)

    @field_validator("credential_id", "public_key")
    @classmethod
    def _base64url(cls, value: str) -> str:
        if not _B64URL.fullmatch(value):
            raise ValueError("must be base64url text (no padding)")
        return value

    @field_validator("origin")
    @classmethod
    def _origin(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if scheme not in ("https", "http") or not sep or not rest or "/" in rest:
            raise ValueError("an origin is scheme://host[:port], without a path")
        return value


class _Approver(_Model):
    id: str = Field(min_length=1, max_length=256)
    keys: list[str] = []
    passkeys: list[_Passkey] = []

    @field_validator("id")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable() or not canonical_identity(value):
            raise ValueError("an approver id is printable text")
        return value


class _Service(_Model):
    name: str = Field(min_length=1, max_length=128)
    key: str
    may_vouch_for: list[str] = Field(min_length=1)

    @field_validator("may_vouch_for")
    @classmethod
    def _namespaced(cls, globs: list[str]) -> list[str]:
        for glob in globs:
            namespace, sep, _ = glob.partition(":")
            if (not sep or not namespace or any(c in namespace for c in "*?[]")
                    or f"{namespace.lower()}:" in _PERSON_NAMESPACES):
                raise ValueError(
                    f"{glob!r}: a service vouches only for namespaced identities such as "
                    "'slack:*' or 'webhook:*' (a person signs with their own key)")
        return globs


class _TrustFile(_Model):
    version: int = 1
    approvers: list[_Approver] = []
    services: list[_Service] = []
    admins: list[str] = []

    @field_validator("version")
    @classmethod
    def _known(cls, value: int) -> int:
        if value != 1:
            raise ValueError("this agentguard reads trust files of version 1")
        return value


# ---------------------------------------------------------------- what the guard uses
@dataclass(frozen=True, slots=True)
class PasskeyAnchor:
    """A WebAuthn credential of an approver (base64url id and COSE public key), and the
    relying party id and origin its assertions must name."""

    credential_id: str
    public_key: str
    label: str = ""
    rp_id: str = ""
    origin: str = ""


@dataclass(frozen=True, slots=True)
class ApproverAnchor:
    """One person: their canonical identity, key ids and passkeys."""

    identity: str
    key_ids: tuple[str, ...]
    passkeys: tuple[PasskeyAnchor, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceAnchor:
    """A service (``agentguard serve``) that signs votes it verified on another channel."""

    name: str
    key_id: str
    may_vouch_for: tuple[str, ...]

    def may_vouch(self, identity: str) -> bool:
        """Whether this service may sign for ``identity`` (canonical form, glob match)."""
        ident = canonical_identity(identity)
        return any(fnmatchcase(ident, canonical_identity(g)) for g in self.may_vouch_for)


@dataclass(frozen=True, slots=True)
class KeyBinding:
    """What one listed key may sign as: exactly one person, or one service."""

    key_id: str
    public_key: Ed25519PublicKey
    approver: ApproverAnchor | None = None
    service: ServiceAnchor | None = None


@dataclass(frozen=True, slots=True)
class TrustAnchors:
    """The parsed trust file.

    Attributes:
        approvers: People, in file order.
        services: Services, in file order.
        source: Where it was read from (for messages).
        warnings: Reasons the agent might be able to change the file (empty when none).
        admins: Approvers whose keys may sign passkey enrolment links for others
            (:mod:`agentguard.trust.enrol`).
    """

    approvers: tuple[ApproverAnchor, ...]
    services: tuple[ServiceAnchor, ...]
    source: str = "<memory>"
    warnings: tuple[str, ...] = ()
    _keys: Mapping[str, KeyBinding] = field(default_factory=dict, repr=False)
    admins: tuple[str, ...] = ()
    _passkeys: Mapping[str, tuple[ApproverAnchor, PasskeyAnchor]] = field(
        default_factory=dict, repr=False)

    def key(self, key_id: str) -> KeyBinding | None:
        """The binding of a listed key, or None when the file does not list it."""
        return self._keys.get(key_id) if isinstance(key_id, str) else None

    def passkey(self, credential_id: str) -> tuple[ApproverAnchor, PasskeyAnchor] | None:
        """The approver owning the passkey ``credential_id`` and its entry, or None."""
        return self._passkeys.get(credential_id) if isinstance(credential_id, str) else None

    def approver(self, identity: str) -> ApproverAnchor | None:
        """The approver entry of ``identity`` (any spelling), or None."""
        ident = canonical_identity(identity)
        return next((a for a in self.approvers if a.identity == ident), None)

    @classmethod
    def from_mapping(cls, data: Any, source: str = "<memory>") -> TrustAnchors:
        """Validate parsed YAML/JSON data.

        Raises:
            TrustFileError: a field is malformed, or a key or an approver id is listed twice.
        """
        if data is None:
            data = {}
        try:
            model = _TrustFile.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise TrustFileError(f"trust file {source}: {where}: {first['msg']}") from None
        keys: dict[str, KeyBinding] = {}
        seen_keys: dict[str, str] = {}

        def add(text: str, where: str, owner: str) -> tuple[str, Ed25519PublicKey]:
            try:
                public = parse_public_key(text)
            except ValueError as exc:
                raise TrustFileError(f"trust file {source}: {where}: {exc}") from None
            kid = key_id(public)
            if kid in seen_keys:
                raise TrustFileError(
                    f"trust file {source}: {where}: key {kid} is already listed for "
                    f"{seen_keys[kid]} (one key, one person)")
            seen_keys[kid] = owner
            return kid, public

        approvers: list[ApproverAnchor] = []
        for i, entry in enumerate(model.approvers):
            ident = canonical_identity(entry.id)
            if any(a.identity == ident for a in approvers):
                raise TrustFileError(
                    f"trust file {source}: approvers.{i}.id: {ident!r} is listed twice")
            pairs = [add(text, f"approvers.{i}.keys.{j}", ident)
                     for j, text in enumerate(entry.keys)]
            anchor = ApproverAnchor(
                identity=ident, key_ids=tuple(kid for kid, _ in pairs),
                passkeys=tuple(PasskeyAnchor(p.credential_id, p.public_key, p.label,
                                             p.rp_id, p.origin)
                               for p in entry.passkeys))
            approvers.append(anchor)
            for kid, public in pairs:
                keys[kid] = KeyBinding(kid, public, approver=anchor)
        passkeys = {p.credential_id: (a, p) for a in approvers for p in a.passkeys}
        if len(passkeys) != sum(len(a.passkeys) for a in approvers):
            raise TrustFileError(f"trust file {source}: approvers: a passkey is listed twice")
        services: list[ServiceAnchor] = []
        for i, svc in enumerate(model.services):
            if any(s.name == svc.name for s in services):
                raise TrustFileError(
                    f"trust file {source}: services.{i}.name: {svc.name!r} is listed twice")
            kid, public = add(svc.key, f"services.{i}.key", f"service {svc.name}")
            service = ServiceAnchor(svc.name, kid, tuple(svc.may_vouch_for))
            services.append(service)
            keys[kid] = KeyBinding(kid, public, service=service)
        admins = tuple(canonical_identity(a) for a in model.admins)
        for name in admins:
            if not any(a.identity == name for a in approvers):
                raise TrustFileError(f"trust file {source}: admins: {name!r} is not an approver")
        return cls(approvers=tuple(approvers), services=tuple(services), source=source,
                   _keys=MappingProxyType(keys), admins=admins,
                   _passkeys=MappingProxyType(passkeys))

    @classmethod
    def load(cls, path: str | Path) -> TrustAnchors:
        """Read and validate the trust file at ``path`` (YAML; JSON is YAML too).

        Raises:
            TrustFileError: the file cannot be read or is not a valid trust file.
        """
        path = Path(path).expanduser()
        try:
            with open(path, "rb") as fh:
                raw = fh.read(_MAX_FILE + 1)
        except OSError as exc:
            raise TrustFileError(f"trust file {path}: cannot read it ({exc.strerror})") from exc
        if len(raw) > _MAX_FILE:
            raise TrustFileError(f"trust file {path}: larger than {_MAX_FILE} bytes")
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise TrustFileError(f"trust file {path}: not valid YAML ({exc})") from None
        anchors = cls.from_mapping(data, source=str(path))
        return TrustAnchors(anchors.approvers, anchors.services, anchors.source,
                            tuple(writable_warnings(path)), anchors._keys, anchors.admins,
                            anchors._passkeys)


def writable_warnings(path: str | Path) -> list[str]:
    """Ways the current process (the agent's OS user) could change the file at ``path``.

    Checks the file and its directory: writable by this process, owned by this user (an owner
    can ``chmod`` it writable), or writable by group or others (a directory with the sticky bit
    is not, for files it does not own).
    """
    path = Path(path)
    uid = os.geteuid()
    out = []
    for target, what in ((path, "file"), (path.parent, "directory")):
        try:
            info = os.stat(target)
        except OSError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        name = f"trust {what} {target}"
        if os.access(target, os.W_OK, effective_ids=os.access in os.supports_effective_ids):
            out.append(f"{name} is writable by this process (uid {uid}): "
                       "the agent must not be able to write its trust anchors")
        elif info.st_uid == uid:
            out.append(f"{name} is owned by this user (uid {uid}), who can make it writable: "
                       "deploy it as another user, read-only to the agent")
        sticky = what == "directory" and mode & stat.S_ISVTX
        if mode & 0o022 and not sticky:
            out.append(f"{name} is writable by group or others (mode {mode:o})")
    return out
