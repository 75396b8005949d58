"""Business Central emulator, OData: the query options of a request.

``$filter`` (eq ne gt ge lt le, in, and/or/not, startswith/endswith/contains, tolower/toupper; ``or`` across
two different fields is refused like BC does) compiles to a predicate over records or companies;
``$select``, ``$expand=picture`` (with nested ``$select``), ``$orderby``, ``$top``/``$skip``, the
``Prefer: odata.maxpagesize`` header and the opaque ``$skiptoken`` are parsed here. Refusals raise
:class:`~syncd.sandbox.businesscentral.errors.ODataError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from syncd.sandbox.businesscentral.errors import (
    ODataError,
    _no_property,
    _syntax_error,
)
from syncd.sandbox.businesscentral.state import (
    _GUID_RE,
    BCRecord,
    EntitySchema,
    FieldKind,
)

# ================================================================================================
# $filter
# ================================================================================================
_EDM: dict[str, str] = {
    "string": "Edm.String",
    "enum": "Edm.String",
    "guid": "Edm.Guid",
    "datetime": "Edm.DateTimeOffset",
    "date": "Edm.Date",
    "decimal": "Edm.Decimal",
    "boolean": "Edm.Boolean",
    "null": "null",
}
_OP_KIND = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}
_MIRROR = {"eq": "eq", "ne": "ne", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}
_TOKEN_RE = re.compile(
    r"\s*(?:"
    r"(?P<str>'(?:[^']|'')*')"
    r"|(?P<guid>[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})(?![\w-])"
    r"|(?P<punct>[(),])"
    r"|(?P<lit>[-+]?\d[\w:.+-]*)"
    r"|(?P<word>[A-Za-z_][\w./]*)"
    r")"
)
_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:\d{2})")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER_RE = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?[mMdDfFlL]?")

Getter = Callable[[Any], Any]
Predicate = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class _Lit:
    kind: str  # one of _EDM's keys, or "number"
    value: Any


@dataclass(slots=True)
class _Node:
    fields: frozenset[str]
    pred: Predicate


class FilterCompiler:
    """Compiles an OData ``$filter`` into a predicate over one entity type (records or companies)."""

    def __init__(
        self, text: str, kinds: Mapping[str, FieldKind], getter: Callable[[str], Getter], type_name: str
    ):
        self.kinds = kinds
        self.getter = getter
        self.type_name = type_name
        self.tokens = self._tokenize(text)
        self.pos = 0

    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, str]]:
        tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN_RE.match(text, pos)
            if m is None or m.lastgroup is None:
                raise ODataError(400, "BadRequest", f"Syntax error at position {pos} in '{text}'.")
            tokens.append((m.lastgroup, m.group(m.lastgroup)))
            pos = m.end()
        return tokens

    def compile(self) -> Predicate:
        if not self.tokens:
            raise ODataError(400, "BadRequest", "Expression expected at position 0 in ''.")
        node = self._or()
        if self.pos != len(self.tokens):
            raise ODataError(400, "BadRequest", f"Syntax error: unexpected '{self.tokens[self.pos][1]}'.")
        return node.pred

    # -- token helpers ---------------------------------------------------------------------------
    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        tok = self._peek()
        if tok is None:
            raise ODataError(400, "BadRequest", "Syntax error: the filter ends unexpectedly.")
        self.pos += 1
        return tok

    def _accept_word(self, *words: str) -> str | None:
        tok = self._peek()
        if tok is not None and tok[0] == "word" and tok[1] in words:
            self.pos += 1
            return tok[1]
        return None

    def _expect_punct(self, char: str) -> None:
        tok = self._take()
        if tok != ("punct", char):
            raise ODataError(400, "BadRequest", f"Syntax error: '{char}' expected, found '{tok[1]}'.")

    # -- grammar ---------------------------------------------------------------------------------
    def _or(self) -> _Node:
        left = self._and()
        while self._accept_word("or"):
            right = self._and()
            fields = left.fields | right.fields
            if len(fields) > 1:
                raise ODataError(
                    400,
                    "BadRequest",
                    "An error occurred while processing this request. The 'OR' operator is not supported on "
                    "distinct fields on an OData filter.",
                )
            left = _Node(fields, _any_of(left.pred, right.pred))
        return left

    def _and(self) -> _Node:
        left = self._unary()
        while self._accept_word("and"):
            right = self._unary()
            left = _Node(left.fields | right.fields, _all_of(left.pred, right.pred))
        return left

    def _unary(self) -> _Node:
        if self._accept_word("not"):
            inner = self._unary()
            return _Node(inner.fields, _negate(inner.pred))
        return self._primary()

    def _primary(self) -> _Node:
        tok = self._peek()
        if tok == ("punct", "("):
            self.pos += 1
            node = self._or()
            self._expect_punct(")")
            return node
        if tok is not None and tok[0] == "word" and tok[1] in ("startswith", "endswith", "contains"):
            node = self._string_function()
            if self._accept_word("eq", "ne") is not None:
                op = self.tokens[self.pos - 1][1]
                lit = self._literal()
                if lit.kind != "boolean":
                    raise self._type_error("boolean", lit.kind, op)
                return node if bool(lit.value) == (op == "eq") else _Node(node.fields, _negate(node.pred))
            return node
        return self._comparison()

    def _string_function(self) -> _Node:
        name = self._take()[1]
        self._expect_punct("(")
        prop, getter, kind = self._operand_property()
        self._expect_punct(",")
        lit = self._literal()
        self._expect_punct(")")
        if kind not in ("string", "enum") or lit.kind != "string":
            raise ODataError(
                400,
                "BadRequest",
                f"No function signature for the function with name '{name}' matches the specified arguments.",
            )
        needle: str = lit.value
        test: Callable[[str, str], bool] = {
            "startswith": str.startswith,
            "endswith": str.endswith,
            "contains": lambda a, b: b in a,
        }[name]
        return _Node(frozenset([prop]), lambda r: isinstance(v := getter(r), str) and test(v, needle))

    def _operand_property(self) -> tuple[str, Getter, FieldKind]:
        tok = self._take()
        if tok[0] == "word" and tok[1] in ("tolower", "toupper"):
            fn = tok[1]
            self._expect_punct("(")
            prop, getter, kind = self._operand_property()
            self._expect_punct(")")
            if kind not in ("string", "enum"):
                raise ODataError(
                    400, "BadRequest", f"No function signature for the function with name '{fn}'."
                )
            return prop, _converted(getter, str.lower if fn == "tolower" else str.upper), kind
        if tok[0] != "word" or tok[1] in ("true", "false", "null"):
            raise ODataError(
                400, "BadRequest", f"Syntax error: a property name was expected, found '{tok[1]}'."
            )
        found = self.kinds.get(tok[1])
        if found is None:
            raise _no_property(tok[1], self.type_name)
        return tok[1], self.getter(tok[1]), found

    def _literal(self) -> _Lit:
        kind, text = self._take()
        if kind == "str":
            return _Lit("string", text[1:-1].replace("''", "'"))
        if kind == "guid":
            return _Lit("guid", text.lower())
        if kind == "word":
            if text in ("true", "false"):
                return _Lit("boolean", text == "true")
            if text == "null":
                return _Lit("null", None)
        if kind == "lit":
            if _DATETIME_RE.fullmatch(text):
                try:
                    return _Lit("datetime", datetime.fromisoformat(text.replace("Z", "+00:00")[:32]))
                except ValueError:
                    pass
            elif _DATE_RE.fullmatch(text):
                return _Lit("date", text)
            elif _NUMBER_RE.fullmatch(text):
                return _Lit("number", float(text.rstrip("mMdDfFlL")))
        raise ODataError(400, "BadRequest", f"Syntax error: '{text}' is not a valid literal.")

    def _type_error(self, left: str, right: str, op: str) -> ODataError:
        lname = _EDM.get(left, "Edm.Decimal")
        rname = _EDM.get(right, "Edm.Decimal" if right == "number" else right)
        return ODataError(
            400,
            "BadRequest",
            "A binary operator with incompatible types was detected. Found operand types "
            f"'{lname}' and '{rname}' for operator kind '{_OP_KIND.get(op, op)}'.",
        )

    def _comparison(self) -> _Node:
        swapped = False
        tok = self._peek()
        if tok is not None and (tok[0] in ("str", "guid", "lit") or tok[1] in ("true", "false", "null")):
            lit = self._literal()  # literal on the left: `'C1' eq number`
            swapped = True
        else:
            prop, getter, kind = self._operand_property()
        op_tok = self._take()
        op = op_tok[1]
        if op_tok[0] != "word" or (op not in _OP_KIND and op != "in"):
            raise ODataError(400, "BadRequest", f"Syntax error: an operator was expected, found '{op}'.")
        if swapped:
            if op == "in":
                raise ODataError(400, "BadRequest", "Syntax error: 'in' needs a property on its left.")
            prop, getter, kind = self._operand_property()
            op = _MIRROR[op]
        elif op == "in":
            self._expect_punct("(")
            values = [self._coerce(kind, self._literal(), "eq")]
            while self._peek() == ("punct", ","):
                self.pos += 1
                values.append(self._coerce(kind, self._literal(), "eq"))
            self._expect_punct(")")
            return _Node(frozenset([prop]), lambda r: getter(r) in values)
        else:
            lit = self._literal()
        value = self._coerce(kind, lit, op)
        return _Node(frozenset([prop]), _compare(getter, op, value, kind))

    def _coerce(self, kind: FieldKind, lit: _Lit, op: str) -> Any:
        if lit.kind == "null":
            if op not in ("eq", "ne"):
                raise self._type_error(kind, "null", op)
            return None
        ok = {
            "string": lit.kind == "string",
            "enum": lit.kind == "string",
            "guid": lit.kind == "guid",
            "datetime": lit.kind == "datetime",
            "date": lit.kind == "date",
            "decimal": lit.kind == "number",
            "boolean": lit.kind == "boolean",
        }[kind]
        if not ok:
            raise self._type_error(kind, lit.kind, op)
        return lit.value


def _any_of(a: Predicate, b: Predicate) -> Predicate:
    return lambda r: a(r) or b(r)


def _all_of(a: Predicate, b: Predicate) -> Predicate:
    return lambda r: a(r) and b(r)


def _negate(a: Predicate) -> Predicate:
    return lambda r: not a(r)


def _converted(getter: Getter, conv: Callable[[str], str]) -> Getter:
    def get(r: Any) -> Any:
        v = getter(r)
        return conv(v) if isinstance(v, str) else v

    return get


def _as_float(getter: Getter) -> Getter:
    def get(r: Any) -> Any:
        v = getter(r)
        return float(v) if isinstance(v, int | float) else v

    return get


def _compare(getter: Getter, op: str, value: Any, kind: FieldKind) -> Predicate:
    get = getter
    if kind == "decimal" and value is not None:
        value = float(value)
        get = _as_float(getter)
    if op == "eq":
        return lambda r: bool(get(r) == value)
    if op == "ne":
        return lambda r: bool(get(r) != value)

    def ordered(test: Callable[[Any, Any], bool]) -> Predicate:
        def pred(r: Any) -> bool:
            v = get(r)
            if v is None or value is None:
                return False
            try:
                return test(v, value)
            except TypeError:
                return False

        return pred

    return ordered(
        {
            "gt": lambda a, b: a > b,
            "ge": lambda a, b: a >= b,
            "lt": lambda a, b: a < b,
            "le": lambda a, b: a <= b,
        }[op]
    )


def record_getter(schema: EntitySchema) -> Callable[[str], Getter]:
    """Typed value accessors for filters and ordering (datetimes as datetimes, GUIDs lower-case)."""
    defaults = schema.defaults

    def getter(name: str) -> Getter:
        if name == "id":
            return lambda r: r.id
        if name == "number":
            return lambda r: r.number
        if name == "displayName":
            return lambda r: r.display_name
        if name == "lastModifiedDateTime":
            return lambda r: r.last_modified
        default = defaults[name]
        return lambda r: r.fields.get(name, default)

    return getter


def _company_getter(name: str) -> Getter:
    return lambda c: c.as_json()[name]


# ================================================================================================
# $select / $expand / $orderby / Prefer
# ================================================================================================
def _split_top_level(text: str, sep: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise _syntax_error()
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise _syntax_error()
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_select(text: str | None, allowed: Collection[str], type_name: str) -> list[str] | None:
    if text is None:
        return None
    names = _split_top_level(text, ",")
    if "*" in names:
        return None
    for name in names:
        if name not in allowed:
            raise _no_property(name, type_name)
    return names


@dataclass(slots=True)
class _Expand:
    picture: bool = False
    picture_select: list[str] | None = None


def parse_expand(text: str | None, version: str, type_name: str) -> _Expand:
    result = _Expand()
    if text is None:
        return result
    for item in _split_top_level(text, ","):
        name, _, rest = item.partition("(")
        name = name.strip()
        if name != "picture":
            raise _no_property(name, type_name)
        result.picture = True
        if rest:
            if not rest.endswith(")"):
                raise _syntax_error()
            for option in _split_top_level(rest[:-1], ";"):
                key, _, value = option.partition("=")
                if key.strip() == "$select":
                    result.picture_select = parse_select(value, _picture_properties(version), "picture")
                # other nested options ($filter, $top …) mean nothing for a 0..1 picture: tolerated
    return result


def _picture_properties(version: str) -> tuple[str, ...]:
    if version == "v2.0":
        return ("id", "parentType", "width", "height", "contentType", "pictureContent")
    return ("id", "width", "height", "contentType", "content")


def parse_orderby(text: str | None, kinds: Mapping[str, FieldKind], type_name: str) -> list[tuple[str, bool]]:
    if not text:
        return []
    result = []
    for part in _split_top_level(text, ","):
        words = part.split()
        if len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise _syntax_error()
        if words[0] not in kinds:
            raise _no_property(words[0], type_name)
        result.append((words[0], len(words) == 2 and words[1] == "desc"))
    return result


def parse_maxpagesize(prefer: str | None) -> int | None:
    if not prefer:
        return None
    for pref in prefer.split(","):
        key, _, value = pref.strip().partition("=")
        if key.strip().lower() in ("odata.maxpagesize", "maxpagesize"):
            try:
                n = int(value.strip().strip('"'))
            except ValueError:
                return None
            return n if n > 0 else None
    return None


def _encode_skiptoken(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_skiptoken(token: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("pos"), int):
        raise ODataError(400, "BadRequest", f"The skip token value '{token}' is invalid.")
    return data


QUERY_OPTIONS = frozenset(
    {
        "$filter",
        "$select",
        "$expand",
        "$top",
        "$skip",
        "$orderby",
        "$skiptoken",
        "$count",
        "$schemaversion",
        "$format",
    }
)


def _key(raw: str) -> str:
    """A path key as BC reads it: an unquoted GUID."""
    if not _GUID_RE.fullmatch(raw):
        raise _syntax_error()
    return raw.lower()


def _pick(row: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    return row if select is None else {k: row[k] for k in select}


def _split_etags(header: str) -> list[str]:
    tags, current, quoted = [], "", False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            tags.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        tags.append(current.strip())
    return tags


def _nonneg_int(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise ODataError(400, "BadRequest", f"Invalid value '{value}' for {name} query option found.")
    return n


def _resume_position(rows: list[BCRecord], token: dict[str, Any]) -> int:
    """Where the next page starts: after the last record sent if it is still in place, else by position."""
    pos: int = token["pos"]
    after = token.get("after")
    if 0 < pos <= len(rows) and rows[pos - 1].id == after:
        return pos
    for i, rec in enumerate(rows):
        if rec.id == after:
            return i + 1
    return min(pos, len(rows))


def _sort_key_of(getter: Getter) -> Callable[[Any], tuple[int, Any]]:
    def key(r: Any) -> tuple[int, Any]:
        value = getter(r)
        return (0, "") if value is None else (1, value)

    return key
