"""SuperOffice emulator, the Contact and Person archives' OData-ish query options.

``$select``, ``$filter`` (SuperOffice's operators per column type), ``$orderBy``, ``$top``, ``$skip``,
``$mode`` and ``$jsonSafe``, parsed (:func:`parse_query`), run over the state (:func:`run_query`) and
rendered as the archive rows (:func:`render_rows`). Refusals raise :class:`ArchiveQueryError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from syncd.sandbox.superoffice.columns import (
    DEFAULT_SELECT,
    ColType,
    Column,
    ColValue,
    SOKind,
    _coerce,
    display,
)
from syncd.sandbox.superoffice.dates import parse_so_datetime
from syncd.sandbox.superoffice.state import SOContact, SOEntity, SOState


# -- archive queries ($select, $filter, $orderBy, $top, $skip, $mode, $jsonSafe) -----------------
class ArchiveQueryError(ValueError):
    """A query SuperOffice would refuse (unknown column, operator or malformed value)."""


Predicate = Callable[[Any], bool]

_TOKEN_RE = re.compile(r"\s*('(?:[^']|'')*'|\([^)]*\)|[^\s()']+)")
_INT_OPS: dict[str, str] = {
    "eq": "==",
    "=": "==",
    "equals": "==",
    "ne": "!=",
    "unequals": "!=",
    "lt": "<",
    "less": "<",
    "gt": ">",
    "greater": ">",
    "le": "<=",
    "ge": ">=",
    "between": "between",
    "oneof": "in",
    "notoneof": "notin",
}
_STRING_OPS: dict[str, str] = {
    "begins": "begins",
    "notbegins": "notbegins",
    "contains": "contains",
    "notcontains": "notcontains",
    "is": "==",
    "isnot": "!=",
    "eq": "==",
    "=": "==",
    "equals": "==",
    "ne": "!=",
    "unequals": "!=",
    "oneof": "in",
    "notoneof": "notin",
}
_DATE_OPS: dict[str, str] = {
    "before": "before",
    "after": "after",
    "date": "date",
    "between": "between",
    "datebetween": "between",
    "beforetime": "<",
    "aftertime": ">",
    "datetime": "==",
}
_BOOL_OPS: dict[str, str] = {
    "eq": "==",
    "=": "==",
    "equals": "==",
    "is": "==",
    "ne": "!=",
    "unequals": "!=",
    "isnot": "!=",
}
_OPS_BY_TYPE: dict[ColType, dict[str, str]] = {
    "int": _INT_OPS,
    "string": _STRING_OPS,
    "datetime": _DATE_OPS,
    "bool": _BOOL_OPS,
}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == "'" and token[-1] == "'":
        return token[1:-1].replace("''", "'")
    return token


def _split_list(token: str) -> list[str]:
    """``(1, 2, 'a,b')`` → ``['1', '2', 'a,b']``."""
    if not (token.startswith("(") and token.endswith(")")):
        raise ArchiveQueryError(f"expected a parenthesised list, got {token!r}")
    items = re.findall(r"\s*('(?:[^']|'')*'|[^,]+)\s*(?:,|$)", token[1:-1])
    return [_unquote(i.strip()) for i in items if i.strip()]


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None or m.end() == pos:
            raise ArchiveQueryError(f"cannot parse $filter near {text[pos : pos + 20]!r}")
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


def _typed(col: Column, raw: str) -> Any:
    try:
        if col.type == "int":
            return int(raw)
        if col.type == "datetime":
            return parse_so_datetime(raw)
        if col.type == "bool":
            return _coerce(col, raw)
    except ValueError as exc:
        raise ArchiveQueryError(f"invalid value {raw!r} for {col.name}: {exc}") from None
    return raw.casefold()  # string compares are case-insensitive (SQL Server's default collation)


def _day(value: ColValue) -> date | None:
    return value.date() if isinstance(value, datetime) else None


def _predicate(col: Column, op_name: str, value_tokens: list[str]) -> Predicate:
    ops = _OPS_BY_TYPE[col.type]
    op = ops.get(op_name.casefold())
    if op is None:
        raise ArchiveQueryError(f"operator {op_name!r} is not valid for {col.type} column {col.name}")
    if len(value_tokens) != 1:
        raise ArchiveQueryError(f"{col.name} {op_name}: expected one value")
    token = value_tokens[0]
    get = col.get

    if op in ("in", "notin", "between"):
        values = [_typed(col, v) for v in _split_list(token)]
        if op == "between":
            if len(values) != 2:
                raise ArchiveQueryError(f"{col.name} between needs two values")
            lo, hi = values
            if col.type == "datetime":
                lo_d, hi_d = lo.date(), hi.date()
                return lambda e: (d := _day(get(e))) is not None and lo_d <= d <= hi_d
            return lambda e: lo <= get(e) <= hi
        value_set = set(values)
        if col.type == "string":
            if op == "in":
                return lambda e: str(get(e)).casefold() in value_set
            return lambda e: str(get(e)).casefold() not in value_set
        if op == "in":
            return lambda e: get(e) in value_set
        return lambda e: get(e) not in value_set

    value = _typed(col, _unquote(token))
    if col.type == "string":
        s: str = value
        if op == "begins":
            return lambda e: str(get(e)).casefold().startswith(s)
        if op == "notbegins":
            return lambda e: not str(get(e)).casefold().startswith(s)
        if op == "contains":
            return lambda e: s in str(get(e)).casefold()
        if op == "notcontains":
            return lambda e: s not in str(get(e)).casefold()
        cmp_s = _COMPARE[op]
        return lambda e: cmp_s(str(get(e)).casefold(), s)
    if col.type == "datetime":
        when: datetime = value
        day = when.date()
        if op == "before":
            return lambda e: (d := _day(get(e))) is not None and d < day
        if op == "after":
            return lambda e: (d := _day(get(e))) is not None and d > day
        if op == "date":
            return lambda e: (d := _day(get(e))) is not None and d == day
        cmp_d = _COMPARE[op]
        return lambda e: (v := get(e)) is not None and cmp_d(v, when)
    cmp = _COMPARE[op]
    return lambda e: cmp(get(e), value)


def parse_filter(state: SOState, kind: SOKind, text: str) -> list[Predicate]:
    """``col op value [and col op value …]`` → predicates (all must hold)."""
    tokens = _tokenize(text)
    if not tokens:
        return []
    terms: list[list[str]] = [[]]
    for tok in tokens:
        low = tok.casefold()
        if low == "and":
            terms.append([])
        elif low == "or":
            raise ArchiveQueryError("'or' is not supported in $filter; run one query per condition")
        else:
            terms[-1].append(tok)
    preds: list[Predicate] = []
    for term in terms:
        if len(term) < 3:
            raise ArchiveQueryError(f"incomplete $filter term {' '.join(term)!r}")
        col = state.column(kind, term[0])
        if col is None:
            raise ArchiveQueryError(f"unknown column {term[0]!r} in $filter")
        preds.append(_predicate(col, term[1], term[2:]))
    return preds


@dataclass
class ArchiveQuery:
    """A parsed listing request."""

    kind: SOKind
    select: list[Column]
    predicates: list[Predicate]
    order: list[tuple[Column, bool]]  # (column, descending)
    top: int | None
    skip: int
    full: bool
    json_safe: bool


def _int_option(name: str, raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ArchiveQueryError(f"{name} must be an integer, not {raw!r}") from None
    if value < 0:
        raise ArchiveQueryError(f"{name} must not be negative")
    return value


def parse_query(state: SOState, kind: SOKind, query: Mapping[str, str]) -> ArchiveQuery:
    """Parse the OData-ish options SuperOffice archives take (option names case-insensitive)."""
    opts = {k.casefold(): v for k, v in query.items()}
    select_raw = opts.get("$select", "").strip()
    names = [n for n in (s.strip() for s in select_raw.split(",")) if n] or list(DEFAULT_SELECT[kind])
    select: list[Column] = []
    for n in names:
        col = state.column(kind, n)
        if col is None:
            raise ArchiveQueryError(f"unknown column {n!r} in $select")
        select.append(col)
    order: list[tuple[Column, bool]] = []
    for part in opts.get("$orderby", "").split(","):
        words = part.split()
        if not words:
            continue
        col = state.column(kind, words[0])
        if col is None:
            raise ArchiveQueryError(f"unknown column {words[0]!r} in $orderBy")
        direction = words[1].casefold() if len(words) > 1 else "asc"
        if direction not in ("asc", "desc") or len(words) > 2:
            raise ArchiveQueryError(f"invalid $orderBy term {part.strip()!r}")
        order.append((col, direction == "desc"))
    mode = opts.get("$mode", "Slim").casefold()
    if mode not in ("slim", "wide", "full"):
        raise ArchiveQueryError(f"$mode must be Slim, Wide or Full, not {opts['$mode']!r}")
    return ArchiveQuery(
        kind=kind,
        select=select,
        predicates=parse_filter(state, kind, opts.get("$filter", "")),
        order=order,
        top=_int_option("$top", opts.get("$top")),
        skip=_int_option("$skip", opts.get("$skip")) or 0,
        full=mode == "full",
        json_safe=opts.get("$jsonsafe", "false").strip().casefold() == "true",
    )


def _sort_key(col: Column) -> Callable[[Any], Any]:
    def key(entity: Any) -> Any:
        v = col.get(entity)
        if v is None:
            return (0, "")
        if isinstance(v, str):
            return (1, v.casefold())
        return (1, v)

    return key


_UNSAFE_JSON = re.compile(r"[^A-Za-z0-9_]")


def run_query(state: SOState, q: ArchiveQuery) -> list[SOEntity]:
    rows = [e for e in state.table(q.kind) if all(p(e) for p in q.predicates)]
    rows.sort(key=lambda e: e.contact_id if isinstance(e, SOContact) else e.person_id)  # default: key
    for col, desc in reversed(q.order):
        rows.sort(key=_sort_key(col), reverse=desc)
    rows = rows[q.skip :]
    if q.top is not None:
        rows = rows[: q.top]
    return rows


def render_rows(q: ArchiveQuery, rows: list[SOEntity]) -> list[dict[str, Any]]:
    entity_name = q.kind
    id_col = "contact_id" if q.kind == "contact" else "person_id"
    keys = [(_UNSAFE_JSON.sub("_", c.name) if q.json_safe else c.name, c) for c in q.select]
    out: list[dict[str, Any]] = []
    for e in rows:
        pk = e.contact_id if isinstance(e, SOContact) else e.person_id
        if q.full:
            cols = {}
            for key, c in keys:
                text = display(c, c.get(e))
                cols[key] = {"RawValue": text, "DisplayValue": text, "LinkHint": "", "TooltipHint": ""}
            out.append(
                {
                    "PrimaryKey": pk,
                    "EntityName": entity_name,
                    "StyleHint": "",
                    "LinkHint": f"nav={entity_name}&{id_col}={pk}",
                    "TableRight": {"Mask": 1, "Reason": ""},
                    "Column": cols,
                }
            )
        else:
            row: dict[str, Any] = {"PrimaryKey": str(pk), "EntityName": entity_name}
            for key, c in keys:
                row[key] = display(c, c.get(e))
            out.append(row)
    return out
