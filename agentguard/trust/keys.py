"""Approver keys: make one, keep it private, sign votes with it, and spell its public half.

An approver's private key is an Ed25519 key in an unencrypted PKCS#8 PEM file
(``-----BEGIN PRIVATE KEY-----``, readable by ``openssl pkey``), mode 0600 in a directory of
mode 0700, by default ``~/.config/agentguard/approver.key`` (or ``$AGENTGUARD_APPROVER_KEY``).
Like ssh, :func:`load_signing_key` refuses a key file that group or others may read, or that
another user owns: a key others can read proves nothing about who used it.

The public half is written ``ed25519:<standard base64 of the 32 raw bytes>`` in the trust
file; its key id is the first 16 hex digits of SHA-256 over those raw bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agentguard.errors import ConfigError
from agentguard.trust.statement import SignedVote, VoteStatement

__all__ = [
    "KeyFileError",
    "default_key_path",
    "generate_key",
    "key_id",
    "load_signing_key",
    "parse_public_key",
    "public_key_text",
    "sign",
]

_PREFIX = "ed25519:"
_MAX_KEY_FILE = 16 * 1024


class KeyFileError(ConfigError, ValueError):
    """A key that cannot be made, read or trusted (the message says which file and why)."""


def default_key_path() -> Path:
    """``$AGENTGUARD_APPROVER_KEY``, else ``~/.config/agentguard/approver.key``."""
    env = os.environ.get("AGENTGUARD_APPROVER_KEY")
    return Path(env) if env else Path.home() / ".config" / "agentguard" / "approver.key"


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte public key."""
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def public_key_text(public: Ed25519PublicKey) -> str:
    """The trust file's spelling: ``ed25519:<base64 of the raw key>``."""
    return _PREFIX + base64.b64encode(_raw(public)).decode("ascii")


def parse_public_key(text: str) -> Ed25519PublicKey:
    """Read ``ed25519:<base64>`` (strict base64 of exactly 32 bytes).

    Raises:
        ValueError: not that form, or not a valid Ed25519 public key.
    """
    if not isinstance(text, str) or not text.startswith(_PREFIX):
        raise ValueError("a key is written 'ed25519:<base64 of the 32-byte public key>'")
    try:
        raw = base64.b64decode(text[len(_PREFIX):].strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the key is not valid base64 ({exc})") from exc
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this one is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def generate_key(path: str | Path) -> Ed25519PrivateKey:
    """Make a new Ed25519 key and write it to ``path`` (PKCS#8 PEM, mode 0600).

    The directory is created with mode 0700 when missing; an existing directory that group or
    others may write or enter is refused, as is an existing file (a key is never overwritten:
    the trust file may still list it).

    Returns:
        The new private key (``key.public_key()`` is what the trust file lists).

    Raises:
        KeyFileError: the file exists, or the directory is unsafe or cannot be made.
    """
    path = Path(path).expanduser()
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = directory.stat().st_mode
    except OSError as exc:
        raise KeyFileError(f"cannot create {directory}: {exc.strerror}") from exc
    if stat.S_IMODE(mode) & 0o077:
        raise KeyFileError(
            f"{directory} is open to group or others (mode {stat.S_IMODE(mode):o}); "
            f"`chmod 700 {directory}` or choose another --out")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        # O_EXCL: never replace an existing file, not even one created a moment ago.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"{path} already exists; it is never overwritten") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def load_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """Read an approver's private key written by :func:`generate_key`.

    Raises:
        KeyFileError: the file is missing, not a regular file, readable or writable by group
            or others, owned by another user, or not an Ed25519 private key.
    """
    path = Path(path).expanduser()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError as exc:
        raise KeyFileError(
            f"no approver key at {path}; make one with `agentguard approvers keygen`") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path} is not a regular file")
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise KeyFileError(
                f"{path} is accessible by group or others (mode "
                f"{stat.S_IMODE(info.st_mode):o}); `chmod 600 {path}` before it can sign")
        if info.st_uid != os.geteuid():
            raise KeyFileError(f"{path} belongs to uid {info.st_uid}, not to this user")
        data = os.read(fd, _MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(f"{path} is too large to be a key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def sign(statement: VoteStatement, key: Ed25519PrivateKey) -> SignedVote:
    """Sign ``statement.to_bytes()`` with ``key``."""
    signature = key.sign(statement.to_bytes())
    return SignedVote(statement=statement, key_id=key_id(key.public_key()),
                      signature_b64=base64.b64encode(signature).decode("ascii"))
