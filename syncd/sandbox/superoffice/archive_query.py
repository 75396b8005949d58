"""SuperOffice emulator, the ``Dynamic`` archive provider (``GET /api/v1/archive/dynamic``): dot syntax
over tables.

The grammar, as documented (docs/en/api/search/odata/dynamic-provider.md) and as emulated here:

``$select``   comma-separated column paths, all on one base table: ``Table.field``; ``Table.fk.field``
              follows a foreign key with a LEFT join (no target: the value is null), ``Table:fk.field``
              with an INNER join (no target: the row is left out). Hops chain (``T.fk1:fk2.field``); the
              separator before a hop decides its join. Row keys in the reply are the ``$select`` strings
              exactly as sent (dots and colons included).
``$filter``   ``path op value`` terms joined by ``and``. Int columns: ``eq ne lt le gt ge`` (and SuperOffice's
              ``= equals unequals greater less``), ``in``/``oneOf``/``notOneOf (1,2)``, ``between (1,9)``.
              Strings: ``eq ne``, ``begins contains``, ``in``/``oneOf``. Dates: ``eq ne lt le gt ge`` and
              ``before after date afterTime beforeTime dateTime``, values quoted (``'2024-05-01T10:00:00'``).
``$orderBy``  ``path [asc|desc]``, comma-separated; the base table's primary key breaks ties (and is the
              order without ``$orderBy``).
``$top``, ``$skip``.

Unknown tables, fields, foreign keys or operators are refused with :class:`DynamicQueryError` (the
emulator answers 400 with SuperOffice's error JSON). Table and field names match case-insensitively, as
the docs mix ``MergeMoveLog.`` and ``mergemovelog.`` in one query.

The query engine knows nothing about the emulator's state: it runs over :class:`Table` definitions whose
rows are ``{primary key: row object}`` mappings and whose fields read a row object;
:func:`dynamic_tables` defines BinaryObject and BinaryObjectLink that way over an ``SOState``.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from syncd.sandbox.superoffice.state import SOImage, SOState

FieldType = Literal["int", "string", "datetime"]


class DynamicQueryError(ValueError):
    """A query SuperOffice would refuse (unknown table/field, bad operator or value)."""


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: FieldType
    get: Callable[[Any], Any]
    fk: str | None = None  # the table this field's value is the primary key of


@dataclass(frozen=True, slots=True)
class Table:
    name: str  # as the data dictionary spells it (EntityName in the reply)
    pk: str
    fields: Mapping[str, Field]  # casefolded name → field
    rows: Callable[[], Mapping[int, Any]]

    def field(self, name: str) -> Field:
        found = self.fields.get(name.casefold())
        if found is None:
            raise DynamicQueryError(f"Unknown field '{name}' in table '{self.name}'")
        return found


_MISSING = object()  # an inner join found no row


@dataclass(frozen=True, slots=True)
class Path:
    """One resolved column path: hops through foreign keys, then the field."""

    text: str
    hops: tuple[tuple[bool, Field, Table], ...]  # (inner join?, fk field on the previous table, target)
    field: Field

    @property
    def inner(self) -> bool:
        return any(inner for inner, _, _ in self.hops)

    def value(self, row: Any) -> Any:
        for inner, fk, target in self.hops:
            key = fk.get(row)
            row = target.rows().get(key) if key is not None else None
            if row is None:
                return _MISSING if inner else None
        return self.field.get(row)


_SEGMENT = re.compile(r"([.:])([^.:]+)")


def parse_path(tables: Mapping[str, Table], text: str, base: Table | None = None) -> tuple[Table, Path]:
    raw = text.strip()
    head = re.match(r"[^.:]+", raw)
    if head is None or head.end() == len(raw):
        raise DynamicQueryError(f"Column '{raw}' must be written table.field")
    table = tables.get(head.group(0).casefold())
    if table is None:
        raise DynamicQueryError(f"Unknown table '{head.group(0)}'")
    if base is not None and table is not base:
        raise DynamicQueryError(f"Column '{raw}' is not on the base table '{base.name}'")
    segments = _SEGMENT.findall(raw, head.end())
    if "".join(sep + name for sep, name in segments) != raw[head.end() :]:
        raise DynamicQueryError(f"Cannot parse column '{raw}'")
    current = table
    hops: list[tuple[bool, Field, Table]] = []
    for i, (sep, name) in enumerate(segments):
        f = current.field(name)
        if i == len(segments) - 1:
            if sep == ":":
                raise DynamicQueryError(f"Column '{raw}' ends in a join; name a field after it")
            return table, Path(raw, tuple(hops), f)
        # The separator before a hop decides its join: ``T.fk.field`` left, ``T:fk.field`` inner.
        if f.fk is None:
            raise DynamicQueryError(f"Field '{name}' of '{current.name}' is not a foreign key")
        target = tables[f.fk.casefold()]
        hops.append((sep == ":", f, target))
        current = target
    raise DynamicQueryError(f"Column '{raw}' names no field")


# -- $filter -------------------------------------------------------------------------------------
_TOKEN = re.compile(r"\s*('(?:[^']|'')*'|\([^)]*\)|[^\s()']+)")
_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}
_ALIASES = {
    "=": "eq",
    "equals": "eq",
    "is": "eq",
    "unequals": "ne",
    "isnot": "ne",
    "less": "lt",
    "greater": "gt",
    "oneof": "in",
    "notoneof": "notin",
    "beforetime": "lt",
    "aftertime": "gt",
    "datetime": "eq",
}
_OPS: dict[FieldType, frozenset[str]] = {
    "int": frozenset({"eq", "ne", "lt", "le", "gt", "ge", "in", "notin", "between"}),
    "string": frozenset({"eq", "ne", "in", "notin", "begins", "contains"}),
    "datetime": frozenset({"eq", "ne", "lt", "le", "gt", "ge", "before", "after", "date", "between"}),
}
_DATE = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?\s*(?:Z|[+-]00:?00)?"
)


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == "'" and token[-1] == "'":
        return token[1:-1].replace("''", "'")
    return token


def _typed(f: Field, raw: str) -> Any:
    text = _unquote(raw.strip())
    if f.type == "int":
        try:
            return int(text)
        except ValueError:
            raise DynamicQueryError(f"'{text}' is not an integer for {f.name}") from None
    if f.type == "datetime":
        m = _DATE.fullmatch(text)
        if m is None:
            raise DynamicQueryError(f"'{text}' is not a date for {f.name}")
        y, mo, d, h, mi, s = (int(g or 0) for g in m.groups())
        return datetime(y, mo, d, h, mi, s)
    return text.casefold()


@dataclass(frozen=True, slots=True)
class Term:
    path: Path
    op: str
    value: Any

    def holds(self, row: Any) -> bool:
        v = self.path.value(row)
        if v is _MISSING:
            return False
        if isinstance(v, datetime):
            v = v.replace(tzinfo=None)
        if isinstance(v, str):
            v = v.casefold()
        op, want = self.op, self.value
        if op in ("in", "notin"):
            return (v in want) == (op == "in")
        if v is None:
            return op == "ne"
        if op == "between":
            return bool(want[0] <= v <= want[1])
        if op == "begins":
            return bool(v.startswith(want))
        if op == "contains":
            return bool(want in v)
        if op in ("before", "after", "date"):
            day: date = v.date()
            other: date = want.date()
            return day < other if op == "before" else day > other if op == "after" else day == other
        return bool(_CMP[op](v, want))


def parse_filter(tables: Mapping[str, Table], base: Table, text: str) -> list[Term]:
    tokens: list[str] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise DynamicQueryError(f"Cannot parse $filter near '{text[pos : pos + 20]}'")
        tokens.append(m.group(1))
        pos = m.end()
    terms: list[list[str]] = [[]]
    for tok in tokens:
        if tok.casefold() == "and":
            terms.append([])
        elif tok.casefold() == "or":
            raise DynamicQueryError("'or' is not supported in $filter")
        else:
            terms[-1].append(tok)
    out: list[Term] = []
    for term in terms:
        if not term and len(terms) == 1:
            return []
        if len(term) != 3:
            raise DynamicQueryError(f"Incomplete $filter term '{' '.join(term)}'")
        _, path = parse_path(tables, term[0], base)
        op = _ALIASES.get(term[1].casefold(), term[1].casefold())
        if op not in _OPS[path.field.type]:
            raise DynamicQueryError(f"Operator '{term[1]}' is not valid for {path.field.type} '{path.text}'")
        value: Any
        if op in ("in", "notin", "between"):
            inner = term[2]
            if not (inner.startswith("(") and inner.endswith(")")):
                raise DynamicQueryError(f"'{term[1]}' needs a list in parentheses")
            items = [i for i in re.findall(r"'(?:[^']|'')*'|[^,\s]+", inner[1:-1])]
            values = [_typed(path.field, i) for i in items]
            if op == "between" and len(values) != 2:
                raise DynamicQueryError("'between' needs two values")
            value = tuple(values) if op == "between" else frozenset(values)
        else:
            value = _typed(path.field, term[2])
        out.append(Term(path, op, value))
    return out


# -- the query -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Query:
    base: Table
    select: tuple[Path, ...]
    where: tuple[Term, ...]
    order: tuple[tuple[Path, bool], ...]  # (path, descending)
    top: int | None
    skip: int


def _int_option(name: str, raw: str | None) -> int | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise DynamicQueryError(f"{name} must be an integer, not '{raw}'") from None
    if value < 0:
        raise DynamicQueryError(f"{name} must not be negative")
    return value


def parse_query(tables: Mapping[str, Table], options: Mapping[str, str]) -> Query:
    opts = {k.casefold(): v for k, v in options.items()}
    names = [n.strip() for n in opts.get("$select", "").split(",") if n.strip()]
    if not names:
        raise DynamicQueryError("The dynamic provider needs $select (table.field, …)")
    base, first = parse_path(tables, names[0])
    select = [first] + [parse_path(tables, n, base)[1] for n in names[1:]]
    order: list[tuple[Path, bool]] = []
    for part in opts.get("$orderby", "").split(","):
        words = part.split()
        if not words:
            continue
        direction = words[1].casefold() if len(words) > 1 else "asc"
        if direction not in ("asc", "desc") or len(words) > 2:
            raise DynamicQueryError(f"Invalid $orderBy term '{part.strip()}'")
        order.append((parse_path(tables, words[0], base)[1], direction == "desc"))
    return Query(
        base=base,
        select=tuple(select),
        where=tuple(parse_filter(tables, base, opts.get("$filter", ""))),
        order=tuple(order),
        top=_int_option("$top", opts.get("$top")),
        skip=_int_option("$skip", opts.get("$skip")) or 0,
    )


def _pk_floor(q: Query) -> tuple[int, bool] | None:
    """``base.pk gt|ge N`` among the terms (keyset paging): where a scan over the sorted keys may start."""
    for t in q.where:
        if not t.path.hops and t.path.field.name.casefold() == q.base.pk.casefold() and t.op in ("gt", "ge"):
            return int(t.value), t.op == "gt"
    return None


def _candidates(q: Query, rows: Mapping[int, Any]) -> Iterator[tuple[int, Any]]:
    keys: Sequence[int] = sorted(rows)  # already ascending: linear for timsort
    floor = _pk_floor(q)
    if floor is not None:
        value, strict = floor
        start = bisect.bisect_right(keys, value) if strict else bisect.bisect_left(keys, value)
        keys = keys[start:]
    for k in keys:
        yield k, rows[k]


def _sort_key(v: Any) -> tuple[int, Any]:
    if v is None or v is _MISSING:
        return (0, 0)
    if isinstance(v, str):
        return (1, v.casefold())
    if isinstance(v, datetime):
        return (1, v.replace(tzinfo=None))
    return (1, v)


def run(q: Query) -> list[tuple[int, Any]]:
    """The (primary key, row) pairs of the page the query asks for."""
    inner = [p for p in (*q.select, *(t.path for t in q.where), *(p for p, _ in q.order)) if p.inner]
    by_pk = not q.order or (
        len(q.order) == 1
        and not q.order[0][1]
        and not q.order[0][0].hops
        and q.order[0][0].field.name.casefold() == q.base.pk.casefold()
    )
    enough = None if q.top is None or not by_pk else q.skip + q.top
    found: list[tuple[int, Any]] = []
    for pk, row in _candidates(q, q.base.rows()):
        if any(p.value(row) is _MISSING for p in inner):
            continue
        if all(t.holds(row) for t in q.where):
            found.append((pk, row))
            if enough is not None and len(found) >= enough:
                break
    for path, desc in reversed(q.order):
        found.sort(key=lambda r, p=path: _sort_key(p.value(r[1])), reverse=desc)  # type: ignore[misc]
    found = found[q.skip :]
    return found if q.top is None else found[: q.top]


def render(
    q: Query, page: Sequence[tuple[int, Any]], date: Callable[[datetime], str], *, numeric_pk: bool = False
) -> list[dict[str, Any]]:
    """SLIM rows: ``PrimaryKey`` (a string, as in the documented examples), ``EntityName``, and each
    ``$select`` string as sent → the value (ints as numbers, dates as ISO strings, null when absent)."""
    out: list[dict[str, Any]] = []
    for pk, row in page:
        item: dict[str, Any] = {"PrimaryKey": pk if numeric_pk else str(pk), "EntityName": q.base.name}
        for path in q.select:
            v = path.value(row)
            if v is _MISSING:
                v = None
            item[path.text] = date(v) if isinstance(v, datetime) else v
        out.append(item)
    return out


def _blob_size(blob: SOImage) -> int:
    return len(blob.content())


def dynamic_tables(state: SOState) -> dict[str, Table]:
    """BinaryObject and BinaryObjectLink as the Dynamic provider sees them (docs/en/database/tables/
    binaryobject.md, binaryobjectlink.md): the emulator's picture tables, read live."""
    F = Field

    def fields(*items: Field) -> dict[str, Field]:
        return {f.name.casefold(): f for f in items}

    blob = Table(
        "BinaryObject",
        "BinaryObject_id",
        fields(
            F("BinaryObject_id", "int", lambda b: b.blob_id),
            F("mimeType", "string", lambda b: b.mime),
            F("originalSize", "int", _blob_size),
            F("blobSize", "int", _blob_size),
            F("conceptualType", "string", lambda b: b.conceptual_type),
            F("description", "string", lambda b: b.description),
            F("extraInfo", "string", lambda b: b.extra_info),
            F("registered", "datetime", lambda b: b.created),
            F("updated", "datetime", lambda b: b.modified),
            F("updatedCount", "int", lambda b: b.updated_count),
        ),
        lambda: state.blobs,
    )
    link = Table(
        "BinaryObjectLink",
        "BinaryObjectLink_id",
        fields(
            F("BinaryObjectLink_id", "int", lambda lk: lk.link_id),
            F("binaryObjectId", "int", lambda lk: lk.blob_id, fk="BinaryObject"),
            F("ownerTable", "int", lambda lk: lk.owner_table),
            F("ownerRecord", "int", lambda lk: lk.owner_record),
            F("linkType", "int", lambda lk: lk.link_type),
            F("rank", "int", lambda lk: lk.rank),
            F("registered", "datetime", lambda lk: lk.registered),
            F("updated", "datetime", lambda lk: lk.updated),
            F("updatedCount", "int", lambda lk: lk.updated_count),
        ),
        lambda: state.links,
    )
    return {"binaryobject": blob, "binaryobjectlink": link}
