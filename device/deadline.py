"""A request's deadline: one budget for everything the request waits for, from arrival to answer."""

from __future__ import annotations

from dataclasses import dataclass
from time import monotonic

from starlette.types import ASGIApp, Receive, Scope, Send


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

    def elapsed(self) -> float:
        """Seconds since the request arrived."""
        return self.budget_s - (self.at - monotonic())

    def expired(self) -> bool:
        return monotonic() >= self.at


class StampDeadline:
    """ASGI middleware: every HTTP request gets its Deadline in ``request.state.deadline`` as it arrives.

    Stamped before the body is read, so the deadline covers the whole request as its client sees it:
    receiving and parsing the upload, waiting for the head, the head, and the edge.
    """

    def __init__(self, app: ASGIApp, budget_s: float) -> None:
        self.app = app
        self.budget_s = budget_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["deadline"] = Deadline.after(self.budget_s)
        await self.app(scope, receive, send)
