"""TOTP re-authentication (RFC 6238) on pyotp, with replay protection and lockout in the store.

The code is typed by the human into a channel (a ``/dev/tty`` prompt, a Slack modal), never
taken from tool arguments, and it never appears in a reason, an exception or a log line.

Rules enforced by :meth:`TotpVerifier.verify`:

- six ASCII digits (spaces ignored), the current 30 s step or one step either side;
- a step accepted once is spent (``Store.use_otp``), so two processes cannot both accept it;
- every attempt is counted before the code is checked and a success clears the count, so a
  burst of parallel guesses is bounded too; the ``max_failures``-th failure within
  ``failure_window`` locks the subject out for ``lockout`` seconds, during which codes are not
  even checked.
"""

from __future__ import annotations

import hmac
import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from agentguard.reauth.base import ReauthResult
from agentguard.reauth.seal import SealError, SeedSeal
from agentguard.store.base import Store
from agentguard.types import ApprovalRequest

__all__ = ["AskCode", "Enrollment", "TotpReauthenticator", "TotpVerifier", "render_qr"]

logger = logging.getLogger(__name__)

AskCode = Callable[[str, ApprovalRequest, int], Awaitable[str | None]]
"""``ask_code(subject, request, attempt)``: prompt the human, return the typed code, or ``None``
when nobody could be asked. ``attempt`` counts from 1."""

_DIGITS = 6
_MAX_INPUT = 64
METHOD = "totp"


@dataclass(frozen=True, slots=True)
class Enrollment:
    """A fresh TOTP enrolment. Show it to the human once; both fields reveal the secret.

    Attributes:
        secret: Base32 seed (160 bits), for manual entry in an authenticator app.
        uri: ``otpauth://`` provisioning URI; render it with :func:`render_qr`.
    """

    secret: str = field(repr=False)
    uri: str = field(repr=False)


def _key(name: str) -> str:
    return f"{METHOD}:{name}"


def _normalise(code: object) -> str | None:
    if not isinstance(code, str) or len(code) > _MAX_INPUT:
        return None
    digits = code.strip().replace(" ", "")
    if len(digits) != _DIGITS or any(c not in "0123456789" for c in digits):
        return None
    return digits


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _locked(name: str, until: float) -> ReauthResult:
    return ReauthResult(
        "locked", name, METHOD, f"too many failed codes: locked out until {_when(until)}"
    )


