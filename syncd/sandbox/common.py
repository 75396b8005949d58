"""What both emulators share: the request log and counters, fault injection, and the admin API.

Everything under ``/_sandbox/`` is the emulator's own control surface and is clearly outside the
emulated vendor API: it needs no auth, is never logged as an API request and is never faulted.

Admin API (on each emulator's port):
    GET    /_sandbox/requests?since=SEQ   request log entries (JSON list), oldest first
    GET    /_sandbox/stats                counters {"METHOD ROUTE STATUS": n}, totals
    GET    /_sandbox/faults               current fault knobs
    PUT    /_sandbox/faults               replace knobs (JSON body, same shape); unknown keys → 400
    POST   /_sandbox/reset                clear log, counters and faults (data: see each emulator)
Each emulator adds its own data routes under /_sandbox/ as well.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ADMIN_PREFIX = "/_sandbox/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PRINCIPAL = web.RequestKey("principal", str)  # who a request authenticated as (set by the emulators)


@dataclass(slots=True)
class LoggedRequest:
    seq: int
    api: str  # "superoffice" | "businesscentral"
    method: str
    path: str
    query: str
    route: str  # route template, e.g. "/{cust}/api/v1/Contact/{id}/Image"
    status: int  # 0 when the connection was reset before a status was sent
    started: float  # time.time() when the request arrived
    finished: float
    principal: str | None  # who the request authenticated as, if it did
    retry_after_until: float | None  # when a Retry-After was sent: earliest time.time() allowed next
    fault: str | None  # name of the injected fault, if any
    request_bytes: int
    response_bytes: int

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class Faults:
    """Fault injection knobs; rates are probabilities per API request (0..1)."""

    seed: int = 0
    rate_5xx: float = 0.0  # 500/502/503/504 (503 and 502 carry Retry-After like BC does)
    rate_429: float = 0.0
    retry_after: str = "seconds"  # "seconds" | "http-date" | "none": form of Retry-After on 429
    retry_after_seconds: float = 1.0
    rate_reset: float = 0.0  # close the connection without a response
    latency_ms: float = 0.0  # added to every request (of only_routes, when given)
    rate_slow_body: float = 0.0  # send the response body in small chunks with pauses
    slow_body_ms: float = 200.0
    rate_truncate: float = 0.0  # announce the full Content-Length, send half, then close
    only_routes: list[str] = field(default_factory=list)  # substrings; empty = every route

    def applies_to(self, route: str) -> bool:
        return not self.only_routes or any(s in route for s in self.only_routes)


class RequestLog:
    """Append-only log of API requests plus counters per (method, route template, status)."""

    def __init__(self, api: str, max_entries: int = 200_000) -> None:
        self.api = api
        self.max_entries = max_entries
        self.entries: list[LoggedRequest] = []
        self.counters: Counter[tuple[str, str, int]] = Counter()
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def add(self, entry: LoggedRequest) -> None:
        self.counters[(entry.method, entry.route, entry.status)] += 1
        self.entries.append(entry)
        if len(self.entries) > self.max_entries:
            del self.entries[: len(self.entries) - self.max_entries]

    def clear(self) -> None:
        self.entries.clear()
        self.counters.clear()

    def count(
        self, method: str | None = None, route_contains: str | None = None, status: int | None = None
    ) -> int:
        return sum(
            n
            for (m, r, s), n in self.counters.items()
            if (method is None or m == method)
            and (route_contains is None or route_contains in r)
            and (status is None or s == status)
        )

    def stats(self) -> dict[str, Any]:
        return {
            "total": sum(self.counters.values()),
            "by_route": {f"{m} {r} {s}": n for (m, r, s), n in sorted(self.counters.items())},
        }


def retry_after_value(faults: Faults, now: float) -> tuple[str | None, float | None]:
    """The Retry-After header value for the configured form, and the instant it allows."""
    if faults.retry_after == "none":
        return None, None
    if faults.retry_after == "http-date":
        # HTTP-date has one-second resolution; round up so the promise is never earlier than sent.
        until = float(int(now + faults.retry_after_seconds) + 1)
        return email.utils.formatdate(until, usegmt=True), until
    secs = max(1, round(faults.retry_after_seconds))
    return str(secs), now + secs


class FaultState:
    """Faults plus the seeded RNG that draws them; replaced atomically via the admin API."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.set(faults or Faults())

    def set(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)

    def draw(self, route: str) -> str | None:
        f = self.faults
        if not f.applies_to(route):
            return None
        r = self.rng.random()
        for name, rate in (
            ("reset", f.rate_reset),
            ("5xx", f.rate_5xx),
            ("429", f.rate_429),
            ("slow_body", f.rate_slow_body),
            ("truncate", f.rate_truncate),
        ):
            if r < rate:
                return name
            r -= rate
        return None


