"""The daemon (`syncd run` without --once): readiness, watchdog, reload, stop, health and metrics.

Most tests start the real daemon as a SUBPROCESS (``python -m syncd run -c FILE``) against an in-process
sandbox, with a datagram socket standing in for systemd's ``$NOTIFY_SOCKET``. The test's event loop
keeps serving the sandbox meanwhile: only asyncio subprocess calls and async waits here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from syncd.config import load_config
from syncd.jobs import run_job
from syncd.ledger import Ledger
from syncd.locks import MappingLock
from syncd.run import RunOptions
from syncd.runtime import open_runtime
from syncd.sandbox.common import Faults
from syncd.sandbox.server import Sandbox
from syncd.types import Outcome
from tests.support.config import WriteConfig
from tests.support.daemon import (
    CUSTOMERS_ONLY,
    PATCH_ROUTE,
    FakeSystemd,
    arrivals,
    eventually,
    get,
    overrides,
    slow_writes_after_listing,
)


@pytest.mark.slow
async def test_ready_comes_after_authenticating_on_both_sides_then_the_watchdog_pings(
    make_sandbox: Any, write_config: WriteConfig, systemd: FakeSystemd, spawn: Any
) -> None:
    sb: Sandbox = await make_sandbox(contacts=12, persons=12)
    cfg = write_config(sb, **overrides(schedule={"interval": "1h"}, **CUSTOMERS_ONLY))
    daemon = await spawn(cfg, {"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "1000000"})

    ready = await systemd.wait_for("READY=1")
    ready_at = systemd.messages[ready][0]
    token = [e for e in sb.bc.log.entries if "oauth2" in e.route and e.status == 200]
    companies = [e for e in sb.bc.log.entries if e.route.endswith("/companies") and e.status == 200]
    so_reads = [e for e in sb.so.log.entries if e.method == "GET" and e.status == 200]
    assert token and token[0].finished <= ready_at, "READY before the Entra token was issued"
    assert companies and companies[0].finished <= ready_at, "READY before Business Central was read"
    assert so_reads and so_reads[0].finished <= ready_at, "READY before SuperOffice was read"
    assert not any(e.method == "PATCH" and e.started < ready_at for e in sb.bc.log.entries)

    # The watchdog is pinged every WATCHDOG_USEC/2 from the event loop, READY or not. Measured over
    # three gaps (the mean), so that one ping read late by a busy test process cannot tip the bounds;
    # the upper bound is the point: systemd would kill a daemon whose pings are over 1 s apart.
    seen = ready
    for _ in range(4):
        seen = await systemd.wait_for("WATCHDOG=1", after=seen + 1)
    pings = [t for t, m in systemd.messages[ready:] if m == "WATCHDOG=1"][:4]
    assert 0.3 < (pings[3] - pings[0]) / 3 < 1.0  # ~0.5 s apart (half of 1 s)

    port = await daemon.port()
    assert (await get(port, "/healthz"))[0] == 200
    status, body = await get(port, "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True

    await daemon.wait_log("run finished", mapping="customers")
    await eventually(lambda: any(m.startswith("STATUS=customers") for _, m in systemd.messages), 5, "STATUS")
    status_line = next(m for _, m in systemd.messages if m.startswith("STATUS=customers"))
    assert " ok " in status_line and "written" in status_line

    daemon.signal(signal.SIGTERM)
    assert await daemon.wait() == 0
    assert systemd.index("STOPPING=1") is not None


@pytest.mark.slow
async def test_bad_credentials_at_startup_exit_5_and_never_signal_ready(
    make_sandbox: Any, write_config: WriteConfig, systemd: FakeSystemd, spawn: Any
) -> None:
    sb: Sandbox = await make_sandbox(contacts=5, persons=5)
    cfg = write_config(sb, **overrides(businesscentral={"auth": {"client_secret": "wrong-secret"}}))
    daemon = await spawn(cfg, {"NOTIFY_SOCKET": systemd.path})
    assert await daemon.wait() == 5
    failure = daemon.find("authentication failed; not retrying (systemd will not restart on exit 5)")
    assert failure, daemon.tail()
    assert "wrong-secret" not in json.dumps(daemon.logs)
    # Datagrams on the notify socket arrive in order: once this marker is read, so is everything the
    # daemon sent before it exited.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as marker:
        marker.sendto(b"TEST=all read", systemd.path)
    await systemd.wait_for("TEST=all read", timeout=10)
    assert systemd.index("READY=1") is None
    assert sb.bc.log.count(method="PATCH") == 0


# -- SIGHUP ---------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_sighup_with_an_added_mapping_takes_effect(
    make_sandbox: Any, write_config: WriteConfig, systemd: FakeSystemd, spawn: Any
) -> None:
    sb: Sandbox = await make_sandbox(contacts=12, persons=12)
    cfg = write_config(sb, **overrides(schedule={"interval": "1h"}, **CUSTOMERS_ONLY))
    daemon = await spawn(cfg, {"NOTIFY_SOCKET": systemd.path})
    await daemon.wait_log("run finished", mapping="customers")
    assert sb.so.log.count(route_contains="Person") == 0

    write_config(sb, **overrides(schedule={"interval": "1h"}))  # customers + staff
    before = len(systemd.messages)
    daemon.signal(signal.SIGHUP)
    reloading = await systemd.wait_for("RELOADING=1", after=before)
    await systemd.wait_for("READY=1", after=reloading)
    await daemon.wait_log("config reloaded")
    await daemon.wait_log("run finished", mapping="staff")
    assert sb.so.log.count(route_contains="Person") > 0
    assert sb.bc.log.count(method="PATCH", route_contains=PATCH_ROUTE, status=204) > 0
    assert len(daemon.find("run finished", mapping="customers")) == 1, "an unchanged mapping was re-run"

    daemon.signal(signal.SIGTERM)
    assert await daemon.wait() == 0


@pytest.mark.slow
async def test_sighup_with_a_broken_config_keeps_the_old_one_running(
    make_sandbox: Any, write_config: WriteConfig, systemd: FakeSystemd, spawn: Any
) -> None:
    sb: Sandbox = await make_sandbox(contacts=8, persons=8)
    cfg = write_config(sb, **overrides(schedule={"interval": "1s"}, **CUSTOMERS_ONLY))
    daemon = await spawn(cfg, {"NOTIFY_SOCKET": systemd.path})
    port = await daemon.port()
    await daemon.wait_log("run finished", mapping="customers")

    cfg.write_text(cfg.read_text().replace("match:", "matchh:"))  # a key the config does not know
    before = len(systemd.messages)
    daemon.signal(signal.SIGHUP)
    rejected = await daemon.wait_log("reload rejected; the running config stays in effect")
    assert "matchh" in rejected["error"]
    reloading = await systemd.wait_for("RELOADING=1", after=before)
    ready = await systemd.wait_for("READY=1", after=reloading)
    assert "reload rejected" in systemd.messages[ready][1]

    mark = len(daemon.logs)
    assert (await get(port, "/healthz"))[0] == 200
    assert (await get(port, "/readyz"))[0] == 200
    await daemon.wait_log("run finished", after=mark, mapping="customers", timeout=10)  # still syncing
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait() == 0


# -- stopping -------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_sigterm_mid_run_exits_0_and_the_next_run_redoes_nothing_committed(
    make_sandbox: Any, write_config: WriteConfig, systemd: FakeSystemd, spawn: Any, tmp_path: Path
) -> None:
    sb: Sandbox = await make_sandbox(contacts=24, persons=5)
    cfg = write_config(sb, **overrides(**CUSTOMERS_ONLY))
    daemon = await spawn(cfg, {"NOTIFY_SOCKET": systemd.path})
    await slow_writes_after_listing(sb, 250)  # so that the stop comes mid-run
    await eventually(lambda: sb.bc.log.count(method="PATCH") >= 5, 30, "some pictures written")
    daemon.signal(signal.SIGTERM)
    started = time.monotonic()
    assert await daemon.wait(timeout=25) == 0
    # The point of the test: the run stopped by itself within shutdown_timeout (default 20 s) rather
    # than being abandoned at its end; the writes in flight take 0.25 s.
    assert time.monotonic() - started < 20
    assert systemd.index("STOPPING=1") is not None
    first_run = {e.path for e in sb.bc.log.entries if e.method == "PATCH" and e.status == 204}

    async with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        assert await ledger.integrity_check() == "ok"
        runs = await ledger.last_runs("customers")
        assert runs[0].outcome == "interrupted" and runs[0].finished_at is not None
        items = [i async for i in ledger.iter_items("customers")]
    committed = [i for i in items if i.status == "written"]
    assert len(committed) == len(first_run), "every picture written was committed to the ledger"

    sb.bc.fault_state.set(Faults())
    mark = len(sb.bc.log.entries)
    config = load_config(cfg)
    async with open_runtime(config) as rt:
        [outcome] = await run_job(rt, config.mappings, RunOptions())
    assert outcome.result is not None
    second_run = {e.path for e in sb.bc.log.entries[mark:] if e.method == "PATCH"}
    assert second_run, "the stop came mid-run: some pictures were left for the next run"
    assert not first_run & second_run, "the next run wrote a picture again that was already committed"
    assert outcome.result.counts.by_outcome[Outcome.UNCHANGED] >= len(first_run)


@pytest.mark.slow
async def test_a_second_sigint_exits_at_once_with_a_consistent_ledger(
    make_sandbox: Any, write_config: WriteConfig, spawn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb: Sandbox = await make_sandbox(contacts=20, persons=5)
    arrived = arrivals(sb, monkeypatch)
    cfg = write_config(sb, **overrides(**CUSTOMERS_ONLY))
    daemon = await spawn(cfg)
    await slow_writes_after_listing(sb, 6000)  # the PATCHes hang
    await eventually(lambda: any(PATCH_ROUTE in r for r in arrived), 20, "a PATCH on the wire")
    daemon.signal(signal.SIGINT)
    await daemon.wait_log("stopping")
    started = time.monotonic()
    daemon.signal(signal.SIGINT)
    assert await daemon.wait(timeout=15) == 130
    # The point of the test, so an upper bound: a process exit, generous for a loaded machine, yet
    # neither the PATCHes' 6 s nor the 20 s shutdown_timeout.
    assert time.monotonic() - started < 4.5
    async with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        assert await ledger.integrity_check() == "ok"
        # reopening marked the run the killed process left behind
        assert (await ledger.last_runs("customers"))[0].outcome == "interrupted"


async def finished_runs(ledger_path: Path, mapping: str) -> int:
    async with Ledger.open(ledger_path, readonly=True) as ledger:
        return sum(1 for r in await ledger.last_runs(mapping, limit=1000) if r.finished_at)


async def test_readyz_is_503_with_a_reason_until_started_while_healthz_is_200(
    make_sandbox: Any, write_config: WriteConfig, in_process: Any
) -> None:
    sb: Sandbox = await make_sandbox(contacts=5, persons=5)
    sb.bc.fault_state.set(Faults(latency_ms=1500))  # a slow startup probe
    d = in_process(write_config(sb, **overrides(**CUSTOMERS_ONLY)))
    await eventually(lambda: d.daemon.web.port != 0, 10, "listening")
    port = d.daemon.web.port
    assert (await get(port, "/healthz"))[0] == 200
    status, body = await get(port, "/readyz")
    assert status == 503
    reply = json.loads(body)
    assert reply["ready"] is False and "auth" in reply["reason"]
    assert reply["checks"]["ledger"]["ok"] is False  # not open before the probe either
    sb.bc.fault_state.set(Faults())
    await d.ready()
    status, body = await get(port, "/readyz")
    assert status == 200, body
    assert await d.stop() == 0


async def test_stop_abandons_items_still_in_flight_after_shutdown_timeout(
    make_sandbox: Any,
    write_config: WriteConfig,
    in_process: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sb: Sandbox = await make_sandbox(contacts=12, persons=5)
    arrived = arrivals(sb, monkeypatch)
    d = in_process(write_config(sb, shutdown_timeout="0.3s", **overrides(**CUSTOMERS_ONLY)))
    await d.ready()
    await slow_writes_after_listing(sb, 6000)  # each write takes 6 s
    await eventually(lambda: any(PATCH_ROUTE in r for r in arrived), 20, "a PATCH on the wire")
    started = time.monotonic()
    assert await d.stop() == 0
    # The point of the test, so an upper bound: 0.3 s shutdown_timeout plus cancelling, generous for a
    # loaded machine, yet well short of the writes' 6 s.
    assert time.monotonic() - started < 4.5, "waited for the writes instead of abandoning them"
    async with Ledger.open(tmp_path / "ledger.sqlite", readonly=True) as ledger:
        assert await ledger.integrity_check() == "ok"
        run = (await ledger.last_runs("customers"))[0]
        assert run.outcome == "interrupted" and run.finished_at is not None
        assert run.counts.get("written", 0) == 0


async def test_a_mapping_locked_by_another_process_is_logged_with_its_holder_and_retried(
    make_sandbox: Any, write_config: WriteConfig, in_process: Any, tmp_path: Path
) -> None:
    sb: Sandbox = await make_sandbox(contacts=5, persons=5)
    cfg = write_config(sb, **overrides(schedule={"interval": "1s"}, **CUSTOMERS_ONLY))
    lock = MappingLock(tmp_path / "ledger.sqlite", "customers", command="syncd run")
    await lock.acquire()  # what a `syncd run --once` in progress holds
    with structlog.testing.capture_logs() as logs:
        d = in_process(cfg)
        await d.ready()
        await eventually(
            lambda: len([e for e in logs if "locked" in e["event"]]) >= 2, 10, "two locked ticks"
        )
        assert sb.bc.log.count(method="PATCH") == 0
        await lock.release()
        await eventually(lambda: any(e["event"] == "run finished" for e in logs), 10, "a run after release")
    locked = next(e for e in logs if "locked" in e["event"])
    assert locked["log_level"] == "warning"
    assert f"pid {os.getpid()}" in locked["holder"] and "syncd run" in locked["holder"]
    assert locked["next_try"]
    assert sb.bc.log.count(method="PATCH") > 0
    assert await d.stop() == 0


async def test_metrics_counters_agree_with_the_sandboxs_own_counts(
    sandbox: Sandbox, write_config: WriteConfig, in_process: Any, tmp_path: Path
) -> None:
    d = in_process(write_config(sandbox, **overrides(schedule={"interval": "1h"})))
    await d.ready()
    ledger_path = tmp_path / "ledger.sqlite"
    await eventually(lambda: len(d.daemon.last_outcomes()) == 2 and not d.daemon.running(), 30, "first runs")
    assert await finished_runs(ledger_path, "customers") == 1

    status, text = await get(d.daemon.web.port, "/metrics")
    assert status == 200
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    def total(name: str, **labels: str) -> float:
        return sum(v for (n, lbl), v in samples.items() if n == name and set(labels.items()) <= lbl)

    sb_patch_204 = sandbox.bc.log.count(method="PATCH", status=204)
    assert sb_patch_204 > 0
    assert (
        value("syncd_http_requests_total", api="businesscentral", method="PATCH", status="204")
        == sb_patch_204
    )
    for api, log in (("businesscentral", sandbox.bc.log), ("superoffice", sandbox.so.log)):
        gets = sum(1 for e in log.entries if e.method == "GET" and e.status == 200)
        assert total("syncd_http_requests_total", api=api, method="GET", status="200") == gets

    async with Ledger.open(ledger_path, readonly=True) as ledger:
        written = sum(r.counts.get("written", 0) for r in await ledger.last_runs(limit=10))
        unmatched = sum(r.counts.get("unmatched", 0) for r in await ledger.last_runs(limit=10))
        items = await ledger.count_items()
    assert total("syncd_items_total", result="written") == written == sb_patch_204
    assert total("syncd_items_total", result="unmatched") == unmatched > 0
    assert value("syncd_ledger_items") == items > 0
    assert total("syncd_last_success_timestamp_seconds", mapping="customers") > time.time() - 120
    assert total("syncd_run_duration_seconds_count", mapping="customers", mode="incremental") == 1
    assert value("syncd_normalize_duration_seconds_count") >= written
    assert total("syncd_runs_total", mapping="staff") == 1
    assert await d.stop() == 0


async def test_reload_with_a_changed_interval_replaces_the_job(
    make_sandbox: Any, write_config: WriteConfig, in_process: Any
) -> None:
    sb: Sandbox = await make_sandbox(contacts=5, persons=5)
    cfg = write_config(sb, **overrides(schedule={"interval": "1h"}, **CUSTOMERS_ONLY))
    d = in_process(cfg)
    await d.ready()
    await eventually(lambda: "customers" in d.daemon.last_outcomes(), 10, "the first run")
    hourly = d.daemon.next_runs("customers")["incremental"]
    assert hourly is not None and (hourly - datetime.now(UTC)).total_seconds() > 3000

    write_config(sb, **overrides(schedule={"interval": "1s"}, **CUSTOMERS_ONLY))
    d.daemon.request_reload()
    await eventually(lambda: d.daemon.reloads == 1, 10, "the reload")
    nxt = d.daemon.next_runs("customers")["incremental"]
    assert nxt is not None and (nxt - datetime.now(UTC)).total_seconds() < 2
    listings = sb.bc.log.count(method="GET", route_contains="/{entity_set}")
    await eventually(
        lambda: sb.bc.log.count(method="GET", route_contains="/{entity_set}") >= listings + 2,
        10,
        "runs every second",
    )
    assert await d.stop() == 0


async def test_reload_whose_credentials_fail_is_rejected_and_the_old_config_keeps_working(
    make_sandbox: Any, write_config: WriteConfig, in_process: Any
) -> None:
    sb: Sandbox = await make_sandbox(contacts=5, persons=5)
    cfg = write_config(sb, **overrides(schedule={"interval": "1s"}, **CUSTOMERS_ONLY))
    with structlog.testing.capture_logs() as logs:
        d = in_process(cfg)
        await d.ready()
        write_config(
            sb,
            **overrides(
                schedule={"interval": "1s"},
                businesscentral={"auth": {"client_secret": "nope"}},
                **CUSTOMERS_ONLY,
            ),
        )
        d.daemon.request_reload()
        await eventually(lambda: d.daemon.reloads == 1, 10, "the reload")
        rejected = [e for e in logs if e["event"] == "reload rejected; the running config stays in effect"]
        assert rejected and "does not work" in rejected[0]["error"]
        assert "nope" not in str(logs)
        mark = sb.bc.log.count(method="GET", route_contains="/{entity_set}")
        await eventually(
            lambda: sb.bc.log.count(method="GET", route_contains="/{entity_set}") > mark,
            10,
            "the old config still syncing",
        )
        readiness = await d.daemon.readiness()
        assert readiness.ready, readiness.reason
    assert await d.stop() == 0
