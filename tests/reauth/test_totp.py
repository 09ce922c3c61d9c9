"""TOTP enrolment, verification, replay protection, lockout and the reauthenticator."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pyotp
import pytest
import segno

from agentguard.reauth import (
    Reauthenticator,
    ReauthResult,
    TotpReauthenticator,
    TotpVerifier,
    render_qr,
)
from agentguard.store import MemoryStore, SQLiteStore
from agentguard.store.base import Store
from agentguard.testing import ManualClock
from agentguard.testing.store_samples import sample_request
from agentguard.types import ApprovalRequest

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store = MemoryStore() if request.param == "memory" else SQLiteStore(
        tmp_path / "state.db"
    )
    await backend.open()
    yield backend
    await backend.close()


@pytest.fixture
def verifier(store: Store, clock: ManualClock) -> TotpVerifier:
    return TotpVerifier(store, clock=clock)


def code_at(secret: str, at: float) -> str:
    """What the human's authenticator app shows at ``at`` (computed by pyotp itself)."""
    return pyotp.TOTP(secret).at(int(at))


def assert_no_code(result: ReauthResult, *codes: str) -> None:
    for code in codes:
        assert code not in result.reason and code not in repr(result)


# --------------------------------------------------------------------------- enrolment


async def test_enrol_stores_a_secret_and_gives_a_provisioning_uri(
    verifier: TotpVerifier, store: Store
) -> None:
    assert not await verifier.is_enrolled("alice@example.com")
    enrollment = await verifier.enroll("alice@example.com")
    assert await store.get_secret("totp:alice@example.com") == enrollment.secret
    assert len(enrollment.secret) == 32  # 160 bits of base32
    parsed = pyotp.parse_uri(enrollment.uri)
    assert isinstance(parsed, pyotp.TOTP) and parsed.secret == enrollment.secret
    assert parsed.issuer == "agentguard" and parsed.name == "alice@example.com"
    assert enrollment.secret not in repr(enrollment)
    assert await verifier.is_enrolled("alice@example.com")


async def test_re_enrolment_replaces_the_secret(verifier: TotpVerifier, clock: ManualClock) -> None:
    old = await verifier.enroll("alice")
    new = await verifier.enroll("alice", proof=code_at(old.secret, clock()))
    clock.advance(60)  # the proof's step is spent
    assert old.secret != new.secret
    assert (await verifier.verify("alice", code_at(old.secret, clock()))).kind == "failed"
    assert (await verifier.verify("alice", code_at(new.secret, clock()))).kind == "verified"


# --------------------------------------------------------------------------- verification


async def test_valid_code_verifies_and_records_the_reauthentication(
    verifier: TotpVerifier, store: Store, clock: ManualClock
) -> None:
    secret = (await verifier.enroll("alice")).secret
    result = await verifier.verify("alice", code_at(secret, clock()))
    assert result == ReauthResult("verified", "alice", "totp", result.reason)
    assert await store.last_reauth("alice", "totp") == clock()


async def test_spaces_are_ignored(verifier: TotpVerifier, clock: ManualClock) -> None:
    secret = (await verifier.enroll("alice")).secret
    code = code_at(secret, clock())
    assert (await verifier.verify("alice", f" {code[:3]} {code[3:]} ")).kind == "verified"


@pytest.mark.parametrize("offset", [-30, 30])
async def test_neighbouring_steps_are_accepted(
    verifier: TotpVerifier, clock: ManualClock, offset: int
) -> None:
    secret = (await verifier.enroll("alice")).secret
    assert (await verifier.verify("alice", code_at(secret, clock() + offset))).kind == "verified"


