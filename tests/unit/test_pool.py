"""The run's worker pool and failure streak (syncd/pool.py), and its row time stamps (syncd/clock.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from syncd.clock import SecondStamps
from syncd.pool import FailureStreak, Pool, give_up_after


async def numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


def test_failure_streak_stops_at_the_limit_and_a_success_resets_it():
    streak = FailureStreak(3)
    assert not streak.failed() and not streak.failed()
    streak.succeeded()
    assert not streak.failed() and not streak.failed()
    assert streak.failed()  # the third in a row


def test_give_up_after_is_more_than_a_pool_of_failures():
    assert give_up_after(1) == 5 and give_up_after(4) == 8


async def test_pool_handles_every_item_with_bounded_concurrency():
    seen: list[int] = []
    running = peak = 0

    async def handle(i: int) -> bool:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        seen.append(i)
        running -= 1
        return True

    pool: Pool[int] = Pool(3, queue_size=2)
    await pool.run(numbers(20), handle)
    assert sorted(seen) == list(range(20)) and pool.counters.taken == 20
    assert peak <= 3


async def test_pool_stops_taking_items_when_may_take_says_no():
    seen: list[int] = []

    async def handle(i: int) -> bool:
        seen.append(i)
        return True

    pool: Pool[int] = Pool(2)
    await pool.run(numbers(100), handle, may_take=lambda: pool.counters.taken < 5)
    assert len(seen) == 5


async def test_a_handler_returning_false_ends_the_pool_without_new_items():
    seen: list[int] = []

    async def handle(i: int) -> bool:
        seen.append(i)
        return i != 3

    pool: Pool[int] = Pool(1)
    await pool.run(numbers(100), handle)
    assert seen == [0, 1, 2, 3] and pool.counters.ended


async def test_an_exception_ends_the_pool_at_once_and_cancels_the_other_workers():
    cancelled: list[int] = []

    async def handle(i: int) -> bool:
        if i == 0:
            await asyncio.sleep(0)
            raise RuntimeError("boom")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return True

    pool: Pool[int] = Pool(3)
    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.wait_for(pool.run(numbers(10), handle), timeout=5)
    assert sorted(cancelled) == [1, 2]


def test_second_stamps_format_the_clock_to_the_second_once_per_second():
    now = [datetime(2026, 1, 2, 3, 4, 5, 100_000, tzinfo=UTC)]
    calls = 0

    def clock() -> datetime:
        nonlocal calls
        calls += 1
        return now[0]

    stamps = SecondStamps(clock)
    first = stamps()
    assert first == "2026-01-02T03:04:05+00:00"
    now[0] += timedelta(milliseconds=500)
    assert stamps() is first  # same second: the cached text
    now[0] += timedelta(seconds=1)
    assert stamps() == "2026-01-02T03:04:06+00:00"
    assert calls == 3
