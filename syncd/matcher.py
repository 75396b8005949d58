"""Join SuperOffice rows to Business Central records by a mapping's key rule.

A pair is made only when the key is unique on BOTH sides. Keys compare case-insensitively and
without surrounding spaces (``" c00012 "`` matches ``"C00012"``). Everything else is reported, never
written:
    unmatched   the source has no key, or no BC record carries it
    ambiguous   two or more BC records share the key, or two or more sources do
Explicit ``pairs`` (source id → BC number) override the rule for the sources they name. A BC record that
two pairs would write to (an explicit pair and the rule, or two explicit pairs) is ambiguous too.

The join runs in SQLite over two listing tables (``source``, ``target``) and fills a third (``pair``):
a run stages its listings in a scratch database (:mod:`syncd.staging`), so matching 200,000 records
keeps nothing per record in memory. (The tests run the same SQL on an in-memory database:
``tests.support.matching.join``.) A record listed twice (a page boundary that moved during paging)
counts once.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from syncd.types import SourceRow, TargetRow

LISTING_TABLES = """
CREATE TABLE source (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL,
                     explicit INTEGER NOT NULL);
CREATE TABLE target (n INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, number TEXT NOT NULL,
                     key TEXT NOT NULL, number_key TEXT NOT NULL);
CREATE TABLE match_group (key TEXT PRIMARY KEY, first INTEGER NOT NULL, sources INTEGER NOT NULL,
                          targets INTEGER NOT NULL);
