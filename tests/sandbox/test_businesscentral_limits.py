"""Business Central emulator: operational limits (rate, concurrency, queue) and injected faults."""

from __future__ import annotations

import asyncio
import email.utils

from tests.support.bc_fixtures import CUST1, OTHER_CLIENT_ID, OTHER_SECRET, RunningBC, running_bc
from tests.support.daemon import eventually


async def statuses(bc: RunningBC, url: str, n: int) -> list[int]:
    async def one() -> int:
        resp = await bc.http.get(url)
        await resp.read()
        return resp.status

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_rate_limit_answers_429_with_retry_after() -> None:
    async with running_bc(rate_limit=(3, 60.0)) as bc:
        now = [1_000.0]
        bc.emulator.clock = lambda: now[0]
        url = f"{bc.company()}/customers({CUST1})/picture"
        for _ in range(3):
            assert (await bc.http.get(url)).status == 200
        resp = await bc.http.get(url)
        body = await resp.json()
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "60"
        assert body["error"]["code"] == "Application_TooManyRequests"
        now[0] += 30
        assert (await bc.http.get(url)).headers["Retry-After"] == "30"
        now[0] += 30.5  # the window has slid past the first requests
        assert (await bc.http.get(url)).status == 200


async def test_rate_limit_is_per_principal() -> None:
    async with running_bc(rate_limit=(2, 60.0)) as bc:
        url = f"{bc.company()}/customers"
        assert [(await bc.http.get(url)).status for _ in range(3)] == [200, 200, 429]
        other = await bc.token(OTHER_CLIENT_ID, OTHER_SECRET)
        resp = await bc.anon.get(url, headers={"Authorization": f"Bearer {other}"})
        assert resp.status == 200


async def test_retry_after_on_429_can_be_switched_off() -> None:
    async with running_bc(rate_limit=(1, 60.0), retry_after_on_429=False) as bc:
        url = f"{bc.company()}/customers"
        await bc.http.get(url)
        resp = await bc.http.get(url)
        assert resp.status == 429
        assert "Retry-After" not in resp.headers


async def test_concurrent_requests_beyond_the_cap_queue_instead_of_failing() -> None:
    async with running_bc(max_concurrent=2, processing_ms=60) as bc:
        codes = await statuses(bc, f"{bc.company()}/customers({CUST1})/picture", 6)
        assert codes == [200] * 6
        _, limits = await bc.admin("GET", "bc/limits")
        gate = next(iter(limits["gates"].values()))
        assert gate["peak"] == 2
        assert gate["queued_total"] == 4
        assert gate["active"] == 0 and gate["queued"] == 0


async def test_full_queue_answers_429() -> None:
    async with running_bc(max_concurrent=1, max_queue=1, processing_ms=150) as bc:
        codes = await statuses(bc, f"{bc.company()}/customers", 4)
        assert sorted(codes) == [200, 200, 429, 429]


async def test_long_queue_wait_answers_503_with_retry_after() -> None:
    # The first request holds the only slot for 2 s: however long the wait below takes under load,
    # the second one still finds it taken (and gives up after its 0.05 s in the queue).
    async with running_bc(max_concurrent=1, processing_ms=2000, queue_timeout=0.05) as bc:
        url = f"{bc.company()}/customers"
        first = asyncio.ensure_future(bc.http.get(url))
        gates = bc.emulator.gate
        await eventually(lambda: [g["active"] for g in gates.stats().values()] == [1], 10, "the first one in")
        second = await bc.http.get(url)
        body = await second.json()
        assert second.status == 503
        assert second.headers["retry-after"].isdigit()
        assert body["error"]["message"]
        assert (await first).status == 200


async def test_limits_change_at_run_time_through_the_admin_api() -> None:
    async with running_bc() as bc:
        url = f"{bc.company()}/customers"
        resp, body = await bc.admin(
            "PUT", "bc/limits", json={"rate_limit": [1, 300], "stale_etag_status": 412}
        )
        assert resp.status == 200
        assert body["rate_limit"] == [1, 300.0] and body["stale_etag_status"] == 412
        assert (await bc.http.get(url)).status == 200
        assert (await bc.http.get(url)).status == 429
        resp, body = await bc.admin("PUT", "bc/limits", json={"rate_limit": None})
        assert (await bc.http.get(url)).status == 200
        resp, body = await bc.admin("PUT", "bc/limits", json={"colour": "red"})
        assert resp.status == 400


async def test_operation_timeout_knob_answers_408() -> None:
    async with running_bc(rate_408=1.0) as bc:
        resp = await bc.http.get(f"{bc.company()}/customers")
        assert resp.status == 408
        assert "error" in await resp.json()


# -- injected faults (common Faults knobs) in BC's error shape ---------------------------------------------
async def test_injected_5xx_use_bc_error_shape_and_retry_after_on_502_503() -> None:
    async with running_bc() as bc:
        resp, _ = await bc.admin("PUT", "faults", json={"rate_5xx": 1.0, "seed": 3, "retry_after_seconds": 2})
        assert resp.status == 200
        seen: set[int] = set()
        for _ in range(24):
            resp = await bc.http.get(f"{bc.company()}/customers")
            body = await resp.json()
            seen.add(resp.status)
            assert set(body["error"]) == {"code", "message"}
            assert "CorrelationId:" in body["error"]["message"]
            if resp.status in (502, 503):
                assert resp.headers["retry-after"] == "2"
            else:
                assert "retry-after" not in resp.headers
        assert seen == {500, 502, 503, 504}
        _, entries = await bc.admin("GET", "requests")
        assert all(e["fault"] == "5xx" for e in entries[-24:])


async def test_injected_429_follows_the_retry_after_form() -> None:
    async with running_bc() as bc:
        url = f"{bc.company()}/customers"
        await bc.admin(
            "PUT", "faults", json={"rate_429": 1.0, "retry_after": "seconds", "retry_after_seconds": 3}
        )
        resp = await bc.http.get(url)
        assert (resp.status, resp.headers["Retry-After"]) == (429, "3")
        assert (await resp.json())["error"]["code"] == "Application_TooManyRequests"
        await bc.admin(
            "PUT", "faults", json={"rate_429": 1.0, "retry_after": "http-date", "retry_after_seconds": 3}
        )
        resp = await bc.http.get(url)
        assert email.utils.parsedate_to_datetime(resp.headers["Retry-After"]) is not None
        await bc.admin("PUT", "faults", json={"rate_429": 1.0, "retry_after": "none"})
        resp = await bc.http.get(url)
        assert resp.status == 429 and "Retry-After" not in resp.headers


async def test_faults_can_target_picture_uploads_only() -> None:
    async with running_bc() as bc:
        await bc.admin("PUT", "faults", json={"rate_5xx": 1.0, "only_routes": ["/picture/{stream}"]})
        assert (await bc.http.get(f"{bc.company()}/customers")).status == 200
        resp = await bc.http.patch(
            f"{bc.company()}/customers({CUST1})/picture/pictureContent", data=b"x", headers={"If-Match": "*"}
        )
        assert resp.status >= 500
