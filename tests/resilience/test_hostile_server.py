"""Issue #13, network half: a hostile or broken server cannot steal credentials, stall a run or exhaust
memory, and a malformed reply fails the item or the run honestly.

Every test goes through the real clients (ApiClient, the SuperOffice and Business Central clients, the
auth, the engine) against a sandbox behind a tampering proxy or a purpose-built server on loopback
(tests/support/hostile.py). Each one failed on the code before the fix (by leaking, looping, or dying with the
ledger saying ``ok``).
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from syncd.auth import BearerAuth, ClientCredentialsAuth
from syncd.businesscentral import BusinessCentralClient
from syncd.config import ApiLimits, load_config, parse_config
from syncd.errors import (
    ApiError,
    AuthError,
    ConfigError,
    ForeignOriginError,
    MalformedReplyError,
    UnreachableError,
)
from syncd.http import ApiClient, new_session
from syncd.jobs import MappingOutcome, run_job
from syncd.ledger import Ledger
from syncd.run import NullReporter, RunOptions
from syncd.runtime import open_runtime
from syncd.sandbox.server import SANDBOX_BC_CLIENT_SECRET, Sandbox
from syncd.secrets import Secret
from syncd.superoffice import SuperOfficeClient
from tests.support.e2e import syncd, write_config
from tests.support.hostile import Hostile, Reply, Seen

RUN_BOUND = 120  # seconds: a run that does not end within this is a loop (the test fails, never hangs)


def customers_only(sb: Sandbox) -> list[dict[str, Any]]:
    return [sb.config()["mappings"][0]]


async def run_once(path: Path, **runtime: Any) -> MappingOutcome:
    config = load_config(path)
    async with open_runtime(config, **runtime) as rt:
        [outcome] = await asyncio.wait_for(run_job(rt, config.mappings, RunOptions()), RUN_BOUND)
    return outcome


async def last_run(path: Path) -> tuple[str | None, str | None]:
    async with await Ledger.open(load_config(path).ledger) as ledger:
        [run] = await ledger.last_runs(limit=1)
    return run.outcome, run.error


def bc_behind(sb: Sandbox, proxy: Hostile, tmp_path: Path, **overrides: Any) -> Path:
    """The sandbox's config with Business Central reached through ``proxy``."""
    return write_config(
        sb,
        tmp_path,
        businesscentral={"base_url": sb.bc_url.replace(sb.bc_origin, proxy.origin), "page_size": 10},
        mappings=customers_only(sb),
        **overrides,
    )


def is_listing(seen: Seen, entity: str = "/customers") -> bool:
    return seen.method == "GET" and seen.path_qs.split("?")[0].endswith(entity)


# -- 1. credentials only to the configured origin ------------------------------------------------------


async def test_a_bc_next_link_to_another_origin_gets_no_request_and_fails_the_run(tmp_path: Path) -> None:
    async with Sandbox(contacts=30, persons=0) as sb, Hostile() as thief:

        def elsewhere(seen: Seen, reply: Reply) -> None:
            if is_listing(seen) and reply.status == 200:
                data = reply.json()
                if "@odata.nextLink" in data:  # BC on-premises behind a TLS proxy: its internal address
                    data["@odata.nextLink"] = data["@odata.nextLink"].replace(proxy.origin, thief.origin)
                    reply.set_json(data)

        async with Hostile(upstream=sb.bc_origin, tamper=elsewhere) as proxy:
            path = bc_behind(sb, proxy, tmp_path)
            outcome = await run_once(path)

        assert thief.seen == [], "a request (with the bearer token) went to the other origin"
        assert isinstance(outcome.error, ForeignOriginError)
        assert thief.origin in outcome.error.message and proxy.origin in outcome.error.message
        assert outcome.error.hint is not None and "TLS proxy" in outcome.error.hint
        assert "7048" in outcome.error.hint
        assert outcome.exit_code == 1
        assert sb.bc.log.count(method="PATCH") == 0
        assert (await last_run(path))[0] == "failed"


