"""Business Central emulator, operational limits (§6): the knobs, the concurrency gate, the rate window.

A sliding-window request limit per principal (429 with ``Retry-After``; off unless asked for,
``BC_RATE_LIMIT`` is BC's 6000 per 5 minutes), a cap of concurrent requests per principal with a queue
(5 + 95 as in BC; queue full → 429, waiting longer than ``queue_timeout`` → 503 with ``retry-after``) and
random 408s. The knobs (:class:`BCLimits`) change at run time through ``PUT /_sandbox/bc/limits``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from syncd.sandbox.businesscentral.errors import (
    ODataError,
)
from syncd.sandbox.businesscentral.state import BC_MAX_PAGE_SIZE


# ================================================================================================
# Operational limits
# ================================================================================================
@dataclass(slots=True)
class BCLimits:
    """Operational-limit knobs (§6). Defaults: BC's own numbers where harmless, the rest off."""

    rate_limit: tuple[int, float] | None = None  # (requests, window seconds) per principal; BC: (6000, 300)
    retry_after_on_429: bool = True
    max_concurrent: int | None = 5  # per principal; None = unlimited
    max_queue: int = 95  # queued beyond max_concurrent before 429
    queue_timeout: float = 480.0  # seconds in the queue before 503
    queue_retry_after: int = 10  # seconds in the retry-after of that 503
    processing_ms: float = 0.0  # service time spent holding a concurrency slot (to make queues visible)
    rate_408: float = 0.0  # probability of an operation-timeout 408
    max_page_size: int = BC_MAX_PAGE_SIZE
    oversize_page_preference: str = "cap"  # "cap" | "413"
    stale_etag_status: int = 409
    no_permission_status: int = 403
    clients_without_permissions: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["rate_limit"] = list(self.rate_limit) if self.rate_limit else None
        return data

    def merged(self, changes: Mapping[str, Any]) -> BCLimits:
        known = {f.name for f in dataclasses.fields(BCLimits)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown limit knobs: {sorted(unknown)}")
        data = {**dataclasses.asdict(self), **changes}
        rate = data["rate_limit"]
        data["rate_limit"] = (int(rate[0]), float(rate[1])) if rate else None
        data["clients_without_permissions"] = list(data["clients_without_permissions"])
        limits = BCLimits(**data)
        limits.validate()
        return limits

    def validate(self) -> None:
        if self.oversize_page_preference not in ("cap", "413"):
            raise ValueError("oversize_page_preference must be 'cap' or '413'")
        if self.stale_etag_status not in (409, 412):
            raise ValueError("stale_etag_status must be 409 or 412")
        if self.no_permission_status not in (400, 403):
            raise ValueError("no_permission_status must be 403 or 400")
        if not 1 <= self.max_page_size <= BC_MAX_PAGE_SIZE:
            raise ValueError(f"max_page_size must be 1..{BC_MAX_PAGE_SIZE}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError("max_concurrent must be ≥ 1 or None")


@dataclass(slots=True)
class _Gate:
    active: int = 0
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    peak: int = 0
    queued_total: int = 0
    rejected: int = 0
    timed_out: int = 0


class ConcurrencyGate:
    """At most ``max_concurrent`` requests per principal in progress; the rest wait in a bounded queue."""

    def __init__(self, limits: Callable[[], BCLimits]) -> None:
        self._limits = limits
        self.gates: dict[str, _Gate] = {}

    async def acquire(self, principal: str) -> None:
        limits = self._limits()
        gate = self.gates.get(principal)
        if gate is None:
            gate = self.gates[principal] = _Gate()
        cap = limits.max_concurrent
        if cap is None or (gate.active < cap and not gate.waiters):
            gate.active += 1
            gate.peak = max(gate.peak, gate.active)
            return
        if len(gate.waiters) >= limits.max_queue:
            gate.rejected += 1
            total = gate.active + len(gate.waiters) + 1
            raise ODataError(
                429,
                "Application_TooManyRequests",
                f"Too many requests reached.  Actual ({total}). Maximum ({cap + limits.max_queue}).",
            )
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        gate.waiters.append(waiter)
        gate.queued_total += 1
        timer = loop.call_later(limits.queue_timeout, _expire, waiter)
        try:
            await waiter
        except TimeoutError:
            self._forget(gate, waiter)
            gate.timed_out += 1
            raise ODataError(
                503,
                "Application_ServiceUnavailable",
                "The request waited too long in the queue of pending requests. Please retry.",
                {"retry-after": str(limits.queue_retry_after)},
            ) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(principal)  # handed a slot just as we were cancelled: pass it on
            else:
                self._forget(gate, waiter)
            raise
        finally:
            timer.cancel()
        gate.peak = max(gate.peak, gate.active)

    @staticmethod
    def _forget(gate: _Gate, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            gate.waiters.remove(waiter)

    def release(self, principal: str) -> None:
        gate = self.gates[principal]
        while gate.waiters:
            waiter = gate.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next in line
                return
        gate.active -= 1

    def stats(self) -> dict[str, Any]:
        return {
            p: {
                "active": g.active,
                "queued": len(g.waiters),
                "peak": g.peak,
                "queued_total": g.queued_total,
                "rejected_429": g.rejected,
                "timed_out_503": g.timed_out,
            }
            for p, g in self.gates.items()
        }


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class SlidingWindow:
    """Per-principal request timestamps within the last ``window`` seconds."""

    def __init__(self) -> None:
        self.hits: dict[str, deque[float]] = {}

    def hit(self, principal: str, now: float, limit: int, window: float) -> float | None:
        """Count one request; returns None if allowed, else seconds until a slot frees up."""
        hits = self.hits.get(principal)
        if hits is None:
            hits = self.hits[principal] = deque()
        cutoff = now - window
        while hits and hits[0] <= cutoff:
            hits.popleft()
        if len(hits) >= limit:
            return hits[0] + window - now
        hits.append(now)
        return None
