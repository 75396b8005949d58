"""The ledger file's schema: the migration steps that build it, and the SQL statements the store runs.

``PRAGMA user_version`` counts the applied steps of :data:`MIGRATIONS`; a new step is appended, never
edited (a file written by this version must open in every later one).
"""

from __future__ import annotations

from syncd.ledger.rows import ITEM_COLUMNS

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

_ITEM_LIST = ", ".join(ITEM_COLUMNS)
_KEY = ("mapping", "source_kind", "source_id")
UPSERT_ITEM = (
    f"INSERT INTO items ({_ITEM_LIST}) VALUES ({', '.join('?' * len(ITEM_COLUMNS))}) "  # noqa: S608 - names
    f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in ITEM_COLUMNS if c not in _KEY)
)
"""Insert or replace one item; parameters: an :class:`~syncd.ledger.rows.ItemRow`."""
SET_CHECKED = "UPDATE items SET checked_at = ? WHERE mapping = ? AND source_kind = ? AND source_id IN "
SELECT_ITEMS = f"SELECT {_ITEM_LIST} FROM items "  # noqa: S608 - column names, no values
# ?1 = a mapping name, or NULL for all mappings
RESET = (
    "DELETE FROM items WHERE (?1 IS NULL OR mapping = ?1)",
    "DELETE FROM watermarks WHERE (?1 IS NULL OR mapping = ?1)",
    "DELETE FROM issues WHERE (?1 IS NULL OR mapping = ?1)",
    "DELETE FROM recent_changes WHERE (?1 IS NULL OR mapping = ?1)",
    "DELETE FROM companies WHERE (?1 IS NULL OR mapping = ?1)",
)
EXPORT = {
    "items": SELECT_ITEMS + "WHERE (?1 IS NULL OR mapping = ?1) ORDER BY mapping, source_kind, source_id",
    "companies": "SELECT * FROM companies WHERE (?1 IS NULL OR mapping = ?1) ORDER BY mapping",
    "runs": "SELECT * FROM runs WHERE (?1 IS NULL OR mapping = ?1) ORDER BY id",
    "watermarks": "SELECT * FROM watermarks WHERE (?1 IS NULL OR mapping = ?1) ORDER BY mapping, source_kind",
    "issues": "SELECT * FROM issues WHERE (?1 IS NULL OR mapping = ?1) ORDER BY mapping, kind, source_id",
    "recent_changes": "SELECT id, mapping, source_kind, source_id, target_id, outcome, written_at, "
    "length(source_thumb) AS source_thumb_bytes, length(output_thumb) AS output_thumb_bytes "
    "FROM recent_changes WHERE (?1 IS NULL OR mapping = ?1) ORDER BY id",
}
