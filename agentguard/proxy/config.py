"""Proxy configuration: which upstream servers to front, and how.

A config file declares several upstreams; the command line (``-- CMD ARGS`` or
``--upstream-url``) declares one. Example::

    policy: policy.yaml                      # relative paths are relative to this file
    store: sqlite:///~/.agentguard/agentguard.db   # default: $AGENTGUARD_STORE, then the home's
    audit: ~/.agentguard/audit.jsonl               # default: $AGENTGUARD_AUDIT, then the home's
    principal: {id: "agent:claude-desktop", kind: agent}
    listen: 0.0.0.0:8787                     # serve Streamable HTTP instead of stdio
    public_url: https://agentguard.example   # where browsers reach it (re-authentication links)
    servers:
      ops: {command: python, args: [examples/servers/ops_server.py]}
      git: {command: mcp-server-git, args: [--repository, .]}
      wiki: {url: "http://127.0.0.1:8765/mcp"}

Paths in a config file mean the same from any working directory: ``policy``, ``audit``, a
SQLite ``store`` and a server's ``cwd`` are relative to the file, and a stdio server **starts
in the file's folder** unless ``cwd:`` says otherwise, so relative ``args`` (a script, or
``--repository ../..``) resolve against the file too. ``${config_dir}`` in ``command``,
``args``, ``env`` values and ``cwd`` is replaced by the file's folder, for an argument that
must stay right under another ``cwd``. A ``command`` with a ``/`` in it is a path, resolved
against the server's ``cwd``; a bare name is looked up on ``PATH``. A server given on the
command line (``-- CMD ARGS``) starts in the proxy's own working directory, as a shell would.
Store, audit and policy not set anywhere come from :mod:`agentguard.settings`
(``$AGENTGUARD_STORE``, ``$AGENTGUARD_AUDIT``, ``$AGENTGUARD_POLICY``, ``$AGENTGUARD_HOME``),
exactly as for ``agentguard approvals``, so both always meet in the same store.

Naming: with several upstreams every tool and prompt is exposed as ``SERVER__NAME`` (two
underscores). Dots would read better, but the model APIs the names end up in (OpenAI's and
Anthropic's tool-name patterns ``^[a-zA-Z0-9_-]{1,64}$``) reject them, while ``__`` is legal
everywhere MCP names go. Server names may not contain ``__`` themselves, so the first ``__``
always separates server from tool. A server may set ``namespace: ""`` to keep its names bare;
a collision that this (or an upstream listing one name twice) creates is refused, never
shadowed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agentguard.errors import ConfigError

__all__ = [
    "CONFIG_DIR",
    "DEFAULT_ANSWER_HELD_AFTER",
    "NAMESPACE_SEPARATOR",
    "OAuthConfig",
    "PrincipalConfig",
    "ProxyConfig",
    "UpstreamConfig",
    "cleartext_url",
    "default_server_name",
    "load_config",
    "normalize_public_url",
    "parse_listen",
    "validate_config",
]

NAMESPACE_SEPARATOR = "__"
DEFAULT_ANSWER_HELD_AFTER = 50.0
"""Seconds before a held call is answered "waiting for approval, retry later"."""
CONFIG_DIR = "${config_dir}"
"""Replaced by the config file's folder in a server's ``command``, ``args``, ``env``, ``cwd``."""
_SERVER_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_))*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UpstreamConfig(_Model):
    """One upstream MCP server.

    Attributes:
        name: Logical server name, as policies and pins see it.
        command: Executable for a stdio upstream.
        args: Its arguments.
        env: Extra environment for the child (merged over the proxy's own environment).
        cwd: Working directory of the child.
        url: Streamable HTTP endpoint of an HTTP upstream (instead of ``command``).
        headers: Extra HTTP headers sent to an HTTP upstream.
        mode: Protocol negotiation towards the upstream: ``auto`` (2026-07-28 when it speaks
            it, else the initialize handshake; a stdio proxy connects in its client's era,
            the handshake's for a client that opens with ``initialize``), ``legacy``, or
            ``2026-07-28``.
        namespace: Prefix of this server's tool and prompt names (``ns__tool``); default is
            the server name when several upstreams are configured, none for a single one.
        request_timeout: Seconds to wait for an upstream answer (None: no limit).
        max_restarts: Restarts of a crashed stdio upstream before it is refused for good.
        name_from_server: ``name`` is a placeholder: the upstream goes by its own
            ``serverInfo.name`` (see :mod:`agentguard.proxy.naming`). Set by the command line
            when ``--name`` is not given.
    """

    name: str
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    mode: Literal["auto", "legacy", "2026-07-28"] = "auto"
    namespace: str | None = None
    request_timeout: float | None = None
    max_restarts: int = Field(default=5, ge=0)
    name_from_server: bool = False

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not _SERVER_NAME.match(value) or len(value) > 64:
            raise ValueError(
                f"server name {value!r} must be letters, digits, '-' and single '_' "
                "(no '__', which separates server from tool), at most 64 characters"
            )
        if value == "local":
            # `local` is the decorator's in-process server, trusted by default; an upstream
            # must not inherit that trust by its name (list it under `servers:` to trust it).
            raise ValueError("server name 'local' is reserved for in-process tools; name the "
                             "upstream with --name or `name:`")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace_ok(cls, value: str | None) -> str | None:
        if value and not _SERVER_NAME.match(value):
            raise ValueError(f"namespace {value!r} must look like a server name (or be empty)")
        return value

    @model_validator(mode="after")
    def _one_transport(self) -> UpstreamConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError(f"server {self.name!r} needs exactly one of command or url")
        if self.url is not None and not re.match(r"^https?://", self.url):
            raise ValueError(f"server {self.name!r}: url must start with http:// or https://")
        return self

    def describe(self) -> str:
        """Human-readable target, for logs."""
        return self.url or shlex.join([self.command or "", *self.args])


class PrincipalConfig(_Model):
    """Who the proxied calls run as (the MCP client's self-description is not trusted)."""

    id: str = "agent:mcp-client"
    kind: str = "agent"
    claims: dict[str, Any] = Field(default_factory=dict)


class OAuthConfig(_Model):
    """OAuth bearer tokens on the HTTP proxy (RFC 9470 step-up for rules with
    ``reauth: {method: oauth}``).

    Attributes:
        issuer: The authorization server's issuer identifier.
        jwks_uri: Where its signing keys are published (https; http only on loopback).
        resource: This proxy's URL, e.g. ``https://proxy.example/mcp``.
        audience: Accepted ``aud`` values (default: ``[resource]``).
        algorithms: Accepted signature algorithms (asymmetric only).
        required_scopes: Scopes every token must carry.
        forward_token: Pass the client's token to upstreams (off: no token passthrough).
        step_up_url: Where a user re-authenticates; clients that support URL elicitation
            are sent there when a rule needs a stronger or fresher login.
    """

    issuer: str
    jwks_uri: str
    resource: str
    audience: list[str] | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "PS256"])
    required_scopes: list[str] = Field(default_factory=list)
    forward_token: bool = False
    step_up_url: str | None = None


class ProxyConfig(_Model):
    """Everything ``agentguard proxy`` needs.

    Attributes:
        policy: Path of the policy file.
        store: Store URL shared with approvers (None: ``$AGENTGUARD_STORE``, else SQLite in
            ``$AGENTGUARD_HOME``, see :func:`agentguard.settings.store_url`).
        audit: Path of the JSONL audit log (None: ``$AGENTGUARD_AUDIT``, else in the home).
        principal: Principal of every call made through this proxy.
        servers: Upstreams, by name.
        listen: ``HOST:PORT`` to serve Streamable HTTP instead of stdio.
        public_url: Base URL where users' browsers reach this proxy, e.g.
            ``https://agentguard.example`` behind a reverse proxy; the TOTP re-authentication
            links of URL-mode elicitation point under it (``/agentguard/reauth/...``).
            Default: derived from ``listen``. Needs ``listen``.
        trusted_proxies: Addresses (IPs or CIDRs) of reverse proxies whose
            ``X-Forwarded-For`` names the caller. Default none: the TCP peer is the caller's
            source address, so a local process cannot claim another one to the network
            signals. Needs ``listen``.
        max_message_bytes: Largest accepted downstream message (stdio and HTTP).
        max_depth: Deepest accepted JSON nesting of a downstream message.
        max_connections: Open client connections ``--listen`` serves at once; one more is
            answered ``503`` and closed at once, the open ones undisturbed. Global, not per
            client: for fairness between clients put a reverse proxy with a per-client
            limit in front. Used by ``listen`` only.
        oauth: Require OAuth bearer tokens on the HTTP downstream (``--listen`` only).
        answer_held_after: Seconds a held call waits before the client gets an answer while
            the request stays pending for its policy timeout: an ``isError`` result saying
            it waits for approval under request X and runs, once approved, when the identical
            call is made again. Below the common 60 s client timeout (the TypeScript SDK's,
            the MCP Inspector's, ``mcp`` 1.x Python clients'), so the client never gives up
            first. ``None`` (``0`` on the command line): wait for the verdict.
        passkey_page: Origin of ``agentguard serve --web`` (its ``--origin``): rules with
            ``reauth: {method: passkey}`` send the human to its ``/stepup/...`` page (as a
            URL-mode elicitation where the client supports it and the rule names
            ``mcp-elicitation``; the page's inbox lists it either way). Needs ``trust:`` in
            the policy. Without it, passkey step-up fails closed here.
    """

    policy: str | None = None
    store: str | None = None
    audit: str | None = None
    principal: PrincipalConfig = Field(default_factory=PrincipalConfig)
    servers: list[UpstreamConfig] = Field(default_factory=list)
    listen: str | None = None
    public_url: str | None = None
    trusted_proxies: list[str] = Field(default_factory=list)
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_depth: int = Field(default=100, ge=8, le=900)
    max_connections: int = Field(default=1024, ge=1)
    oauth: OAuthConfig | None = None
    answer_held_after: float | None = Field(default=DEFAULT_ANSWER_HELD_AFTER, gt=0)
    passkey_page: str | None = None

    @field_validator("servers", mode="before")
    @classmethod
    def _servers_by_name(cls, value: Any) -> Any:
        if isinstance(value, dict):
            out = []
            for name, spec in value.items():
                if not isinstance(spec, dict):
                    raise ValueError(f"server {name!r} must be a mapping")
                if "name" in spec and spec["name"] != name:
                    raise ValueError(f"server {name!r} sets a different name {spec['name']!r}")
                out.append({**spec, "name": name})
            return out
        return value

    @field_validator("listen")
    @classmethod
    def _listen_ok(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url_ok(cls, value: str | None) -> str | None:
        return None if value is None else normalize_public_url(value)

    @model_validator(mode="after")
    def _oauth_needs_http(self) -> ProxyConfig:
        if self.oauth is not None and self.listen is None:
            raise ValueError("oauth: bearer tokens need the HTTP downstream: set `listen: "
                             "HOST:PORT` in the same config")
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies_ok(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {item!r} is not an IP address or CIDR "
                                 "range") from None
        return value

    @model_validator(mode="after")
    def _trusted_proxies_need_http(self) -> ProxyConfig:
        if self.trusted_proxies and self.listen is None:
            raise ValueError("trusted_proxies: only the HTTP downstream has callers behind "
                             "reverse proxies: set `listen: HOST:PORT` (--listen) too")
        return self

    @model_validator(mode="after")
    def _public_url_needs_http(self) -> ProxyConfig:
        if self.public_url is not None and self.listen is None:
            raise ValueError("public_url: the re-authentication pages are served by the HTTP "
                             "downstream, which a stdio proxy does not have: set `listen: "
                             "HOST:PORT` (--listen) too, or drop public_url (--public-url)")
        return self

    @model_validator(mode="after")
    def _names_unique(self) -> ProxyConfig:
        seen: set[str] = set()
        for server in self.servers:
            if server.name in seen:
                raise ValueError(f"server {server.name!r} is declared twice")
            seen.add(server.name)
        prefixes: dict[str, str] = {}
        for server in self.servers:
            ns = self.namespace_of(server)
            if ns and ns in prefixes:
                raise ValueError(
                    f"servers {prefixes[ns]!r} and {server.name!r} share namespace {ns!r}"
                )
            prefixes[ns] = server.name
        return self

    def namespace_of(self, server: UpstreamConfig) -> str:
        """The name prefix of a server's tools and prompts ('' for none)."""
        if server.namespace is not None:
            return server.namespace
        return server.name if len(self.servers) > 1 else ""


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:PORT`` for IPv6)."""
    match = re.match(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$", value)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise ValueError(f"listen address {value!r} must be HOST:PORT, e.g. 127.0.0.1:8787")
    return match.group(1).strip("[]"), int(match.group(2))


def normalize_public_url(value: str) -> str:
    """Check a public base URL and trim its trailing slashes.

    Raises:
        ValueError: not an ``http``/``https`` URL with a host, or it carries credentials, a
            query, a fragment, whitespace or non-ASCII characters (links are shown to people:
            an international host name goes in its ``xn--`` form).
    """
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} must be printable ASCII without spaces "
                         "(write an international host name in its xn-- form)")
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"{value!r} must start with https:// (or http://)")
    try:
        host, _ = parts.hostname, parts.port  # .port raises on a malformed or too large port
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    if not host:
        raise ValueError(f"{value!r} must name a host")
    if "@" in parts.netloc:
        raise ValueError(f"{value!r} must not carry a user name or password")
    if "?" in value or "#" in value:
        raise ValueError(f"{value!r} must not have a query or fragment: links "
                         "are built by appending /agentguard/reauth/TOKEN to it")
    return value.rstrip("/")


def cleartext_url(url: str) -> bool:
    """Whether ``url`` is plain ``http://`` to a host other than this machine's loopback."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http":
        return False
    host = (parts.hostname or "").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def default_server_name(command_or_url: str) -> str:
    """A server name derived from a command (``mcp-server-git``) or URL host."""
    if re.match(r"^https?://", command_or_url):
        base = re.sub(r"^https?://", "", command_or_url).split("/")[0].split(":")[0]
    else:
        base = Path(command_or_url).name
        base = re.sub(r"\.(py|js|exe|sh)$", "", base)
    name = re.sub(r"[^A-Za-z0-9-]+", "_", base).strip("_")
    name = re.sub(r"_+", "_", name)
    if name == "local":  # reserved for in-process tools (see UpstreamConfig)
        name = "local-upstream"
    return (name or "upstream")[:64]


def _resolve(base: Path, value: str | None) -> str | None:
    if value is None or "://" in value:
        return value
    path = Path(os.path.expandvars(value)).expanduser()
    return str(path if path.is_absolute() else base / path)


def _in_folder(server: UpstreamConfig, base: Path) -> UpstreamConfig:
    """A config file's server, with ``${config_dir}`` expanded and started in the file's
    folder (or its own ``cwd:``, relative to the file)."""
    if server.url is not None:
        return server
    folder = str(base)

    def sub(text: str) -> str:
        return text.replace(CONFIG_DIR, folder)

    cwd = _resolve(base, sub(server.cwd)) if server.cwd else folder
    assert cwd is not None and server.command is not None
    command = sub(server.command)
    if "/" in command and not Path(command).expanduser().is_absolute():
        # A relative path is the file's, not the proxy's: the OS would look it up against
        # the proxy's working directory, not the child's cwd.
        command = str(Path(cwd) / command)
    return server.model_copy(update={
        "cwd": cwd, "command": command, "args": [sub(a) for a in server.args],
        "env": {k: sub(v) for k, v in server.env.items()}})


def validate_config(data: dict[str, Any], *, source: str | None = None) -> ProxyConfig:
    """Validate a proxy config from a mapping (a file's or the command line's).

    Args:
        data: The settings, as in a config file.
        source: Where they came from, prefixed to the error message (e.g. the file).

    Raises:
        ConfigError: invalid; the message names the field and says what is wrong.
    """
    try:
        return ProxyConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        text = ": ".join(part for part in (source, where, msg) if part)
        raise ConfigError(text) from exc


def load_config(path: str | Path) -> ProxyConfig:
    """Load and validate a proxy config file.

    Raises:
        ConfigError: the file is missing, not YAML, or invalid (the message names the field).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read proxy config: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a proxy config is a mapping")
    config = validate_config(raw, source=str(path))
    base = path.parent.resolve()
    updates: dict[str, Any] = {"policy": _resolve(base, config.policy),
                               "audit": _resolve(base, config.audit)}
    store = config.store
    if store and store.startswith("sqlite:///") and not store.startswith("sqlite:////"):
        updates["store"] = "sqlite:///" + str(_resolve(base, store.removeprefix("sqlite:///")))
    updates["servers"] = [_in_folder(server, base) for server in config.servers]
    return config.model_copy(update=updates)
