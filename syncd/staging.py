"""A run's scratch database: both listings, the pairs they make and the plan, on disk, not in memory.

A run needs every listed record at once (a key is matched only when it is unique on both sides, and the
clear cap is checked before anything changes), but never needs them as Python objects all at once. So
the engine streams both listings into this store page by page, matches them in SQL
(:func:`syncd.matcher.match`), and then walks the pairs and its plan in chunks keyed by source id. Peak
memory stays the same for 1,000 or 200,000 records; only the ledger and this store grow.

The store is a private temporary SQLite database (``sqlite3.connect("")``): SQLite keeps it in its page
cache while it is small, spills it to a file in ``$SQLITE_TMPDIR``/``$TMPDIR``/``/var/tmp``/``/tmp`` as it
grows, and deletes the file when the store closes. Nothing in it outlives the run; it holds no secrets
(ids, keys, etags). All calls run on one thread of its own, so the event loop never waits for SQLite.
"""

from __future__ import annotations

import asyncio
import marshal
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from syncd import matcher
from syncd.errors import SyncdError
from syncd.ledger.rows import ItemRow
from syncd.matcher import MatchRule, Pair, Problem
from syncd.types import SourceKind, SourceRow, TargetKind, TargetPicture, TargetRow

T = TypeVar("T")

CHUNK = 500  # pairs per step of a run's passes (the ledger reads items in the same chunks)

_STORE_TABLES = """
CREATE TABLE source_data (id INTEGER PRIMARY KEY, updated TEXT);
CREATE TABLE target_data (n INTEGER PRIMARY KEY, has_picture INTEGER NOT NULL, etag TEXT, width INTEGER,
                          height INTEGER, content_type TEXT, edit_link TEXT);
CREATE TABLE plan (source_id INTEGER PRIMARY KEY, action TEXT NOT NULL, fingerprint TEXT, item BLOB);
CREATE TABLE settled (source_id INTEGER PRIMARY KEY, item BLOB);
CREATE TABLE picture (source_id INTEGER PRIMARY KEY, rank INTEGER NOT NULL, link_id INTEGER NOT NULL,
                      blob_id INTEGER NOT NULL, fingerprint TEXT NOT NULL);
"""

_PAIR_COLUMNS = """p.source_id, p.key, sd.updated, t.id AS target_id, t.number AS target_number,
       td.has_picture, td.etag, td.width, td.height, td.content_type, td.edit_link"""
_SELECT_PAIRS = f"""
SELECT {_PAIR_COLUMNS}
FROM pair p JOIN target t ON t.n = p.target_n LEFT JOIN target_data td ON td.n = p.target_n
     LEFT JOIN source_data sd ON sd.id = p.source_id
WHERE p.source_id > ? ORDER BY p.source_id LIMIT ?"""  # noqa: S608 - column names, no values
_SELECT_PLANNED = f"""
SELECT {_PAIR_COLUMNS}, pl.action, pl.fingerprint, pl.item
FROM plan pl CROSS JOIN pair p ON p.source_id = pl.source_id JOIN target t ON t.n = p.target_n
     LEFT JOIN target_data td ON td.n = p.target_n LEFT JOIN source_data sd ON sd.id = p.source_id
WHERE pl.source_id > ? ORDER BY pl.source_id LIMIT ?"""  # noqa: S608 - column names, no values
_SELECT_SETTLED = "SELECT source_id, item FROM settled WHERE source_id > ? ORDER BY source_id LIMIT ?"


class _PairColumns(NamedTuple):
    """A row of :data:`_SELECT_PAIRS`, by name."""

    source_id: int
    key: str
    updated: str | None
    target_id: str
    target_number: str
    has_picture: int
    etag: str | None
    width: int  # width, height and content_type are read only when has_picture
    height: int
    content_type: str
    edit_link: str | None


class _PlannedColumns(NamedTuple):
    """A row of :data:`_SELECT_PLANNED`, by name: the pair's columns, then the plan's."""

    source_id: int
    key: str
    updated: str | None
    target_id: str
    target_number: str
    has_picture: int
    etag: str | None
    width: int  # width, height and content_type are read only when has_picture
    height: int
    content_type: str
    edit_link: str | None
    action: str
    fingerprint: str | None
    item: bytes | None


class _SettledColumns(NamedTuple):
    source_id: int
    item: bytes | None


Keyed = TypeVar("Keyed", _PairColumns, _PlannedColumns, _SettledColumns)


@dataclass(frozen=True, slots=True)
class Planned:
    """One pair phase B is to work on: what phase A decided, and the ledger row it decided from."""

    pair: Pair
    action: str
    fingerprint: str | None
    item: ItemRow | None  # the ledger row phase A saw, as given to add_plan (None: a first sync)


