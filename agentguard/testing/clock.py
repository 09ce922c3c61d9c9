"""A clock that moves only when told to, for tests that involve expiry and lockouts."""

from __future__ import annotations

__all__ = ["ManualClock"]


class ManualClock:
    """Callable returning a Unix time that changes only through :meth:`advance` / :meth:`set`.

    Pass it wherever agentguard takes ``clock=`` (stores, the TOTP verifier).

    Args:
        start: Initial Unix time (a fixed instant keeps TOTP codes reproducible).
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` and return the new time."""
        self.now += seconds
        return self.now

    def set(self, now: float) -> None:
        """Jump to ``now``."""
        self.now = float(now)

    def __repr__(self) -> str:
        return f"ManualClock({self.now!r})"
