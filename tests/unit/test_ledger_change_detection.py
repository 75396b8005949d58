"""Ledger schema v2: each run records which change detection it used; a v1 ledger upgrades in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from syncd import ledger as ledger_module
from syncd.ledger import Ledger


async def test_a_v1_ledger_opens_upgraded_and_keeps_its_runs_and_items(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with sqlite3.connect(path) as raw:  # a ledger as the previous syncd left it
        for statement in ledger_module.MIGRATIONS[0]:
            raw.execute(statement)
        raw.execute("PRAGMA user_version = 1")
        raw.execute(
            "INSERT INTO runs (mapping, started_at, finished_at, mode, counts_json, outcome) "
            "VALUES ('customers', '2026-01-01T00:00:00+00:00', '2026-01-01T00:01:00+00:00', 'full', "
            "'{\"written\": 3}', 'ok')"
        )
        raw.execute(
            "INSERT INTO items (mapping, source_kind, source_id, target_kind, status) "
            "VALUES ('customers', 'contact', 7, 'customers', 'written')"
        )
    async with Ledger.open(path) as ledger:
        [old] = await ledger.last_runs("customers")
        assert old.counts == {"written": 3} and old.change_detection is None
        assert await ledger.count_items("customers") == 1
        assert not await ledger.bulk_verified("customers")
        run_id = await ledger.start_run("customers", "incremental")
        await ledger.set_change_detection(run_id, "per_record", "fell back to per-record ImageInfo: HTTP 403")
        await ledger.finish_run(run_id, {}, "ok")
        assert not await ledger.bulk_verified("customers")  # the provider was never checked
        run_id = await ledger.start_run("customers", "full")
        await ledger.set_change_detection(run_id, "bulk", "verified: 25 of 25 sampled records agree")
        await ledger.finish_run(run_id, {}, "ok")
        newest, fell_back, _ = await ledger.last_runs("customers")
        assert (newest.change_detection, fell_back.change_detection) == ("bulk", "per_record")
        assert fell_back.change_detection_note is not None and "403" in fell_back.change_detection_note
        assert await ledger.bulk_verified("customers") and not await ledger.bulk_verified("staff")
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == ledger_module.SCHEMA_VERSION


async def test_only_the_two_strategies_are_recorded(tmp_path: Path) -> None:
    async with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        run_id = await ledger.start_run("customers", "incremental")
        with pytest.raises(ValueError):
            await ledger.set_change_detection(run_id, "guess", None)
