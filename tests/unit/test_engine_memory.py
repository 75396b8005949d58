"""The real Engine and a real ledger against in-memory SuperOffice and BC (tests/support/memory.py).

Fast (no HTTP, no subprocess): the run's steps end to end — first run writes, a second run changes
nothing, a changed picture is rewritten, a dry run writes and records nothing, a blank source picture is
cleared only on a positive blank signal, and a picture changed in BC during the run is handled by policy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from syncd.config import Config
from syncd.engine import Engine
from syncd.ledger import Ledger
from syncd.run import RunOptions, RunResult, executor_normalizer
from syncd.storage import DryRunWriteError, ReadOnlyTarget
from syncd.superoffice import NoPicture
from syncd.types import Outcome, PlanAction, RunOutcome
from tests.support.memory import MemorySource, MemoryTarget, memory_config, png, target_id

IDS = [1, 2, 3, 4, 5]
RED, GREEN, BLUE = (200, 30, 30), (30, 200, 30), (30, 30, 200)


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    async with Ledger.open(tmp_path / "ledger.sqlite") as opened:
        yield opened


def make_engine(config: Config, source: MemorySource, target: MemoryTarget, ledger: Ledger) -> Engine:
    return Engine(
        config=config,
        source=source,  # type: ignore[arg-type]
        target=target,  # type: ignore[arg-type]
        ledger=ledger,
        normalizer=executor_normalizer(None),
    )


async def run(engine: Engine, config: Config, **options: Any) -> RunResult:
    return await engine.run_mapping(config.mappings[0], RunOptions(**options))


def counts(result: RunResult) -> dict[Outcome, int]:
    return {o: n for o, n in result.counts.by_outcome.items() if n}


async def test_first_run_writes_every_picture_and_records_it(tmp_path: Path, ledger: Ledger) -> None:
    config = memory_config(tmp_path)
    source = MemorySource({i: png(RED) for i in IDS})
    target = MemoryTarget.with_records(IDS)
    result = await run(make_engine(config, source, target, ledger), config)

    assert result.outcome is RunOutcome.OK
    assert counts(result) == {Outcome.WRITTEN: 5}
    assert sorted(target.writes) == [target_id(i) for i in IDS]
    items = await ledger.get_items("customers", "contact", IDS)
    assert {i.status for i in items.values()} == {Outcome.WRITTEN}
    assert all(
        i.wrote_picture and i.target_etag == target.records[i.target_id or ""].etag for i in items.values()
    )
    assert len(await ledger.last_runs("customers")) == 1


async def test_second_run_is_all_unchanged_with_no_download_and_no_write(
    tmp_path: Path, ledger: Ledger
) -> None:
    config = memory_config(tmp_path)
    source = MemorySource({i: png(RED) for i in IDS})
    target = MemoryTarget.with_records(IDS)
    engine = make_engine(config, source, target, ledger)
    await run(engine, config)
    writes, downloads = len(target.writes), len(source.downloads)

    again = await run(engine, config)
    assert counts(again) == {Outcome.UNCHANGED: 5}
    assert again.counts.patches == 0 and again.counts.decodes == 0
    assert len(target.writes) == writes and len(source.downloads) == downloads


async def test_a_changed_picture_is_rewritten_and_only_that_one(tmp_path: Path, ledger: Ledger) -> None:
    config = memory_config(tmp_path)
    source = MemorySource({i: png(RED) for i in IDS})
    target = MemoryTarget.with_records(IDS)
    engine = make_engine(config, source, target, ledger)
    await run(engine, config)
    target.writes.clear()

    source.pictures[3] = png(GREEN)
    result = await run(engine, config)
    assert counts(result) == {Outcome.WRITTEN: 1, Outcome.UNCHANGED: 4}
    assert target.writes == [target_id(3)]


async def test_dry_run_writes_nothing_and_records_nothing(tmp_path: Path, ledger: Ledger) -> None:
    config = memory_config(tmp_path)
    source = MemorySource({i: png(RED) for i in IDS})
    target = MemoryTarget.with_records(IDS)
    result = await run(make_engine(config, source, target, ledger), config, dry_run=True)

    assert result.mode == "dry-run" and result.run_id is None
    assert counts(result) == {Outcome.WRITTEN: 5}
    assert [e.action for e in result.plan] == [PlanAction.WRITE] * 5
    assert target.writes == [] and target.deletes == []
    assert await ledger.count_items("customers") == 0
    assert await ledger.last_runs("customers") == []


async def test_dry_run_after_a_real_run_plans_the_change_but_keeps_the_ledger(
    tmp_path: Path, ledger: Ledger
) -> None:
    config = memory_config(tmp_path)
    source = MemorySource({i: png(RED) for i in IDS})
    target = MemoryTarget.with_records(IDS)
    engine = make_engine(config, source, target, ledger)
    await run(engine, config)
    before = await ledger.get_items("customers", "contact", IDS)
    target.writes.clear()

    source.pictures[2] = png(BLUE)
    result = await run(engine, config, dry_run=True)
    assert counts(result) == {Outcome.WRITTEN: 1, Outcome.UNCHANGED: 4}
    assert {e.action for e in result.plan} == {PlanAction.WRITE, PlanAction.SKIP}
    assert target.writes == []
    assert await ledger.get_items("customers", "contact", IDS) == before
    assert len(await ledger.last_runs("customers")) == 1


async def test_blank_source_is_cleared_on_a_positive_blank_signal(tmp_path: Path, ledger: Ledger) -> None:
    config = memory_config(tmp_path, on_source_blank="clear")
    source = MemorySource({i: png(RED) for i in IDS})
    target = MemoryTarget.with_records(IDS)
    engine = make_engine(config, source, target, ledger)
    await run(engine, config)

    source.pictures[4] = None  # ImageInfo now says: no picture
    result = await run(engine, config)
    assert counts(result) == {Outcome.CLEARED: 1, Outcome.UNCHANGED: 4}
    assert target.deletes == [target_id(4)]
    item = (await ledger.get_items("customers", "contact", [4]))[4]
    assert item.status is Outcome.CLEARED and not item.wrote_picture and item.target_etag is None


async def test_blank_source_found_by_download_is_cleared_only_on_a_204(
    tmp_path: Path, ledger: Ledger
) -> None:
    config = memory_config(tmp_path, on_source_blank="clear")
    source = MemorySource({i: png(RED) for i in IDS})
    target = MemoryTarget.with_records(IDS)
    engine = make_engine(config, source, target, ledger)
    await run(engine, config)

    # No ImageInfo: phase A decides by download; …/Image answers 404 — no proof of "no picture".
    source.image_info = False
    source.pictures[4] = None
    source.blank = NoPicture.NOT_FOUND
    kept = await run(engine, config)
    assert kept.counts.by_outcome[Outcome.KEPT] == 1 and kept.counts.by_outcome[Outcome.CLEARED] == 0
    assert target.deletes == []

    source.blank = NoPicture.CONFIRMED  # 204: a positive blank signal
    cleared = await run(engine, config)
    assert cleared.counts.by_outcome[Outcome.CLEARED] == 1
    assert target.deletes == [target_id(4)]


async def test_blank_source_is_kept_by_default_policy(tmp_path: Path, ledger: Ledger) -> None:
    config = memory_config(tmp_path)  # on_source_blank: keep
    source = MemorySource({i: png(RED) for i in IDS})
    target = MemoryTarget.with_records(IDS)
    engine = make_engine(config, source, target, ledger)
    await run(engine, config)

    source.pictures[4] = None
    result = await run(engine, config)
    assert counts(result) == {Outcome.KEPT: 1, Outcome.UNCHANGED: 4}
    assert target.deletes == []


def someone_changes(target: MemoryTarget, record: str) -> None:
    """Before our first PATCH of ``record``, someone else puts a picture there (a new etag)."""

    def change(rid: str) -> None:
        if rid == record:
            target.records[rid].put(png(BLUE, (20, 20)))
            target.before_write = None

    target.before_write = change


async def test_a_picture_changed_in_bc_during_the_run_is_overwritten_by_default(
    tmp_path: Path, ledger: Ledger
) -> None:
    config = memory_config(tmp_path)  # on_target_changed: overwrite
    source = MemorySource({i: png(RED) for i in IDS})
    target = MemoryTarget.with_records(IDS)
    someone_changes(target, target_id(2))
    result = await run(make_engine(config, source, target, ledger), config)

    assert counts(result) == {Outcome.WRITTEN: 5}
    assert result.counts.patches == 6  # the 409, then the write with the fresh etag
    item = (await ledger.get_items("customers", "contact", [2]))[2]
    assert item.status is Outcome.WRITTEN and item.target_etag == target.records[target_id(2)].etag


async def test_a_picture_changed_in_bc_during_the_run_is_kept_by_keep_policy(
    tmp_path: Path, ledger: Ledger
) -> None:
    config = memory_config(tmp_path, on_target_changed="keep")
    source = MemorySource({i: png(RED) for i in IDS})
    target = MemoryTarget.with_records(IDS)
    someone_changes(target, target_id(2))
    result = await run(make_engine(config, source, target, ledger), config)

    assert counts(result) == {Outcome.WRITTEN: 4, Outcome.KEPT: 1}
    assert target_id(2) not in target.writes
    item = (await ledger.get_items("customers", "contact", [2]))[2]
    assert item.status is Outcome.KEPT and not item.wrote_picture
    assert item.target_etag == target.records[target_id(2)].etag


async def test_a_write_without_an_etag_in_the_reply_is_confirmed_by_the_next_listing(
    tmp_path: Path, ledger: Ledger
) -> None:
    config = memory_config(tmp_path)
    source = MemorySource({i: png(RED) for i in IDS})
    target = MemoryTarget.with_records(IDS)
    target.tell_etag = False
    engine = make_engine(config, source, target, ledger)
    await run(engine, config)
    items = await ledger.get_items("customers", "contact", IDS)
    assert all((i.target_etag or "").startswith("pending:") for i in items.values())

    again = await run(engine, config)
    assert counts(again) == {Outcome.UNCHANGED: 5}
    items = await ledger.get_items("customers", "contact", IDS)
    assert all(i.target_etag == target.records[i.target_id or ""].etag for i in items.values())


async def test_a_dry_runs_target_reads_through_and_refuses_every_write() -> None:
    target = MemoryTarget.with_records([1])
    read_only = ReadOnlyTarget(target)  # type: ignore[arg-type]
    rows = [row async for row in read_only.list("customers", [])]
    assert [row.id for row in rows] == [target_id(1)]
    picture = await read_only.get_picture("customers", target_id(1))
    with pytest.raises(DryRunWriteError, match="dry run tried to write"):
        await read_only.put_picture("customers", target_id(1), picture, png(RED), if_match="*")
    with pytest.raises(DryRunWriteError, match="dry run tried to clear"):
        await read_only.delete_picture("customers", target_id(1), if_match=None)
    assert target.writes == [] and target.deletes == []