async def test_a_media_edit_link_elsewhere_gets_neither_credentials_nor_picture(tmp_path: Path) -> None:
    async with Sandbox(contacts=12, persons=0) as sb, Hostile() as thief:

        def elsewhere(seen: Seen, reply: Reply) -> None:
            if is_listing(seen) and reply.status == 200:
                data = reply.json()
                for row in data["value"]:
                    pic = row.get("picture") or {}
                    pic["pictureContent@odata.mediaEditLink"] = f"{thief.origin}/steal/{row['id']}"
                    row["picture"] = pic
                reply.set_json(data)

        async with Hostile(upstream=sb.bc_origin, tamper=elsewhere) as proxy:
            path = bc_behind(sb, proxy, tmp_path)
            outcome = await run_once(path)

        assert thief.seen == [], "picture bytes or credentials went to the other origin"
        assert outcome.result is not None
        failures = outcome.result.failures
        assert failures and all("not the configured origin" in f.detail for f in failures)
        assert outcome.result.counts.as_dict()["written"] == 0
        assert outcome.exit_code == 2


async def test_a_superoffice_next_link_elsewhere_gets_no_credentials(tmp_path: Path) -> None:
    async with Sandbox(contacts=10, persons=0) as sb, Hostile() as thief:

        def elsewhere(seen: Seen, reply: Reply) -> None:
            if seen.path_qs.startswith("/Cust00001/api/v1/Contact?") and reply.status == 200:
                data = reply.json()
                data["odata.nextLink"] = f"{thief.origin}/Cust00001/api/v1/Contact?$skip=10"
                reply.set_json(data)

        async with Hostile(upstream=sb.so_origin, tamper=elsewhere) as proxy:
            path = write_config(
                sb,
                tmp_path,
                superoffice={"base_url": sb.so_url.replace(sb.so_origin, proxy.origin)},
                mappings=customers_only(sb),
            )
            outcome = await run_once(path)

        assert thief.seen == [], "the SuperOffice Basic credentials went to the other origin"
        assert isinstance(outcome.error, ForeignOriginError)
        assert (await last_run(path))[0] == "failed"


@pytest.mark.slow
async def test_a_base_url_with_user_and_password_is_refused_without_echoing_them(tmp_path: Path) -> None:
    async with Sandbox(contacts=1, persons=0) as sb:
        secret = "hunter2-in-the-url"
        so = sb.so_url.replace("http://", f"http://syncd:{secret}@")
        bc = sb.bc_url.replace("http://", f"http://app:{secret}@")
        path = write_config(sb, tmp_path, superoffice={"base_url": so}, businesscentral={"base_url": bc})
        for command in ("check", "run"):
            args = [command, "-c", str(path)] + (["--once"] if command == "run" else [])
            result = await syncd(*args, timeout=60)
            out = result.stdout + result.stderr
            assert result.code == 1, out
            assert "superoffice.base_url" in out and "businesscentral.base_url" in out
            assert "user name or password" in out
            assert secret not in out and "Traceback" not in out
        assert sb.so.log.count() == 0 and sb.bc.log.count() == 0


def test_no_configured_url_may_carry_user_and_password(tmp_path: Path) -> None:
    secret = "pa55-in-url"
    base = {
        "superoffice": {
            "base_url": "https://online.superoffice.com/Cust1/api/v1",
            "auth": {"type": "basic", "username": "u", "password": "p"},
        },
        "businesscentral": {
            "base_url": "https://api.businesscentral.dynamics.com/v2.0/t/production/api/v2.0",
            "company": "CRONUS",
            "auth": {"type": "client_credentials", "tenant_id": "t", "client_id": "c", "client_secret": "s"},
        },
        "mappings": [{"name": "m", "source": "contact", "target": "customers", "pairs": {"1": "C1"}}],
    }
    parse_config(yaml.safe_dump(base))  # the same config without credentials in a URL is fine
    bad = copy.deepcopy(base)
    bad["businesscentral"]["auth"]["token_url"] = f"https://x:{secret}@login.example.com/t/oauth2/v2.0/token"
    bad["superoffice"]["state_url"] = f"https://x:{secret}@online.superoffice.com/api/state"
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(bad))
    assert "businesscentral.auth.token_url" in caught.value.message
    assert "superoffice.state_url" in caught.value.message
    assert secret not in str(caught.value)


# -- 3. every run ends -------------------------------------------------------------------------------


