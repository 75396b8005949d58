"""Fake time for asyncio code: an event loop whose clock only moves when everything is waiting.

:func:`run_on_fake_time` runs a coroutine on a :class:`FakeTimeLoop`. Whenever the loop would block
(every task is waiting on a timer), the clock jumps straight to the next timer instead of sleeping;
``asyncio.sleep(60)`` returns at once in wall-clock time, with ``loop.time()`` 60 s later. A test
therefore sees exactly the timings it sets up, whatever the load of the machine.

APScheduler 3 reads ``datetime.now()`` itself (there is no clock to inject), so while the coroutine
runs, the ``datetime`` its scheduler, executor and interval-trigger modules see is one whose ``now()``
reads the fake clock: a job due in 1 s fires after 1 s of fake time. Code that does real I/O (sockets,
threads) does not belong on this loop: the clock would jump while the I/O is in flight.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, TypeVar

import apscheduler.executors.base
import apscheduler.schedulers.base
import apscheduler.triggers.interval
import pytest

__all__ = ["FAKE_EPOCH", "FakeTimeLoop", "fake_now", "run_on_fake_time"]

T = TypeVar("T")

FAKE_EPOCH = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # what fake time 0 reads as a date


class _AdvancingSelector(selectors.BaseSelector):
    """Wraps the loop's selector: a select that would wait ``timeout`` seconds advances the clock instead."""

    def __init__(self, inner: selectors.BaseSelector, loop: FakeTimeLoop) -> None:
        self._inner = inner
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready or timeout is None:  # nothing timed to wait for: only I/O can wake the loop
            return ready or self._inner.select(timeout)
        self._loop.advance(max(0.0, timeout))
        return []

    def close(self) -> None:
        self._inner.close()

    def get_map(self) -> Any:
        return self._inner.get_map()


class FakeTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on fake time: ``time()`` starts at 0 and moves only by :meth:`advance`."""

    def __init__(self) -> None:
        super().__init__()
        self._fake_now = 0.0
        self._selector = _AdvancingSelector(self._selector, self)  # type: ignore[has-type]

    def time(self) -> float:
        return self._fake_now

    def advance(self, seconds: float) -> None:
        self._fake_now += seconds


def fake_now(tz: tzinfo | None = None) -> datetime:
    """The running fake loop's clock as a date (``FAKE_EPOCH`` + ``loop.time()``)."""
    loop = asyncio.get_running_loop()
    now = FAKE_EPOCH + timedelta(seconds=loop.time())
    return now.astimezone(tz) if tz is not None else now.astimezone().replace(tzinfo=None)


class _FakeDatetime(datetime):
    """``datetime`` whose ``now()`` is :func:`fake_now` (for APScheduler's modules)."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> _FakeDatetime:
        return fake_now(tz)  # type: ignore[return-value]


def run_on_fake_time(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh :class:`FakeTimeLoop`, APScheduler reading its clock."""
    loop = FakeTimeLoop()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(apscheduler.schedulers.base, "datetime", _FakeDatetime)
        patch.setattr(apscheduler.executors.base, "datetime", _FakeDatetime)
        patch.setattr(apscheduler.triggers.interval, "datetime", _FakeDatetime)
        try:
            return loop.run_until_complete(main)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
