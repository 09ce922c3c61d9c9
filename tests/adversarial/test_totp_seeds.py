"""The agent and the TOTP seeds in the store it shares: reading carol's seed to make her
codes, writing a seed of its own under her name, copying another person's sealed seed, and
re-enrolling her with no proof."""

from __future__ import annotations

import time
from pathlib import Path

import pyotp
import pytest

from agentguard.reauth import TotpVerifier
from agentguard.reauth.seal import SEALED_PREFIX, SeedSeal
from agentguard.store import SQLiteStore
from tests.adversarial.helpers import cli

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(tmp_path: Path):
    async with SQLiteStore(tmp_path / "s.db") as s:
        yield s


async def test_a_seed_read_from_the_store_makes_no_codes(store, tmp_path: Path) -> None:
    verifier = TotpVerifier(store, seal=SeedSeal.from_file(tmp_path / "seed.key"))
    real = (await verifier.enroll("carol")).secret
    stolen = await store.get_secret("totp:carol")
    assert stolen is not None and stolen.startswith(SEALED_PREFIX) and real not in stolen


async def test_a_plain_seed_written_under_her_name_is_refused(store, tmp_path: Path) -> None:
    verifier = TotpVerifier(store, seal=SeedSeal.from_file(tmp_path / "seed.key"))
    await verifier.enroll("carol")
    mine = pyotp.random_base32()
    await store.set_secret("totp:carol", mine)  # the agent writes the row itself
    result = await verifier.verify("carol", pyotp.TOTP(mine).now())
    assert result.kind == "failed" and "not sealed" in result.reason


async def test_another_persons_sealed_seed_does_not_open_under_her_name(
    store, tmp_path: Path
) -> None:
    verifier = TotpVerifier(store, seal=SeedSeal.from_file(tmp_path / "seed.key"))
    await verifier.enroll("carol")
    mallory = (await verifier.enroll("mallory")).secret  # the agent's own enrolment
    await store.set_secret("totp:carol", await store.get_secret("totp:mallory") or "")
    result = await verifier.verify("carol", pyotp.TOTP(mallory).now())
    assert result.kind == "failed" and "does not open" in result.reason


async def test_re_enrolling_someone_needs_a_code_from_their_authenticator(
    store, tmp_path: Path
) -> None:
    verifier = TotpVerifier(store, seal=SeedSeal.from_file(tmp_path / "seed.key"))
    first = (await verifier.enroll("carol")).secret
    with pytest.raises(PermissionError, match="already enrolled"):
        await verifier.enroll("carol")
    with pytest.raises(PermissionError, match="refused"):
        await verifier.enroll("carol", proof="000000" if pyotp.TOTP(first).now() != "000000"
                              else "111111")
    renewed = await verifier.enroll("carol", proof=pyotp.TOTP(first).now())
    assert renewed.secret != first


def test_reauth_enroll_on_the_cli_refuses_to_replace_without_proof(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    first = cli("reauth", "enroll", "carol", "--store", url, "--no-qr", home=tmp_path)
    assert first.returncode == 0, first.stderr
    again = cli("reauth", "enroll", "carol", "--store", url, "--no-qr", home=tmp_path)
    assert again.returncode == 1 and b"already enrolled" in again.stderr
    assert (tmp_path / "totp-seed.key").exists()
    assert time.time() > 0