async def test_a_bc_next_link_that_repeats_itself_ends_the_run(tmp_path: Path) -> None:
    async with Sandbox(contacts=30, persons=0) as sb:

        def loop(seen: Seen, reply: Reply) -> None:
            if is_listing(seen) and reply.status == 200:
                data = reply.json()
                data["@odata.nextLink"] = proxy.origin + seen.path_qs  # "the next page is this page"
                reply.set_json(data)

        async with Hostile(upstream=sb.bc_origin, tamper=loop) as proxy:
            path = bc_behind(sb, proxy, tmp_path)
            outcome = await run_once(path)
            listed = len([s for s in proxy.seen if is_listing(s)])

        assert isinstance(outcome.error, ApiError)
        assert "already read" in outcome.error.message and "never end" in outcome.error.message
        assert listed == 1  # refused before asking again
        assert (await last_run(path))[0] == "failed"


async def test_a_superoffice_that_ignores_the_paging_ends_the_run(tmp_path: Path) -> None:
    async with Sandbox(contacts=30, persons=0) as sb:

        def drop_paging(seen: Seen) -> str:  # a proxy that loses $filter/$skip: page one, forever
            path, _, query = seen.path_qs.partition("?")
            lost = ("$skip=", "%24skip=", "$filter=", "%24filter=")
            kept = [p for p in query.split("&") if not p.startswith(lost)]
            return path + ("?" + "&".join(kept) if kept else "")

        async with Hostile(upstream=sb.so_origin, alter_request=drop_paging) as proxy:
            path = write_config(
                sb,
                tmp_path,
                superoffice={"base_url": sb.so_url.replace(sb.so_origin, proxy.origin), "page_size": 5},
                mappings=customers_only(sb),
            )
            outcome = await run_once(path)
            pages = len(proxy.requests("GET", "/api/v1/Contact?"))

        assert isinstance(outcome.error, ApiError)
        assert "ignores the paging" in outcome.error.message
        assert pages == 2
        assert sb.bc.log.count(method="PATCH") == 0


def endless_bc(rows_per_page: int = 1, delay: float = 0.0) -> Any:
    """A Business Central that has one company and a customers listing without end: every page brings
    new records and a new next link."""

    async def handle(seen: Seen, n: int) -> web.StreamResponse:
        path = seen.path_qs.split("?")[0]
        if path.endswith("/companies"):
            return web.json_response(
                {"value": [{"id": "c0ffee00-0000-0000-0000-000000000001", "name": "CRONUS"}]}
            )
        if delay:
            await asyncio.sleep(delay)
        page = int(seen.path_qs.rsplit("page=", 1)[1]) if "page=" in seen.path_qs else 0
        base = seen.path_qs.split("?")[0]
        rows = [
            {
                "id": f"00000000-0000-0000-0000-{page * rows_per_page + i:012d}",
                "number": str(page),
                "picture": None,
            }
            for i in range(rows_per_page)
        ]
        return web.json_response(
            {"value": rows, "@odata.nextLink": f"{origin_of(seen)}{base}?page={page + 1}"}
        )

    return handle


def origin_of(seen: Seen) -> str:
    return "http://" + seen.headers["Host"]


async def test_a_listing_stops_after_max_pages() -> None:
    async with Hostile(handler=endless_bc()) as server, new_session() as session:
        base = f"{server.origin}/v2.0/t/production/api/v2.0"
        limits = ApiLimits(requests_per_second=1000, concurrency=4, max_pages=25)
        api = ApiClient(
            api="businesscentral",
            session=session,
            auth=BearerAuth(token=Secret("t0ken"), app_token=None),
            limits=limits,
            base_url=base,
        )
        client = BusinessCentralClient(api, base, "CRONUS")
        listed = 0
        with pytest.raises(ApiError, match="more than 25 pages"):
            async with asyncio.timeout(RUN_BOUND):
                async for _ in client.list("customers", []):
                    listed += 1
        assert listed == 25
        assert len(server.seen) == 26  # the companies and 25 pages


async def test_a_listing_of_empty_pages_that_always_names_a_next_one_ends() -> None:
    async with Hostile(handler=endless_bc(rows_per_page=0)) as server, new_session() as session:
        base = f"{server.origin}/v2.0/t/production/api/v2.0"
        api = ApiClient(
            api="businesscentral",
            session=session,
            auth=BearerAuth(token=Secret("t0ken"), app_token=None),
            limits=ApiLimits(requests_per_second=1000, concurrency=4),
            base_url=base,
        )
        client = BusinessCentralClient(api, base, "CRONUS")
        with pytest.raises(ApiError, match="empty pages in a row"):
            async with asyncio.timeout(RUN_BOUND):
                async for _ in client.list("customers", []):
                    pass
        assert len(server.seen) <= 60


