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
    ``PRAGMA user_version`` counts the applied steps of :data:`syncd.ledger.schema.MIGRATIONS`. Opening
    applies the missing steps in one transaction; a file from a newer syncd (higher version) is refused,
    never "downgraded".

Modules
    :mod:`~syncd.ledger.store` the :class:`Ledger` (connection, transactions, every query),
    :mod:`~syncd.ledger.rows` the rows as Python values (:class:`LedgerItem` and its :class:`ItemRow`),
    :mod:`~syncd.ledger.schema` the migrations and SQL, :mod:`~syncd.ledger.files` opening the file.
"""

from syncd.ledger.rows import (
    ITEM_COLUMNS,
    MAX_ERROR_CHARS,
    CompanyBinding,
    Issue,
    IssueKind,
    ItemRow,
    LedgerItem,
    RecentChange,
    RunMode,
    RunRecord,
    same_but_checked,
)
from syncd.ledger.schema import MIGRATIONS, SCHEMA_VERSION
from syncd.ledger.store import CHUNK, KEEP_RECENT, KEEP_RUNS, Ledger, ReadOnlyLedgerError, utcnow

__all__ = [
    "CHUNK",
    "ITEM_COLUMNS",
    "KEEP_RECENT",
    "KEEP_RUNS",
    "MAX_ERROR_CHARS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "CompanyBinding",
    "Issue",
    "IssueKind",
    "ItemRow",
    "Ledger",
    "LedgerItem",
    "ReadOnlyLedgerError",
    "RecentChange",
    "RunMode",
    "RunRecord",
    "same_but_checked",
    "utcnow",
]
