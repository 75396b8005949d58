"""Measure 6: the decision pass over a large ledger with nothing changed.

The real :class:`syncd.engine.Engine` and :class:`syncd.ledger.Ledger` (a SQLite file), with in-memory
stand-ins for the two APIs, so only listing-matching, ledger reads, decisions and the ledger's batch
write are timed: N source rows, N matching BC rows whose picture etag is the one the ledger holds, and
N ledger rows saying "written, same fingerprint, same normalizer" — every item decides SKIP. The
stand-in SuperOffice client fails the benchmark if the engine downloads a picture.

Reported: total time of ``run_mapping``; time in ``Ledger.get_items`` (the batched read), in phase A's
decisions, and in recording what the pass settled once the run's safety checks pass; SQL
statements sent to SQLite (``Ledger.queries``) in total and by ``get_items``. Bar: batched reads —
``get_items`` queries ≤ N / 500 + 1 (one ``IN (…)`` query per 500 ids), not one query per item.
"""

from __future__ import annotations

import asyncio
import functools
import math
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from syncd import planning
from syncd.config import load_config
from syncd.engine import Engine
from syncd.ledger import CHUNK, Ledger, LedgerItem
from syncd.run import RunOptions
from syncd.types import Outcome, SourceKind, SourceRow, TargetKind, TargetPicture, TargetRow

T = TypeVar("T")


