"""Pair rows held in memory with the same SQL a run uses on its staged listings (:mod:`syncd.matcher`).

syncd itself never holds a whole listing in memory; the tests do, and compare this against the rule
written out in Python and against the sandbox's expected outcomes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping

from syncd.matcher import LISTING_TABLES, MatchResult, MatchRule, Pair, insert_sources, insert_targets, match
from syncd.types import SourceRow, TargetRow


def join(
    sources: Iterable[SourceRow],
    targets: Iterable[TargetRow],
    *,
    source_column: str | None,
    target_field: str | None,
    pairs: Mapping[str, str] | None = None,
) -> MatchResult:
    """Pair rows held in memory; see :mod:`syncd.matcher` for the rule."""
    rule = MatchRule.of(source_column, target_field, pairs)
    by_id: dict[int, SourceRow] = {}
    for s in sources:
        by_id.setdefault(s.id, s)
    listed = list(targets)
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(LISTING_TABLES)
        insert_sources(conn, rule, by_id.values())
        insert_targets(conn, rule, enumerate(listed))
        result = MatchResult(problems=match(conn, rule))
        for sid, n, key in conn.execute("SELECT source_id, target_n, key FROM pair ORDER BY source_id"):
            result.pairs.append(Pair(by_id[sid], listed[n], key))
    finally:
        conn.close()
    return result
