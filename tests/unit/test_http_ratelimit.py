"""The sliding-window limiter (:mod:`syncd.ratelimit`) on a fake clock: never more than ``limit`` sends
in any window (taken ``MIN_MARGIN`` longer than configured), and no wait while there is room."""

from __future__ import annotations

import pytest

from syncd.ratelimit import SlidingWindowLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


async def test_the_window_admits_limit_sends_then_waits_for_the_oldest_to_leave_it() -> None:
    clock = Clock()
    limiter = SlidingWindowLimiter(3, 1.0, clock=clock, sleep=clock.sleep)
    assert limiter.window == pytest.approx(1.0 + SlidingWindowLimiter.MIN_MARGIN)
    waits = [await limiter.acquire() for _ in range(3)]
    assert waits == [0.0, 0.0, 0.0] and clock.sleeps == []
    clock.t += 0.5
    assert await limiter.acquire() == pytest.approx(limiter.window - 0.5)  # until the first send leaves
    sent_at = clock.t
    clock.t += limiter.window  # a whole window later: room for three again
    assert [await limiter.acquire() for _ in range(2)] == [0.0, 0.0]
    assert clock.t - sent_at == pytest.approx(limiter.window)


def test_for_rate_takes_one_seconds_worth_as_the_default_burst() -> None:
    clock = Clock()
    limiter = SlidingWindowLimiter.for_rate(18, None, clock=clock, sleep=clock.sleep)
    assert limiter.limit == 18
    assert limiter.window == pytest.approx(1.0 + SlidingWindowLimiter.MIN_MARGIN)
    burst = SlidingWindowLimiter.for_rate(20, 6000, clock=clock, sleep=clock.sleep)
    assert burst.limit == 6000 and burst.window == pytest.approx(300 * 1.01)