class TotpVerifier:
    """Enrols subjects and checks their codes against secrets kept in a store.

    Args:
        store: Where secrets, spent time steps, failures and lockouts live.
        issuer: Issuer shown by authenticator apps.
        window: Steps accepted either side of the current one (clock drift).
        max_failures: Failed codes within ``failure_window`` that trigger a lockout.
        lockout: Seconds a subject stays locked out.
        failure_window: Seconds over which failures are counted.
        clock: Source of the current Unix time.
        interval: TOTP step in seconds.
        seal: Seals seeds at rest (:class:`~agentguard.reauth.seal.SeedSeal`); with one, a
            plain seed found in the store is refused. The CLI and the proxy always seal.
    """

    method = METHOD

    def __init__(
        self, store: Store, *, issuer: str = "agentguard", window: int = 1,
        max_failures: int = 5, lockout: float = 900.0, failure_window: float = 900.0,
        clock: Callable[[], float] = time.time, interval: int = 30,
        seal: SeedSeal | None = None,
    ) -> None:
        if window < 0 or max_failures < 1 or interval < 1:
            raise ValueError("window must be >= 0, max_failures >= 1 and interval >= 1")
        self._store = store
        self._seal = seal
        self._issuer = issuer
        self._window = window
        self._max_failures = max_failures
        self._lockout = lockout
        self._failure_window = failure_window
        self._clock = clock
        self._interval = interval

    async def enroll(self, name: str, *, proof: str | None = None) -> Enrollment:
        """Create a new secret for ``name``.

        Replacing an existing enrolment needs ``proof``: a current code from the
        authenticator already enrolled (otherwise whoever can run this could take over
        someone's step-up). A first enrolment is trust on first use: enrol people yourself.

        Returns:
            The secret and its provisioning URI, to show the human once.

        Raises:
            PermissionError: ``name`` is enrolled and ``proof`` is missing or wrong.
        """
        if await self.is_enrolled(name):
            if proof is None:
                raise PermissionError(
                    f"{name} is already enrolled: re-enrolling needs a current code from "
                    "their authenticator")
            result = await self.verify(name, proof)
            if result.kind != "verified":
                raise PermissionError(f"re-enrolment of {name} refused: {result.reason}")
        import pyotp  # imported on use: a process that never checks a code skips it

        secret = pyotp.random_base32()
        stored = secret if self._seal is None else self._seal.seal(_key(name), secret)
        await self._store.set_secret(_key(name), stored)
        uri = pyotp.TOTP(secret, interval=self._interval).provisioning_uri(
            name=name, issuer_name=self._issuer
        )
        return Enrollment(secret=secret, uri=uri)

    async def is_enrolled(self, name: str) -> bool:
        """True when ``name`` has a TOTP secret."""
        return await self._store.get_secret(_key(name)) is not None

    async def locked_until(self, name: str) -> float | None:
        """End of ``name``'s current lockout, or ``None`` when not locked out."""
        until = await self._store.lockout_until(_key(name))
        return until if until is not None and until > self._clock() else None

    async def verify(self, name: str, code: str) -> ReauthResult:
        """Check ``code`` for ``name``; on success record a re-authentication in the store.

        Returns:
            ``verified``; ``failed`` (wrong, malformed or spent code, or not enrolled); or
            ``locked`` (too many failures: the code was not checked, or this failure locked).
        """
        now = self._clock()
        key = _key(name)
        if (until := await self.locked_until(name)) is not None:
            return _locked(name, until)
        secret = await self._store.get_secret(key)
        if secret is None:
            return ReauthResult("failed", name, METHOD, "not enrolled")
        if self._seal is not None:
            try:
                secret = self._seal.open(key, secret)
            except SealError as exc:
                logger.warning("TOTP seed of %r refused: %s", name, exc)
                return ReauthResult("failed", name, METHOD, f"enrolment refused: {exc}")
        attempts = await self._store.record_failure(key, now, self._failure_window)
        # Another process may have locked the subject since the first check.
        if (until := await self.locked_until(name)) is not None:
            return _locked(name, until)
        if attempts > self._max_failures:
            return await self._lock(name, now, "too many attempts at once")
        digits = _normalise(code)
        if digits is None:
            return await self._fail(name, now, attempts, "malformed code: expected 6 digits")
        try:
            step = self._matching_step(secret, digits, now)
        except ValueError:
            return ReauthResult("failed", name, METHOD, "enrolment secret unreadable; re-enrol")
        if step is None:
            return await self._fail(name, now, attempts, "wrong code")
        if not await self._store.use_otp(key, step):
            return await self._fail(name, now, attempts, "code already used; wait for the next")
        await self._store.clear_failures(key)
        await self._store.record_reauth(name, METHOD, now)
        return ReauthResult("verified", name, METHOD, "TOTP code verified")

    def _matching_step(self, secret: str, digits: str, now: float) -> int | None:
        import pyotp

        totp = pyotp.TOTP(secret, interval=self._interval)
        current = int(now // self._interval)
        match = None
        # Compare every candidate (constant time each) rather than stopping at the first.
        for step in range(current - self._window, current + self._window + 1):
            if hmac.compare_digest(totp.generate_otp(step), digits) and match is None:
                match = step
        return match

    async def _fail(self, name: str, now: float, attempts: int, what: str) -> ReauthResult:
        if attempts >= self._max_failures:
            return await self._lock(name, now, what)
        left = self._max_failures - attempts
        return ReauthResult(
            "failed", name, METHOD, f"{what} ({left} attempt{'s' if left != 1 else ''} left)"
        )

    async def _lock(self, name: str, now: float, what: str) -> ReauthResult:
        until = now + self._lockout
        await self._store.set_lockout(_key(name), until)
        await self._store.clear_failures(_key(name))
        logger.warning("TOTP lockout for %r until %s", name, _when(until))
        return ReauthResult(
            "locked", name, METHOD,
            f"{what}; {self._max_failures} failed codes: locked out for "
            f"{_duration(self._lockout)}, until {_when(until)}",
        )



class TotpReauthenticator:
    """The :class:`~agentguard.reauth.base.Reauthenticator` for TOTP.

    Args:
        verifier: Checks codes.
        ask_code: Channel hook that asks the human for a code (see :data:`AskCode`).
        max_attempts: Codes asked for per request before giving up.
    """

    method: str = METHOD

    def __init__(self, verifier: TotpVerifier, ask_code: AskCode, *, max_attempts: int = 3) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self._verifier = verifier
        self._ask_code = ask_code
        self._max_attempts = max_attempts

    async def reauthenticate(self, subject: str, request: ApprovalRequest) -> ReauthResult:
        """Ask ``subject`` for codes until one verifies, the attempts run out or a lockout."""
        if not await self._verifier.is_enrolled(subject):
            return ReauthResult("failed", subject, METHOD, "not enrolled")
        if (until := await self._verifier.locked_until(subject)) is not None:
            return _locked(subject, until)
        result = ReauthResult("failed", subject, METHOD, "no code given")
        for attempt in range(1, self._max_attempts + 1):
            try:
                code = await self._ask_code(subject, request, attempt)
            except Exception as exc:
                # Only the type: a channel's message might echo what the human typed.
                what = type(exc).__name__
                logger.warning("asking %r for a TOTP code failed: %s", subject, what)
                return ReauthResult(
                    "unreachable", subject, METHOD, f"asking for a code failed ({what})"
                )
            if code is None:
                return ReauthResult(
                    "unreachable", subject, METHOD, "nobody could be asked for a code"
                )
            result = await self._verifier.verify(subject, code)
            if result.kind != "failed":
                return result
        return ReauthResult(
            "failed", subject, METHOD,
            f"no valid code in {self._max_attempts} attempts (last: {result.reason})",
        )


def render_qr(uri: str, *, compact: bool = True, border: int | None = None) -> str:
    """Render ``uri`` as a QR code for a terminal.

    Args:
        uri: Usually :attr:`Enrollment.uri`.
        compact: Unicode half blocks, two modules per character row, no escape codes (for
            dark terminals); ``False`` uses ANSI colour escapes instead.
        border: Quiet zone in modules (default: 4).

    Returns:
        The QR code as text, ending with a newline.
    """
    import segno  # imported on use: only enrolment draws a QR code

    out = io.StringIO()
    segno.make(uri, micro=False).terminal(out=out, compact=compact, border=border)
    return out.getvalue()
