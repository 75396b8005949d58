"""Faults on the wire: retries, Retry-After, the rate limit, the concurrency cap and timeouts.

The first test is the bar from the issue: both emulators inject a mix of faults (10 % 5xx, 5 % 429 with
Retry-After — HTTP-date on SuperOffice, seconds on Business Central —, 2 % connection resets, 5 % slow
bodies) and ONE run must still finish every picture that can be finished, write none twice, and send
nothing to an API before a Retry-After it received allowed.

``limits.max_retries`` is raised from 6 to 8 here: with ~17 % of requests failing, 7 failures in a row
on one of ~170 requests would happen about once in 1,500 runs; with 9 it is about once in 10 million.

The other tests pin single rules of ``syncd.http.ApiClient`` against a tiny in-process server: what is
retried and what is not, the 401 refresh, the token bucket, the shared concurrency cap and timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import io
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from syncd.config import ApiLimits, BusinessCentralConfig
from syncd.errors import (
    ApiError,
    AuthError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    UnreachableError,
)
from syncd.http import ApiClient, new_session
from syncd.sandbox.common import Faults
from syncd.sandbox.server import Sandbox
from tests.support.e2e import syncd, write_config
from tests.support.resilience import (
    customers_only,
    ledger_rows,
    picture_writes,
    resolve_pictures,
    retry_after_violations,
)

FAULT_MIX: dict[str, Any] = {
    "rate_5xx": 0.10,
    "rate_429": 0.05,
    "rate_reset": 0.02,
    "rate_slow_body": 0.05,
    "slow_body_ms": 200,
    "retry_after_seconds": 1,
}
#: A request that reached the server at most this long after a Retry-After reply left it may have left
#: the client before that reply arrived (other workers' requests on their way, or waiting in the
#: emulator's event loop, which the test shares). Measured on a 2-core machine at load 7: up to ~30 ms
#: (65 ms before the gate was re-checked once a request has its connection); with the gate disabled,
#: violations run from right after the reply up to the full second.
IN_FLIGHT = 0.15
RETRIES = {"limits": {"max_retries": 8}}


@pytest.mark.slow
async def test_fault_mix_on_both_apis_one_run_syncs_everything_once_and_honours_retry_after(
    tmp_path: Path,
) -> None:
    faults_so = Faults(seed=13, retry_after="http-date", **FAULT_MIX)
    faults_bc = Faults(seed=5, retry_after="seconds", **FAULT_MIX)
    async with Sandbox(seed=11, contacts=30, persons=30, faults_so=faults_so, faults_bc=faults_bc) as sb:
        resolve_pictures(sb)
        cfg = write_config(sb, tmp_path, superoffice=RETRIES, businesscentral=RETRIES)
        started = time.perf_counter()
        result = await syncd("run", "--once", "--json", "-c", str(cfg), timeout=240)
        seconds = time.perf_counter() - started
        assert result.code == 2, result.stderr[-3000:]  # the dataset holds broken pictures on purpose
        summary = {m["mapping"]: m for m in result.json()["mappings"]}

        writes = picture_writes(sb)
        for name, exp in sb.dataset.expected["mappings"].items():
            counts = summary[name]["counts"]
            assert counts["written"] == len(exp["written"]), (name, counts)
            assert counts["failed"] == len(exp["broken"]), (name, summary[name]["failures"])
            failed = {int(f["source"].split()[-1]) for f in summary[name]["failures"]}
            assert failed == set(exp["broken"]), "only the genuinely broken pictures may fail"
            output = {
                r["target_id"]: r["output_hash"]
                for r in ledger_rows(
                    tmp_path / "ledger.sqlite",
                    "SELECT target_id, output_hash FROM items WHERE mapping = ? AND status = 'written'",
                    (name,),
                )
            }
            for _source_id, target_id in exp["written"]:
                rec = sb.dataset.bc.get_record(sb.dataset.company_id, exp["target"], target_id)
                assert rec.picture is not None, f"{name}: {target_id} not written"
                assert hashlib.sha256(rec.picture.data).hexdigest() == output[target_id]
                with Image.open(io.BytesIO(rec.picture.data)) as im:
                    assert im.format == "JPEG" and max(im.size) <= 500
                assert writes[target_id] == 1, f"{name}: {target_id} written {writes[target_id]} times"
        assert max(writes.values()) == 1, "no picture may be written twice"
        assert set(writes) == {
            t for exp in sb.dataset.expected["mappings"].values() for _, t in exp["written"]
        }

        report = {}
        for emulator in (sb.so, sb.bc):
            entries = emulator.log.entries
            faults = Counter(e.fault for e in entries if e.fault)
            # The mix really happened on this API (the fault draws are seeded).
            assert {"5xx", "429", "reset", "slow_body"} <= set(faults), (emulator.api_name, faults)
            assert any(e.retry_after_until for e in entries), emulator.api_name
            violations = retry_after_violations(entries, IN_FLIGHT)
            assert not violations, [
                (v.kind, v.retry_after.seq, v.early.seq, round(v.early.started - v.retry_after.finished, 3))
                for v in violations
            ]
            report[emulator.api_name] = (len(entries), dict(faults))
        print(f"\nfault mix: one run in {seconds:.1f}s; requests and injected faults: {report}")


@pytest.mark.slow
async def test_an_api_that_never_answers_times_out_per_request_and_the_run_exits_retryable(
    tmp_path: Path,
) -> None:
    # Every SuperOffice request takes 1.2 s; syncd allows 0.3 s per request and one retry.
    async with Sandbox(seed=1, contacts=5, persons=0, faults_so=Faults(latency_ms=1200)) as sb:
        limits = {"limits": {"timeout": 0.3, "max_retries": 1}}
        cfg = write_config(sb, tmp_path, superoffice=limits, mappings=customers_only(sb))
        result = await syncd("run", "--once", "-c", str(cfg), timeout=60)
        assert result.code == 3, result.stderr
        assert "unreachable" in (result.stdout + result.stderr).lower()


@pytest.mark.slow
async def test_a_picture_that_keeps_failing_past_its_retry_budget_fails_that_item_not_the_run(
    tmp_path: Path,
) -> None:
    # Every picture request (ImageInfo and Image) answers 5xx; everything else works.
    faults = Faults(rate_5xx=1.0, retry_after="none", only_routes=["/{id}/Image"])
    async with Sandbox(seed=2, contacts=14, persons=0, faults_so=faults) as sb:
        exp = sb.dataset.expected["mappings"]["customers"]
        cfg = write_config(
            sb, tmp_path, superoffice={"limits": {"max_retries": 1}}, mappings=customers_only(sb)
        )
        result = await syncd("run", "--once", "--json", "-c", str(cfg), timeout=120)
        assert result.code == 2, result.stderr[-2000:]  # partial: items failed, the run finished
        mapping = result.json()["mappings"][0]
        assert mapping["outcome"] == "partial"
        assert mapping["counts"]["failed"] == len(exp["written"]) and mapping["counts"]["written"] == 0
        assert all("after 2 attempts" in f["detail"] for f in mapping["failures"]), mapping["failures"]
        downloads = Counter(e.path for e in sb.so.log.entries if e.path.lower().endswith("/image"))
        assert downloads and set(downloads.values()) == {2}  # the budget: one try plus max_retries
        assert sb.bc.log.count(method="PATCH") == 0
        rows = ledger_rows(
            tmp_path / "ledger.sqlite", "SELECT status, error FROM items WHERE status = 'failed'"
        )
        assert len(rows) == len(exp["written"])
        assert all(re.search(r"HTTP 50\d after 2 attempts", r["error"]) for r in rows), rows[0]["error"]


# -- single rules of ApiClient, against a tiny server ------------------------------------------------------


Reply = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


@dataclass
class Recorded:
    hits: list[tuple[float, str]] = field(default_factory=list)  # (arrival time, path)
    active: int = 0
    peak: int = 0


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Reply], Awaitable[tuple[str, Recorded]]]]:
    runners: list[web.AppRunner] = []

    async def start(reply: Reply) -> tuple[str, Recorded]:
        rec = Recorded()

        async def handle(request: web.Request) -> web.StreamResponse:
            rec.hits.append((time.time(), request.path))
            rec.active += 1
            rec.peak = max(rec.peak, rec.active)
            try:
                return await reply(request, len(rec.hits))
            finally:
                rec.active -= 1

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}", rec

    yield start
    for r in runners:
        await r.cleanup()


class FakeAuth:
    """A bearer credential that changes each time it is fetched; counts fetches."""

    def __init__(self) -> None:
        self.fetches = 0
        self._current: str | None = None

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        if self._current is None:
            self.fetches += 1
            self._current = f"token-{self.fetches}"
        return {"Authorization": f"Bearer {self._current}"}

    async def invalidate(self, sent_headers: Mapping[str, str]) -> bool:
        self._current = None
        return True

    def describe(self) -> str:
        return "fake bearer"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as s:
        yield s


def client(session: aiohttp.ClientSession, auth: Any = None, **limits: Any) -> ApiClient:
    return ApiClient(
        api="test",
        session=session,
        auth=auth or FakeAuth(),
        limits=ApiLimits(**{"requests_per_second": 1000, "concurrency": 8, **limits}),
    )


def status(code: int, headers: Mapping[str, str] | None = None) -> Reply:
    async def reply(request: web.Request, n: int) -> web.StreamResponse:
        return web.json_response({"error": {"code": "X", "message": "m"}}, status=code, headers=headers)

    return reply


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (400, ApiError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, PreconditionFailedError),
        (412, PreconditionFailedError),
    ],
)
async def test_client_errors_are_sent_once_and_never_retried(
    server: Any, session: aiohttp.ClientSession, code: int, error: type[Exception]
) -> None:
    url, rec = await server(status(code))
    with pytest.raises(error):
        await client(session).request("GET", url + "/x")
    assert len(rec.hits) == 1


async def test_401_refreshes_the_credential_once_then_gives_up(
    server: Any, session: aiohttp.ClientSession
) -> None:
    url, rec = await server(status(401))
    auth = FakeAuth()
    with pytest.raises(AuthError):
        await client(session, auth).request("GET", url + "/x")
    assert len(rec.hits) == 2 and auth.fetches == 2


async def test_401_with_a_fresh_credential_succeeds(server: Any, session: aiohttp.ClientSession) -> None:
    async def reply(request: web.Request, n: int) -> web.StreamResponse:
        ok = request.headers.get("Authorization") == "Bearer token-2"
        return web.json_response({}, status=200 if ok else 401)

    url, rec = await server(reply)
    auth = FakeAuth()
    assert (await client(session, auth).request("GET", url + "/x")).status == 200
    assert len(rec.hits) == 2 and auth.fetches == 2


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503, 504])
async def test_retryable_statuses_are_retried_until_the_budget_is_spent(
    server: Any, session: aiohttp.ClientSession, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, rec = await server(status(code))
    api = client(session, max_retries=3)
    monkeypatch.setattr(api, "_backoff", lambda attempt: 0.01)
    with pytest.raises(UnreachableError):
        await api.request("GET", url + "/x")
    assert len(rec.hits) == 4


async def test_connection_resets_are_retried(server: Any, session: aiohttp.ClientSession) -> None:
    async def reply(request: web.Request, n: int) -> web.StreamResponse:
        if n <= 2:
            assert request.transport is not None
            request.transport.abort()
            raise ConnectionResetError
        return web.json_response({"ok": True})

    url, rec = await server(reply)
    assert (await client(session).request("GET", url + "/x")).json() == {"ok": True}
    assert len(rec.hits) == 3


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_holds_every_worker_until_the_instant_it_names(
    server: Any, session: aiohttp.ClientSession, form: str
) -> None:
    allowed: list[float] = []

    async def reply(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            now = time.time()
            if form == "seconds":
                header, until = "2", now + 2
            else:  # a whole second, as an HTTP-date can only name those
                until = float(int(now) + 2)
                header = email.utils.formatdate(until, usegmt=True)
            allowed.append(until)
            return web.json_response({}, status=429, headers={"Retry-After": header})
        return web.json_response({})

    url, rec = await server(reply)
    api = client(session, concurrency=4)
    first = asyncio.create_task(api.request("GET", url + "/first"))
    async with asyncio.timeout(10):
        while api._gate_until <= time.monotonic():  # wait until the 429 has been read
            await asyncio.sleep(0.005)
    others = [asyncio.create_task(api.request("GET", url + f"/other{i}")) for i in range(6)]
    await asyncio.gather(first, *others)
    later = [t for t, _ in rec.hits[1:]]
    assert len(later) == 7 and min(later) >= allowed[0]


async def test_the_rate_limit_spaces_requests_at_the_configured_rate(
    server: Any, session: aiohttp.ClientSession
) -> None:
    url, rec = await server(status(200))
    api = ApiClient(
        api="test",
        session=session,
        auth=FakeAuth(),
        limits=ApiLimits(requests_per_second=50, concurrency=8),
        burst=1,
    )
    await asyncio.gather(*(api.request("GET", url + f"/{i}") for i in range(20)))
    times = sorted(t for t, _ in rec.hits)
    # 20 requests at 50/s with a burst of 1 leave 20 ms apart; measured where they arrive (where the
    # first one may have been held up a little), the k-th comes no earlier than (k - 1) / 50 s after it.
    # Without a limit all 20 would arrive within a few milliseconds.
    for k, t in enumerate(times[1:], start=1):
        assert t - times[0] >= (k - 1) / 50, (k, t - times[0])
    assert times[-1] - times[0] >= 18 / 50


async def test_the_concurrency_cap_is_shared_by_all_workers(
    server: Any, session: aiohttp.ClientSession
) -> None:
    async def reply(request: web.Request, n: int) -> web.StreamResponse:
        # Each reply is held until three requests have been in flight at once (or 5 s have passed):
        # a cap that works shows a peak of exactly 3 whatever the load, a broken one more than 3.
        deadline = time.monotonic() + 5
        while rec.peak < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return web.json_response({})

    url, rec = await server(reply)
    api = client(session, concurrency=3)
    await asyncio.gather(*(api.request("GET", url + f"/{i}") for i in range(15)))
    assert len(rec.hits) == 15 and rec.peak == 3


async def test_a_slow_reply_times_out_and_is_retried(server: Any, session: aiohttp.ClientSession) -> None:
    retried = asyncio.Event()

    async def reply(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:  # held until the retry has arrived: it can only have timed out (or 10 s passed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(retried.wait(), 10)
        else:
            retried.set()
        return web.json_response({"n": n})

    url, _ = await server(reply)
    api = client(session, timeout=0.3)
    assert (await api.request("GET", url + "/x")).json() == {"n": 2}


def test_the_default_business_central_rate_stays_below_6000_requests_per_5_minutes() -> None:
    cfg = BusinessCentralConfig.model_validate(
        {
            "base_url": "https://api.businesscentral.dynamics.com/v2.0/t/production/api/v2.0",
            "company": "CRONUS",
            "auth": {"type": "bearer", "token": "x"},
        }
    )
    assert cfg.limits.requests_per_second * 300 < 6000
    assert cfg.limits.concurrency <= 5  # BC runs at most 5 requests of one principal at a time