@pytest.mark.slow
async def test_max_runtime_and_the_stop_event_end_a_listing_that_does_not(tmp_path: Path) -> None:
    async with Sandbox(contacts=5, persons=0) as sb, Hostile(handler=endless_bc(delay=0.01)) as server:
        path = write_config(
            sb,
            tmp_path,
            businesscentral={"base_url": f"{server.origin}/v2.0/t/production/api/v2.0"},
            limits={"max_runtime": "1s"},
            mappings=customers_only(sb),
        )
        outcome = await run_once(path)
        assert outcome.result is not None and outcome.error is None
        assert outcome.result.outcome == "budget"
        assert "max_runtime" in (outcome.result.error or "") and "listing" in (outcome.result.error or "")
        assert (await last_run(path))[0] == "budget"

        # The stop event (SIGTERM, the daemon shutting down) ends it too, without max_runtime.
        path = write_config(
            sb,
            tmp_path,
            name="stop.yaml",
            businesscentral={"base_url": f"{server.origin}/v2.0/t/production/api/v2.0"},
            mappings=customers_only(sb),
        )
        stop = asyncio.Event()
        before = len(server.seen)

        async def stop_later() -> None:
            while len(server.seen) < before + 20:
                await asyncio.sleep(0.01)
            stop.set()

        stopper = asyncio.ensure_future(stop_later())
        outcome = await run_once(path, stop=stop)
        await stopper
        assert outcome.result is not None and outcome.result.outcome == "interrupted"


async def test_a_stalled_imageinfo_request_does_not_hold_the_run_past_max_runtime(tmp_path: Path) -> None:
    async with Sandbox(contacts=10, persons=0) as sb:

        def stall(seen: Seen) -> float:  # every ImageInfo hangs far longer than max_runtime
            return 3600.0 if "/ImageInfo" in seen.path_qs else 0.0

        async with Hostile(upstream=sb.so_origin, delay=stall) as proxy:
            path = write_config(
                sb,
                tmp_path,
                superoffice={
                    "base_url": sb.so_url.replace(sb.so_origin, proxy.origin),
                    "change_detection": "per_record",  # phase A's ImageInfo reads are what stalls
                },
                limits={"max_runtime": "2s"},
                mappings=customers_only(sb),
            )
            outcome = await run_once(path)  # within RUN_BOUND, not the hour (nor timeout × retries)

        assert outcome.result is not None and outcome.error is None
        assert outcome.result.outcome == "budget" and "while checking" in (outcome.result.error or "")
        assert proxy.requests(containing="/ImageInfo")  # it was in phase A, waiting on the stalled reads
        assert sb.bc.log.count(method="PATCH") == 0


