"""The fake-time event loop the scheduler tests run on (tests.support.fake_time)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import apscheduler.schedulers.base

from tests.support.fake_time import FAKE_EPOCH, fake_now, run_on_fake_time


def test_sleeping_moves_the_fake_clock_and_takes_no_wall_time() -> None:
    async def scenario() -> tuple[float, datetime]:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(3600)
        return loop.time(), fake_now(UTC)

    wall = time.monotonic()
    took, now = run_on_fake_time(scenario())
    assert took == 3600
    assert now == FAKE_EPOCH + timedelta(hours=1)
    assert time.monotonic() - wall < 60  # an hour of fake time; any real wait would be the whole hour


def test_timers_fire_in_order_of_their_fake_time() -> None:
    async def scenario() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float]] = []

        async def after(name: str, seconds: float) -> None:
            await asyncio.sleep(seconds)
            fired.append((name, loop.time()))

        await asyncio.gather(after("late", 2.5), after("early", 0.5), after("middle", 1.0))
        return fired

    assert run_on_fake_time(scenario()) == [("early", 0.5), ("middle", 1.0), ("late", 2.5)]


def test_apscheduler_reads_the_fake_clock_only_while_it_runs() -> None:
    async def scenario() -> datetime:
        await asyncio.sleep(90)
        now: datetime = apscheduler.schedulers.base.datetime.now(UTC)
        return now

    assert run_on_fake_time(scenario()) == FAKE_EPOCH + timedelta(seconds=90)
    assert apscheduler.schedulers.base.datetime is datetime
