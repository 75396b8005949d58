"""The run's store: listings, pairs and plan on disk, walked in chunks; and a run that goes through it in
chunks far smaller than its listings ends exactly like the expected sync."""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import pytest

from syncd.config import load_config
from syncd.errors import SyncdError
from syncd.jobs import run_job
from syncd.ledger import LedgerItem
from syncd.matcher import MatchRule, normalize_key
from syncd.run import RunOptions
from syncd.runtime import open_runtime
from syncd.sandbox.server import Sandbox
from syncd.staging import RunStore, pack, unpack
from syncd.types import Outcome, SourceRow, TargetPicture, TargetRow
from tests.support.e2e import write_config
from tests.support.matching import join


def src(i: int, code: str, updated: str | None = None) -> SourceRow:
    return SourceRow(kind="contact", id=i, columns={"code": code}, updated=updated)


def tgt(i: str, number: str, picture: TargetPicture | None = None) -> TargetRow:
    return TargetRow(kind="customers", id=i, number=number, display_name="", fields={}, picture=picture)


RULE = MatchRule.of("code", "number", None)


async def test_pairs_come_back_by_source_id_in_pages_with_their_pictures() -> None:
    picture = TargetPicture('W/"JzE7"', 500, 375, "image/jpeg", "https://bc.example/pic/content")
    async with RunStore.open(RULE, "contact", "customers") as store:
        await store.add_targets([tgt(f"g{i}", f"C{i}", picture if i % 3 == 0 else None) for i in range(50)])
        await store.add_sources([src(i, f" c{i} ", f"2024-01-{1 + i % 28:02d}") for i in reversed(range(50))])
        assert await store.match() == []
        pages = [page async for page in store.pairs(limit=7)]
    assert [len(p) for p in pages] == [7] * 7 + [1]
    pairs = [p for page in pages for p in page]
    assert [p.source.id for p in pairs] == list(range(50))
    for p in pairs:
        assert p.target.id == f"g{p.source.id}" and p.target.number == f"C{p.source.id}"
        assert p.key == f"c{p.source.id}"
        assert p.source.updated == f"2024-01-{1 + p.source.id % 28:02d}"
        assert p.target.picture == (picture if p.source.id % 3 == 0 else None)


async def test_a_record_listed_twice_counts_once_on_either_side() -> None:
    # A page boundary that moves while paging repeats a row; that must not make its key ambiguous.
    async with RunStore.open(RULE, "contact", "customers") as store:
        await store.add_targets([tgt("g1", "C1"), tgt("g2", "C2")])
        await store.add_targets([tgt("g2", "C2")])
        await store.add_sources([src(1, "C1"), src(2, "C2")])
        await store.add_sources([src(2, "C2")])
        assert await store.match() == []
        assert await store.count_sources() == 2
        pairs = [p async for page in store.pairs() for p in page]
    assert [(p.source.id, p.target.id) for p in pairs] == [(1, "g1"), (2, "g2")]


async def test_newest_update_is_the_latest_listed_date_blank_dates_ignored() -> None:
    async with RunStore.open(RULE, "contact", "customers") as store:
        assert await store.newest_update() is None
        await store.add_sources([src(1, "a", "2024-05-01T10:00:00"), src(2, "b", ""), src(3, "c", None)])
        await store.add_sources([src(4, "d", "2024-05-02")])
        assert await store.newest_update() == "2024-05-02"


async def test_plan_and_settled_rows_come_back_as_they_went_in() -> None:
    item = LedgerItem(
        mapping="customers",
        source_kind="contact",
        source_id=4,
        target_kind="customers",
        status=Outcome.WRITTEN,
        target_id="g4",
        target_etag='W/"JzQ7"',
        wrote_picture=True,
        error="naïve ✓",
        attempts=2,
    )
    assert LedgerItem.from_row(unpack(pack(item.to_row()))) == item
    async with RunStore.open(RULE, "contact", "customers") as store:
        await store.add_targets([tgt(f"g{i}", f"C{i}") for i in range(1, 6)])
        await store.add_sources([src(i, f"C{i}") for i in range(1, 6)])
        await store.match()
        await store.add_plan([(4, "fetch", "fp4", item.to_row()), (2, "clear", None, None)])
        await store.add_settled([(5, item.to_row()), (3, None), (1, item.to_row())])
        assert await store.count_plan() == 2 and await store.count_plan("clear") == 1
        planned = [p async for page in store.planned(limit=1) for p in page]
        settled = [r async for page in store.settled(limit=1) for r in page]
    assert [(p.pair.source.id, p.pair.target.id, p.action, p.fingerprint) for p in planned] == [
        (2, "g2", "clear", None),
        (4, "g4", "fetch", "fp4"),
    ]
    assert planned[0].item is None and planned[1].item is not None
    assert LedgerItem.from_row(planned[1].item) == item
    assert [(sid, r and LedgerItem.from_row(r)) for sid, r in settled] == [(1, item), (3, None), (5, item)]


