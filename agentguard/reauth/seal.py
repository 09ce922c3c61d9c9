"""TOTP seeds sealed at rest: the store keeps ciphertext, the key lives in a file beside it.

A seed in the store is a credential: whoever reads ``totp:carol`` can make carol's codes, and
whoever writes it can enrol a seed of their own under her name. Sealed with AES-256-GCM under
a key kept outside the store (``$AGENTGUARD_SEED_KEY``, default ``<home>/totp-seed.key``, mode
0600), with the subject's name as associated data, a seed read from the store is useless
without the key, a seed copied to another name does not open, and a plain seed written into
the store is refused rather than trusted.

What it does not do: the process that verifies codes must read the key. When the guard
verifies in the agent's own process, that process can read the key too; keep verification in
a process the agent cannot inspect (``agentguard serve``, another OS user) where that matters.
"""

from __future__ import annotations

import base64
import functools
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentguard.errors import AgentGuardError

__all__ = ["SEALED_PREFIX", "SealError", "SeedSeal"]

SEALED_PREFIX = "aesgcm:v1:"
_NONCE = 12


class SealError(AgentGuardError, ValueError):
    """A stored seed is not sealed, or does not open under this key and name."""


class SeedSeal:
    """Seal and open TOTP seeds with one AES-256-GCM key.

    Args:
        key: 32 random bytes.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the seed key must be 32 bytes")
        self._key = key

    @functools.cached_property
    def _aead(self) -> AESGCM:
        # Built on first use: the first AESGCM of a process costs about a millisecond, and a
        # proxy builds its seal at start-up but opens a seed only when a code is typed.
        return AESGCM(self._key)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SeedSeal:
        """The key at ``path``, created (32 random bytes, mode 0600) when missing.

        Raises:
            ConfigError: the file cannot be read or created, or others can read it.
        """
        from agentguard.audit.redact import load_or_create_key

        return cls(load_or_create_key(path))

    @classmethod
    def default(cls) -> SeedSeal:
        """``$AGENTGUARD_SEED_KEY``, else ``totp-seed.key`` in the agentguard home."""
        from agentguard.settings import default_home

        return cls.from_file(os.environ.get("AGENTGUARD_SEED_KEY")
                             or Path(default_home()) / "totp-seed.key")

    def seal(self, name: str, seed: str) -> str:
        """The text to store for ``name``'s ``seed``."""
        nonce = secrets.token_bytes(_NONCE)
        box = self._aead.encrypt(nonce, seed.encode(), name.encode())
        return SEALED_PREFIX + base64.b64encode(nonce + box).decode("ascii")

    def open(self, name: str, stored: str) -> str:
        """The seed sealed for ``name``.

        Raises:
            SealError: ``stored`` is not sealed (a plain seed someone wrote into the store),
                was sealed for another name, or under another key.
        """
        if not stored.startswith(SEALED_PREFIX):
            raise SealError("the stored seed is not sealed (written around agentguard?)")
        try:
            raw = base64.b64decode(stored[len(SEALED_PREFIX):], validate=True)
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], name.encode()).decode()
        except (ValueError, InvalidTag) as exc:
            raise SealError("the stored seed does not open for this name and key") from exc
