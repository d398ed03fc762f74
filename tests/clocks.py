"""Clocks for tests: time that moves only when the test says so."""

from __future__ import annotations

from datetime import datetime


class FakeClock:
    """A clock the test moves by hand: calling it reads `now`; `advance` moves it forward.

    Starts at `now` (seconds, or an aware datetime taken as its UNIX time).
    """

    def __init__(self, now: float | datetime = 1_000.0) -> None:
        self.now = now.timestamp() if isinstance(now, datetime) else float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock `seconds` forward."""
        self.now += seconds
