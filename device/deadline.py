"""A request's deadline: one budget for everything the request waits for, from arrival to answer."""

from __future__ import annotations

from dataclasses import dataclass
from time import monotonic


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() by which the request must be answered
    budget_s: float  # the whole budget it started with, for messages

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(monotonic() + seconds, seconds)

    def remaining(self) -> float:
        """Seconds left, 0 once passed."""
        return max(0.0, self.at - monotonic())

    def expired(self) -> bool:
        return monotonic() >= self.at