class JumpingClock:
    """The engine's clock: real time until ``jump()``, then ten hours later (max_runtime long gone)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


class CheckCounter(NullReporter):
    def __init__(self, clock: JumpingClock, after: int) -> None:
        self.clock, self.after, self.n = clock, after, 0

    def checked(self, mapping: str) -> None:
        self.n += 1
        if self.n == self.after:
            self.clock.offset = 36_000.0


async def test_max_runtime_is_honoured_while_checking_pictures(tmp_path: Path) -> None:
    async with Sandbox(contacts=40, persons=0) as sb:
        path = write_config(
            sb,
            tmp_path,
            superoffice={"limits": {"concurrency": 1}, "change_detection": "per_record"},
            limits={"max_runtime": "1h"},
            mappings=customers_only(sb),
        )
        clock = JumpingClock()
        reporter = CheckCounter(clock, after=3)
        config = load_config(path)
        async with open_runtime(config, reporter=reporter) as rt:
            rt.engine.clock = clock
            [outcome] = await asyncio.wait_for(run_job(rt, config.mappings, RunOptions()), RUN_BOUND)
        assert outcome.result is not None
        assert outcome.result.outcome == "budget"
        assert "while checking" in (outcome.result.error or "")
        assert reporter.n <= 4
        assert sb.so.log.count(route_contains="ImageInfo") <= 4  # not the 40 of a run that carries on
        assert sb.bc.log.count(method="PATCH") == 0


# -- 4. every reply is bounded, after decompression ----------------------------------------------------


BOMB = gzip.compress(b"{" + b" " * 40_000_000 + b"}", compresslevel=9)  # ~40 KB on the wire, 40 MB inflated


def bomb_server(status: int = 200) -> Any:
    async def handle(seen: Seen, n: int) -> web.StreamResponse:
        return web.Response(
            status=status,
            body=BOMB,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    return handle


async def test_a_gzip_bomb_is_refused_after_decompression_within_bounded_memory() -> None:
    assert len(BOMB) < 100_000
    async with Hostile(handler=bomb_server()) as server, new_session() as session:
        base = f"{server.origin}/v2.0/t/production/api/v2.0"
        api = ApiClient(
            api="businesscentral",
            session=session,
            auth=BearerAuth(token=Secret("t0ken"), app_token=None),
            limits=ApiLimits(requests_per_second=1000, concurrency=4, max_retries=0),
            base_url=base,
        )
        client = BusinessCentralClient(api, base, "CRONUS")
        tracemalloc.start()
        try:
            with pytest.raises(ApiError, match=r"larger than 1000000 bytes \(after decompression\)"):
                await client.resolve_company()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 8_000_000, f"{peak} bytes held for a 1 MB cap"

        # A listing page has its own (configurable) cap, counted the same way.
        client.company_id = "c0ffee00-0000-0000-0000-000000000001"
        with pytest.raises(ApiError, match=r"larger than 1000000 bytes"):
            api.limits = ApiLimits(
                requests_per_second=1000, concurrency=4, max_retries=0, max_page_bytes="1MB"
            )
            async for _ in client.list("customers", []):
                pass


async def test_an_error_reply_bomb_is_cut_not_inflated() -> None:
    async with Hostile(handler=bomb_server(status=500)) as server, new_session() as session:
        base = f"{server.origin}/v2.0/t/production/api/v2.0"
        api = ApiClient(
            api="businesscentral",
            session=session,
            auth=BearerAuth(token=Secret("t0ken"), app_token=None),
            limits=ApiLimits(requests_per_second=1000, concurrency=4, max_retries=0),
            base_url=base,
        )
        tracemalloc.start()
        try:
            with pytest.raises(Exception) as caught:
                await api.request("GET", f"{base}/companies", what="list companies")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert "HTTP 500" in str(caught.value)
        assert peak < 4_000_000


async def test_a_deflate_bomb_as_a_picture_is_bounded_by_max_image_bytes() -> None:
    bomb = zlib.compress(b"\x89PNG" + b"\0" * 30_000_000, 9)

    async def picture(seen: Seen, n: int) -> web.StreamResponse:
        return web.Response(body=bomb, headers={"Content-Encoding": "deflate", "Content-Type": "image/png"})

    async with Hostile(handler=picture) as server, new_session() as session:
        base = f"{server.origin}/Cust1/api/v1"
        api = ApiClient(
            api="superoffice",
            session=session,
            auth=BearerAuth(token=Secret("8A:t0ken"), app_token=None),
            limits=ApiLimits(requests_per_second=1000, concurrency=4, max_retries=0),
            base_url=base,
        )
        source = SuperOfficeClient(api, base, max_image_bytes=5_000_000)
        tracemalloc.start()
        try:
            with pytest.raises(ApiError, match=r"larger than 5000000 bytes \(after decompression\)"):
                await source.image("contact", 1)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 15_000_000


async def test_a_token_endpoint_bomb_is_refused() -> None:
    async with Hostile(handler=bomb_server()) as server, new_session() as session:
        auth = ClientCredentialsAuth(
            tenant_id="t",
            client_id="c",
            client_secret=Secret(SANDBOX_BC_CLIENT_SECRET),
            token_url=f"{server.origin}/t/oauth2/v2.0/token",
            attempts=1,
        )
        with pytest.raises(AuthError, match="larger than"):
            await auth.headers(session)


async def test_a_token_endpoint_that_redirects_gets_no_second_request_and_the_secret_goes_nowhere() -> None:
    # Token requests go through the shared client: a redirect is not followed, so the client secret in
    # the POST body is never sent to where the redirect points.
    async with Hostile() as elsewhere:

        async def redirect(seen: Seen, n: int) -> web.StreamResponse:
            return web.Response(status=307, headers={"Location": f"{elsewhere.origin}/steal"})

        async with Hostile(handler=redirect) as server, new_session() as session:
            auth = ClientCredentialsAuth(
                tenant_id="t",
                client_id="c",
                client_secret=Secret(SANDBOX_BC_CLIENT_SECRET),
                token_url=f"{server.origin}/t/oauth2/v2.0/token",
                attempts=1,
            )
            with pytest.raises(AuthError) as info:
                await auth.headers(session)
    assert len(server.seen) == 1 and elsewhere.seen == []
    assert SANDBOX_BC_CLIENT_SECRET not in str(info.value)


async def test_a_token_endpoint_that_asks_to_wait_for_ever_fails_at_once() -> None:
    async def busy(seen: Seen, n: int) -> web.StreamResponse:
        return web.Response(status=503, headers={"Retry-After": "86400"})

    async with Hostile(handler=busy) as server, new_session() as session:
        auth = ClientCredentialsAuth(
            tenant_id="t",
            client_id="c",
            client_secret=Secret(SANDBOX_BC_CLIENT_SECRET),
            token_url=f"{server.origin}/t/oauth2/v2.0/token",
            attempts=3,
        )
        # a hang (sleeping the day away) fails the test instead of holding it
        async with asyncio.timeout(120):
            with pytest.raises(UnreachableError, match="86400s"):
                await auth.headers(session)
    assert len(server.seen) == 1  # no retry of a wait longer than limits.max_retry_wait


# -- 6. a malformed reply fails the item or the run honestly --------------------------------------------


async def test_malformed_bc_records_are_skipped_and_reported_the_rest_syncs(tmp_path: Path) -> None:
    async with Sandbox(contacts=20, persons=0) as sb:
        broken: list[str] = []

        def spoil(seen: Seen, reply: Reply) -> None:
            if is_listing(seen) and reply.status == 200:
                data = reply.json()
                rows = data["value"]
                if rows and not broken:
                    rows[0].setdefault("picture", {})
                    rows[0]["picture"] = {**(rows[0]["picture"] or {}), "width": "wide"}
                    rows[1]["picture"] = {
                        **(rows[1].get("picture") or {}),
                        "@odata.etag": 'W/"x"\r\nX-Evil: 1',
                    }
                    rows[2]["displayName"] = {"first": "a", "last": "b"}
                    rows[3]["id"] = {"guid": rows[3]["id"]}
                    broken.extend(str(r.get("number")) for r in rows[:4])
                reply.set_json(data)

        async with Hostile(upstream=sb.bc_origin, tamper=spoil) as proxy:
            path = bc_behind(sb, proxy, tmp_path)
            outcome = await run_once(path)

        assert outcome.error is None and outcome.result is not None
        result = outcome.result
        details = " | ".join(f.detail for f in result.failures)
        assert "width 'wide' is not a number" in details
        assert "etag" in details and "displayName is not text" in details and "no usable id" in details
        assert result.counts.as_dict()["written"] > 5
        assert result.outcome == "partial" and outcome.exit_code == 2
        assert (await last_run(path))[0] == "partial"


async def test_malformed_superoffice_rows_are_skipped_and_reported(tmp_path: Path) -> None:
    async with Sandbox(contacts=20, persons=0) as sb:

        def spoil(seen: Seen, reply: Reply) -> None:
            if seen.path_qs.startswith("/Cust00001/api/v1/Contact?") and reply.status == 200:
                data = reply.json()
                if data["value"]:
                    data["value"][0]["PrimaryKey"] = {"id": data["value"][0]["PrimaryKey"]}
                    data["value"][1]["code"] = {"DisplayValue": {"nested": ["x"]}}
                    data["value"].append("not a row")
                reply.set_json(data)

        async with Hostile(upstream=sb.so_origin, tamper=spoil) as proxy:
            path = write_config(
                sb,
                tmp_path,
                superoffice={"base_url": sb.so_url.replace(sb.so_origin, proxy.origin)},
                mappings=customers_only(sb),
            )
            outcome = await run_once(path)

        assert outcome.error is None and outcome.result is not None
        skipped = [f for f in outcome.result.failures if "SuperOffice contact row skipped" in f.detail]
        assert len(skipped) == 2  # the dict id and the string; the odd column value is only text
        assert outcome.result.counts.as_dict()["written"] > 5
        assert (await last_run(path))[0] == "partial"


async def test_an_imageinfo_that_is_no_blob_entity_is_not_taken_for_a_blank() -> None:
    """A list (or a number) from ImageInfo is neither a picture's identity nor the documented "no
    image": the item is decided by downloading the picture instead (never cleared on it)."""

    async def info(seen: Seen, n: int) -> web.StreamResponse:
        return web.json_response([{"BlobId": 0}] if n == 0 else 7)

    async with Hostile(handler=info) as server, new_session() as session:
        base = f"{server.origin}/Cust1/api/v1"
        api = ApiClient(
            api="superoffice",
            session=session,
            auth=BearerAuth(token=Secret("8A:t0ken"), app_token=None),
            limits=ApiLimits(requests_per_second=1000, concurrency=4),
            base_url=base,
        )
        source = SuperOfficeClient(api, base, max_image_bytes=1_000_000)
        for _ in range(2):
            with pytest.raises(MalformedReplyError, match="not a BlobEntity"):
                await source.fingerprint("contact", 1)


