"""Join SuperOffice rows to Business Central records by a mapping's key rule.

A pair is made only when the key is unique on BOTH sides. Keys compare case-insensitively and
without surrounding spaces (``" c00012 "`` matches ``"C00012"``). Everything else is reported, never
written:
    unmatched   the source has no key, or no BC record carries it
    ambiguous   two or more BC records share the key, or two or more sources do
Explicit ``pairs`` (source id → BC number) override the rule for the sources they name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from syncd.types import SourceRow, TargetRow


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


def join(
    sources: Iterable[SourceRow],
    targets: Iterable[TargetRow],
    *,
    source_column: str | None,
    target_field: str | None,
    pairs: Mapping[str, str] | None = None,
) -> MatchResult:
    """Pair sources and targets; see the module docstring for the rules."""
    explicit = {int(k): normalize_key(v) for k, v in (pairs or {}).items()}
    by_target_key: dict[str, list[TargetRow]] = defaultdict(list)
    by_number: dict[str, list[TargetRow]] = defaultdict(list)
    for t in targets:
        if target_field:
            k = normalize_key(target_value(t, target_field))
            if k:
                by_target_key[k].append(t)
        if explicit:
            by_number[normalize_key(t.number)].append(t)

    by_source_key: dict[str, list[SourceRow]] = defaultdict(list)
    result = MatchResult()
    for s in sources:
        if s.id in explicit:
            _pair_or_report(result, [s], by_number.get(explicit[s.id], []), explicit[s.id], "pairs")
            continue
        k = normalize_key(s.columns.get(source_column, "")) if source_column else ""
        if not k:
            if source_column:
                result.problems.append(
                    Problem("unmatched", "", (s.id,), (), f"{s.kind} {s.id} has no {source_column}")
                )
            continue
        by_source_key[k].append(s)

    for k, group in by_source_key.items():
        _pair_or_report(result, group, by_target_key.get(k, []), k, f"{source_column} ↔ {target_field}")
    result.pairs.sort(key=lambda p: p.source.id)
    return result


def _pair_or_report(
    result: MatchResult, sources: list[SourceRow], targets: list[TargetRow], key: str, rule: str
) -> None:
    source_ids = tuple(s.id for s in sources)
    target_ids = tuple(t.id for t in targets)
    if not targets:
        result.problems.append(
            Problem("unmatched", key, source_ids, (), f"no Business Central record with key {key!r} ({rule})")
        )
    elif len(targets) > 1 or len(sources) > 1:
        parts = []
        if len(targets) > 1:
            parts.append(
                f"{len(targets)} Business Central records ({', '.join(repr(t.number) for t in targets)})"
            )
        if len(sources) > 1:
            parts.append(f"{len(sources)} SuperOffice records ({', '.join(str(s.id) for s in sources)})")
        detail = f"{' and '.join(parts)} share key {key!r} ({rule})"
        numbers = tuple(t.number for t in targets)
        result.problems.append(Problem("ambiguous", key, source_ids, target_ids, detail, numbers))
    else:
        result.pairs.append(Pair(sources[0], targets[0], key))