def reference_join(
    sources: list[SourceRow], targets: list[TargetRow], pairs: dict[str, str]
) -> tuple[set[tuple[int, str]], dict[int, str]]:
    """The matching rule written out plainly in Python: what the SQL must agree with."""
    explicit = {int(k): normalize_key(v) for k, v in pairs.items()}
    by_key: dict[str, list[str]] = defaultdict(list)
    by_number: dict[str, list[str]] = defaultdict(list)
    for t in targets:
        if normalize_key(t.number):
            by_key[normalize_key(t.number)].append(t.id)
        by_number[normalize_key(t.number)].append(t.id)
    groups: dict[str, list[int]] = defaultdict(list)
    paired: set[tuple[int, str]] = set()
    problems: dict[int, str] = {}
    for s in sources:
        if s.id in explicit:
            found = by_number.get(explicit[s.id], [])
            if len(found) == 1:
                paired.add((s.id, found[0]))
            else:
                problems[s.id] = "unmatched" if not found else "ambiguous"
            continue
        key = normalize_key(s.columns["code"])
        if not key:
            problems[s.id] = "unmatched"
        else:
            groups[key].append(s.id)
    for key, ids in groups.items():
        found = by_key.get(key, [])
        if len(found) == 1 and len(ids) == 1:
            paired.add((ids[0], found[0]))
        for i in ids if not (len(found) == 1 and len(ids) == 1) else []:
            problems[i] = "unmatched" if not found else "ambiguous"
    claims: dict[str, list[int]] = defaultdict(list)
    for sid, tid in paired:
        claims[tid].append(sid)
    for tid, sids in claims.items():
        if len(sids) > 1:  # one BC record, two pairs: neither
            paired -= {(sid, tid) for sid in sids}
            problems.update({sid: "ambiguous" for sid in sids})
    return paired, problems


def variant(rng: random.Random, key: str) -> str:
    return rng.choice([key, key.lower(), f"  {key} ", key.replace("K", "k ")])


def test_the_sql_join_agrees_with_the_rule_written_out_on_random_listings() -> None:
    for seed in range(40):
        rng = random.Random(seed)
        keys = [f"K{k}" for k in range(rng.randint(1, 30))]

        sources = [
            src(i, variant(rng, rng.choice(keys)) if rng.random() > 0.1 else "")
            for i in range(rng.randint(0, 40))
        ]
        targets = [tgt(f"g{i}", variant(rng, rng.choice(keys))) for i in range(rng.randint(0, 40))]
        explicit = {str(s.id): variant(rng, rng.choice(keys)) for s in sources if rng.random() < 0.1}
        result = join(sources, targets, source_column="code", target_field="number", pairs=explicit)
        paired, problems = reference_join(sources, targets, explicit)
        assert {(p.source.id, p.target.id) for p in result.pairs} == paired, seed
        got = {sid: p.kind for p in result.problems for sid in p.source_ids}
        assert got == problems, seed
        assert [min(p.source_ids) for p in result.problems] == sorted(
            min(p.source_ids) for p in result.problems
        )