@pytest.mark.parametrize("offset", [-60, 60, -3600])
async def test_steps_outside_the_window_are_refused(
    verifier: TotpVerifier, clock: ManualClock, offset: int
) -> None:
    for user in ("alice", "bob", "carol"):
        # A distant code equals one inside the window about 3 times in a million: then it
        # would rightly verify, so try another secret rather than skip.
        secret = (await verifier.enroll(user)).secret
        stale = code_at(secret, clock() + offset)
        if stale not in {code_at(secret, clock() + d) for d in (-30, 0, 30)}:
            break
    else:
        pytest.fail("three secrets in a row gave a distant code equal to one in the window")
    result = await verifier.verify(user, stale)
    assert result.kind == "failed" and result.reason.startswith("wrong code")


async def test_a_code_is_single_use(verifier: TotpVerifier, clock: ManualClock) -> None:
    secret = (await verifier.enroll("alice")).secret
    code = code_at(secret, clock())
    assert (await verifier.verify("alice", code)).kind == "verified"
    clock.advance(5)
    again = await verifier.verify("alice", code)
    assert again.kind == "failed" and "already used" in again.reason
    assert_no_code(again, code)


async def test_a_code_is_single_use_across_processes_sharing_a_file(
    tmp_path: Path, clock: ManualClock
) -> None:
    db = tmp_path / "shared.db"
    async with SQLiteStore(db) as one, SQLiteStore(db) as two:
        secret = (await TotpVerifier(one, clock=clock).enroll("alice")).secret
        code = code_at(secret, clock())
        first, second = TotpVerifier(one, clock=clock), TotpVerifier(two, clock=clock)
        results: list[ReauthResult] = []

        async def submit(verifier: TotpVerifier) -> None:
            results.append(await verifier.verify("alice", code))

        async with anyio.create_task_group() as tg:
            tg.start_soon(submit, first)
            tg.start_soon(submit, second)
        assert sorted(r.kind for r in results) == ["failed", "verified"]
        assert (await first.verify("alice", code)).kind == "failed"


async def test_wrong_code_fails_and_counts(verifier: TotpVerifier, clock: ManualClock) -> None:
    secret = (await verifier.enroll("alice")).secret
    wrong = f"{(int(code_at(secret, clock())) + 1) % 1_000_000:06d}"
    result = await verifier.verify("alice", wrong)
    assert result.kind == "failed" and result.reason == "wrong code (4 attempts left)"
    assert_no_code(result, wrong, code_at(secret, clock()))


@pytest.mark.parametrize(
    "code", ["", "12345", "1234567", "abcdef", "12345a", "１２３４５６", "12 34 5", "0" * 10_000]
)
async def test_malformed_codes_fail_without_being_echoed(
    verifier: TotpVerifier, code: str
) -> None:
    await verifier.enroll("alice")
    result = await verifier.verify("alice", code)
    assert result.kind == "failed" and result.reason.startswith("malformed code")
    if code.strip():
        assert_no_code(result, code)


async def test_unknown_subject_is_not_enrolled(verifier: TotpVerifier, store: Store) -> None:
    result = await verifier.verify("mallory", "123456")
    assert result == ReauthResult("failed", "mallory", "totp", "not enrolled")
    assert await store.last_reauth("mallory", "totp") is None


async def test_corrupt_secret_fails_closed(
    verifier: TotpVerifier, store: Store, clock: ManualClock
) -> None:
    await store.set_secret("totp:alice", "not base32 !!")
    result = await verifier.verify("alice", "123456")
    assert result.kind == "failed" and "re-enrol" in result.reason
    assert "not base32" not in result.reason


# --------------------------------------------------------------------------- lockout


async def fail_times(verifier: TotpVerifier, secret: str, at: float, n: int) -> ReauthResult:
    wrong = f"{(int(code_at(secret, at)) + 500_000) % 1_000_000:06d}"
    result = ReauthResult("failed", "", "totp")
    for _ in range(n):
        result = await verifier.verify("alice", wrong)
    return result


