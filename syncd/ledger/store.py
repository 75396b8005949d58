"""The ledger store: one SQLite connection (aiosqlite), its write transactions, and every read and write
a run, ``syncd status``, the status page and ``syncd ledger`` make. What the file holds and why it is
durable is said in :mod:`syncd.ledger`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, get_args

import aiosqlite

from syncd import locks
from syncd.errors import ConfigError
from syncd.ledger import schema
from syncd.ledger.files import Opening, connect
from syncd.ledger.rows import (
    ITEM_COLUMNS,
    CompanyBinding,
    Issue,
    IssueKind,
    ItemRow,
    LedgerItem,
    RecentChange,
    RunMode,
    RunRecord,
    check_choice,
    clip,
    exported,
    run_from_row,
)
from syncd.servertext import clean_optional
from syncd.types import RunOutcome

CHUNK = 500  # ids per ``IN (...)`` query in get_items: well under SQLite's 32766 variables, few round trips
KEEP_RUNS = 1000  # run rows kept per mapping (10-minute schedule: about a week)
KEEP_RECENT = 20  # recent_changes rows kept per mapping
MAX_THUMB_BYTES = 64 * 1024  # a status-page thumbnail; anything bigger is a caller bug


def utcnow() -> datetime:
    """The default ledger clock: an aware UTC datetime."""
    return datetime.now(UTC)


class ReadOnlyLedgerError(RuntimeError):
    """A mutating method was called on a ledger opened with ``readonly=True`` (a programming error)."""


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
    ) -> Opening[Ledger]:
        """Open (creating and migrating if needed) the ledger at ``path``; ``":memory:"`` for tests.

        Raises :class:`ConfigError` when the file cannot be opened, is not a ledger, or was written by a
        newer syncd; with ``readonly=True`` also when it does not exist yet or needs a migration.
        """
        return Opening(lambda: cls._open(os.fspath(path), clock, readonly, busy_timeout))

    @classmethod
    async def _open(cls, path: str, clock: Callable[[], datetime], readonly: bool, busy: float) -> Ledger:
        db = await connect(path, readonly=readonly, busy=busy)
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
            if version > schema.SCHEMA_VERSION:
                raise ConfigError(
                    f"the ledger {self.path} was written by a newer syncd (schema version {version}; "
                    f"this syncd knows up to {schema.SCHEMA_VERSION})",
                    hint="upgrade syncd, or point `ledger:` at another file",
                )
            if self.readonly:
                if version < schema.SCHEMA_VERSION:
                    raise ConfigError(
                        f"the ledger {self.path} has schema version {version}; this syncd needs "
                        f"{schema.SCHEMA_VERSION}",
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
        if await self._user_version() == schema.SCHEMA_VERSION:
            return
        async with self._transaction():
            # Re-read inside the write transaction: another process may have migrated meanwhile.
            version = await self._user_version()
            if version > schema.SCHEMA_VERSION:
                raise ConfigError(
                    f"the ledger {self.path} was written by a newer syncd (schema version {version})",
                    hint="upgrade syncd, or point `ledger:` at another file",
                )
            for step in schema.MIGRATIONS[version:]:
                for statement in step:
                    await self._exec(statement)
            await self._exec(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")

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
            sql = (
                schema.SELECT_ITEMS + "WHERE mapping = ? AND source_kind = ? AND source_id IN (" + marks + ")"
            )
            for row in await self._fetchall(sql, (mapping, source_kind, *chunk)):
                item = LedgerItem.from_row(row)
                found[item.source_id] = item
        return found

    async def iter_items(self, mapping: str) -> AsyncIterator[LedgerItem]:
        """Every item of a mapping, by source kind and id, streamed."""
        sql = schema.SELECT_ITEMS + "WHERE mapping = ? ORDER BY source_kind, source_id"
        async for row in self._stream(sql, (mapping,)):
            yield LedgerItem.from_row(row)

    async def count_items(self, mapping: str | None = None) -> int:
        if mapping is None:
            rows = await self._fetchall("SELECT count(*) FROM items")
        else:
            rows = await self._fetchall("SELECT count(*) FROM items WHERE mapping = ?", (mapping,))
        return int(rows[0][0])

    async def record(self, item: LedgerItem) -> None:
        """Insert or replace one item and commit: once this returns, the row survives a crash."""
        params = item.to_row()
        async with self._transaction():
            await self._exec(schema.UPSERT_ITEM, params)

    async def record_many(self, items: Sequence[LedgerItem]) -> None:
        """Insert or replace many items in one transaction (for batches of skips / ``checked_at`` updates)."""
        await self.record_rows([item.to_row() for item in items])

    async def record_rows(self, rows: Sequence[ItemRow]) -> None:
        """:meth:`record_many` for rows as `LedgerItem.to_row` made them (kept aside in between)."""
        if not rows:
            return
        async with self._transaction():
            self.queries += 1
            await self._db.executemany(schema.UPSERT_ITEM, rows)

    async def set_checked(self, mapping: str, source_kind: str, source_ids: Sequence[int], when: str) -> None:
        """Set ``checked_at`` of these items, nothing else (a run decided about them and nothing
        changed): one UPDATE per :data:`CHUNK` ids, one transaction."""
        if not source_ids:
            return
        async with self._transaction():
            for start in range(0, len(source_ids), CHUNK):
                chunk = source_ids[start : start + CHUNK]
                marks = ", ".join("?" * len(chunk))
                await self._exec(schema.SET_CHECKED + "(" + marks + ")", (when, mapping, source_kind, *chunk))

    # ------------------------------------------------------------------ runs

    async def start_run(self, mapping: str, mode: RunMode | str) -> int:
        """Record the start of a run; returns its id. The caller must hold the mapping's lock.

        Any unfinished run of the same mapping is marked ``interrupted`` first: holding the lock proves
        that its process is gone.
        """
        check_choice(mode, get_args(RunMode), "run mode")
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
        check_choice(outcome, [o.value for o in RunOutcome], "run outcome")
        counts_json = json.dumps({str(k): int(v) for k, v in counts.items()}, sort_keys=True)
        async with self._transaction():
            rows = await self._fetchall("SELECT mapping FROM runs WHERE id = ?", (run_id,))
            if not rows:
                raise KeyError(f"no run with id {run_id}")
            await self._exec(
                "UPDATE runs SET finished_at = ?, counts_json = ?, outcome = ?, error = ? WHERE id = ?",
                (self.now(), counts_json, outcome, clip(error), run_id),
            )
            await self._exec(
                "DELETE FROM runs WHERE mapping = ? AND finished_at IS NOT NULL AND id <= "
                "(SELECT id FROM runs WHERE mapping = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (rows[0]["mapping"], rows[0]["mapping"], KEEP_RUNS),
            )

    async def set_change_detection(self, run_id: int, strategy: str, note: str | None) -> None:
        """Record which change detection (bulk | per_record) run ``run_id`` used, and why."""
        check_choice(strategy, ("bulk", "per_record"), "change detection")
        async with self._transaction():
            await self._exec(
                "UPDATE runs SET change_detection = ?, change_detection_note = ? WHERE id = ?",
                (strategy, clip(note), run_id),
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
        sql = "SELECT * FROM runs WHERE (?1 IS NULL OR mapping = ?1) ORDER BY id DESC LIMIT ?2"
        return [run_from_row(r) for r in await self._fetchall(sql, (mapping, limit))]

    async def last_success_at(self, mapping: str) -> datetime | None:
        """When the mapping's last run that went through (outcome ok or partial) ended, if any."""
        sql = "SELECT max(finished_at) FROM runs WHERE mapping = ? AND outcome IN ('ok', 'partial')"
        rows = await self._fetchall(sql, (mapping,))
        return datetime.fromisoformat(rows[0][0]) if rows and rows[0][0] else None

    async def get_run(self, run_id: int) -> RunRecord | None:
        rows = await self._fetchall("SELECT * FROM runs WHERE id = ?", (run_id,))
        return run_from_row(rows[0]) if rows else None

    async def unfinished_runs(self, mapping: str | None = None) -> list[RunRecord]:
        """Runs without ``finished_at``: in progress somewhere, or their process died before marking."""
        sql = "SELECT * FROM runs WHERE finished_at IS NULL AND (?1 IS NULL OR mapping = ?1) ORDER BY id"
        return [run_from_row(r) for r in await self._fetchall(sql, (mapping,))]

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
            check_choice(issue.kind, get_args(IssueKind), "issue kind")
        params = [
            (run_id, mapping, i.kind, i.source_id, json.dumps(list(i.target_ids)), i.key, clip(i.detail))
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
        check_choice(outcome, ("written", "cleared"), "recent change outcome")
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
            for sql in schema.RESET:
                cursor = await self._exec(sql, (mapping,))
                removed += max(cursor.rowcount, 0)
        return removed

    async def export(self, mapping: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every row as a JSON-ready dict with a ``"table"`` key, for ``syncd ledger export`` (JSON lines).

        The first dict is ``{"table": "ledger", "schema_version": …, "exported_at": …}``. Thumbnails are
        left out (their size in bytes is given instead). Each table is read with one statement, so each
        is a consistent snapshot even while a daemon writes.
        """
        yield {"table": "ledger", "schema_version": schema.SCHEMA_VERSION, "exported_at": self.now()}
        m = (mapping,)
        bound = await self.companies()
        async for row in self._stream(schema.EXPORT["companies"], m):
            yield {"table": "companies", **dict(zip(row.keys(), row, strict=True))}
        async for row in self._stream(schema.EXPORT["items"], m):
            item = LedgerItem.from_row(row)
            data = {name: getattr(item, name) for name in ITEM_COLUMNS}
            binding = bound.get(item.mapping)
            company = {"company": binding.company, "company_id": binding.company_id} if binding else {}
            yield {"table": "items", **data, "status": item.status.value, **company}
        async for row in self._stream(schema.EXPORT["runs"], m):
            yield {"table": "runs", **exported(run_from_row(row))}
        async for row in self._stream(schema.EXPORT["watermarks"], m):
            yield {"table": "watermarks", **dict(zip(row.keys(), row, strict=True))}
        async for row in self._stream(schema.EXPORT["issues"], m):
            data = dict(zip(row.keys(), row, strict=True))
            data["target_ids"] = json.loads(data["target_ids"])
            data["detail"] = clean_optional(data["detail"])
            yield {"table": "issues", **data}
        async for row in self._stream(schema.EXPORT["recent_changes"], m):
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
