"""``agentguard reauth enroll``: set up TOTP re-authentication for a person."""

from __future__ import annotations

from typing import Annotated

import typer

from agentguard.cli.runtime import run_with_store
from agentguard.settings import store_url

__all__ = ["app"]

app = typer.Typer(help="Re-authentication enrolment.", no_args_is_help=True)


@app.command()
def enroll(
    name: Annotated[str, typer.Argument(help="Identity to enrol (approver or principal).")],
    store: Annotated[str | None, typer.Option("--store", help="Store URL.")] = None,
    qr: Annotated[bool, typer.Option(help="Show a terminal QR code.")] = True,
    code: Annotated[str | None, typer.Option(
        "--code", help="To replace an enrolment: a current code from the authenticator "
        "already enrolled for NAME.")] = None,
) -> None:
    """Create a TOTP secret for NAME, store it sealed, and show the otpauth URI and QR code
    ONCE.

    The seed is stored encrypted under the key in $AGENTGUARD_SEED_KEY (default
    ~/.agentguard/totp-seed.key). Enrolling someone already enrolled needs --code, a current
    code from their authenticator.
    """
    from agentguard.cli.runtime import EXIT_FAILED, fail
    from agentguard.reauth.seal import SeedSeal
    from agentguard.reauth.totp import TotpVerifier, render_qr

    seal = SeedSeal.default()

    async def go(s):
        return await TotpVerifier(s, seal=seal).enroll(name, proof=code)

    try:
        enrollment = run_with_store(store_url(store), go)
    except PermissionError as exc:
        raise fail(str(exc), EXIT_FAILED) from exc
    typer.echo(f"TOTP enrolled for {name}. Add it to an authenticator app now; it is not "
               "shown again.")
    typer.echo(enrollment.uri)
    if qr:
        typer.echo(render_qr(enrollment.uri))