async def test_fifth_failure_locks_out_and_the_right_code_is_then_not_checked(
    verifier: TotpVerifier, store: Store, clock: ManualClock
) -> None:
    secret = (await verifier.enroll("alice")).secret
    fourth = await fail_times(verifier, secret, clock(), 4)
    assert fourth.kind == "failed" and "1 attempt left" in fourth.reason
    fifth = await fail_times(verifier, secret, clock(), 1)
    assert fifth.kind == "locked" and "15 min" in fifth.reason
    assert await verifier.locked_until("alice") == clock() + 900
    code = code_at(secret, clock())
    locked = await verifier.verify("alice", code)
    assert locked.kind == "locked"
    assert_no_code(locked, code)
    # the code was not even checked: its time step is still unspent
    assert await store.use_otp("totp:alice", int(clock() // 30))
    assert await store.last_reauth("alice", "totp") is None


async def test_lockout_ends_after_fifteen_minutes(
    verifier: TotpVerifier, clock: ManualClock
) -> None:
    secret = (await verifier.enroll("alice")).secret
    assert (await fail_times(verifier, secret, clock(), 5)).kind == "locked"
    clock.advance(899)
    assert (await verifier.verify("alice", code_at(secret, clock()))).kind == "locked"
    clock.advance(1)
    assert await verifier.locked_until("alice") is None
    assert (await verifier.verify("alice", code_at(secret, clock()))).kind == "verified"
    # the count started afresh: four more failures do not lock
    assert (await fail_times(verifier, secret, clock() + 60, 4)).kind == "failed"


async def test_failures_outside_the_window_do_not_add_up(
    verifier: TotpVerifier, clock: ManualClock
) -> None:
    secret = (await verifier.enroll("alice")).secret
    await fail_times(verifier, secret, clock(), 4)
    clock.advance(901)
    assert (await fail_times(verifier, secret, clock(), 1)).kind == "failed"


async def test_success_clears_failures(verifier: TotpVerifier, clock: ManualClock) -> None:
    secret = (await verifier.enroll("alice")).secret
    await fail_times(verifier, secret, clock(), 4)
    assert (await verifier.verify("alice", code_at(secret, clock()))).kind == "verified"
    assert (await fail_times(verifier, secret, clock(), 4)).kind == "failed"


async def test_a_burst_of_parallel_guesses_is_bounded(
    tmp_path: Path, clock: ManualClock
) -> None:
    async with SQLiteStore(tmp_path / "state.db") as store:
        verifier = TotpVerifier(store, clock=clock)
        secret = (await verifier.enroll("alice")).secret
        wrong = f"{(int(code_at(secret, clock())) + 1) % 1_000_000:06d}"
        results: list[ReauthResult] = []

        async def guess() -> None:
            results.append(await verifier.verify("alice", wrong))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(guess)
        checked = [r for r in results if r.reason.startswith("wrong code")]
        assert len(checked) <= 5 and await verifier.locked_until("alice") is not None


async def test_lockouts_are_per_subject(verifier: TotpVerifier, clock: ManualClock) -> None:
    secret = (await verifier.enroll("alice")).secret
    bob = (await verifier.enroll("bob")).secret
    await fail_times(verifier, secret, clock(), 5)
    assert (await verifier.verify("bob", code_at(bob, clock()))).kind == "verified"


# --------------------------------------------------------------------------- reauthenticator


class ScriptedCodes:
    """An ``ask_code`` that answers from a script and remembers what it was asked."""

    def __init__(self, *answers: str | Exception | None) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, str, int]] = []

    async def __call__(self, subject: str, request: ApprovalRequest, attempt: int) -> str | None:
        self.asked.append((subject, request.id, attempt))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_reauthenticator_accepts_a_right_code_after_wrong_ones(
    verifier: TotpVerifier, clock: ManualClock
) -> None:
    secret = (await verifier.enroll("alice")).secret
    request = sample_request(clock)
    ask = ScriptedCodes("000000" if code_at(secret, clock()) != "000000" else "111111",
                        "12ab56", code_at(secret, clock()))
    reauth = TotpReauthenticator(verifier, ask)
    assert isinstance(reauth, Reauthenticator) and reauth.method == "totp"
    result = await reauth.reauthenticate("alice", request)
    assert result.kind == "verified"
    assert ask.asked == [("alice", request.id, 1), ("alice", request.id, 2),
                         ("alice", request.id, 3)]