async def test_a_run_in_chunks_of_seven_ends_like_the_expected_sync(tmp_path: Path) -> None:
    async with Sandbox(seed=11, contacts=120, persons=0) as sb:
        exp = sb.dataset.expected["mappings"]["customers"]
        path = write_config(sb, tmp_path, mappings=[sb.config()["mappings"][0]])
        config = load_config(path)

        async with open_runtime(config) as rt:
            rt.engine.chunk_size = 7
            [dry] = await run_job(rt, config.mappings, RunOptions(dry_run=True))
        assert dry.result is not None
        assert sb.bc.log.count(method="PATCH") == 0
        planned = {int(e.source.split()[1]): e.action for e in dry.result.plan}
        planned |= {s: p.kind for p in dry.result.match_problems for s in p.source_ids}
        # A dry run does not decode: the broken pictures are planned as writes too.
        as_planned = {"written": "write", "failed": "write", "blank": "blank"}
        assert planned == {s: as_planned.get(o, o) for s, o in exp["outcomes"].items()}

        limited = write_config(
            sb,
            tmp_path,
            name="limited.yaml",
            mappings=[sb.config()["mappings"][0]],
            limits={"max_items_per_run": 5},
        )
        async with open_runtime(load_config(limited)) as rt:
            rt.engine.chunk_size = 7
            [budget] = await run_job(rt, config.mappings, RunOptions())
        assert budget.result is not None and budget.result.outcome == "budget"
        assert sb.bc.log.count(method="PATCH") == budget.result.counts.patches == 5

        async with open_runtime(config) as rt:
            rt.engine.chunk_size = 7
            [first] = await run_job(rt, config.mappings, RunOptions())
            assert rt.ledger is not None
            ledger_rows = await rt.ledger.count_items("customers")
        assert first.result is not None
        counts = first.result.counts.as_dict()
        assert counts["written"] == len(exp["written"]) - 5
        assert counts["unchanged"] == 5
        assert counts["failed"] == len(exp["broken"]) and counts["blank"] == len(exp["blank"])
        assert counts["unmatched"] == len(exp["unmatched"]) and counts["ambiguous"] == len(exp["ambiguous"])
        assert ledger_rows == len(exp["written"]) + len(exp["broken"]) + len(exp["blank"])
        for source_id, target_id in exp["written"]:
            record = sb.dataset.bc.get_record(sb.dataset.company_id, "customers", target_id)
            assert record.picture is not None, f"contact {source_id} → {target_id} not written"

        patches = sb.bc.log.count(method="PATCH")
        async with open_runtime(config) as rt:
            rt.engine.chunk_size = 7
            [again] = await run_job(rt, config.mappings, RunOptions())
        assert again.result is not None
        assert sb.bc.log.count(method="PATCH") == patches
        assert again.result.counts.as_dict()["unchanged"] == len(exp["written"])


async def test_a_store_that_cannot_be_written_is_a_clear_error_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(SyncdError, match="scratch store failed") as caught:
        async with RunStore.open(RULE, "contact", "customers", path=str(tmp_path / "missing" / "s.db")):
            pass
    assert caught.value.hint is not None and "TMPDIR" in caught.value.hint


async def test_confirmed_etags_are_recorded_and_an_unchanged_pass_moves_only_checked_at(
    tmp_path: Path,
) -> None:
    async with Sandbox(seed=5, contacts=40, persons=0) as sb:
        path = write_config(sb, tmp_path, mappings=[sb.config()["mappings"][0]])
        config = load_config(path)

        async def run_and_read() -> dict[int, LedgerItem]:
            async with open_runtime(config) as rt:
                rt.engine.chunk_size = 7
                await run_job(rt, config.mappings, RunOptions())
                assert rt.ledger is not None
                return {i.source_id: i async for i in rt.ledger.iter_items("customers")}

        first = await run_and_read()
        written = [i for i in first.values() if i.status is Outcome.WRITTEN]
        assert written and all(i.target_etag and i.target_etag.startswith("pending:") for i in written)

        second = await run_and_read()  # the listing tells the etags the PATCH replies did not
        for sid, before in first.items():
            after = second[sid]
            if before.status is Outcome.WRITTEN:
                assert after.target_id is not None
                record = sb.dataset.bc.get_record(sb.dataset.company_id, "customers", after.target_id)
                assert record.picture is not None and after.target_etag == record.picture_etag
                assert after.status is Outcome.UNCHANGED

        third = await run_and_read()
        assert third.keys() == second.keys()
        for sid, item in third.items():
            assert dataclasses.replace(item, checked_at=None) == dataclasses.replace(
                second[sid], checked_at=None
            )
            assert item.checked_at is not None and second[sid].checked_at is not None
            assert item.checked_at >= second[sid].checked_at


async def test_a_page_is_read_only_by_the_names_its_query_gives() -> None:
    class Misnamed(NamedTuple):  # the settled query's columns are (source_id, item)
        source_id: int
        row: bytes | None

    sql = "SELECT source_id, item FROM settled WHERE source_id > ? ORDER BY source_id LIMIT ?"
    async with RunStore.open(RULE, "contact", "customers") as store:
        await store.add_settled([(1, None)])
        with pytest.raises(AssertionError, match=r"query gives \('source_id', 'item'\)"):
            _ = [rows async for rows in store._pages(sql, Misnamed, 10)]  # type: ignore[type-var]
