"""Credentials over a run's lifetime, end to end against the sandbox.

* Business Central tokens that expire every 2 s during a run slowed to span several lifetimes: syncd
  renews them ahead of expiry, no item fails, and any 401 that still reaches the sandbox was retried.
* Tokens revoked mid-run: exactly one renewal, then the run goes on and every item syncs.
* SuperOffice system-user auth (signed system user token → ticket) for a whole one-shot run.
* The daemon across hours of simulated time (an injected clock shared with the sandbox): many renewals
  of the BC token and of the SuperOffice ticket, never a 401.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from syncd import daemon as daemon_module
from syncd.config import load_config
from syncd.daemon import Daemon
from syncd.notify import Notifier
from syncd.runtime import open_runtime
from syncd.sandbox.common import Faults, LoggedRequest
from syncd.sandbox.server import SO_APP_KEY_FILE, Sandbox
from tests.support.config import FAST_LIMITS, merge
from tests.support.e2e import Result, syncd

pytestmark = pytest.mark.slow

TOKEN_ROUTE = "/oauth2/v2.0/token"
SO_EXCHANGE_ROUTE = "PartnerSystemUser/Authenticate"


def write(sb: Sandbox, tmp_path: Path, *, so_auth: Any = "basic", **overrides: Any) -> Path:
    cfg = sb.config(
        ledger=str(tmp_path / "ledger.sqlite"),
        so_auth=so_auth,
        private_key=f"file:{SO_APP_KEY_FILE}" if so_auth == "system_user" else None,
    )
    merge(cfg, copy.deepcopy(FAST_LIMITS))
    merge(cfg, overrides)
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    path.chmod(0o600)
    return path


def assert_everything_synced(sb: Sandbox, result: Result) -> None:
    """Exit 2 only for the dataset's deliberately broken pictures; every matched picture written."""
    assert result.code == 2, result.stderr[-3000:]
    summary = {m["mapping"]: m["counts"] for m in result.json()["mappings"]}
    for name, counts in summary.items():
        exp = sb.dataset.expected["mappings"][name]
        assert counts["written"] == len(exp["written"]), (name, counts)
        assert counts["failed"] == len(exp["broken"]), (name, counts)
        for _, target_id in exp["written"]:
            rec = sb.dataset.bc.get_record(sb.dataset.company_id, exp["target"], target_id)
            assert rec.picture is not None, f"{name}: {target_id} has no picture"


def assert_401s_were_retried(entries: list[LoggedRequest]) -> None:
    """Every 401 the API answered was followed by the same request succeeding (the one retry)."""
    for i, e in enumerate(entries):
        if e.status != 401:
            continue
        retried = any(
            later.method == e.method
            and later.path == e.path
            and later.query == e.query
            and later.status < 400
            for later in entries[i + 1 :]
        )
        assert retried, f"401 on {e.method} {e.path} was not followed by a successful retry"


def proactive_renewals(entries: list[LoggedRequest]) -> int:
    """Token requests after the first that no 401 preceded: renewals made before the token expired."""
    count, seen_token, since_401 = 0, False, False
    for e in entries:
        if TOKEN_ROUTE in e.route and e.status == 200:
            if seen_token and not since_401:
                count += 1
            seen_token, since_401 = True, False
        elif e.status == 401:
            since_401 = True
    return count


async def test_tokens_are_renewed_before_expiry_during_a_long_run(tmp_path: Path) -> None:
    # 2 s tokens (renewed 0.2 s ahead); every BC request takes ≥ 130 ms (20 ms network latency, then 110 ms
    # processing after the token was checked) and they go one at a time: the run's ~40 BC requests take
    # over 5 s, so they span several token lifetimes however fast the machine is.
    async with Sandbox(
        contacts=24, persons=24, token_lifetime=2.0, faults_bc=Faults(latency_ms=20), bc_processing_ms=110
    ) as sb:
        cfg = write(sb, tmp_path, businesscentral={"limits": {"concurrency": 1}})
        result = await syncd("run", "--once", "--json", "-c", str(cfg))
        entries = list(sb.bc.log.entries)
        assert_everything_synced(sb, result)
    tokens = sum(1 for e in entries if TOKEN_ROUTE in e.route and e.status == 200)
    unauthorized = sum(1 for e in entries if e.status == 401)
    assert tokens >= 3, f"the run should span several token lifetimes (tokens issued: {tokens})"
    assert_401s_were_retried(entries)
    # Renewal happens ahead of expiry, not in reaction to 401s (a late request may still meet one).
    assert proactive_renewals(entries) >= 2, f"{tokens} tokens, {unauthorized} 401s"
    assert unauthorized <= 1, f"{unauthorized} 401s with {tokens} tokens"


