"""``agentguard approvers keygen|pubkey|list|verify-file``: approvers' keys and the trust file.

The trust file lists who may sign votes and with which public keys; it is deployed read-only
to the agent (see :mod:`agentguard.trust.anchors`). Each approver makes their own key on their
own account with ``keygen`` and sends the printed public entry to whoever maintains the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agentguard.cli.runtime import EXIT_FAILED, fail, say, wide_console

__all__ = ["app"]

app = typer.Typer(
    help="Approvers' signing keys and the trust file that lists them.\n\n"
    "A vote counts only when signed by a key the trust file lists; the file must be "
    "read-only to the agent.",
    no_args_is_help=True)

TrustOpt = Annotated[Path, typer.Option(
    "--trust", envvar="AGENTGUARD_TRUST",
    help="Trust file (YAML or JSON) listing approvers' public keys [env: AGENTGUARD_TRUST].")]
KeyOpt = Annotated[Path | None, typer.Option(
    "--out", help="Where to write the private key (default: $AGENTGUARD_APPROVER_KEY or "
    "~/.config/agentguard/approver.key). Never overwritten.")]
NameOpt = Annotated[str | None, typer.Option(
    "--name", help="Your approver id in the trust file (default: $AGENTGUARD_APPROVER or the "
    "OS user).")]


def _entry(name: str | None, public_text: str, kid: str) -> str:
    from agentguard.identity import canonical_identity
    from agentguard.settings import approver_identity

    ident = canonical_identity(approver_identity(name))
    # JSON strings are valid YAML scalars and escape anything odd in the name.
    return (f"# key id {kid}: add under `approvers:` in the trust file\n"
            f"- id: {json.dumps(ident)}\n  keys: [{json.dumps(public_text)}]")


@app.command()
def keygen(name: NameOpt = None, out: KeyOpt = None) -> None:
    """Make your Ed25519 signing key and print the entry for the trust file.

    The private key is written as PKCS#8 PEM, mode 0600, in a 0700 directory, and never
    overwritten. Keep it on your account only: the agent must not be able to read it.
    """
    from agentguard.trust.keys import KeyFileError, default_key_path, generate_key, key_id
    from agentguard.trust.keys import public_key_text as text

    path = (out or default_key_path()).expanduser()
    try:
        key = generate_key(path)
    except KeyFileError as exc:
        raise fail(str(exc), EXIT_FAILED) from exc
    public = key.public_key()
    typer.echo(f"wrote private key {path} (mode 0600)", err=True)
    typer.echo(_entry(name, text(public), key_id(public)))


@app.command()
def pubkey(
    name: NameOpt = None,
    key: Annotated[Path | None, typer.Option(
        "--key", help="Private key file (default: $AGENTGUARD_APPROVER_KEY or "
        "~/.config/agentguard/approver.key).")] = None,
) -> None:
    """Print the trust-file entry for an existing private key."""
    from agentguard.trust.keys import (
        KeyFileError,
        default_key_path,
        key_id,
        load_signing_key,
        public_key_text,
    )

    try:
        public = load_signing_key(key or default_key_path()).public_key()
    except KeyFileError as exc:
        raise fail(str(exc), EXIT_FAILED) from exc
    typer.echo(_entry(name, public_key_text(public), key_id(public)))


def _load(trust: Path):
    from agentguard.trust.anchors import TrustAnchors, TrustFileError

    try:
        anchors = TrustAnchors.load(trust)
    except TrustFileError as exc:
        raise fail(str(exc), EXIT_FAILED) from exc
    for warning in anchors.warnings:
        say(f"warning: {warning}", err=True, fg="yellow")
    return anchors


@app.command("list")
def list_(trust: TrustOpt) -> None:
    """List the approvers and services of a trust file with their key ids."""
    from rich.table import Table

    from agentguard.sanitize import escape_text as esc

    anchors = _load(trust)
    table = Table("identity", "kind", "key ids", "passkeys / may vouch for")
    for a in anchors.approvers:
        table.add_row(esc(a.identity), "approver", "\n".join(a.key_ids) or "-",
                      str(len(a.passkeys)))
    for s in anchors.services:
        table.add_row(esc(s.name), "service", s.key_id, esc(", ".join(s.may_vouch_for)))
    wide_console().print(table if anchors.approvers or anchors.services
                         else "no approvers or services")


@app.command("verify-file")
def verify_file(
    trust: TrustOpt,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Exit 1 on warnings too (for deployment checks).")] = False,
) -> None:
    """Validate a trust file and warn when this user could change it.

    Exits 1 when the file is invalid (the error names the file and the field), or with
    --strict when there are warnings. Run it as the agent's OS user: there should be none.
    """
    anchors = _load(trust)
    keys = sum(len(a.key_ids) for a in anchors.approvers) + len(anchors.services)
    typer.echo(f"ok: {trust}: {len(anchors.approvers)} approvers, {len(anchors.services)} "
               f"services, {keys} keys, {len(anchors.warnings)} warnings")
    if strict and anchors.warnings:
        raise typer.Exit(1)


@app.command("enroll-link")
def enroll_link(
    name: Annotated[str, typer.Argument(help="The approver id the passkey will belong to.")],
    url: Annotated[str, typer.Option(
        "--url", envvar="AGENTGUARD_WEB_URL",
        help="Base URL of `agentguard serve --web` [env: AGENTGUARD_WEB_URL].")]
    = "http://localhost:3000",
    key: Annotated[Path | None, typer.Option(
        "--key", help="Your private key (default: $AGENTGUARD_APPROVER_KEY or "
        "~/.config/agentguard/approver.key): NAME's own key, or an admin's.")] = None,
    ttl: Annotated[str, typer.Option(help="How long the link works.")] = "15m",
) -> None:
    """Print a link that lets NAME register a passkey on the web approval page.

    The link carries a token signed with a key the trust file lists (NAME's own, or the key of
    an approver under `admins:`); serve checks it before writing the new passkey into the
    trust file. Anyone holding the link can enrol a passkey as NAME until it expires: send it
    the way you would send a password reset.
    """
    from agentguard.durations import parse_duration
    from agentguard.trust.enrol import make_enrolment_token
    from agentguard.trust.keys import KeyFileError, default_key_path, load_signing_key

    try:
        signing = load_signing_key(key or default_key_path())
        seconds = parse_duration(ttl)
    except (KeyFileError, ValueError) as exc:
        raise fail(str(exc)) from exc
    token = make_enrolment_token(name, signing, ttl=seconds)
    typer.echo(f"{url.rstrip('/')}/enroll#{token}")
