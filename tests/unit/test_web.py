"""The daemon's HTTP endpoint through aiohttp's test client: status page content and escaping, the
thumbnails, /status.json agreeing with `syncd status`, health, readiness and /metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from syncd.ledger import Issue, Ledger
from syncd.metrics import Metrics
from syncd.status import status_data
from syncd.statuspage import Check
from syncd.types import Outcome
from syncd.web import make_app
from tests.support.web import BC_SECRET, EVIL, SO_PASSWORD, FakeSource, jpeg, make_config

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    async with Ledger.open(tmp_path / "ledger.sqlite") as led:
        run = await led.start_run("customers", "incremental")
        await led.finish_run(
            run, {"written": 2, "unchanged": 5, "failed": 1, "unmatched": 1, "ambiguous": 2}, "partial", EVIL
        )
        staff = await led.start_run("staff", "full")
        await led.finish_run(staff, {"written": 0, "unchanged": 3}, "ok")
        await led.replace_issues(
            run,
            "customers",
            [
                Issue(kind="failed", source_id=4, target_ids=("C00004",), detail=f"broken picture {EVIL}"),
                Issue(
                    kind="unmatched",
                    source_id=9,
                    key="c00009",
                    detail="no Business Central record with key 'c00009'",
                ),
                Issue(
                    kind="ambiguous",
                    source_id=3,
                    target_ids=("C00003", "C 00003"),
                    key="<c00003>",
                    detail="two records",
                ),
            ],
        )
        await led.record_many([])
        for sid, colour in ((1, (220, 30, 30)), (2, (30, 30, 220))):
            await led.add_recent_change(
                "customers",
                "contact",
                sid,
                f"C0000{sid}",
                source_thumb=jpeg(colour),
                output_thumb=jpeg((30, 160, 30)),
            )
        yield led


@pytest.fixture
async def source(ledger: Ledger, tmp_path: Path) -> FakeSource:
    return FakeSource(make_config(tmp_path / "ledger.sqlite"), ledger)


@pytest.fixture
async def client(source: FakeSource) -> AsyncIterator[Client]:
    async with TestClient(TestServer(make_app(source))) as c:
        yield c


async def test_status_page_shows_mappings_last_runs_issues_and_recent_changes(
    client: Client, ledger: Ledger
) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    for name in ("customers", "staff", "vendors"):
        assert f'<tr class="mapping" data-mapping="{name}">' in page
    assert "contact → customers" in page and "person → employees" in page
    assert "partial" in page and ">disabled<" in page
    assert "2026-11-27 10:10" in page  # next incremental run
    changes = await ledger.recent_changes()
    for c in changes:
        assert f'src="/thumb/{c.id}/source"' in page and f'src="/thumb/{c.id}/output"' in page
    assert page.count('<figure class="change"') == 2
    assert 'id="failed"' in page and "C00004" in page
    assert 'id="unmatched"' in page and "c00009" in page
    assert 'id="ambiguous"' in page and "C 00003" in page


async def test_everything_from_the_ledger_is_escaped(client: Client) -> None:
    page = await (await client.get("/")).text()
    assert "<script" not in page
    assert "<img src=x" not in page
    assert (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;" in page
    )
    assert "&lt;c00003&gt;" in page


async def test_the_page_forbids_scripts_and_foreign_content(client: Client) -> None:
    resp = await client.get("/")
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "img-src 'self'" in csp and "script-src" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    page = await resp.text()
    assert "http://" not in page.split("<footer>")[0] and "https://" not in page  # no external assets


async def test_config_secrets_never_appear(client: Client) -> None:
    for path in ("/", "/status.json", "/readyz", "/metrics"):
        body = await (await client.get(path)).text()
        assert SO_PASSWORD not in body and BC_SECRET not in body, path


async def test_thumbnails_are_served_as_images_and_unknown_ones_are_404(
    client: Client, ledger: Ledger
) -> None:
    change = (await ledger.recent_changes())[0]
    resp = await client.get(f"/thumb/{change.id}/source")
    assert resp.status == 200 and resp.content_type == "image/jpeg"
    assert await resp.read() == change.source_thumb
    resp = await client.get(f"/thumb/{change.id}/output")
    assert await resp.read() == change.output_thumb
    assert (await client.get("/thumb/999999/source")).status == 404
    assert (await client.get(f"/thumb/{change.id}/config")).status == 404


async def test_status_json_agrees_with_syncd_status(client: Client, ledger: Ledger) -> None:
    data = await (await client.get("/status.json")).json()
    expected = json.loads(json.dumps(await status_data(ledger, str(ledger.path)), default=str))
    for key in ("ledger", "items", "runs", "history", "issues", "companies"):
        assert data[key] == expected[key], key
    assert [r["mapping"] for r in data["runs"]] == ["staff", "customers"]
    assert len(data["recent"]) == 2 and data["recent"][0]["thumbs"]["source"].startswith("/thumb/")
    assert data["mappings"][2] == {
        "name": "vendors",
        "source": "contact",
        "target": "vendors",
        "company": "CRONUS",
        "enabled": False,
        "in_config": True,
        "running": None,
        "next_incremental": "2026-11-27T10:10:00+00:00",
        "next_full": "2026-11-28T03:00:00+00:00",
    }


async def test_a_running_mapping_is_shown_as_running(client: Client, source: FakeSource) -> None:
    source.busy["staff"] = "full"
    page = await (await client.get("/")).text()
    staff_row = page.split('data-mapping="staff"')[1].split("</tr>")[0]
    assert "running (full)" in staff_row


async def test_healthz_is_200_and_readyz_is_503_with_the_reason(client: Client, source: FakeSource) -> None:
    assert (await client.get("/healthz")).status == 200
    source.checks = {
        "config": Check(True, "loaded"),
        "auth": Check(False, "token endpoint said invalid_client"),
    }
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["ready"] is False and body["reason"] == "auth: token endpoint said invalid_client"
    assert body["checks"]["config"] == {"ok": True, "detail": "loaded"}
    source.checks["auth"] = Check(True, "authenticated")
    resp = await client.get("/readyz")
    assert resp.status == 200 and (await resp.json())["ready"] is True


async def test_metrics_endpoint_is_prometheus_text_with_fed_values(
    client: Client, source: FakeSource
) -> None:
    m = source.metrics
    assert m is not None
    m.on_response("businesscentral", "PATCH", 204)
    m.on_response("businesscentral", "PATCH", 204)
    m.on_retry("superoffice", "429")
    m.on_wait("superoffice", 1.5)
    m.run_started("customers")
    m.advance("customers", Outcome.WRITTEN)
    m.normalized(0.02)
    m.run_finished("customers", "incremental", "partial", 3.0, {"written": 1, "unmatched": 4, "patches": 2})
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(await resp.text())
        for s in fam.samples
    }
    assert (
        samples[
            (
                "syncd_http_requests_total",
                (("api", "businesscentral"), ("method", "PATCH"), ("status", "204")),
            )
        ]
        == 2
    )
    assert samples[("syncd_http_retries_total", (("api", "superoffice"), ("reason", "429")))] == 1
    assert samples[("syncd_rate_limit_wait_seconds_total", (("api", "superoffice"),))] == 1.5
    assert (
        samples[("syncd_items_total", (("company", ""), ("mapping", "customers"), ("result", "written")))]
        == 1
    )  # not twice
    assert (
        samples[("syncd_items_total", (("company", ""), ("mapping", "customers"), ("result", "unmatched")))]
        == 4
    )
    assert not any(k[0] == "syncd_items_total" and ("result", "patches") in k[1] for k in samples)
    assert (
        samples[
            (
                "syncd_runs_total",
                (("company", ""), ("mapping", "customers"), ("mode", "incremental"), ("outcome", "partial")),
            )
        ]
        == 1
    )
    assert samples[("syncd_normalize_duration_seconds_count", ())] == 1
    assert samples[("syncd_last_success_timestamp_seconds", (("company", ""), ("mapping", "customers")))] > 0
    assert samples[("syncd_run_in_progress", (("company", ""), ("mapping", "customers")))] == 0


async def test_two_daemons_in_one_process_do_not_share_counters() -> None:
    a, b = Metrics(), Metrics()
    a.on_response("superoffice", "GET", 200)
    assert b"syncd_http_requests_total{" not in b.render()
    assert b'syncd_http_requests_total{api="superoffice",method="GET",status="200"} 1.0' in a.render()


async def test_page_without_a_ledger_yet_says_never_run(tmp_path: Path) -> None:
    src = FakeSource(make_config(tmp_path / "none.sqlite"), None, checks={"ledger": Check(False, "not open")})
    async with TestClient(TestServer(make_app(src))) as c:
        page = await (await c.get("/")).text()
        assert "never run" in page and "not ready" in page and "No pictures written yet." in page
        assert (await c.get("/thumb/1/source")).status == 404
        assert (await c.get("/readyz")).status == 503


async def test_thumbnails_after_a_page_view_do_not_read_the_ledger_again(
    client: Client, ledger: Ledger
) -> None:
    import re

    page = await (await client.get("/")).text()
    urls = re.findall(r'src="(/thumb/\d+/(?:source|output))"', page)
    assert len(urls) == 4
    before = ledger.queries
    for url in urls:
        resp = await client.get(url)
        assert resp.status == 200 and (await resp.read())[:3] == b"\xff\xd8\xff"
    assert ledger.queries == before


async def test_a_mapping_whose_change_detection_fell_back_says_so(client: Client, ledger: Ledger) -> None:
    run = await ledger.start_run("staff", "incremental")
    await ledger.set_change_detection(
        run, "per_record", "fell back to per-record ImageInfo: the Dynamic archive provider answered HTTP 403"
    )
    await ledger.finish_run(run, {"unchanged": 3}, "ok")
    page = await (await client.get("/")).text()
    assert "change detection fell back to per-record ImageInfo: the Dynamic archive provider answered" in page
    assert page.count("fell back to per-record") == 1  # customers used bulk (or nothing): no note there
    status = await (await client.get("/status.json")).json()
    staff = next(r for r in status["runs"] if r["mapping"] == "staff")
    assert staff["change_detection"] == "per_record" and staff["change_detection_fell_back"] is True