async def test_revoked_tokens_cost_exactly_one_renewal(tmp_path: Path) -> None:
    async with Sandbox(contacts=24, persons=24, bc_processing_ms=30) as sb:
        cfg = write(sb, tmp_path)
        run = asyncio.create_task(syncd("run", "--once", "--json", "-c", str(cfg)))
        deadline = time.monotonic() + 60
        while sb.bc.log.count(method="PATCH", status=204) < 8:  # mid-run: some pictures written
            assert not run.done(), "the run ended before the tokens could be revoked"
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{sb.bc_origin}/_sandbox/bc/revoke-tokens") as resp,
        ):
            revoked = (await resp.json())["revoked"]
        result = await run
        entries = list(sb.bc.log.entries)
        assert_everything_synced(sb, result)
    assert revoked == 1
    assert sum(1 for e in entries if TOKEN_ROUTE in e.route) == 2  # the first token and one renewal
    unauthorized = [e for e in entries if e.status == 401]
    assert unauthorized, "the revocation should have hit requests of the run"
    assert_401s_were_retried(entries)
    tokens = [e.seq for e in entries if TOKEN_ROUTE in e.route]
    assert tokens[0] < unauthorized[0].seq < tokens[1]  # renewed because of the revocation, after it


async def test_superoffice_system_user_auth_end_to_end(tmp_path: Path) -> None:
    async with Sandbox(contacts=24, persons=24) as sb:
        await asyncio.to_thread(sb.write_config, tmp_path / "sandbox.yaml")  # writes the app's key file
        cfg = write(sb, tmp_path, so_auth="system_user")
        assert load_config(cfg).superoffice.auth.type == "system_user"
        result = await syncd("run", "--once", "--json", "-c", str(cfg))
        so_entries = list(sb.so.log.entries)
        assert_everything_synced(sb, result)
    exchanges = [e for e in so_entries if SO_EXCHANGE_ROUTE in e.route]
    assert len(exchanges) == 1  # one ticket for the whole run
    api = [e for e in so_entries if "/api/v1/" in e.route]
    assert api and all(e.principal == "system-user" for e in api)  # every call carried the ticket
    assert not any(e.status == 401 for e in so_entries)


class FakeClock:
    """Epoch seconds that move only when told to; shared by syncd's auth and the sandbox."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def clocked_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Daemon, Sandbox, FakeClock]]:
    clock = FakeClock()
    async with Sandbox(contacts=12, persons=12) as sb:
        sb.bc.clock = clock  # token issue and expiry
        sb.so.clock = clock  # signed-token timestamps, JWT times, ticket expiry
        await asyncio.to_thread(sb.write_config, tmp_path / "sandbox.yaml")
        cfg = write(
            sb,
            tmp_path,
            so_auth="system_user",
            server={"enabled": False},
            schedule={"interval": "24h", "full_reconcile": "0 3 1 1 *"},  # runs only when the test says
        )
        # Daemon(clock=) feeds its metrics; the auth objects get the clock through open_runtime.
        monkeypatch.setattr(daemon_module, "open_runtime", functools.partial(open_runtime, clock=clock))
        daemon = Daemon(
            load_config(cfg), config_path=cfg, notifier=Notifier({}), install_signals=False, clock=clock
        )
        task = asyncio.create_task(daemon.run())
        try:
            yield daemon, sb, clock
        finally:
            daemon.request_stop()
            assert await asyncio.wait_for(task, 30) == 0


async def until(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_daemon_keeps_syncing_across_hours_of_token_expiry(
    clocked_daemon: tuple[Daemon, Sandbox, FakeClock],
) -> None:
    daemon, sb, clock = clocked_daemon
    mappings = ("customers", "staff")
    await until(lambda: set(daemon.last_outcomes()) == set(mappings) and not daemon.running(), "first runs")
    step, steps = 50 * 60.0, 12  # ten hours in 50-minute steps: BC tokens live 1 h, SO tickets 6 h
    listings = sb.bc.log.count(route_contains="{entity_set}", method="GET", status=200)
    for _ in range(steps):
        assert not daemon.running()  # the clock jumps only between runs, never under a request
        clock.advance(step)
        for name in mappings:
            await daemon.scheduler.run_now(name)
        assert set(daemon.last_outcomes().values()) <= {"ok", "partial"}, daemon.last_outcomes()
    readiness = await daemon.readiness()
    assert readiness.checks["auth"].ok, readiness.reason
    assert daemon.state == "ready"
    assert sb.bc.log.count(route_contains="{entity_set}", method="GET", status=200) >= listings + steps * 2
    assert sb.bc.log.count(status=401) == 0
    assert sb.so.log.count(status=401) == 0
    # A BC token (3599 s) is reused at +50 min and renewed at +100 min (past its 55-minute renewal
    # point): one at start, then one every second step. The SO ticket (6 h) is renewed once, at +400 min.
    assert sb.bc.log.count(route_contains=TOKEN_ROUTE, status=200) == 1 + steps // 2
    assert sb.so.log.count(route_contains=SO_EXCHANGE_ROUTE, status=200) == 2
