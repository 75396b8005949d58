"""SuperOffice emulator, throttling: ``request_limit=(COUNT, SECONDS)`` (``syncd sandbox --so-rate-limit``)
answers 429 with Retry-After beyond COUNT requests per principal in any SECONDS (inferred: SuperOffice
documents no limit, only that it "may throttle"; a third-party SDK says 10 calls per second).
"""

from __future__ import annotations

from collections import deque


class RequestWindow:
    """Request instants per principal within a sliding window (``request_limit``)."""

    def __init__(self) -> None:
        self.hits: dict[str, deque[float]] = {}

    def hit(self, principal: str, now: float, limit: int, window: float) -> float | None:
        """Count one request; None if allowed, else the seconds until a slot frees up."""
        hits = self.hits.setdefault(principal, deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) >= limit:
            return hits[0] + window - now
        hits.append(now)
        return None
