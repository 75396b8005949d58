"""One bounded worker pool for both phases of a run, and the stop-after-N-consecutive-failures rule.

:class:`Pool` runs ``n`` workers over items that a producer feeds through a queue. Before each item a
worker asks ``may_take`` (the budget, the deadline, a stop request); ``handle`` returning False ends the
pool the same way (a fatal error kept by the caller): no worker takes another item, the ones in flight
finish. An exception from the producer or a worker ends the pool at once and propagates.

:class:`FailureStreak` counts consecutive failures of one kind (a server that looks down) and says
when to give up: ``max(5, 2 × concurrency)`` in a row, so that one bad item never stops a run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


def give_up_after(concurrency: int) -> int:
    """Consecutive failures after which the server is taken to be down: more than a pool's worth."""
    return max(5, 2 * concurrency)


@dataclass(slots=True)
class FailureStreak:
    """Consecutive failures, reset by any success."""

    limit: int
    count: int = 0

    def succeeded(self) -> None:
        self.count = 0

    def failed(self) -> bool:
        """One more failure in a row; True when that makes ``limit``: stop."""
        self.count += 1
        return self.count >= self.limit


@dataclass(slots=True)
class PoolCounters:
    taken: int = 0  # items the workers took (the budget counts these)
    ended: bool = False  # a handler returned False: no new item starts


class Pool(Generic[T]):
    """``workers`` tasks over the items of ``produce``, at most ``queue_size`` waiting (0: unbounded)."""

    def __init__(self, workers: int, queue_size: int = 0) -> None:
        self.workers = max(1, workers)
        self.queue_size = queue_size
        self.counters = PoolCounters()

    async def run(
        self,
        produce: AsyncIterable[T] | Iterable[T],
        handle: Callable[[T], Awaitable[bool]],
        may_take: Callable[[], bool] = lambda: True,
    ) -> None:
        queue: asyncio.Queue[tuple[T] | None] = asyncio.Queue(maxsize=self.queue_size)
        counters = self.counters

        async def producer() -> None:
            if isinstance(produce, AsyncIterable):
                async for item in produce:
                    await queue.put((item,))
            else:  # items at hand (phase A's chunk): no async iteration per item
                for item in produce:
                    await queue.put((item,))
            for _ in range(self.workers):
                await queue.put(None)

        async def worker() -> None:
            while not counters.ended:
                entry = await queue.get()
                if entry is None or not may_take():
                    return
                counters.taken += 1
                if not await handle(entry[0]):
                    counters.ended = True
                    return

        feeding = asyncio.ensure_future(producer())
        workers = [asyncio.ensure_future(worker()) for _ in range(self.workers)]
        pending: set[asyncio.Future[None]] = {feeding, *workers}
        try:
            # Until every worker has ended (done, out of budget or ended by a handler); a failing
            # producer or worker ends the pool at once.
            while not all(w.done() for w in workers):
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if (exc := task.exception()) is not None:
                        raise exc
        finally:
            for task in (feeding, *workers):
                task.cancel()
            await asyncio.gather(feeding, *workers, return_exceptions=True)
