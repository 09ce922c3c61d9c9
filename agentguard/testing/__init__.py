"""Helpers for testing agentguard and third-party plug-ins.

- :class:`ManualClock` — a clock that moves only when told to.
- :class:`agentguard.testing.passkey.SoftPasskey` — a software passkey making WebAuthn
  assertions (import it from its module: it needs the ``web`` extra).
- :class:`StoreConformance` — the store contract as a pytest suite (imported lazily: it needs
  pytest).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentguard.testing.clock import ManualClock

if TYPE_CHECKING:
    from agentguard.testing.store_conformance import StoreConformance

__all__ = ["ManualClock", "StoreConformance"]


def __getattr__(name: str) -> Any:
    if name == "StoreConformance":
        from agentguard.testing.store_conformance import StoreConformance

        return StoreConformance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
