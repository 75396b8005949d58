"""Concurrent picture decodes bounded by memory, not only by count.

A 155 KB PNG can decode to 600 MB (7000×7000 with a tRNS chunk); eight of them in flight would need
gigabytes. :class:`DecodeBudget` holds the bytes promised to the decodes running now
(``picture.max_decode_memory``); :func:`budgeted` wraps a :class:`~syncd.run.Normalizer` so that
each decode first reserves what :func:`syncd.imaging.decode_estimate` says it needs (read from the
picture's header, off the event loop) and waits while the budget is taken. A picture that alone needs
more than the whole budget fails as that item's :class:`~syncd.errors.ImageError`, without decoding.

Decodes are admitted first come, first served: a big picture waiting for room is not overtaken by a
stream of small ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from syncd import imaging
from syncd.errors import ImageError

__all__ = ["DecodeBudget", "budgeted", "give_back_freed_memory"]

#: After a decode estimated at least this big, the memory it freed is handed back to the kernel before
#: its reservation ends (below it, keeping freed memory for the next small decode is cheaper).
TRIM_AFTER: int = 64_000_000

Normalize = Callable[..., Awaitable[imaging.NormalizedPicture]]


class DecodeBudget:
    """Bytes of decode memory shared by every decode of a process (one event loop)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the decode budget must be positive")
        self.limit = limit
        self.in_use = 0
        self.peak = 0  # the most ever reserved at once (tests and benchmarks read it)
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def reserve(self, cost: int) -> AsyncIterator[None]:
        """Hold ``cost`` bytes (at least 1) for the duration of the block; waits for room in FIFO order."""
        cost = max(1, cost)
        if cost > self.limit:
            raise ValueError(f"{cost} bytes exceed the whole budget of {self.limit}")
        if self._waiters or self.in_use + cost > self.limit:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (cost, future)
            self._waiters.append(entry)
            try:
                await future  # _wake took our bytes for us
            except BaseException:
                if future.done() and not future.cancelled():
                    self._release(cost)  # granted, then cancelled before we could use it
                else:
                    self._waiters.remove(entry)
                    self._wake()
                raise
        else:
            self._take(cost)
        try:
            yield
        finally:
            self._release(cost)

    def _take(self, cost: int) -> None:
        self.in_use += cost
        self.peak = max(self.peak, self.in_use)

    def _release(self, cost: int) -> None:
        self.in_use -= cost
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use + self._waiters[0][0] <= self.limit:
            cost, future = self._waiters.popleft()
            self._take(cost)
            future.set_result(None)


def budgeted(normalize: Normalize, budget: DecodeBudget) -> Normalize:
    """``normalize`` (a :class:`~syncd.run.Normalizer`) admitted by ``budget``."""

    async def run(
        data: bytes, profile: imaging.PictureProfile, thumbnail: imaging.PictureProfile | None = None
    ) -> imaging.NormalizedPicture:
        if len(data) < 64_000:  # the header of a small file is parsed in microseconds
            cost = imaging.decode_estimate(data, profile)
        else:
            cost = await asyncio.to_thread(imaging.decode_estimate, data, profile)
        if cost > budget.limit:
            mb = 1_000_000
            raise ImageError(
                f"picture would need about {cost / mb:,.0f} MB of memory to decode, more than "
                f"picture.max_decode_memory ({budget.limit / mb:,.0f} MB)",
                hint="if such pictures are legitimate, raise picture.max_decode_memory (and the unit's "
                "MemoryMax=), then run once with --full to retry them",
            )
        async with budget.reserve(cost):
            try:
                return await normalize(data, profile, thumbnail)
            finally:
                if cost >= TRIM_AFTER:  # before the next decode may use the memory this one had
                    await asyncio.shield(asyncio.to_thread(give_back_freed_memory))

    return run


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or "" if hasattr(os, "confstr") else ""):
        return None
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def give_back_freed_memory() -> None:
    """Hand the memory a finished decode freed back to the kernel (glibc ``malloc_trim``; elsewhere
    nothing). Without it glibc keeps a big decode's freed buffers in the arena of the thread that
    decoded, one arena per normalizer thread: a run of hostile PNGs, one decode at a time within the
    budget, still grew to 2.5 GB as successive decodes landed on different threads."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