class FakeSource:
    """SuperOffice as the engine sees it: listing and ImageInfo fingerprints from memory."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.fingerprints = 0

    async def list(self, kind: SourceKind, columns: Sequence[str], **_: object) -> AsyncIterator[SourceRow]:
        for i in range(1, self.n + 1):
            yield SourceRow(kind=kind, id=i, columns={"code": f"C{i:06d}"}, updated="2024-12-01T00:00:00")

    async def fingerprint(self, kind: SourceKind, entity_id: int) -> str | None:
        self.fingerprints += 1
        return _fingerprint(entity_id)

    async def image(self, kind: SourceKind, entity_id: int) -> bytes | None:
        raise AssertionError("an unchanged item was downloaded")


class FakeTarget:
    """Business Central as the engine sees it: a listing with picture etags; writes are a failure."""

    def __init__(self, n: int) -> None:
        self.n = n

    async def list(self, kind: TargetKind, fields: Sequence[str], **_: object) -> AsyncIterator[TargetRow]:
        for i in range(1, self.n + 1):
            yield TargetRow(
                kind=kind,
                id=_target_id(i),
                number=f"C{i:06d}",
                display_name="",
                fields={},
                picture=TargetPicture(
                    etag=_etag(i), width=500, height=375, content_type="image/jpeg", edit_link=None
                ),
            )

    async def put_picture(self, *args: Any, **kwargs: Any) -> str | None:
        raise AssertionError("an unchanged item was written")


def _fingerprint(i: int) -> str:
    return f"{1000 + i}|2024-11-01T10:00:00|23456|23456|image/jpeg"


def _target_id(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def _etag(i: int) -> str:
    return f'W/"JzE5OzEyMDYzMDQyMjE5NzcxNDcwMDA{i:08d}Ow=="'


def _timed(fn: Callable[..., Awaitable[T]], into: dict[str, float]) -> Callable[..., Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        t0 = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            into[fn.__name__] = into.get(fn.__name__, 0.0) + time.perf_counter() - t0

    return wrapper


async def _run(n: int, directory: Path) -> dict[str, Any]:
    cfg = {
        "superoffice": {
            "base_url": "http://127.0.0.1:9/Cust1/api/v1",
            "auth": {"type": "basic", "username": "u", "password": "p"},
            "change_detection": "per_record",  # this measure's fake source answers ImageInfo only
        },
        "businesscentral": {
            "base_url": "http://127.0.0.1:9/v2.0/t/production/api/v2.0",
            "company": "CRONUS",
            "auth": {"type": "basic", "username": "u", "password": "p"},
        },
        "ledger": str(directory / "ledger.sqlite"),
        "mappings": [
            {
                "name": "customers",
                "source": "contact",
                "target": "customers",
                "match": {"source": "code", "target": "number"},
            }
        ],
    }
    path = directory / "syncd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    config = load_config(path)
    mapping = config.mappings[0]
    version = config.picture_profile().cache_key()

    ledger = await Ledger.open(config.ledger)
    try:
        t0 = time.perf_counter()
        batch: list[LedgerItem] = []
        for i in range(1, n + 1):
            batch.append(
                LedgerItem(
                    mapping="customers",
                    source_kind="contact",
                    source_id=i,
                    target_kind="customers",
                    status=Outcome.WRITTEN,
                    target_id=_target_id(i),
                    target_number=f"C{i:06d}",
                    source_fingerprint=_fingerprint(i),
                    source_hash="a" * 64,
                    output_hash="b" * 64,
                    target_etag=_etag(i),
                    normalizer_version=version,
                    wrote_picture=True,
                    synced_at="2024-11-01T10:00:00+00:00",
                    checked_at="2024-11-01T10:00:00+00:00",
                )
            )
            if len(batch) == 10_000:
                await ledger.record_many(batch)
                batch = []
        await ledger.record_many(batch)
        fill_seconds = time.perf_counter() - t0

        source, target = FakeSource(n), FakeTarget(n)

        async def no_normalizer(data: bytes, profile: Any, thumbnail: Any = None) -> Any:
            raise AssertionError("an unchanged item was decoded")

        engine = Engine(
            config=config,
            source=source,  # type: ignore[arg-type]
            target=target,  # type: ignore[arg-type]
            ledger=ledger,
            normalizer=no_normalizer,
        )
        timings: dict[str, float] = {}
        get_items_queries = 0
        original_get_items = ledger.get_items

        async def counting_get_items(*args: Any, **kwargs: Any) -> dict[int, LedgerItem]:
            nonlocal get_items_queries
            before = ledger.queries
            try:
                return await original_get_items(*args, **kwargs)
            finally:
                get_items_queries += ledger.queries - before

        ledger.get_items = _timed(counting_get_items, timings)  # type: ignore[method-assign,assignment]
        ledger.record_rows = _timed(ledger.record_rows, timings)  # type: ignore[method-assign,assignment]
        ledger.set_checked = _timed(ledger.set_checked, timings)  # type: ignore[method-assign,assignment]
        planning.decide_pairs = _timed(planning.decide_pairs, timings)  # type: ignore[assignment]

        async def one_pass() -> dict[str, Any]:
            nonlocal get_items_queries
            timings.clear()
            get_items_queries = 0
            fingerprints_before = source.fingerprints
            queries_before = ledger.queries
            t0 = time.perf_counter()
            result = await engine.run_mapping(mapping, RunOptions())
            seconds = time.perf_counter() - t0
            skipped = result.counts.by_outcome.get(Outcome.UNCHANGED, 0)
            return {
                "seconds": seconds,
                "items_per_second": n / seconds,
                "unchanged": skipped,
                "outcome": result.outcome,
                "queries_total": ledger.queries - queries_before,
                "queries_get_items": get_items_queries,
                "get_items_seconds": timings.get("counting_get_items", 0.0),
                "plan_seconds": timings.get("decide_pairs", 0.0),
                "record_seconds": timings.get("record_rows", 0.0) + timings.get("set_checked", 0.0),
                "fingerprint_calls": source.fingerprints - fingerprints_before,
            }

        first = await one_pass()  # rows "written" become "unchanged": every row is rewritten
        steady = await one_pass()  # as every pass after it: only checked_at moves
    finally:
        await ledger.close()
    bound = math.ceil(n / CHUNK) + 1
    return {
        "rows": n,
        "fill_seconds": fill_seconds,
        **first,
        "steady": steady,
        "bars": {
            "batched_reads": max(first["queries_get_items"], steady["queries_get_items"]) <= bound,
            "all_skipped": first["unchanged"] == steady["unchanged"] == n,
        },
    }


def run(n: int, workdir: Path | None = None) -> dict[str, Any]:
    if workdir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return asyncio.run(_run(n, Path(tmp)))
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    return asyncio.run(_run(n, workdir))