async def test_deeply_nested_json_fails_the_run_and_the_ledger_says_so(tmp_path: Path) -> None:
    async with Sandbox(contacts=5, persons=0) as sb:

        def nest(seen: Seen, reply: Reply) -> None:
            if is_listing(seen):  # the customers listing, read inside the run
                reply.body = b"[" * 100_000 + b"]" * 100_000

        async with Hostile(upstream=sb.bc_origin, tamper=nest) as proxy:
            path = bc_behind(sb, proxy, tmp_path)
            outcome = await run_once(path)

        assert isinstance(outcome.error, MalformedReplyError)
        assert "nested too deeply" in outcome.error.message
        outcome_recorded, error = await last_run(path)
        assert outcome_recorded == "failed" and error and "nested too deeply" in error


async def test_anything_unexpected_marks_the_run_failed_not_ok(tmp_path: Path) -> None:
    async with Sandbox(contacts=5, persons=0) as sb:
        path = write_config(
            sb, tmp_path, superoffice={"change_detection": "per_record"}, mappings=customers_only(sb)
        )
        config = load_config(path)
        async with open_runtime(config) as rt:

            async def broken(*args: Any, **kwargs: Any) -> str | None:
                raise KeyError("a reply nobody foresaw")

            rt.source.fingerprint = broken  # type: ignore[method-assign]
            with pytest.raises(KeyError):
                await run_job(rt, config.mappings, RunOptions())
        outcome, error = await last_run(path)
        assert outcome == "failed"
        assert error is not None and "KeyError" in error and "a reply nobody foresaw" in error


