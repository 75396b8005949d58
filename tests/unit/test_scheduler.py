"""The daemon's schedule: crontab meaning, one run per mapping at a time, missed ticks collapsed.

The first tests use a fake runner (no APIs) on fake time (tests.support.fake_time), the last one the real
daemon against the sandbox, measured with the ledger's run records.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from syncd.config import Config, load_config, parse_config
from syncd.daemon import Daemon
from syncd.errors import ConfigError
from syncd.ledger import Ledger
from syncd.notify import Notifier
from syncd.sandbox.common import Faults
from syncd.scheduler import MappingScheduler, crontab_day_of_week, crontab_trigger, plan_jobs
from tests.support.config import FAST_LIMITS, WriteConfig, merge
from tests.support.fake_time import fake_now, run_on_fake_time

UTC = ZoneInfo("UTC")


def make_config(
    *, interval: str = "10m", cron: str = "0 3 * * *", mappings: list[dict[str, Any]] | None = None
) -> Config:
    import yaml

    data = {
        "superoffice": {
            "base_url": "http://127.0.0.1:1/Cust00001/api/v1",
            "auth": {"type": "basic", "username": "u", "password": "p"},
        },
        "businesscentral": {
            "base_url": "http://127.0.0.1:1/v2.0/t/production/api/v2.0",
            "company": "CRONUS",
            "auth": {"type": "bearer", "token": "t"},
        },
        "schedule": {"interval": interval, "full_reconcile": cron},
        "mappings": mappings
        or [
            {
                "name": "customers",
                "source": "contact",
                "target": "customers",
                "match": {"source": "code", "target": "number"},
            }
        ],
    }
    return parse_config(yaml.safe_dump(data))


def mapping(name: str, **extra: Any) -> dict[str, Any]:
    """A customers mapping in a company of its own (two mappings never own one company's customers)."""
    return {
        "name": name,
        "source": "contact",
        "target": "customers",
        "company": f"company {name}",
        "match": {"source": "code", "target": "number"},
        **extra,
    }


# -- crontab ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "days"),
    [
        ("*", "*"),
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("*/2", "sun,tue,thu,sat"),
        ("sat,sun", "sun,sat"),
        ("5-7", "sun,fri,sat"),
        ("MON-wed", "mon,tue,wed"),
        ("1,3-4", "mon,wed,thu"),
    ],
)
def test_crontab_weekdays_mean_what_cron_means(field: str, days: str) -> None:
    assert crontab_day_of_week(field) == days


@pytest.mark.parametrize("field", ["8", "mon-", "x", "5-1", "*/0", ""])
def test_nonsense_weekdays_are_rejected(field: str) -> None:
    with pytest.raises(ValueError):
        crontab_day_of_week(field)


def test_weekday_1_is_monday_as_in_crontab() -> None:
    # APScheduler 3's own from_crontab would read "1" as Tuesday.
    trigger = crontab_trigger("0 3 * * 1", UTC)
    sunday = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    fire = trigger.get_next_fire_time(None, sunday)
    assert fire == datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    assert fire.strftime("%A") == "Monday"


def test_invalid_full_reconcile_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"schedule\.full_reconcile '61 3 \* \* \*'"):
        crontab_trigger("61 3 * * *")


def test_plan_has_an_incremental_and_a_full_job_per_enabled_mapping() -> None:
    config = make_config(mappings=[mapping("a"), mapping("b", enabled=False), mapping("c")])
    jobs = plan_jobs(config, UTC)
    assert [(j.id, j.kind) for j in jobs] == [
        ("a:incremental", "incremental"),
        ("a:full", "full"),
        ("c:incremental", "incremental"),
        ("c:full", "full"),
    ]


def test_interval_below_one_second_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"schedule\.interval"):
        plan_jobs(make_config(interval="500ms"), UTC)


# -- running with a fake runner, on fake time ----------------------------------------------------
#
# These tests run on tests.support.fake_time: the event loop's clock (and APScheduler's "now") jumps
# to the next timer whenever everything waits, so a 1.3 s run and a 1 s interval take those exact
# times whatever the machine's load, and a test takes milliseconds.


