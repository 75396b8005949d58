"""The ledger: what syncd knows about every picture it mirrored, in one SQLite file (via aiosqlite).

Tables
    items           one row per source record of a mapping: which BC record it matched, the source
                    fingerprint/hash, the output hash and BC etag after our last write, and how the
                    last run ended for it (a :class:`syncd.types.Outcome` value). ``wrote_picture`` means
                    "the BC picture is ours": we wrote it and nobody has replaced it since.
    runs            one row per run of a mapping; a row without ``finished_at`` is a run in progress,
                    or one whose process died (marked ``interrupted`` when that is certain, see below).
    watermarks      per mapping and source kind, the ``updated_after`` the next incremental run lists from.
    issues          unmatched / ambiguous / failed records of a mapping's last finished run.
    recent_changes  the last few written pictures as small thumbnails, for the status page.
    companies       per mapping, the Business Central company (id and name) and entity its rows describe.

Durability and crash safety
    - Journal mode WAL: readers (``syncd status``) never block the writer and the writer never blocks them;
      a crash at any instant leaves the file intact: a half-written transaction is ignored on reopen.
    - Each :meth:`Ledger.record` is its own ``BEGIN IMMEDIATE … COMMIT``; no transaction ever spans a run.
      ``IMMEDIATE`` takes the write lock up front so a second writer waits ``busy_timeout`` instead of
      failing with SQLITE_BUSY on a read→write upgrade.
    - ``synchronous=FULL``. With WAL, ``NORMAL`` already survives ``kill -9`` (a commit is in the OS page
      cache when it returns), but on power loss or a kernel crash it may roll back *every* commit since the
      last checkpoint, up to ~1000 pages of items. For an item whose BC write succeeded, a lost row looks
      like "someone changed the picture in BC" (etag mismatch), so with ``on_target_changed: keep`` syncd
      would stop mirroring those records for good, and with ``overwrite`` it would repeat the PATCHes.
      ``FULL`` fsyncs the WAL at each commit, which shrinks that window to the single item in flight.
      Cost: one fsync per written item (0.24 ms here, a few ms on slow disks), while BC caps a tenant at
      ~20 requests/s; what a run settles without writing goes through :meth:`record_rows` (changed rows)
      and :meth:`set_checked` (rows where only ``checked_at`` moves) with one fsync per 2,000 items.
    - Secrets are never stored: rows hold ids, hashes, etags and error messages; error text (which may
      quote a server that echoed a credential) is redacted as it is stored, and again as it is read.
      The file is created mode 0600 (thumbnails of people's photos are personal data); SQLite gives
      the -wal/-shm files the same mode.

Concurrency
    - One :class:`Ledger` is one connection. Its write transactions are serialized by an asyncio lock, so
      many engine workers may call :meth:`record` concurrently.
    - Several processes may open the same file; SQLite serializes writers. Mapping-level exclusion (two
      processes syncing the same mapping) is :mod:`syncd.locks`' job, and callers must hold the mapping's
      :class:`~syncd.locks.MappingLock` from :meth:`Ledger.start_run` to :meth:`Ledger.finish_run`.
    - ``readonly=True`` opens the file with ``mode=ro`` for ``syncd status`` while a daemon writes;
      every mutating method then raises :class:`ReadOnlyLedgerError`.

Interrupted runs
    A run whose process died has no ``finished_at``. On a read-write open, such runs are marked
    ``interrupted`` when their mapping's lock is free, i.e. no live process is running that mapping; a run
    in progress in another process is left alone. :meth:`Ledger.start_run` marks any leftover unfinished
    run of its own mapping too, since its caller holds that mapping's lock.

Schema versions
    ``PRAGMA user_version`` counts the applied steps of :data:`MIGRATIONS`. Opening applies the missing
    steps in one transaction; a file from a newer syncd (higher version) is refused, never "downgraded".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, get_args

import aiosqlite

from syncd import locks
from syncd.errors import ConfigError
from syncd.servertext import clean, clean_optional
from syncd.types import Outcome

__all__ = [
    "CHUNK",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "CompanyBinding",
    "Issue",
    "IssueKind",
    "Ledger",
    "LedgerItem",
    "ReadOnlyLedgerError",
    "RecentChange",
    "RunMode",
    "RunOutcome",
    "RunRecord",
    "utcnow",
]

RunMode = Literal["incremental", "full", "dry-run"]
RunOutcome = Literal["ok", "partial", "failed", "safety_stop", "interrupted", "budget"]
IssueKind = Literal["unmatched", "ambiguous", "failed"]

CHUNK = 500  # ids per ``IN (...)`` query in get_items: well under SQLite's 32766 variables, few round trips
KEEP_RUNS = 1000  # run rows kept per mapping (10-minute schedule: about a week)
KEEP_RECENT = 20  # recent_changes rows kept per mapping
MAX_THUMB_BYTES = 64 * 1024  # a status-page thumbnail; anything bigger is a caller bug
MAX_ERROR_CHARS = 2000  # error text kept per item / run / issue

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # v1: initial schema
    (
        """CREATE TABLE items (
            mapping TEXT NOT NULL,
            source_kind TEXT NOT NULL,
            source_id INTEGER NOT NULL,
            target_kind TEXT NOT NULL,
            target_id TEXT,
            target_number TEXT,
            source_fingerprint TEXT,
            source_hash TEXT,
            output_hash TEXT,
            target_etag TEXT,
            normalizer_version TEXT,
            wrote_picture INTEGER NOT NULL DEFAULT 0 CHECK (wrote_picture IN (0, 1)),
            status TEXT NOT NULL,
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            synced_at TEXT,
            checked_at TEXT,
            PRIMARY KEY (mapping, source_kind, source_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            mapping TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            mode TEXT NOT NULL,
            counts_json TEXT NOT NULL DEFAULT '{}',
            outcome TEXT,
            error TEXT
        )""",
        "CREATE INDEX runs_by_mapping ON runs (mapping, id)",
        "CREATE INDEX runs_unfinished ON runs (mapping) WHERE finished_at IS NULL",
        """CREATE TABLE watermarks (
            mapping TEXT NOT NULL,
            source_kind TEXT NOT NULL,
            updated_after TEXT NOT NULL,
            PRIMARY KEY (mapping, source_kind)
        ) WITHOUT ROWID""",
        """CREATE TABLE issues (
            run_id INTEGER NOT NULL,
            mapping TEXT NOT NULL,
            kind TEXT NOT NULL,
            source_id INTEGER NOT NULL,
            target_ids TEXT NOT NULL DEFAULT '[]',
            key TEXT,
            detail TEXT
        )""",
        "CREATE INDEX issues_by_mapping ON issues (mapping, kind, source_id)",
        """CREATE TABLE recent_changes (
            id INTEGER PRIMARY KEY,
            mapping TEXT NOT NULL,
            source_kind TEXT NOT NULL,
            source_id INTEGER NOT NULL,
            target_id TEXT,
            outcome TEXT NOT NULL,
            written_at TEXT NOT NULL,
            source_thumb BLOB,
            output_thumb BLOB
        )""",
        "CREATE INDEX recent_by_mapping ON recent_changes (mapping, id)",
    ),
    # v2: which change detection each run used (syncd.fingerprints), and why when it fell back
    (
        "ALTER TABLE runs ADD COLUMN change_detection TEXT",
        "ALTER TABLE runs ADD COLUMN change_detection_note TEXT",
    ),
    # v3: several Business Central companies (issue #15): each mapping is bound to the company its rows
    # describe, and each run records its company. Self-contained (touches no other step's tables or
    # columns). A v1 or v2 ledger's mappings bind on their next run.
    (
        """CREATE TABLE companies (
            mapping TEXT PRIMARY KEY,
            company_id TEXT NOT NULL,
            company TEXT NOT NULL,
            target_kind TEXT NOT NULL,
            bound_at TEXT NOT NULL
        ) WITHOUT ROWID""",
        "ALTER TABLE runs ADD COLUMN company TEXT",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def utcnow() -> datetime:
    """The default ledger clock: an aware UTC datetime."""
    return datetime.now(UTC)


class ReadOnlyLedgerError(RuntimeError):
    """A mutating method was called on a ledger opened with ``readonly=True`` (a programming error)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerItem:
    """One ``items`` row. Frozen: derive the next state with ``dataclasses.replace``."""

    mapping: str
    source_kind: str
    source_id: int
    target_kind: str
    status: Outcome
    target_id: str | None = None
    target_number: str | None = None
    source_fingerprint: str | None = None
    source_hash: str | None = None
    output_hash: str | None = None
    target_etag: str | None = None
    normalizer_version: str | None = None
    wrote_picture: bool = False
    error: str | None = None
    attempts: int = 0
    synced_at: str | None = None  # when we last changed the BC picture (write or clear)
    checked_at: str | None = None  # when a run last decided about this item


_ITEM_COLUMNS = tuple(f.name for f in fields(LedgerItem))


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One ``runs`` row. ``finished_at``/``outcome`` are ``None`` while the run is in progress."""

    id: int
    mapping: str
    started_at: str
    finished_at: str | None
    mode: str
    counts: dict[str, int]
    outcome: str | None
    error: str | None
    company: str | None = None  # the BC company's name when the run started (None: before schema v3)
    change_detection: str | None = None  # bulk | per_record (None: not decided, or before schema v2)
    change_detection_note: str | None = None  # why per_record when auto fell back, or the verification


@dataclass(frozen=True, slots=True)
class CompanyBinding:
    """The Business Central company a mapping's ledger rows describe."""

    mapping: str
    company_id: str
    company: str  # its name
    target_kind: str
    bound_at: str


@dataclass(frozen=True, slots=True)
class Issue:
    """A record a run could not sync: shown by ``syncd status`` and the status page.

    ``mapping`` and ``run_id`` are filled in by :meth:`Ledger.list_issues`; callers of
    :meth:`Ledger.replace_issues` leave them ``None``.
    """

    kind: IssueKind
    source_id: int
    target_ids: tuple[str, ...] = ()  # the candidate BC records (ambiguous) or the matched one (failed)
    key: str | None = None  # the match key value, e.g. the org number that matched twice
    detail: str | None = None  # human-readable reason / error message
    mapping: str | None = None
    run_id: int | None = None


@dataclass(frozen=True, slots=True)
class RecentChange:
    """A recently changed BC picture with before/after thumbnails (small JPEGs)."""

    id: int
    mapping: str
    source_kind: str
    source_id: int
    target_id: str | None
    outcome: str  # "written" or "cleared"
    written_at: str
    source_thumb: bytes | None
    output_thumb: bytes | None


def _check_choice(value: str, choices: Iterable[str], what: str) -> None:
    allowed = tuple(choices)
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")


def _clip(text: str | None) -> str | None:
    """Error text as stored: secrets redacted and control characters gone (servers echo what they were
    sent; see :mod:`syncd.servertext`), at most :data:`MAX_ERROR_CHARS`."""
    if text is None:
        return None
    text = clean(text)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


_OUTCOMES = {o.value: o for o in Outcome}


def item_from_row(r: Sequence[Any]) -> LedgerItem:
    """An item from its row (columns in LedgerItem field order, as :func:`item_row` gives them)."""
    return LedgerItem(
        mapping=r[0],
        source_kind=r[1],
        source_id=r[2],
        target_kind=r[3],
        status=_OUTCOMES[r[4]],
        target_id=r[5],
        target_number=r[6],
        source_fingerprint=r[7],
        source_hash=r[8],
        output_hash=r[9],
        target_etag=r[10],
        normalizer_version=r[11],
        wrote_picture=bool(r[12]),
        error=clean_optional(r[13]),  # rows stored before redaction at store time are redacted here
        attempts=r[14],
        synced_at=r[15],
        checked_at=r[16],
    )


def item_row(item: LedgerItem) -> tuple[Any, ...]:
    """The ``items`` row of an item: plain values in LedgerItem field order (also JSON-safe)."""
    if item.status not in _OUTCOMES:
        _check_choice(item.status, _OUTCOMES, "item status")
    return (
        item.mapping,
        item.source_kind,
        item.source_id,
        item.target_kind,
        str(item.status),
        item.target_id,
        item.target_number,
        item.source_fingerprint,
        item.source_hash,
        item.output_hash,
        item.target_etag,
        item.normalizer_version,
        int(item.wrote_picture),
        _clip(item.error),
        item.attempts,
        item.synced_at,
        item.checked_at,
    )


def same_but_checked(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Whether two :func:`item_row` rows differ at most in ``checked_at`` (their last column)."""
    return a[:-1] == b[:-1]


assert _ITEM_COLUMNS[-1] == "checked_at"  # same_but_checked relies on it


def _run_from_row(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        mapping=row["mapping"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        mode=row["mode"],
        counts={str(k): int(v) for k, v in json.loads(row["counts_json"]).items()},
        outcome=row["outcome"],
        error=clean_optional(row["error"]),
        company=row["company"] if "company" in row.keys() else None,  # noqa: SIM118 (Row: `in` is values)
        change_detection=row["change_detection"],
        change_detection_note=row["change_detection_note"],
    )


# Column lists below follow the order of LedgerItem's fields (_ITEM_COLUMNS); a test keeps them in step.
_UPSERT_ITEM = (
    "INSERT INTO items (mapping, source_kind, source_id, target_kind, status, target_id, target_number, "
    "source_fingerprint, source_hash, output_hash, target_etag, normalizer_version, wrote_picture, error, "
    "attempts, synced_at, checked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (mapping, source_kind, source_id) DO UPDATE SET "
    "target_kind = excluded.target_kind, status = excluded.status, target_id = excluded.target_id, "
    "target_number = excluded.target_number, source_fingerprint = excluded.source_fingerprint, "
    "source_hash = excluded.source_hash, output_hash = excluded.output_hash, "
    "target_etag = excluded.target_etag, normalizer_version = excluded.normalizer_version, "
    "wrote_picture = excluded.wrote_picture, error = excluded.error, attempts = excluded.attempts, "
    "synced_at = excluded.synced_at, checked_at = excluded.checked_at"
)
_SET_CHECKED = "UPDATE items SET checked_at = ? WHERE mapping = ? AND source_kind = ? AND source_id IN "
_SELECT_ITEMS = (
    "SELECT mapping, source_kind, source_id, target_kind, status, target_id, target_number, "
    "source_fingerprint, source_hash, output_hash, target_etag, normalizer_version, wrote_picture, error, "
    "attempts, synced_at, checked_at FROM items "
)
# ?1 = a mapping name, or NULL for all mappings
_RESET = (
    "DELETE FROM items WHERE (?1 IS NULL OR mapping = ?1)",
    "DELETE FROM watermarks WHERE (?1 IS NULL OR mapping = ?1)",
    "DELETE FROM issues WHERE (?1 IS NULL OR mapping = ?1)",
    "DELETE FROM recent_changes WHERE (?1 IS NULL OR mapping = ?1)",
    "DELETE FROM companies WHERE (?1 IS NULL OR mapping = ?1)",
)
_EXPORT = {
    "items": _SELECT_ITEMS + "WHERE (?1 IS NULL OR mapping = ?1) ORDER BY mapping, source_kind, source_id",
    "companies": "SELECT * FROM companies WHERE (?1 IS NULL OR mapping = ?1) ORDER BY mapping",
    "runs": "SELECT * FROM runs WHERE (?1 IS NULL OR mapping = ?1) ORDER BY id",
    "watermarks": "SELECT * FROM watermarks WHERE (?1 IS NULL OR mapping = ?1) ORDER BY mapping, source_kind",
    "issues": "SELECT * FROM issues WHERE (?1 IS NULL OR mapping = ?1) ORDER BY mapping, kind, source_id",
    "recent_changes": "SELECT id, mapping, source_kind, source_id, target_id, outcome, written_at, "
    "length(source_thumb) AS source_thumb_bytes, length(output_thumb) AS output_thumb_bytes "
    "FROM recent_changes WHERE (?1 IS NULL OR mapping = ?1) ORDER BY id",
}


class _Opening:
    """What :meth:`Ledger.open` returns: ``await`` it, or use it with ``async with`` (closes on exit)."""

    def __init__(self, coro_factory: Callable[[], Any]) -> None:
        self._factory = coro_factory
        self._ledger: Ledger | None = None

    def __await__(self) -> Generator[Any, None, Ledger]:
        ledger: Ledger = yield from self._factory().__await__()
        return ledger

    async def __aenter__(self) -> Ledger:
        self._ledger = await self._factory()
        return self._ledger

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ledger is not None:
            await self._ledger.close()


class Ledger:
    """The ledger store. Open with ``await Ledger.open(path)`` or ``async with Ledger.open(path) as l:``."""

    queries: int
    """SQL statements sent to SQLite by this object (``executemany`` counts once); for batching checks."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: str,
        *,
        clock: Callable[[], datetime],
        readonly: bool,
    ) -> None:
        self._db = db
        self.path = path
        self.readonly = readonly
        self._clock = clock
        self._write_lock = asyncio.Lock()
        self.queries = 0
        self.recovered_runs: list[RunRecord] = []
        """Runs found unfinished (process died) and marked ``interrupted`` by this open."""

    # ------------------------------------------------------------------ opening and closing

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], datetime] = utcnow,
        readonly: bool = False,
        busy_timeout: float = 5.0,
    ) -> _Opening:
        """Open (creating and migrating if needed) the ledger at ``path``; ``":memory:"`` for tests.

        Raises :class:`ConfigError` when the file cannot be opened, is not a ledger, or was written by a
        newer syncd; with ``readonly=True`` also when it does not exist yet or needs a migration.
        """
        return _Opening(lambda: cls._open(os.fspath(path), clock, readonly, busy_timeout))

    @classmethod
    async def _open(cls, path: str, clock: Callable[[], datetime], readonly: bool, busy: float) -> Ledger:
        memory = path == ":memory:"
        if readonly and memory:
            raise ValueError("an in-memory ledger cannot be opened read-only")
        try:
            if readonly:
                if not await asyncio.to_thread(os.path.exists, path):
                    raise ConfigError(
                        f"the ledger {path} does not exist yet",
                        hint="run `syncd run --once` first, or check `ledger:` in the config",
                    )
                uri = await asyncio.to_thread(lambda: Path(path).resolve().as_uri() + "?mode=ro")
                db = await aiosqlite.connect(uri, uri=True, isolation_level=None, timeout=busy)
            else:
                if not memory:
                    await asyncio.to_thread(_create_private, path)
                db = await aiosqlite.connect(path, isolation_level=None, timeout=busy)
        except sqlite3.Error as exc:
            raise ConfigError(
                f"cannot open the ledger {path}: {exc}",
                hint="check `ledger:` in the config and that its directory is writable by the syncd user",
            ) from exc
        db.row_factory = sqlite3.Row
        ledger = cls(db, path, clock=clock, readonly=readonly)
        try:
            await ledger._setup(busy)
        except BaseException:
            await db.close()
            raise
        return ledger

    async def _setup(self, busy: float) -> None:
        try:
            await self._exec(f"PRAGMA busy_timeout = {int(busy * 1000)}")
            if not self.readonly:
                await self._exec("PRAGMA journal_mode = WAL")
                await self._exec("PRAGMA synchronous = FULL")
            version = await self._user_version()
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"the ledger {self.path} was written by a newer syncd (schema version {version}; "
                    f"this syncd knows up to {SCHEMA_VERSION})",
                    hint="upgrade syncd, or point `ledger:` at another file",
                )
            if self.readonly:
                if version < SCHEMA_VERSION:
                    raise ConfigError(
                        f"the ledger {self.path} has schema version {version}; this syncd needs "
                        f"{SCHEMA_VERSION}",
                        hint="run `syncd run --once` (or restart the daemon) to upgrade it",
                    )
            else:
                await self._migrate()
                self.recovered_runs = await self.mark_interrupted_runs()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"the ledger {self.path} is not a usable SQLite database: {exc}",
                hint="move the file away and let syncd create a new ledger (the next run re-checks "
                "every picture), or restore it from a backup",
            ) from exc

    async def _user_version(self) -> int:
        rows = await self._fetchall("PRAGMA user_version")
        return int(rows[0][0])

    async def _migrate(self) -> None:
        if await self._user_version() == SCHEMA_VERSION:
            return
        async with self._transaction():
            # Re-read inside the write transaction: another process may have migrated meanwhile.
            version = await self._user_version()
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"the ledger {self.path} was written by a newer syncd (schema version {version})",
                    hint="upgrade syncd, or point `ledger:` at another file",
                )
            for step in MIGRATIONS[version:]:
                for statement in step:
                    await self._exec(statement)
            await self._exec(f"PRAGMA user_version = {SCHEMA_VERSION}")

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Ledger:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def clock(self) -> Callable[[], datetime]:
        """The clock this ledger was opened with (an aware UTC datetime), for whoever stamps its rows."""
        return self._clock

    def now(self) -> str:
        """The ledger clock as the ISO 8601 text stored in timestamps (UTC, milliseconds)."""
        return self._clock().astimezone(UTC).isoformat(timespec="milliseconds")

    # ------------------------------------------------------------------ low-level helpers

    async def _exec(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Cursor:
        self.queries += 1
        return await self._db.execute(sql, params)

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        self.queries += 1
        return list(await self._db.execute_fetchall(sql, params))

    async def _stream(self, sql: str, params: Sequence[Any] = ()) -> AsyncIterator[sqlite3.Row]:
        self.queries += 1
        async with self._db.execute(sql, params) as cursor:
            async for row in cursor:
                yield row

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """One write transaction, serialized against this object's other writers; rolled back on error."""
        if self.readonly:
            raise ReadOnlyLedgerError(f"the ledger {self.path} was opened read-only")
        async with self._write_lock:
            try:
                # BEGIN inside the try: a task cancelled while awaiting it must not leave the connection in
                # a transaction (the statement runs in aiosqlite's thread anyway). Statements run in order,
                # so the ROLLBACK lands after it. A cancelled COMMIT still commits: all or nothing.
                await self._exec("BEGIN IMMEDIATE")
                yield
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await self._exec("ROLLBACK")
                raise
            await self._exec("COMMIT")

    # ------------------------------------------------------------------ items

    async def get_items(
        self, mapping: str, source_kind: str, source_ids: Iterable[int]
    ) -> dict[int, LedgerItem]:
        """The known items among ``source_ids``, by source id; one query per :data:`CHUNK` ids."""
        ids = list(dict.fromkeys(source_ids))
        found: dict[int, LedgerItem] = {}
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            marks = ", ".join("?" * len(chunk))
            sql = _SELECT_ITEMS + "WHERE mapping = ? AND source_kind = ? AND source_id IN (" + marks + ")"
            for row in await self._fetchall(sql, (mapping, source_kind, *chunk)):
                item = item_from_row(row)
                found[item.source_id] = item
        return found

    async def iter_items(self, mapping: str) -> AsyncIterator[LedgerItem]:
        """Every item of a mapping, by source kind and id, streamed."""
        sql = _SELECT_ITEMS + "WHERE mapping = ? ORDER BY source_kind, source_id"
        async for row in self._stream(sql, (mapping,)):
            yield item_from_row(row)

    async def count_items(self, mapping: str | None = None) -> int:
        if mapping is None:
            rows = await self._fetchall("SELECT count(*) FROM items")
        else:
            rows = await self._fetchall("SELECT count(*) FROM items WHERE mapping = ?", (mapping,))
        return int(rows[0][0])

    async def record(self, item: LedgerItem) -> None:
        """Insert or replace one item and commit: once this returns, the row survives a crash."""
        params = item_row(item)
        async with self._transaction():
            await self._exec(_UPSERT_ITEM, params)

    async def record_many(self, items: Sequence[LedgerItem]) -> None:
        """Insert or replace many items in one transaction (for batches of skips / ``checked_at`` updates)."""
        await self.record_rows([item_row(item) for item in items])

    async def record_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        """:meth:`record_many` for rows as :func:`item_row` made them (kept aside in between)."""
        if not rows:
            return
        async with self._transaction():
            self.queries += 1
            await self._db.executemany(_UPSERT_ITEM, rows)

    async def set_checked(self, mapping: str, source_kind: str, source_ids: Sequence[int], when: str) -> None:
        """Set ``checked_at`` of these items, nothing else (a run decided about them and nothing
        changed): one UPDATE per :data:`CHUNK` ids, one transaction."""
        if not source_ids:
            return
        async with self._transaction():
            for start in range(0, len(source_ids), CHUNK):
                chunk = source_ids[start : start + CHUNK]
                marks = ", ".join("?" * len(chunk))
                await self._exec(_SET_CHECKED + "(" + marks + ")", (when, mapping, source_kind, *chunk))

    # ------------------------------------------------------------------ runs

    async def start_run(self, mapping: str, mode: RunMode | str) -> int:
        """Record the start of a run; returns its id. The caller must hold the mapping's lock.

        Any unfinished run of the same mapping is marked ``interrupted`` first: holding the lock proves
        that its process is gone.
        """
        _check_choice(mode, get_args(RunMode), "run mode")
        async with self._transaction():
            await self._mark_interrupted(mapping, None)
            cursor = await self._exec(
                "INSERT INTO runs (mapping, started_at, mode, company) VALUES "
                "(?1, ?2, ?3, (SELECT company FROM companies WHERE mapping = ?1))",
                (mapping, self.now(), mode),
            )
            run_id = cursor.lastrowid
        assert run_id is not None
        return run_id

    async def finish_run(
        self,
        run_id: int,
        counts: Mapping[str, int],
        outcome: RunOutcome | str,
        error: str | None = None,
    ) -> None:
        """Record the end of a run (and prune the mapping's run history to the last :data:`KEEP_RUNS`)."""
        _check_choice(outcome, get_args(RunOutcome), "run outcome")
        counts_json = json.dumps({str(k): int(v) for k, v in counts.items()}, sort_keys=True)
        async with self._transaction():
            rows = await self._fetchall("SELECT mapping FROM runs WHERE id = ?", (run_id,))
            if not rows:
                raise KeyError(f"no run with id {run_id}")
            await self._exec(
                "UPDATE runs SET finished_at = ?, counts_json = ?, outcome = ?, error = ? WHERE id = ?",
                (self.now(), counts_json, outcome, _clip(error), run_id),
            )
            await self._exec(
                "DELETE FROM runs WHERE mapping = ? AND finished_at IS NOT NULL AND id <= "
                "(SELECT id FROM runs WHERE mapping = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (rows[0]["mapping"], rows[0]["mapping"], KEEP_RUNS),
            )

    async def set_change_detection(self, run_id: int, strategy: str, note: str | None) -> None:
        """Record which change detection (bulk | per_record) run ``run_id`` used, and why."""
        _check_choice(strategy, ("bulk", "per_record"), "change detection")
        async with self._transaction():
            await self._exec(
                "UPDATE runs SET change_detection = ?, change_detection_note = ? WHERE id = ?",
                (strategy, _clip(note), run_id),
            )

    async def bulk_verified(self, mapping: str) -> bool:
        """Whether a run of ``mapping`` has completed with bulk change detection (so its provider was
        checked against ImageInfo once): later incremental runs need not check a sample again."""
        rows = await self._fetchall(
            "SELECT 1 FROM runs WHERE mapping = ? AND change_detection = 'bulk' "
            "AND outcome IN ('ok', 'partial') LIMIT 1",
            (mapping,),
        )
        return bool(rows)

    async def last_runs(self, mapping: str | None = None, limit: int = 10) -> list[RunRecord]:
        """The most recent runs, newest first (including ones in progress)."""
        if mapping is None:
            rows = await self._fetchall("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
        else:
            sql = "SELECT * FROM runs WHERE mapping = ? ORDER BY id DESC LIMIT ?"
            rows = await self._fetchall(sql, (mapping, limit))
        return [_run_from_row(r) for r in rows]

    async def last_success_at(self, mapping: str) -> datetime | None:
        """When the mapping's last run that went through (outcome ok or partial) ended, if any."""
        sql = "SELECT max(finished_at) FROM runs WHERE mapping = ? AND outcome IN ('ok', 'partial')"
        rows = await self._fetchall(sql, (mapping,))
        return datetime.fromisoformat(rows[0][0]) if rows and rows[0][0] else None

    async def get_run(self, run_id: int) -> RunRecord | None:
        rows = await self._fetchall("SELECT * FROM runs WHERE id = ?", (run_id,))
        return _run_from_row(rows[0]) if rows else None

    async def unfinished_runs(self, mapping: str | None = None) -> list[RunRecord]:
        """Runs without ``finished_at``: in progress somewhere, or their process died before marking."""
        if mapping is None:
            rows = await self._fetchall("SELECT * FROM runs WHERE finished_at IS NULL ORDER BY id")
        else:
            sql = "SELECT * FROM runs WHERE finished_at IS NULL AND mapping = ? ORDER BY id"
            rows = await self._fetchall(sql, (mapping,))
        return [_run_from_row(r) for r in rows]

    async def mark_interrupted_runs(self) -> list[RunRecord]:
        """Mark unfinished runs whose mapping nobody holds the lock for as ``interrupted``; return them.

        Called by :meth:`open`. A run whose mapping lock is held belongs to a live process and is left
        alone. For an in-memory ledger no other process can exist, so every unfinished run is marked.
        """
        if self.readonly:
            raise ReadOnlyLedgerError(f"the ledger {self.path} was opened read-only")
        candidates = await self.unfinished_runs()
        if not candidates:
            return []
        dead: list[RunRecord] = []
        for run in candidates:
            if self.path == ":memory:" or not await asyncio.to_thread(
                locks.is_locked, self.path, run.mapping
            ):
                dead.append(run)
        if not dead:
            return []
        async with self._transaction():
            # Only the ids probed above: a run started after the probe is not touched.
            for run in dead:
                await self._mark_interrupted(run.mapping, run.id)
        marked = [await self.get_run(run.id) for run in dead]
        return [run for run in marked if run is not None and run.outcome == "interrupted"]

    async def _mark_interrupted(self, mapping: str, run_id: int | None) -> None:
        sql = (
            "UPDATE runs SET finished_at = ?, outcome = 'interrupted', "
            "error = 'the syncd process ended before the run finished' "
            "WHERE mapping = ? AND finished_at IS NULL"
        )
        params: tuple[Any, ...] = (self.now(), mapping)
        if run_id is not None:
            sql += " AND id = ?"
            params += (run_id,)
        await self._exec(sql, params)

    # ------------------------------------------------------------------ companies

    async def bind_company(self, mapping: str, company_id: str, company: str, target_kind: str) -> None:
        """Record that ``mapping`` writes to ``target_kind`` of this company. Call with the mapping's lock.

        Raises :class:`ConfigError` when the mapping's rows describe records of another company or
        entity (the config was changed to point it elsewhere): its ledger rows name records that are
        not there, so it must be reset first. A mapping without rows is simply bound anew.
        """
        async with self._transaction():
            rows = await self._fetchall(
                "SELECT company_id, company, target_kind FROM companies WHERE mapping = ?", (mapping,)
            )
            if rows and (rows[0]["company_id"].lower(), rows[0]["target_kind"]) != (
                company_id.lower(),
                target_kind,
            ):
                counted = await self._fetchall("SELECT count(*) FROM items WHERE mapping = ?", (mapping,))
                if counted[0][0]:
                    raise ConfigError(
                        f"mapping {mapping!r} synced {rows[0]['target_kind']} of company "
                        f"{rows[0]['company']!r} (id {rows[0]['company_id']}); the config now points it at "
                        f"{target_kind} of company {company!r} (id {company_id}), and its {counted[0][0]} "
                        "ledger rows describe the old records",
                        hint=f"run `syncd ledger reset --mapping {mapping} -c FILE` to start it over "
                        "there, or give the new target a new mapping name",
                    )
            await self._exec(
                "INSERT INTO companies (mapping, company_id, company, target_kind, bound_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (mapping) DO UPDATE SET "
                "company_id = excluded.company_id, company = excluded.company, "
                "target_kind = excluded.target_kind, "
                "bound_at = CASE WHEN companies.company_id = excluded.company_id "
                "AND companies.target_kind = excluded.target_kind THEN companies.bound_at "
                "ELSE excluded.bound_at END",
                (mapping, company_id, company, target_kind, self.now()),
            )

    async def companies(self) -> dict[str, CompanyBinding]:
        """Each bound mapping's company, by mapping name."""
        rows = await self._fetchall("SELECT * FROM companies ORDER BY mapping")
        return {r["mapping"]: CompanyBinding(**dict(zip(r.keys(), r, strict=True))) for r in rows}

    # ------------------------------------------------------------------ watermarks

    async def get_watermark(self, mapping: str, source_kind: str) -> str | None:
        sql = "SELECT updated_after FROM watermarks WHERE mapping = ? AND source_kind = ?"
        rows = await self._fetchall(sql, (mapping, source_kind))
        return str(rows[0][0]) if rows else None

    async def set_watermark(self, mapping: str, source_kind: str, value: str) -> None:
        """Advance the watermark; call only at a successful run's end (design: "advanced only when ok")."""
        async with self._transaction():
            await self._exec(
                "INSERT INTO watermarks (mapping, source_kind, updated_after) VALUES (?, ?, ?) "
                "ON CONFLICT (mapping, source_kind) DO UPDATE SET updated_after = excluded.updated_after",
                (mapping, source_kind, value),
            )

    # ------------------------------------------------------------------ issues

    async def replace_issues(self, run_id: int, mapping: str, issues: Sequence[Issue]) -> None:
        """Replace the mapping's issue list with this run's, in one transaction."""
        for issue in issues:
            _check_choice(issue.kind, get_args(IssueKind), "issue kind")
        params = [
            (run_id, mapping, i.kind, i.source_id, json.dumps(list(i.target_ids)), i.key, _clip(i.detail))
            for i in issues
        ]
        async with self._transaction():
            await self._exec("DELETE FROM issues WHERE mapping = ?", (mapping,))
            if params:
                self.queries += 1
                await self._db.executemany(
                    "INSERT INTO issues (run_id, mapping, kind, source_id, target_ids, key, detail) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    params,
                )

    async def list_issues(
        self,
        mapping: str | None = None,
        kind: IssueKind | None = None,
        limit: int | None = None,
    ) -> list[Issue]:
        """Current issues, by mapping, kind and source id."""
        sql = (
            "SELECT * FROM issues WHERE (?1 IS NULL OR mapping = ?1) AND (?2 IS NULL OR kind = ?2) "
            "ORDER BY mapping, kind, source_id LIMIT ?3"
        )
        rows = await self._fetchall(sql, (mapping, kind, -1 if limit is None else limit))
        return [
            Issue(
                kind=r["kind"],
                source_id=r["source_id"],
                target_ids=tuple(json.loads(r["target_ids"])),
                key=r["key"],
                detail=clean_optional(r["detail"]),
                mapping=r["mapping"],
                run_id=r["run_id"],
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ recent changes

    async def add_recent_change(
        self,
        mapping: str,
        source_kind: str,
        source_id: int,
        target_id: str | None,
        *,
        source_thumb: bytes | None,
        output_thumb: bytes | None,
        outcome: Literal["written", "cleared"] = "written",
    ) -> None:
        """Remember a changed BC picture for the status page; keeps the last :data:`KEEP_RECENT` a mapping."""
        for thumb in (source_thumb, output_thumb):
            if thumb is not None and len(thumb) > MAX_THUMB_BYTES:
                raise ValueError(f"thumbnail of {len(thumb)} bytes; at most {MAX_THUMB_BYTES} are kept")
        _check_choice(outcome, ("written", "cleared"), "recent change outcome")
        async with self._transaction():
            await self._exec(
                "INSERT INTO recent_changes (mapping, source_kind, source_id, target_id, outcome, "
                "written_at, source_thumb, output_thumb) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (mapping, source_kind, source_id, target_id, outcome, self.now(), source_thumb, output_thumb),
            )
            await self._exec(
                "DELETE FROM recent_changes WHERE mapping = ? AND id <= "
                "(SELECT id FROM recent_changes WHERE mapping = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (mapping, mapping, KEEP_RECENT),
            )

    async def recent_changes(
        self, mapping: str | None = None, limit: int = KEEP_RECENT
    ) -> list[RecentChange]:
        """The most recently changed pictures, newest first."""
        sql = "SELECT * FROM recent_changes WHERE (?1 IS NULL OR mapping = ?1) ORDER BY id DESC LIMIT ?2"
        rows = await self._fetchall(sql, (mapping, limit))
        return [RecentChange(**dict(zip(r.keys(), r, strict=True))) for r in rows]

    # ------------------------------------------------------------------ maintenance

    async def reset(self, mapping: str | None = None) -> int:
        """Forget items, watermarks, issues and recent changes (of one mapping, or all); run history stays.

        The next run then treats every record as a first sync. Returns the number of rows removed.
        Hold the mapping locks while resetting, so no run writes into what is being forgotten.
        """
        removed = 0
        async with self._transaction():
            for sql in _RESET:
                cursor = await self._exec(sql, (mapping,))
                removed += max(cursor.rowcount, 0)
        return removed

    async def export(self, mapping: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every row as a JSON-ready dict with a ``"table"`` key, for ``syncd ledger export`` (JSON lines).

        The first dict is ``{"table": "ledger", "schema_version": …, "exported_at": …}``. Thumbnails are
        left out (their size in bytes is given instead). Each table is read with one statement, so each
        is a consistent snapshot even while a daemon writes.
        """
        yield {"table": "ledger", "schema_version": SCHEMA_VERSION, "exported_at": self.now()}
        m = (mapping,)
        bound = await self.companies()
        async for row in self._stream(_EXPORT["companies"], m):
            yield {"table": "companies", **dict(zip(row.keys(), row, strict=True))}
        async for row in self._stream(_EXPORT["items"], m):
            item = item_from_row(row)
            data = {name: getattr(item, name) for name in _ITEM_COLUMNS}
            binding = bound.get(item.mapping)
            company = {"company": binding.company, "company_id": binding.company_id} if binding else {}
            yield {"table": "items", **data, "status": item.status.value, **company}
        async for row in self._stream(_EXPORT["runs"], m):
            run = _run_from_row(row)
            yield {
                "table": "runs",
                "id": run.id,
                "mapping": run.mapping,
                "started_at": run.started_at,
                "finished_at": run.finished_at,
                "mode": run.mode,
                "counts": run.counts,
                "outcome": run.outcome,
                "error": run.error,
                "company": run.company,
            }
        async for row in self._stream(_EXPORT["watermarks"], m):
            yield {"table": "watermarks", **dict(zip(row.keys(), row, strict=True))}
        async for row in self._stream(_EXPORT["issues"], m):
            data = dict(zip(row.keys(), row, strict=True))
            data["target_ids"] = json.loads(data["target_ids"])
            data["detail"] = clean_optional(data["detail"])
            yield {"table": "issues", **data}
        async for row in self._stream(_EXPORT["recent_changes"], m):
            yield {"table": "recent_changes", **dict(zip(row.keys(), row, strict=True))}

    async def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"``, or SQLite's list of problems joined by newlines."""
        rows = await self._fetchall("PRAGMA integrity_check")
        return "\n".join(str(r[0]) for r in rows)

    async def journal_mode(self) -> str:
        rows = await self._fetchall("PRAGMA journal_mode")
        return str(rows[0][0])

    def __repr__(self) -> str:
        mode = "ro" if self.readonly else "rw"
        return f"Ledger({self.path!r}, {mode})"


def _create_private(path: str) -> None:
    """Create the ledger file mode 0600 if missing (SQLite would use 0644); the directory must exist."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(
            f"cannot create the ledger {path}: {exc.strerror}",
            hint="check `ledger:` in the config; its directory must exist and be writable by the syncd user",
        ) from exc
    os.close(fd)
