"""Approver keys: made private, never overwritten, refused when others can read them."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from agentguard.trust.keys import (
    KeyFileError,
    default_key_path,
    generate_key,
    key_id,
    load_signing_key,
    parse_public_key,
    public_key_text,
    sign,
)
from tests.trust.conftest import Held


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_writes_0600_pem_in_a_0700_directory(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "agentguard" / "approver.key"
    key = generate_key(path)
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_signing_key(path)
    assert key_id(loaded.public_key()) == key_id(key.public_key())


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "approver.key"
    generate_key(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="never overwritten"):
        generate_key(path)
    assert path.read_bytes() == before


def test_generate_refuses_a_dangling_symlink_target(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir(mode=0o700)
    link = tmp_path / "keys" / "approver.key"
    link.symlink_to(tmp_path / "elsewhere.key")
    with pytest.raises(KeyFileError):
        generate_key(link)
    assert not (tmp_path / "elsewhere.key").exists()


def test_generate_refuses_a_directory_others_can_enter(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    with pytest.raises(KeyFileError, match="chmod 700"):
        generate_key(shared / "approver.key")
    assert not (shared / "approver.key").exists()


@pytest.mark.parametrize("loose", [0o640, 0o604, 0o660, 0o644])
def test_load_refuses_a_key_group_or_others_can_read(tmp_path: Path, loose: int) -> None:
    path = tmp_path / "k" / "approver.key"
    generate_key(path)
    path.chmod(loose)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_signing_key(path)


def test_load_refuses_missing_symlinked_and_foreign_keys(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="keygen"):
        load_signing_key(tmp_path / "none.key")
    real = tmp_path / "k" / "approver.key"
    generate_key(real)
    link = tmp_path / "k" / "link.key"
    link.symlink_to(real)
    with pytest.raises(KeyFileError):
        load_signing_key(link)
    ec = tmp_path / "k" / "ec.key"
    ec.write_bytes(generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ec.chmod(0o600)
    with pytest.raises(KeyFileError, match="not an Ed25519"):
        load_signing_key(ec)
    junk = tmp_path / "k" / "junk.key"
    junk.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    junk.chmod(0o600)
    with pytest.raises(KeyFileError, match="not an unencrypted PEM"):
        load_signing_key(junk)


def test_default_path_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AGENTGUARD_APPROVER_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_key_path() == tmp_path / ".config" / "agentguard" / "approver.key"
    monkeypatch.setenv("AGENTGUARD_APPROVER_KEY", str(tmp_path / "mine.key"))
    assert default_key_path() == tmp_path / "mine.key"


def test_public_text_round_trips_and_key_id_is_sha256_prefix(tmp_path: Path) -> None:
    import hashlib

    key = generate_key(tmp_path / "k" / "a.key")
    text = public_key_text(key.public_key())
    raw = base64.b64decode(text.removeprefix("ed25519:"))
    assert key_id(parse_public_key(text)) == hashlib.sha256(raw).hexdigest()[:16]


@pytest.mark.parametrize("text", [
    "ssh-ed25519 AAAA", "ed25519:", "ed25519:!!!!", "ed25519:" + base64.b64encode(b"x" * 31)
    .decode(), "ed25519:" + base64.b64encode(b"x" * 33).decode(),
])
def test_malformed_public_keys_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_public_key(text)


def test_sign_covers_the_statement_bytes(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k" / "a.key")
    statement = Held().statement("dave")
    signed = sign(statement, key)
    assert signed.key_id == key_id(key.public_key())
    key.public_key().verify(base64.b64decode(signed.signature_b64), statement.to_bytes())


def test_generated_key_is_not_readable_by_others_even_with_a_loose_umask(
        tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "u" / "approver.key"
        generate_key(path)
    finally:
        os.umask(old)
    assert mode(path) == 0o600 and mode(path.parent) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand a file to another user")
def test_load_refuses_a_key_another_user_owns(tmp_path: Path) -> None:
    path = tmp_path / "k" / "approver.key"
    generate_key(path)
    os.chown(path, 65534, -1)
    with pytest.raises(KeyFileError, match="belongs to uid 65534"):
        load_signing_key(path)