class FakeRunner:
    """Records (mapping, full, start, end) per run, in loop time; each run takes ``duration`` seconds."""

    def __init__(self, duration: float = 0.0, locked_full: bool = False) -> None:
        self.duration = duration
        self.locked_full = locked_full
        self.runs: list[tuple[str, bool, float, float]] = []
        self.cancelled = 0

    async def __call__(self, mapping: str, full: bool) -> bool:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            await asyncio.sleep(self.duration)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.runs.append((mapping, full, start, loop.time()))
        if full and self.locked_full:
            self.locked_full = False
            return False
        return True


def fake_scheduler(runner: FakeRunner) -> MappingScheduler:
    return MappingScheduler(runner, timezone=UTC, clock=fake_now)


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    """Wait (in loop time) until ``predicate()`` holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def test_slow_run_never_overlaps_itself_and_missed_ticks_collapse() -> None:
    runner = FakeRunner(duration=1.3)  # longer than the 1 s interval

    async def scenario() -> None:
        sched = fake_scheduler(runner)
        sched.apply(make_config(interval="1s"))
        sched.start()
        try:
            await wait_for(lambda: len(runner.runs) >= 1, timeout=12)
            runner.duration = 0.0  # now fast: a backlog of missed ticks would show as a burst of runs
            await wait_for(lambda: len(runner.runs) >= 4, timeout=12)
        finally:
            await sched.stop(5)

    run_on_fake_time(scenario())
    runs = runner.runs
    for before, after in itertools.pairwise(runs):
        assert after[2] >= before[3], "a run started before the previous one ended"
    assert runs[0][3] - runs[0][2] == pytest.approx(1.3)
    # The tick due while the slow run went on (at 1 s) was swallowed: the next run is the 2 s tick.
    assert runs[1][2] - runs[0][2] == pytest.approx(2.0)
    starts = [r[2] for r in runs[1:]]  # the fast runs after the slow one
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps and all(g == pytest.approx(1.0) for g in gaps), (
        f"catch-up burst instead of one run per tick: {gaps}"
    )


def test_full_reconcile_waits_for_the_run_in_progress() -> None:
    runner = FakeRunner(duration=0.3)

    async def scenario() -> None:
        sched = fake_scheduler(runner)
        sched.apply(make_config(interval="1h"))
        sched.start()
        try:
            await wait_for(lambda: sched.busy("customers"))
            await sched.run_now("customers", full=True)
        finally:
            await sched.stop(5)

    run_on_fake_time(scenario())
    assert [(m, full) for m, full, *_ in runner.runs] == [("customers", False), ("customers", True)]
    assert runner.runs[1][2] >= runner.runs[0][3]


def test_incremental_tick_is_skipped_while_the_mapping_is_busy() -> None:
    runner = FakeRunner(duration=0.5)

    async def scenario() -> None:
        sched = fake_scheduler(runner)
        sched.apply(make_config(interval="1h"))
        sched.start()
        try:
            await wait_for(lambda: sched.busy("customers"))
            await sched.run_now("customers")  # returns at once: the mapping is busy
            assert sched.busy("customers")
        finally:
            await sched.stop(5)

    run_on_fake_time(scenario())
    assert len(runner.runs) == 1


def test_full_reconcile_locked_elsewhere_is_done_at_the_next_tick() -> None:
    runner = FakeRunner(locked_full=True)

    async def scenario() -> None:
        sched = fake_scheduler(runner)
        sched.apply(make_config(interval="1h"))
        try:
            await sched.run_now("customers", full=True)  # another process holds the lock: postponed
            await sched.run_now("customers")  # the next tick, an incremental one, does the full run
            await sched.run_now("customers")
        finally:
            await sched.stop(5)

    run_on_fake_time(scenario())
    assert [full for _, full, *_ in runner.runs] == [True, True, False]


def test_reapplying_keeps_unchanged_jobs_and_runs_new_mappings_at_once() -> None:
    runner = FakeRunner()

    async def scenario() -> None:
        sched = fake_scheduler(runner)
        sched.apply(make_config(interval="1h", mappings=[mapping("a")]))
        sched.start()
        try:
            await wait_for(lambda: len(runner.runs) == 1)
            a_next = sched.next_runs("a")
            sched.apply(make_config(interval="1h", mappings=[mapping("a"), mapping("b")]))
            assert sched.next_runs("a") == a_next, "an unchanged mapping must keep its schedule"
            await wait_for(lambda: [m for m, *_ in runner.runs] == ["a", "b"])
            sched.apply(make_config(interval="1h", mappings=[mapping("b")]))
            assert sched.next_runs("a") == {"incremental": None, "full": None}
        finally:
            await sched.stop(5)

    run_on_fake_time(scenario())


def test_stop_cancels_runs_that_outlast_the_grace_period() -> None:
    runner = FakeRunner(duration=60)

    async def scenario() -> tuple[bool, float]:
        sched = fake_scheduler(runner)
        sched.apply(make_config(interval="1h"))
        sched.start()
        await wait_for(lambda: sched.busy("customers"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        finished = await sched.stop(0.2)
        assert not sched.busy("customers")
        return finished, loop.time() - started

    finished, took = run_on_fake_time(scenario())
    assert finished is False
    assert runner.cancelled == 1
    assert took < 5  # fake time: stop waited the 0.2 s grace, not the 60 s run
    assert took == pytest.approx(0.2)


def test_stop_waits_for_a_run_that_ends_within_the_grace_period() -> None:
    runner = FakeRunner(duration=0.3)

    async def scenario() -> bool:
        sched = fake_scheduler(runner)
        sched.apply(make_config(interval="1h"))
        sched.start()
        await wait_for(lambda: sched.busy("customers"))
        return await sched.stop(10)

    assert run_on_fake_time(scenario()) is True
    assert len(runner.runs) == 1 and runner.cancelled == 0


# -- the real daemon against the sandbox -----------------------------------------------------------


@pytest.mark.slow
async def test_daemon_runs_of_one_mapping_never_overlap_and_a_slow_run_swallows_missed_ticks(
    make_sandbox: Any, write_config: WriteConfig, tmp_path: Path
) -> None:
    sb = await make_sandbox(contacts=8, persons=2)
    sb.so.fault_state.set(Faults(latency_ms=400))  # every SuperOffice call is slow: a run takes > 1 s
    one_mapping = [
        {
            "name": "customers",
            "source": "contact",
            "target": "customers",
            "match": {"source": "code", "target": "number"},
        }
    ]
    cfg = write_config(
        sb,
        **merge(
            merge({}, FAST_LIMITS),
            {"schedule": {"interval": "1s"}, "server": {"enabled": False}, "mappings": one_mapping},
        ),
    )
    ledger_path = tmp_path / "ledger.sqlite"
    daemon = Daemon(load_config(cfg), config_path=cfg, notifier=Notifier({}), install_signals=False)
    task = asyncio.create_task(daemon.run())

    async def runs() -> list[tuple[datetime, datetime | None]]:
        try:
            async with Ledger.open(ledger_path, readonly=True) as ledger:
                rows = await ledger.last_runs("customers", limit=100)
        except ConfigError:  # not created, or not migrated yet
            return []
        return [
            (
                datetime.fromisoformat(r.started_at),
                datetime.fromisoformat(r.finished_at) if r.finished_at else None,
            )
            for r in reversed(rows)
        ]

    async def wait_runs(n: int) -> None:
        deadline = time.monotonic() + 30
        while len([r for r in await runs() if r[1] is not None]) < n:
            assert not task.done() and time.monotonic() < deadline, "runs did not happen"
            await asyncio.sleep(0.05)

    try:
        await wait_runs(2)
        sb.so.fault_state.set(Faults())  # fast again: a backlog of missed ticks would now run in a burst
        slow = len([r for r in await runs() if r[1] is not None])
        await wait_runs(slow + 3)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0

    record = [r for r in await runs() if r[1] is not None]
    for (_, end), (start, _) in itertools.pairwise(record):
        assert end is not None and start >= end, "a run of the mapping started before the previous one ended"
    durations = [(e - s).total_seconds() for s, e in record if e is not None]
    assert max(durations[:slow]) > 1.0, f"the slow runs were not longer than the interval: {durations}"
    fast_starts = [s for s, _ in record[slow:]]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(fast_starts)]
    assert gaps and all(g > 0.5 for g in gaps), f"missed ticks ran as a burst: {gaps}"
    # The sandbox saw one Business Central listing per run: nothing ran beside the ledger's runs.
    listings = [e for e in sb.bc.log.entries if e.method == "GET" and e.route.endswith("/{entity_set}")]
    assert len(listings) == len(record)