async def test_reauthenticator_gives_up_after_three_wrong_codes(
    verifier: TotpVerifier, clock: ManualClock
) -> None:
    secret = (await verifier.enroll("alice")).secret
    wrong = f"{(int(code_at(secret, clock())) + 7) % 1_000_000:06d}"
    ask = ScriptedCodes(wrong, wrong, wrong, code_at(secret, clock()))
    result = await TotpReauthenticator(verifier, ask).reauthenticate("alice", sample_request(clock))
    assert result.kind == "failed" and "3 attempts" in result.reason
    assert len(ask.asked) == 3
    assert_no_code(result, wrong)


@pytest.mark.parametrize("answer", [None, OSError("no tty: code 123456")])
async def test_reauthenticator_unreachable_when_nobody_can_be_asked(
    verifier: TotpVerifier, clock: ManualClock, answer: Exception | None
) -> None:
    await verifier.enroll("alice")
    result = await TotpReauthenticator(verifier, ScriptedCodes(answer)).reauthenticate(
        "alice", sample_request(clock)
    )
    assert result.kind == "unreachable" and "123456" not in result.reason


async def test_reauthenticator_does_not_ask_the_unenrolled_or_locked_out(
    verifier: TotpVerifier, clock: ManualClock
) -> None:
    ask = ScriptedCodes()
    reauth = TotpReauthenticator(verifier, ask)
    assert (await reauth.reauthenticate("bob", sample_request(clock))).reason == "not enrolled"
    secret = (await verifier.enroll("alice")).secret
    await fail_times(verifier, secret, clock(), 5)
    assert (await reauth.reauthenticate("alice", sample_request(clock))).kind == "locked"
    assert ask.asked == []


async def test_reauthenticator_stops_at_lockout(
    verifier: TotpVerifier, clock: ManualClock
) -> None:
    secret = (await verifier.enroll("alice")).secret
    await fail_times(verifier, secret, clock(), 3)
    wrong = f"{(int(code_at(secret, clock())) + 3) % 1_000_000:06d}"
    ask = ScriptedCodes(wrong, wrong, wrong)
    result = await TotpReauthenticator(verifier, ask).reauthenticate("alice", sample_request(clock))
    assert result.kind == "locked" and len(ask.asked) == 2


# --------------------------------------------------------------------------- QR


def test_render_qr_draws_the_uri_as_half_blocks() -> None:
    uri = "otpauth://totp/agentguard:alice?secret=JBSWY3DPEHPK3PXP&issuer=agentguard"
    text = render_qr(uri)
    assert text.endswith("\n") and "\x1b" not in text
    # decode the half blocks back into modules and compare with segno's own matrix
    pairs = {" ": (1, 1), "\u2580": (0, 1), "\u2584": (1, 0), "\u2588": (0, 0)}
    rows: list[list[int]] = []
    for line in text.splitlines():
        top, bottom = zip(*(pairs[ch] for ch in line), strict=True)
        rows += [list(top), list(bottom)]
    expected = [list(row) for row in segno.make(uri, micro=False).matrix]
    border = 4
    inner = [row[border:-border] for row in rows[border:border + len(expected)]]
    assert inner == expected
    assert all(set(row) == {0} for row in rows[:border])  # quiet zone is light


def test_render_qr_ansi_mode_uses_escape_codes() -> None:
    assert "\x1b[" in render_qr("otpauth://totp/x?secret=JBSWY3DPEHPK3PXP", compact=False)


async def test_verifier_uses_wall_clock_by_default(store: Store) -> None:
    verifier = TotpVerifier(store)
    secret = (await verifier.enroll("alice")).secret
    assert (await verifier.verify("alice", pyotp.TOTP(secret).at(time.time()))).kind == "verified"