# -- 10. `syncd check` on a host that is not SuperOffice's ---------------------------------------------


@pytest.mark.slow
async def test_check_does_not_take_a_missing_state_service_for_an_unknown_tenant(tmp_path: Path) -> None:
    async with Sandbox(contacts=3, persons=3) as sb:

        def no_state(seen: Seen, reply: Reply) -> web.StreamResponse | None:
            if seen.path_qs.startswith("/api/state"):  # a reverse proxy or an onsite server: no such route
                return web.Response(status=404, text="Not Found")
            return None

        async with Hostile(upstream=sb.so_origin, tamper=no_state) as proxy:
            so_url = sb.so_url.replace(sb.so_origin, proxy.origin)
            path = write_config(sb, tmp_path, superoffice={"base_url": so_url})
            result = await syncd("check", "-c", str(path), timeout=90)
            assert result.code == 0, result.stdout + result.stderr
            assert "not found" not in result.stdout
            assert "contacts: read one page" in result.stdout
            assert proxy.requests(containing="/api/state") == [], "probed a host that is not SuperOffice's"

            # Even where a state service is named (superoffice.state_url), a 404 is no information.
            path = write_config(
                sb,
                tmp_path,
                name="state.yaml",
                superoffice={"base_url": so_url, "state_url": f"{proxy.origin}/api/state"},
            )
            result = await syncd("check", "-c", str(path), timeout=90)
            assert result.code == 0, result.stdout + result.stderr
            assert len(proxy.requests(containing="/api/state/Cust00001")) == 1