class RunStore:
    """One run's listings, pairs and plan. Open with :meth:`open`; every method is a coroutine."""

    def __init__(self, rule: MatchRule, source_kind: SourceKind, target_kind: TargetKind) -> None:
        self.rule = rule
        self.source_kind: SourceKind = source_kind
        self.target_kind: TargetKind = target_kind
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="syncd-staging")
        self._conn: sqlite3.Connection | None = None
        self._targets = 0

    @classmethod
    @asynccontextmanager
    async def open(
        cls, rule: MatchRule, source_kind: SourceKind, target_kind: TargetKind, path: str = ""
    ) -> AsyncIterator[RunStore]:
        """``path`` "" is a private temporary database (see the module docstring)."""
        store = cls(rule, source_kind, target_kind)
        try:
            await store._call(store._connect, path)
            yield store
        finally:
            await store._call(store._close)
            store._thread.shutdown(wait=False)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        except sqlite3.Error as exc:
            raise SyncdError(
                f"the run's scratch store failed: {exc}",
                hint=(
                    "it is a temporary file in $SQLITE_TMPDIR, $TMPDIR, /var/tmp or /tmp (the first that "
                    "exists), about 1 KB per listed record: make that directory writable and give it room"
                ),
            ) from exc

    def _connect(self, path: str) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.executescript(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA temp_store = FILE;"
            "PRAGMA cache_size = -4096;"  # 4 MB of page cache; the rest waits in the file
            + matcher.LISTING_TABLES
            + _STORE_TABLES
        )
        self._conn = conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None, "RunStore.open() first"
        return self._conn

    # -- listings ---------------------------------------------------------------------------------
    async def add_sources(self, rows: Sequence[SourceRow]) -> None:
        await self._call(self._add_sources, rows)

    def _add_sources(self, rows: Sequence[SourceRow]) -> None:
        with self._db:
            matcher.insert_sources(self._db, self.rule, rows)
            self._db.executemany(
                "INSERT OR IGNORE INTO source_data VALUES (?, ?)", ((s.id, s.updated) for s in rows)
            )

    async def add_targets(self, rows: Sequence[TargetRow]) -> None:
        await self._call(self._add_targets, rows)

    def _add_targets(self, rows: Sequence[TargetRow]) -> None:
        numbered = list(enumerate(rows, start=self._targets))
        self._targets += len(rows)
        with self._db:
            matcher.insert_targets(self._db, self.rule, numbered)
            self._db.executemany(
                "INSERT INTO target_data VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_picture_params(n, t) for n, t in numbered),
            )

    async def match(self) -> list[Problem]:
        return await self._call(self._match)

    def _match(self) -> list[Problem]:
        with self._db:
            return matcher.match(self._db, self.rule)

    async def count_sources(self) -> int:
        return int((await self._one("SELECT count(*) FROM source"))[0])

    async def count_pairs(self) -> int:
        return int((await self._one("SELECT count(*) FROM pair"))[0])

    async def newest_update(self) -> str | None:
        """The newest ``updated`` of every listed source (the next incremental run's watermark)."""
        value = (await self._one("SELECT max(updated) FROM source_data WHERE updated <> ''"))[0]
        return str(value) if value else None

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        return await self._call(lambda: tuple(self._db.execute(sql, params).fetchone()))

    # -- pairs and plan ---------------------------------------------------------------------------
    async def pairs(self, limit: int = CHUNK) -> AsyncIterator[list[Pair]]:
        """Every pair, by source id, ``limit`` at a time."""
        async for rows in self._pages(_SELECT_PAIRS, _PairColumns, limit):
            yield [self._pair(r) for r in rows]

    async def add_plan(self, rows: Sequence[tuple[int, str, str | None, ItemRow | None]]) -> None:
        """Phase B's items: (source id, action, fingerprint, ledger row or None) per pair."""
        packed = [(sid, action, fp, None if row is None else pack(row)) for sid, action, fp, row in rows]
        await self._call(self._insert, "INSERT OR REPLACE INTO plan VALUES (?, ?, ?, ?)", packed)

    async def add_settled(self, rows: Sequence[tuple[int, ItemRow | None]]) -> None:
        """Ledger rows phase A settled, to record once the run's safety checks pass: (source id, row),
        row None for an item whose row stays as it is but for the time it was checked."""
        packed = [(sid, None if row is None else pack(row)) for sid, row in rows]
        await self._call(self._insert, "INSERT OR REPLACE INTO settled VALUES (?, ?)", packed)

    def _insert(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        with self._db:
            self._db.executemany(sql, rows)

    async def count_plan(self, action: str | None = None) -> int:
        """Phase B's items, or those with one ``action``."""
        if action is None:
            return int((await self._one("SELECT count(*) FROM plan"))[0])
        return int((await self._one("SELECT count(*) FROM plan WHERE action = ?", (action,)))[0])

    async def planned(self, limit: int = CHUNK) -> AsyncIterator[list[Planned]]:
        """Phase B's items with their pairs, by source id, ``limit`` at a time."""
        async for rows in self._pages(_SELECT_PLANNED, _PlannedColumns, limit):
            yield [Planned(self._pair(r), r.action, r.fingerprint, _item(r.item)) for r in rows]

    async def settled(self, limit: int) -> AsyncIterator[list[tuple[int, ItemRow | None]]]:
        """The settled (source id, ledger row or None) as added, by source id, ``limit`` at a time."""
        async for rows in self._pages(_SELECT_SETTLED, _SettledColumns, limit):
            yield [(r.source_id, _item(r.item)) for r in rows]

    async def _pages(self, sql: str, columns: type[Keyed], limit: int) -> AsyncIterator[list[Keyed]]:
        """Rows of ``sql`` (parameters: after, limit) a page at a time, keyed by their ``source_id``.
        The next page is read while the caller works on this one."""

        def page(after: int) -> list[Keyed]:
            cursor = self._db.execute(sql, (after, limit))
            names = tuple(d[0] for d in cursor.description)
            if names != columns._fields:  # the query and the names it is read by must agree
                raise AssertionError(f"{columns.__name__} names {columns._fields}; the query gives {names}")
            return [_new(columns, r) for r in cursor.fetchall()]  # _make's C constructor, without its frame

        rows = await self._call(page, -1)
        while rows:
            following = asyncio.ensure_future(self._call(page, rows[-1].source_id))
            try:
                yield rows
            except BaseException:
                following.cancel()
                raise
            rows = await following

    # -- picture fingerprints (syncd.fingerprints' bulk pass) --------------------------------------
    async def add_pictures(self, rows: Sequence[tuple[int, int, int, int, str]]) -> None:
        """(source id, rank, link id, blob id, fingerprint) per picture link; of one source's links the
        lowest rank (then the lowest link id) is its picture."""
        await self._call(
            self._insert,
            "INSERT INTO picture VALUES (?, ?, ?, ?, ?) ON CONFLICT (source_id) DO UPDATE SET "
            "rank = excluded.rank, link_id = excluded.link_id, blob_id = excluded.blob_id, "
            "fingerprint = excluded.fingerprint WHERE (excluded.rank, excluded.link_id) < (rank, link_id)",
            rows,
        )

    async def clear_pictures(self) -> None:
        await self._call(self._insert, "DELETE FROM picture", [()])

    async def pictures(self, ids: Sequence[int]) -> dict[int, tuple[int, str]]:
        """(blob id, fingerprint) of those of ``ids`` that have a picture."""
        marks = ",".join("?" * len(ids))
        sql = f"SELECT source_id, blob_id, fingerprint FROM picture WHERE source_id IN ({marks})"  # noqa: S608
        rows = await self._call(lambda: self._db.execute(sql, tuple(ids)).fetchall()) if ids else []
        return {int(r[0]): (int(r[1]), str(r[2])) for r in rows}

    async def sample_sources(self, n: int, *, with_picture: bool) -> list[int]:
        """Up to ``n`` listed source ids with (or without) a picture in the pass, spread over the ids."""
        cond = "IS NOT NULL" if with_picture else "IS NULL"
        sql = (
            "SELECT sd.id FROM source_data sd LEFT JOIN picture pc ON pc.source_id = sd.id "  # noqa: S608
            f"WHERE pc.source_id {cond} ORDER BY (sd.id * 2654435761) % 4294967296 LIMIT ?"
        )
        rows = await self._call(lambda: self._db.execute(sql, (n,)).fetchall())
        return sorted(int(r[0]) for r in rows)

    def _pair(self, r: _PairColumns | _PlannedColumns) -> Pair:
        """A pair as the engine uses it: ids, number, updated date and picture (no listed columns)."""
        picture = (
            TargetPicture(r.etag, r.width, r.height, r.content_type, r.edit_link) if r.has_picture else None
        )
        target = TargetRow(self.target_kind, r.target_id, r.target_number, "", {}, picture)
        return Pair(SourceRow(self.source_kind, r.source_id, {}, r.updated), target, r.key)


def _item(packed: bytes | None) -> ItemRow | None:
    return None if packed is None else _new(ItemRow, unpack(packed))


_new = tuple.__new__


def pack(row: Sequence[Any]) -> bytes:
    """A row of plain values (str, int, float, bytes, None) as bytes; the inverse of :func:`unpack`.
    ``marshal``: ~10x faster than JSON for these, and only ever reads what this process wrote."""
    return marshal.dumps(tuple(row))


def unpack(data: bytes) -> tuple[Any, ...]:
    row = marshal.loads(data)  # noqa: S302 - our own rows, written by this process into its private store
    assert isinstance(row, tuple)
    return row


def _picture_params(n: int, t: TargetRow) -> tuple[Any, ...]:
    p = t.picture
    if p is None:
        return (n, 0, None, 0, 0, "", None)
    return (n, 1, p.etag, p.width, p.height, p.content_type, p.edit_link)