def route_template(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else request.path


class Emulator:
    """Base for an emulated API: log, faults, admin routes and the middleware that ties them."""

    api_name = "emulator"

    def __init__(self, faults: Faults | None = None) -> None:
        self.log = RequestLog(self.api_name)
        self.fault_state = FaultState(faults)
        self.clock: Callable[[], float] = time.time

    # -- to be extended by emulators ---------------------------------------------------------------
    def principal_of(self, request: web.Request) -> str | None:
        """Who the request authenticated as (for the log); emulators set request['principal']."""
        return request.get(PRINCIPAL)

    def fault_response(self, kind: str, request: web.Request) -> web.Response:
        """The injected error reply in this API's own error shape. Overridden by emulators."""
        raise NotImplementedError

    def reset_data(self) -> None:
        """Restore seeded data; overridden by emulators that keep mutable data."""

    # -- wiring ------------------------------------------------------------------------------------
    def add_admin_routes(self, app: web.Application) -> None:
        app.router.add_get(ADMIN_PREFIX + "requests", self._admin_requests)
        app.router.add_get(ADMIN_PREFIX + "stats", self._admin_stats)
        app.router.add_get(ADMIN_PREFIX + "faults", self._admin_get_faults)
        app.router.add_put(ADMIN_PREFIX + "faults", self._admin_put_faults)
        app.router.add_post(ADMIN_PREFIX + "reset", self._admin_reset)

    async def _admin_requests(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        return web.json_response([e.as_json() for e in self.log.entries if e.seq > since])

    async def _admin_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.log.stats())

    async def _admin_get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(dataclasses.asdict(self.fault_state.faults))

    async def _admin_put_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        known = {f.name for f in dataclasses.fields(Faults)}
        unknown = set(body) - known
        if unknown:
            return web.json_response({"error": f"unknown fault knobs: {sorted(unknown)}"}, status=400)
        self.fault_state.set(Faults(**body))
        return web.json_response(dataclasses.asdict(self.fault_state.faults))

    async def _admin_reset(self, request: web.Request) -> web.Response:
        self.log.clear()
        self.fault_state.set(Faults())
        if request.query.get("data", "false").lower() == "true":
            self.reset_data()
        return web.json_response({"ok": True})

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(ADMIN_PREFIX):
            return await handler(request)
        started = self.clock()
        seq = self.log.next_seq()
        route = route_template(request)
        faults = self.fault_state.faults
        fault = self.fault_state.draw(route)
        status = 0
        retry_until: float | None = None
        response_bytes = 0
        try:
            if faults.latency_ms and faults.applies_to(route):
                await asyncio.sleep(faults.latency_ms / 1000)
            if fault == "reset":
                if request.transport is not None:
                    request.transport.abort()  # the client sees the connection drop, no response
                # Nothing can be sent any more; an empty response ends the handler without aiohttp
                # logging an "error handling request" traceback for a fault we injected on purpose.
                return web.Response(status=499)
            if fault in ("5xx", "429"):
                response = self.fault_response(fault, request)
            else:
                response_any = await handler(request)
                if not isinstance(response_any, web.Response):
                    status = response_any.status
                    return response_any
                response = response_any
            ra = response.headers.get("Retry-After")
            if ra is not None:
                retry_until = _retry_after_instant(ra, self.clock())
            status = response.status
            body = response.body if isinstance(response.body, bytes) else b""
            response_bytes = len(body)
            if fault == "slow_body" and body:
                return await _send_slowly(request, response, body, faults.slow_body_ms / 1000)
            if fault == "truncate" and len(body) > 1:
                return await _send_truncated(request, response, body)
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.log.add(
                LoggedRequest(
                    seq=seq,
                    api=self.api_name,
                    method=request.method,
                    path=request.path,
                    query=request.query_string,
                    route=route,
                    status=status,
                    started=started,
                    finished=self.clock(),
                    principal=self.principal_of(request),
                    retry_after_until=retry_until,
                    fault=fault,
                    request_bytes=request.content_length or 0,
                    response_bytes=response_bytes,
                )
            )


def _retry_after_instant(value: str, now: float) -> float | None:
    value = value.strip()
    if value.isdigit():
        return now + int(value)
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


async def _send_slowly(
    request: web.Request, response: web.Response, body: bytes, pause: float
) -> web.StreamResponse:
    stream = web.StreamResponse(status=response.status, headers=response.headers)
    stream.content_length = len(body)
    await stream.prepare(request)
    chunk = max(1, len(body) // 4)
    for i in range(0, len(body), chunk):
        await stream.write(body[i : i + chunk])
        await asyncio.sleep(pause / 4)
    await stream.write_eof()
    return stream


async def _send_truncated(request: web.Request, response: web.Response, body: bytes) -> web.StreamResponse:
    stream = web.StreamResponse(status=response.status, headers=response.headers)
    stream.content_length = len(body)
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.abort()
    return stream