CREATE TABLE pair (source_id INTEGER PRIMARY KEY, target_n INTEGER NOT NULL, key TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Pair:
    source: SourceRow
    target: TargetRow
    key: str


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # "unmatched" | "ambiguous"
    key: str
    source_ids: tuple[int, ...]
    target_ids: tuple[str, ...]
    detail: str
    target_numbers: tuple[str, ...] = ()


@dataclass(slots=True)
class MatchResult:
    pairs: list[Pair] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(len(p.source_ids) for p in self.problems if p.kind == kind)


def normalize_key(value: Any) -> str:
    return " ".join(str(value).split()).casefold() if value is not None else ""


def target_value(row: TargetRow, field_name: str) -> Any:
    if field_name == "number":
        return row.number
    if field_name == "displayName":
        return row.display_name
    if field_name == "id":
        return row.id
    return row.fields.get(field_name)


@dataclass(frozen=True, slots=True)
class MatchRule:
    """A mapping's key rule: ``source_column`` ↔ ``target_field``, and explicit ``pairs``."""

    source_column: str | None
    target_field: str | None
    explicit: Mapping[int, str] = field(default_factory=dict)  # source id → normalized BC number

    @classmethod
    def of(
        cls, source_column: str | None, target_field: str | None, pairs: Mapping[str, str] | None
    ) -> MatchRule:
        return cls(source_column, target_field, {int(k): normalize_key(v) for k, v in (pairs or {}).items()})

    @property
    def label(self) -> str:
        return f"{self.source_column} ↔ {self.target_field}"

    def source_params(self, s: SourceRow) -> tuple[int, str, str, int]:
        if s.id in self.explicit:
            return (s.id, s.kind, self.explicit[s.id], 1)
        key = normalize_key(s.columns.get(self.source_column, "")) if self.source_column else ""
        return (s.id, s.kind, key, 0)

    def target_params(self, n: int, t: TargetRow) -> tuple[int, str, str, str, str]:
        key = normalize_key(target_value(t, self.target_field)) if self.target_field else ""
        return (n, t.id, t.number, key, normalize_key(t.number) if self.explicit else "")


def insert_sources(conn: sqlite3.Connection, rule: MatchRule, rows: Iterable[SourceRow]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO source VALUES (?, ?, ?, ?)", (rule.source_params(s) for s in rows)
    )


def insert_targets(conn: sqlite3.Connection, rule: MatchRule, rows: Iterable[tuple[int, TargetRow]]) -> None:
    """``rows``: (n, row), n unique per target (the listing position); a repeated record id is skipped."""
    conn.executemany(
        "INSERT OR IGNORE INTO target VALUES (?, ?, ?, ?, ?)", (rule.target_params(n, t) for n, t in rows)
    )


def match(conn: sqlite3.Connection, rule: MatchRule) -> list[Problem]:
    """Fill ``pair`` from the listing tables; return every problem, in source id order."""
    conn.executescript(
        """
        CREATE INDEX IF NOT EXISTS source_key ON source (key, explicit);
        CREATE INDEX IF NOT EXISTS target_key ON target (key);
        CREATE INDEX IF NOT EXISTS target_number_key ON target (number_key);
        DELETE FROM match_group;
        DELETE FROM pair;
        INSERT INTO match_group
            SELECT key, min(id), count(*), (SELECT count(*) FROM target t WHERE t.key = s.key)
            FROM source s WHERE explicit = 0 AND key <> '' GROUP BY key;
        INSERT INTO pair
            SELECT g.first, (SELECT n FROM target t WHERE t.key = g.key), g.key
            FROM match_group g WHERE g.sources = 1 AND g.targets = 1;
        INSERT INTO pair
            SELECT s.id, (SELECT n FROM target t WHERE t.number_key = s.key), s.key
            FROM source s
            WHERE s.explicit = 1 AND (SELECT count(*) FROM target t WHERE t.number_key = s.key) = 1;
        """
    )
    problems: list[Problem] = []
    if rule.source_column:
        for sid, kind in conn.execute(
            "SELECT id, kind FROM source WHERE explicit = 0 AND key = '' ORDER BY id"
        ):
            problems.append(Problem("unmatched", "", (sid,), (), f"{kind} {sid} has no {rule.source_column}"))

    unpaired = "FROM match_group g {} WHERE NOT (g.sources = 1 AND g.targets = 1) ORDER BY g.first, {}"
    targets_of: dict[str, list[tuple[str, str]]] = {}
    for key, tid, number in conn.execute(
        "SELECT g.key, t.id, t.number " + unpaired.format("JOIN target t ON t.key = g.key", "t.n")
    ):
        targets_of.setdefault(key, []).append((tid, number))
    rows = conn.execute(
        "SELECT g.key, s.id " + unpaired.format("JOIN source s ON s.key = g.key AND s.explicit = 0", "s.id")
    )
    for key, group in itertools.groupby(rows, key=lambda r: str(r[0])):
        problem = _problem(tuple(r[1] for r in group), targets_of.get(key, []), key, rule.label)
        assert problem is not None
        problems.append(problem)

    for sid, key in conn.execute(
        "SELECT id, key FROM source s WHERE explicit = 1 "
        "AND (SELECT count(*) FROM target t WHERE t.number_key = s.key) <> 1 ORDER BY id"
    ):
        found = conn.execute("SELECT id, number FROM target WHERE number_key = ? ORDER BY n", (key,))
        problem = _problem((sid,), [(str(t), str(n)) for t, n in found], key, "pairs")
        assert problem is not None
        problems.append(problem)
    problems.extend(_shared_targets(conn))
    problems.sort(key=lambda p: min(p.source_ids))
    return problems


def _shared_targets(conn: sqlite3.Connection) -> list[Problem]:
    """A BC record that two pairs would write to (an explicit pair naming a record the rule also pairs,
    or two explicit pairs naming one record): neither pair is made — each run would overwrite the
    other's picture."""
    problems = []
    shared = conn.execute("SELECT target_n FROM pair GROUP BY target_n HAVING count(*) > 1").fetchall()
    for (n,) in shared:
        tid, number = conn.execute("SELECT id, number FROM target WHERE n = ?", (n,)).fetchone()
        claims = conn.execute(
            "SELECT source_id, key FROM pair WHERE target_n = ? ORDER BY source_id", (n,)
        ).fetchall()
        conn.execute("DELETE FROM pair WHERE target_n = ?", (n,))
        ids = tuple(int(c[0]) for c in claims)
        detail = (
            f"{len(ids)} SuperOffice records ({', '.join(map(str, ids))}) would write to Business Central "
            f"record {number!r} (explicit pairs and the match rule name it)"
        )
        problems.append(Problem("ambiguous", str(claims[0][1]), ids, (str(tid),), detail, (str(number),)))
    return problems


def _problem(
    source_ids: tuple[int, ...], targets: list[tuple[str, str]], key: str, rule: str
) -> Problem | None:
    """The problem with one key's sources and (id, number) targets, or None when they pair."""
    target_ids = tuple(t[0] for t in targets)
    if not targets:
        return Problem(
            "unmatched", key, source_ids, (), f"no Business Central record with key {key!r} ({rule})"
        )
    if len(targets) == 1 and len(source_ids) == 1:
        return None
    parts = []
    if len(targets) > 1:
        parts.append(f"{len(targets)} Business Central records ({', '.join(repr(t[1]) for t in targets)})")
    if len(source_ids) > 1:
        parts.append(f"{len(source_ids)} SuperOffice records ({', '.join(str(s) for s in source_ids)})")
    detail = f"{' and '.join(parts)} share key {key!r} ({rule})"
    return Problem("ambiguous", key, source_ids, target_ids, detail, tuple(t[1] for t in targets))
