"""The sliding-window rate limiter every API client sends through (at most N requests in any window).

Why a sliding window and not a token bucket, and why the window is taken a little longer than
configured: see :class:`SlidingWindowLimiter` (measures in BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

Sleep = Callable[[float], Awaitable[None]]


class SlidingWindowLimiter:
    """At most ``limit`` requests in any ``window`` seconds; ``acquire`` waits until one may leave.

    This is the shape of Business Central's limit (6,000 requests per sliding 5 minutes per principal),
    so with ``burst`` set to the window's allowance syncd uses the whole window and never more. A token
    bucket with the same rate and burst is not safe there: a full bucket plus its refill lets
    ``burst + rate × window`` requests through in one window — twice the allowance — and the surplus
    comes back as 429s (57 of 5,063 requests in ``make bench``, each one closing the Retry-After gate
    for every worker). Send instants are kept, and the window is taken ``WINDOW_MARGIN`` longer than
    configured (at least ``MIN_MARGIN`` seconds) for the time a request needs to reach the server: with
    SuperOffice's 10 per 1-s window, 1 % (10 ms) was less than that jitter on a loaded machine and 8 of
    42 requests came back 429 (bench measure 7, smoke).
    """

    WINDOW_MARGIN = 0.01
    MIN_MARGIN = 0.04

    def __init__(self, limit: int, window: float, *, clock: Callable[[], float], sleep: Sleep) -> None:
        self.limit = max(1, limit)
        self.window = window + max(window * self.WINDOW_MARGIN, self.MIN_MARGIN)
        self._sent: deque[float] = deque()
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()

    @classmethod
    def for_rate(
        cls, rate: float, burst: float | None, *, clock: Callable[[], float], sleep: Sleep
    ) -> SlidingWindowLimiter:
        """``rate`` requests per second on average, up to ``burst`` (default: one second's worth) at once."""
        limit = max(1, round(burst if burst is not None else rate))
        return cls(limit, limit / rate, clock=clock, sleep=sleep)

    async def acquire(self) -> float:
        """Take a slot in the window (FIFO among waiters); returns how long we waited."""
        waited = 0.0
        async with self._lock:
            while True:
                now = self._clock()
                sent = self._sent
                while sent and sent[0] <= now - self.window:
                    sent.popleft()
                if len(sent) < self.limit:
                    sent.append(now)
                    return waited
                delay = sent[0] + self.window - now
                waited += delay
                await self._sleep(delay)
