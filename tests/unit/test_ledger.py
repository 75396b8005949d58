"""The ledger: round trips, batching, migrations, durability across SIGKILL, read-only use, housekeeping."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import signal
import sqlite3
import stat
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import syncd.ledger as ledger_module
import syncd.ledger.schema as schema_module
import syncd.ledger.store as store_module
from syncd.errors import ConfigError
from syncd.ledger import (
    SCHEMA_VERSION,
    Issue,
    Ledger,
    LedgerItem,
    ReadOnlyLedgerError,
)
from syncd.locks import MappingLock
from syncd.types import Outcome


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def item(source_id: int, mapping: str = "customers", kind: str = "contact", **changes: object) -> LedgerItem:
    base = LedgerItem(
        mapping=mapping,
        source_kind=kind,
        source_id=source_id,
        target_kind="customers",
        target_id=f"guid-{source_id}",
        status=Outcome.WRITTEN,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def ledger(path: Path, clock: FakeClock) -> AsyncIterator[Ledger]:
    async with Ledger.open(path, clock=clock) as opened:
        yield opened


# ---------------------------------------------------------------- items


async def test_item_round_trips_every_field(ledger: Ledger):
    full = LedgerItem(
        mapping="customers",
        source_kind="person",
        source_id=42,
        target_kind="employees",
        status=Outcome.KEPT,
        target_id="5b1c-guid",
        target_number="E0042",
        source_fingerprint="439|2026-01-01T10:00:00|191|486|image/jpeg",
        source_hash="a" * 64,
        output_hash="b" * 64,
        target_etag='W/"JzQ0O0VnQUFBQUo3QV"',
        normalizer_version="norm-7",
        wrote_picture=True,
        error="boom",
        attempts=3,
        synced_at="2026-03-01T09:00:00.000+00:00",
        checked_at="2026-03-01T10:00:00.000+00:00",
    )
    await ledger.record(full)
    assert (await ledger.get_items("customers", "person", [42])) == {42: full}
    assert [i async for i in ledger.iter_items("customers")] == [full]


async def test_record_replaces_the_previous_state_of_an_item(ledger: Ledger):
    await ledger.record(item(1, source_hash="h1"))
    await ledger.record(item(1, source_hash="h2", status=Outcome.UNCHANGED))
    got = (await ledger.get_items("customers", "contact", [1]))[1]
    assert (got.source_hash, got.status) == ("h2", Outcome.UNCHANGED)
    assert await ledger.count_items() == 1


async def test_items_are_kept_apart_by_mapping_and_source_kind(ledger: Ledger):
    await ledger.record_many([item(1), item(1, kind="person"), item(1, mapping="vendors"), item(2)])
    assert set(await ledger.get_items("customers", "contact", [1, 2, 3])) == {1, 2}
    assert set(await ledger.get_items("customers", "person", [1, 2])) == {1}
    assert await ledger.count_items("customers") == 3
    assert await ledger.count_items("vendors") == 1
    assert await ledger.count_items() == 4


@pytest.mark.parametrize("n", [0, 1, 500, 501, 1234])
async def test_get_items_reads_500_ids_per_query(ledger: Ledger, n: int):
    await ledger.record_many([item(i) for i in range(0, n, 2)])  # half of them are known
    before = ledger.queries
    found = await ledger.get_items("customers", "contact", (i for i in range(n)))
    assert ledger.queries - before == math.ceil(n / 500)
    assert set(found) == set(range(0, n, 2))


async def test_duplicate_ids_are_looked_up_once(ledger: Ledger):
    before = ledger.queries
    await ledger.get_items("customers", "contact", [1] * 600)
    assert ledger.queries - before == 1


async def test_record_many_is_one_transaction(ledger: Ledger):
    before = ledger.queries
    await ledger.record_many([item(i) for i in range(1000)])
    assert ledger.queries - before == 3  # BEGIN, executemany, COMMIT
    assert await ledger.count_items() == 1000


async def test_set_checked_moves_only_checked_at_of_the_named_items(ledger: Ledger):
    await ledger.record_many([item(i, checked_at="2024-01-01T00:00:00+00:00") for i in range(1200)])
    await ledger.record(item(7, mapping="vendors", checked_at="2024-01-01T00:00:00+00:00"))
    before = ledger.queries
    await ledger.set_checked("customers", "contact", list(range(0, 1200, 2)), "2025-06-01T00:00:00+00:00")
    assert ledger.queries - before == 2 + 2  # BEGIN, 2 updates of up to 500 ids, COMMIT
    items = await ledger.get_items("customers", "contact", range(1200))
    for i, it in items.items():
        expected = "2025-06-01T00:00:00+00:00" if i % 2 == 0 else "2024-01-01T00:00:00+00:00"
        assert it == item(i, checked_at=expected)
    [other] = (await ledger.get_items("vendors", "contact", [7])).values()
    assert other.checked_at == "2024-01-01T00:00:00+00:00"


async def test_concurrent_records_from_many_workers_all_land(ledger: Ledger):
    await asyncio.gather(*(ledger.record(item(i)) for i in range(200)))
    assert await ledger.count_items() == 200


async def test_records_while_iterating_do_not_disturb_the_iteration(ledger: Ledger):
    await ledger.record_many([item(i) for i in range(300)])
    seen = 0
    async for current in ledger.iter_items("customers"):
        await ledger.record(dataclasses.replace(current, status=Outcome.UNCHANGED))
        seen += 1
    assert seen == 300
    assert {i.status async for i in ledger.iter_items("customers")} == {Outcome.UNCHANGED}


async def test_failed_record_leaves_no_half_written_batch(ledger: Ledger):
    bad = dataclasses.replace(item(3), status="exploded")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="item status"):
        await ledger.record_many([item(1), item(2), bad])
    assert await ledger.count_items() == 0
    await ledger.record(item(4))  # the ledger is still usable
    assert await ledger.count_items() == 1


async def test_long_error_text_is_clipped(ledger: Ledger):
    await ledger.record(item(1, status=Outcome.FAILED, error="x" * 10_000))
    error = (await ledger.get_items("customers", "contact", [1]))[1].error
    assert error is not None and len(error) == ledger_module.MAX_ERROR_CHARS


# ---------------------------------------------------------------- runs


async def test_run_is_recorded_from_start_to_finish(ledger: Ledger, clock: FakeClock):
    run_id = await ledger.start_run("customers", "incremental")
    (running,) = await ledger.last_runs("customers")
    assert (running.id, running.finished_at, running.outcome) == (run_id, None, None)
    clock.now += timedelta(minutes=2, milliseconds=5)
    await ledger.finish_run(run_id, {"written": 3, "failed": 1}, "partial", "1 item failed")
    (done,) = await ledger.last_runs("customers")
    assert done.counts == {"written": 3, "failed": 1}
    assert (done.outcome, done.error, done.mode) == ("partial", "1 item failed", "incremental")
    assert (done.started_at, done.finished_at) == (
        "2026-03-01T10:00:00.000+00:00",
        "2026-03-01T10:02:00.005+00:00",
    )


async def test_last_runs_are_newest_first_and_filtered_by_mapping(ledger: Ledger):
    ids = [await ledger.start_run(m, "full") for m in ("customers", "vendors", "customers")]
    for run_id in ids:
        await ledger.finish_run(run_id, {}, "ok")
    assert [r.id for r in await ledger.last_runs()] == ids[::-1]
    assert [r.id for r in await ledger.last_runs("customers")] == [ids[2], ids[0]]
    assert [r.id for r in await ledger.last_runs(limit=1)] == [ids[2]]


async def test_unknown_run_mode_or_outcome_is_rejected(ledger: Ledger):
    with pytest.raises(ValueError, match="run mode"):
        await ledger.start_run("customers", "sometimes")
    run_id = await ledger.start_run("customers", "dry-run")
    with pytest.raises(ValueError, match="run outcome"):
        await ledger.finish_run(run_id, {}, "fine")
    with pytest.raises(KeyError):
        await ledger.finish_run(run_id + 100, {}, "ok")


async def test_run_history_is_pruned_per_mapping(ledger: Ledger, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(store_module, "KEEP_RUNS", 3)
    other = await ledger.start_run("vendors", "full")
    await ledger.finish_run(other, {}, "ok")
    for _ in range(5):
        await ledger.finish_run(await ledger.start_run("customers", "incremental"), {}, "ok")
    assert len(await ledger.last_runs("customers", limit=100)) == 3
    assert len(await ledger.last_runs("vendors", limit=100)) == 1


async def test_run_left_unfinished_by_a_dead_process_is_marked_interrupted_on_open(path: Path):
    async with Ledger.open(path) as first:
        run_id = await first.start_run("customers", "incremental")
    # (closing without finish_run is what a crash leaves behind)
    async with Ledger.open(path) as second:
        assert [r.id for r in second.recovered_runs] == [run_id]
        (run,) = await second.last_runs("customers")
        assert run.outcome == "interrupted"
        assert run.finished_at is not None
        assert await second.unfinished_runs() == []


async def test_run_in_progress_in_a_live_process_is_not_marked_interrupted(path: Path):
    async with Ledger.open(path) as daemon, MappingLock(path, "customers"):
        run_id = await daemon.start_run("customers", "incremental")
        async with Ledger.open(path) as status_cli:
            assert status_cli.recovered_runs == []
            assert [r.id for r in await status_cli.unfinished_runs()] == [run_id]
        await daemon.finish_run(run_id, {}, "ok")
        assert (await daemon.last_runs())[0].outcome == "ok"


async def test_starting_a_run_closes_a_leftover_run_of_the_same_mapping(ledger: Ledger):
    crashed = await ledger.start_run("customers", "incremental")
    elsewhere = await ledger.start_run("vendors", "incremental")
    await ledger.start_run("customers", "incremental")
    runs = {r.id: r for r in await ledger.last_runs()}
    assert runs[crashed].outcome == "interrupted"
    assert runs[elsewhere].outcome is None


# ---------------------------------------------------------------- watermarks, issues, recent changes


async def test_watermark_round_trip_per_mapping_and_kind(ledger: Ledger):
    assert await ledger.get_watermark("customers", "contact") is None
    await ledger.set_watermark("customers", "contact", "2026-03-01T09:00:00")
    await ledger.set_watermark("customers", "contact", "2026-03-01T10:00:00")
    await ledger.set_watermark("people", "person", "2026-02-01T00:00:00")
    assert await ledger.get_watermark("customers", "contact") == "2026-03-01T10:00:00"
    assert await ledger.get_watermark("customers", "person") is None
    assert await ledger.get_watermark("people", "person") == "2026-02-01T00:00:00"


async def test_issues_are_replaced_per_mapping_at_each_run(ledger: Ledger):
    first = await ledger.start_run("customers", "incremental")
    await ledger.replace_issues(
        first,
        "customers",
        [
            Issue(kind="ambiguous", source_id=5, target_ids=("g1", "g2"), key="NO123", detail="2 customers"),
            Issue(kind="unmatched", source_id=6, key="NO999"),
        ],
    )
    await ledger.replace_issues(first, "vendors", [Issue(kind="failed", source_id=1, detail="413")])
    second = await ledger.start_run("customers", "incremental")
    await ledger.replace_issues(second, "customers", [Issue(kind="failed", source_id=7, target_ids=("g7",))])
    customers = await ledger.list_issues("customers")
    assert customers == [
        Issue(kind="failed", source_id=7, target_ids=("g7",), mapping="customers", run_id=second)
    ]
    assert len(await ledger.list_issues()) == 2
    assert [i.mapping for i in await ledger.list_issues(kind="failed")] == ["customers", "vendors"]
    await ledger.replace_issues(second, "customers", [])
    assert await ledger.list_issues("customers") == []


async def test_ambiguous_issue_keeps_all_candidates(ledger: Ledger):
    run_id = await ledger.start_run("customers", "incremental")
    await ledger.replace_issues(run_id, "customers", [Issue("ambiguous", 5, ("g1", "g2", "g3"), "NO123")])
    (issue,) = await ledger.list_issues()
    assert (issue.target_ids, issue.key) == (("g1", "g2", "g3"), "NO123")


async def test_recent_changes_keep_the_last_twenty_per_mapping(ledger: Ledger):
    for i in range(25):
        await ledger.add_recent_change(
            "customers", "contact", i, f"g{i}", source_thumb=b"\xff\xd8src%d" % i, output_thumb=b"\xff\xd8out"
        )
    await ledger.add_recent_change("vendors", "contact", 99, None, source_thumb=None, output_thumb=None)
    changes = await ledger.recent_changes("customers")
    assert [c.source_id for c in changes] == list(range(24, 4, -1))
    assert changes[0].source_thumb == b"\xff\xd8src24"
    assert changes[0].outcome == "written"
    assert len(await ledger.recent_changes()) == 20
    assert [c.source_id for c in await ledger.recent_changes("vendors")] == [99]


async def test_oversized_thumbnail_is_refused(ledger: Ledger):
    with pytest.raises(ValueError, match="thumbnail"):
        await ledger.add_recent_change(
            "customers", "contact", 1, "g", source_thumb=b"x" * 70_000, output_thumb=None
        )


# ---------------------------------------------------------------- reset and export


async def fill(ledger: Ledger) -> int:
    run_id = await ledger.start_run("customers", "full")
    await ledger.record_many([item(1), item(2), item(3, mapping="vendors")])
    await ledger.set_watermark("customers", "contact", "w1")
    await ledger.set_watermark("vendors", "contact", "w2")
    await ledger.replace_issues(run_id, "customers", [Issue("unmatched", 9)])
    await ledger.add_recent_change("customers", "contact", 1, "g1", source_thumb=b"s", output_thumb=b"o")
    await ledger.finish_run(run_id, {"written": 2}, "ok")
    return run_id


async def test_reset_of_one_mapping_forgets_only_that_mapping(ledger: Ledger):
    await fill(ledger)
    removed = await ledger.reset("customers")
    assert removed == 5  # 2 items, 1 watermark, 1 issue, 1 recent change
    assert await ledger.count_items("customers") == 0
    assert await ledger.get_watermark("customers", "contact") is None
    assert await ledger.list_issues("customers") == []
    assert await ledger.recent_changes("customers") == []
    assert await ledger.count_items("vendors") == 1
    assert await ledger.get_watermark("vendors", "contact") == "w2"
    assert len(await ledger.last_runs()) == 1  # run history stays


async def test_reset_of_everything(ledger: Ledger):
    await fill(ledger)
    assert await ledger.reset() == 7
    assert await ledger.count_items() == 0
    assert await ledger.reset() == 0


async def test_export_is_json_lines_of_every_table_without_thumbnails(ledger: Ledger):
    run_id = await fill(ledger)
    rows = [row async for row in ledger.export()]
    lines = [json.dumps(row) for row in rows]  # plain json, no default=: everything is JSON-ready
    assert rows[0]["table"] == "ledger" and rows[0]["schema_version"] == SCHEMA_VERSION
    tables = [r["table"] for r in rows]
    assert tables.count("items") == 3
    assert tables.count("watermarks") == 2
    assert {"runs", "issues", "recent_changes"} <= set(tables)
    run = next(r for r in rows if r["table"] == "runs")
    assert (run["id"], run["counts"], run["outcome"]) == (run_id, {"written": 2}, "ok")
    change = next(r for r in rows if r["table"] == "recent_changes")
    assert change["source_thumb_bytes"] == 1 and "source_thumb" not in change
    assert json.loads(lines[1])["status"] == "written"


async def test_export_of_one_mapping(ledger: Ledger):
    await fill(ledger)
    rows = [row async for row in ledger.export("vendors")]
    assert {(r["table"], r.get("mapping")) for r in rows[1:]} == {
        ("items", "vendors"),
        ("watermarks", "vendors"),
    }


# ---------------------------------------------------------------- opening, schema, pragmas


async def test_fresh_file_gets_the_current_schema_in_wal_mode(ledger: Ledger, path: Path):
    assert await ledger.journal_mode() == "wal"
    assert await ledger.integrity_check() == "ok"
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"items", "runs", "watermarks", "issues", "recent_changes", "companies"}


async def test_every_commit_is_fsynced(ledger: Ledger):
    rows = await ledger._fetchall("PRAGMA synchronous")
    assert rows[0][0] == 2  # FULL


def test_ledger_file_is_readable_by_its_owner_only(path: Path):
    async def create() -> None:
        async with Ledger.open(path):
            pass

    asyncio.run(create())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_ledger_from_a_newer_syncd_is_refused(path: Path):
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match="written by a newer syncd") as info:
        await Ledger.open(path)
    assert "upgrade syncd" in str(info.value)
    with pytest.raises(ConfigError, match="newer syncd"):
        await Ledger.open(path, readonly=True)


async def test_pending_migrations_are_applied_in_one_transaction(path: Path, monkeypatch: pytest.MonkeyPatch):
    async with Ledger.open(path) as current:
        await current.record(item(1))
    real = schema_module.MIGRATIONS
    failing = (*real, ("ALTER TABLE items ADD COLUMN note TEXT", "THIS IS NOT SQL"))
    monkeypatch.setattr(schema_module, "MIGRATIONS", failing)
    monkeypatch.setattr(schema_module, "SCHEMA_VERSION", len(failing))
    with pytest.raises(ConfigError):
        await Ledger.open(path)
    with sqlite3.connect(path) as raw:  # nothing of the failed step stuck
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(real)
        assert "note" not in {r[1] for r in raw.execute("PRAGMA table_info(items)")}
    working = (*real, ("ALTER TABLE items ADD COLUMN note TEXT",))
    monkeypatch.setattr(schema_module, "MIGRATIONS", working)
    async with Ledger.open(path) as upgraded:
        assert await upgraded.count_items() == 1
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(working)
        assert "note" in {r[1] for r in raw.execute("PRAGMA table_info(items)")}


async def test_a_file_that_is_not_a_ledger_is_a_clear_error(path: Path):
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="not a usable SQLite database"):
        await Ledger.open(path)


async def test_missing_directory_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot create the ledger"):
        await Ledger.open(tmp_path / "nope" / "ledger.sqlite")


async def test_in_memory_ledger_for_tests():
    async with Ledger.open(":memory:") as mem:
        await mem.record(item(1))
        assert await mem.count_items() == 1


async def test_await_form_and_context_manager_form_both_work(path: Path):
    opened = await Ledger.open(path)
    async with opened:
        await opened.record(item(1))
    async with Ledger.open(path) as again:
        assert await again.count_items() == 1


# ---------------------------------------------------------------- read-only use while a daemon writes


async def test_status_reads_while_the_daemon_keeps_writing(ledger: Ledger, path: Path):
    await ledger.record(item(1))
    async with Ledger.open(path, readonly=True) as status:
        assert await status.count_items() == 1
        for i in range(2, 50):
            await ledger.record(item(i))  # the writer is never blocked by the reader
        assert await status.count_items() == 49  # and the reader sees each commit
        async for _ in status.iter_items("customers"):  # an open read cursor does not block writes
            await ledger.record(item(1000))
            break


async def test_read_only_ledger_refuses_writes(ledger: Ledger, path: Path):
    async with Ledger.open(path, readonly=True) as status:
        with pytest.raises(ReadOnlyLedgerError):
            await status.record(item(1))
        with pytest.raises(ReadOnlyLedgerError):
            await status.reset()
        with pytest.raises(ReadOnlyLedgerError):
            await status.start_run("customers", "full")


async def test_read_only_open_leaves_unfinished_runs_alone(path: Path):
    async with Ledger.open(path) as writer:
        await writer.start_run("customers", "full")
    async with Ledger.open(path, readonly=True) as status:
        assert len(await status.unfinished_runs()) == 1


async def test_read_only_open_of_a_missing_ledger_says_to_run_first(path: Path):
    with pytest.raises(ConfigError, match="does not exist yet"):
        await Ledger.open(path, readonly=True)
    assert not path.exists()


async def test_read_only_open_of_an_older_schema_asks_for_an_upgrade(path: Path):
    sqlite3.connect(path).close()  # an empty file: schema version 0
    with pytest.raises(ConfigError, match="run `syncd run --once`"):
        await Ledger.open(path, readonly=True)


# ---------------------------------------------------------------- durability across kill -9

WRITER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from syncd.ledger import Ledger, LedgerItem
    from syncd.types import Outcome

    async def main():
        ledger = await Ledger.open(sys.argv[1])
        await ledger.start_run("customers", "full")
        i = 0
        while True:
            i += 1
            await ledger.record(LedgerItem(mapping="customers", source_kind="contact", source_id=i,
                                           target_kind="customers", status=Outcome.WRITTEN,
                                           source_hash="h" * 64, error="e" * 500))
            print(i, flush=True)   # only after record() returned

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("kill_after", [1, 150])
async def test_every_item_recorded_before_kill_9_survives(tmp_path: Path, path: Path, kill_after: int):
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(path), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    confirmed = 0
    try:
        while confirmed < kill_after:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
            assert line, "writer died"
            confirmed = int(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # wherever it is: mid-transaction, mid-fsync, …
        await proc.wait()
    async with Ledger.open(path) as reopened:
        assert await reopened.integrity_check() == "ok"
        found = await reopened.get_items("customers", "contact", range(1, confirmed + 1))
        assert len(found) == confirmed
        assert [r.outcome for r in reopened.recovered_runs] == ["interrupted"]


@pytest.mark.parametrize("steps", range(8))
async def test_a_cancelled_record_leaves_the_ledger_usable(ledger: Ledger, steps: int):
    task = asyncio.create_task(ledger.record(item(1)))
    for _ in range(steps):  # cancel at every await point in turn: BEGIN, upsert, COMMIT, …
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await ledger.record(item(2))
    assert 2 in await ledger.get_items("customers", "contact", [1, 2])


async def test_two_processes_writing_one_ledger_wait_for_each_other(ledger: Ledger, path: Path):
    # A manual `syncd run --once` of one mapping next to a daemon syncing another: two connections.
    async with Ledger.open(path) as other:
        await asyncio.gather(
            *(ledger.record(item(i)) for i in range(100)),
            *(other.record(item(i, mapping="vendors")) for i in range(100)),
        )
        assert await other.count_items() == 200
