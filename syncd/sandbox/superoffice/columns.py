"""SuperOffice emulator, archive columns: what the Contact and Person archives (and the admin API) read and
write, their types, and how a value is displayed (always a string) or coerced from JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from syncd.sandbox.superoffice.dates import parse_so_datetime, so_date, utc

SOKind = Literal["contact", "person"]
SO_KINDS: tuple[SOKind, ...] = ("contact", "person")


ColType = Literal["int", "string", "datetime", "bool"]
ColValue = int | str | bool | datetime | None


@dataclass(frozen=True, slots=True)
class Column:
    """One archive column: its canonical name, type, and how to read (and, if editable, write) it."""

    name: str
    type: ColType
    get: Callable[[Any], ColValue]
    set: Callable[[Any, Any], None] | None = None


def _attr_column(name: str, type_: ColType, attr: str, *, readonly: bool = False) -> Column:
    def setter(entity: Any, value: Any) -> None:
        setattr(entity, attr, value)

    return Column(name, type_, lambda e: getattr(e, attr), None if readonly else setter)


def _erp_links_setter(entity: Any, value: Any) -> None:
    entity.active_erp_links = int(bool(value))


_CONTACT_COLUMNS: tuple[Column, ...] = (
    _attr_column("contactId", "int", "contact_id", readonly=True),
    _attr_column("name", "string", "name"),
    _attr_column("department", "string", "department"),
    Column("nameDepartment", "string", lambda c: f"{c.name} - {c.department}" if c.department else c.name),
    _attr_column("number", "string", "number"),
    _attr_column("code", "string", "code"),
    _attr_column("orgnr", "string", "orgnr"),
    _attr_column("email/emailAddress", "string", "email"),
    _attr_column("category", "string", "category"),
    _attr_column("business", "string", "business"),
    _attr_column("country", "string", "country"),
    _attr_column("updatedBy", "string", "updated_by"),
    _attr_column("updatedDate", "datetime", "updated"),
    _attr_column("registeredDate", "datetime", "registered"),
    Column("activeErpLinks", "bool", lambda c: c.active_erp_links > 0, _erp_links_setter),
    _attr_column("contactDeleted", "bool", "deleted"),
    _attr_column("deletedDate", "datetime", "deleted_date"),
)
_PERSON_COLUMNS: tuple[Column, ...] = (
    _attr_column("personId", "int", "person_id", readonly=True),
    _attr_column("contactId", "int", "contact_id"),
    _attr_column("firstName", "string", "first_name"),
    _attr_column("lastName", "string", "last_name"),
    Column("fullName", "string", lambda p: p.full_name),
    _attr_column("personNumber", "string", "person_number"),
    _attr_column("title", "string", "title"),
    _attr_column("email/emailAddress", "string", "email"),
    _attr_column("personUpdatedDate", "datetime", "updated"),
    _attr_column("personRegisteredDate", "datetime", "registered"),
    _attr_column("retired", "bool", "retired"),
    Column("personActiveErpLinks", "bool", lambda p: p.active_erp_links > 0, _erp_links_setter),
    _attr_column("personDeletedDate", "datetime", "deleted_date"),
)
COLUMNS: dict[SOKind, dict[str, Column]] = {
    "contact": {c.name.casefold(): c for c in _CONTACT_COLUMNS},
    "person": {c.name.casefold(): c for c in _PERSON_COLUMNS},
}
DEFAULT_SELECT: dict[SOKind, tuple[str, ...]] = {
    "contact": (
        "contactId",
        "name",
        "department",
        "number",
        "code",
        "orgnr",
        "category",
        "country",
        "email/emailAddress",
        "updatedDate",
        "registeredDate",
    ),
    "person": (
        "personId",
        "contactId",
        "firstName",
        "lastName",
        "fullName",
        "personNumber",
        "email/emailAddress",
        "personUpdatedDate",
        "personRegisteredDate",
    ),
}
_UPDATED_COLUMN: dict[SOKind, str] = {"contact": "updatedDate", "person": "personUpdatedDate"}
_EXTRA_PREFIXES: dict[SOKind, tuple[str, ...]] = {
    "contact": ("contactudef/", "contactextra/"),
    "person": ("personudef/", "personextra/"),
}


def display(column: Column, value: ColValue) -> str:
    """A value as SuperOffice's slim archive shows it: always a string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"  # .NET bool.ToString() (inferred: undocumented)
    if isinstance(value, datetime):
        return so_date(value)
    return str(value)


def _coerce(column: Column, value: Any) -> ColValue:
    """A JSON/keyword value converted to the column's type (ValueError when it cannot be)."""
    if value is None:
        if column.type in ("datetime",):
            return None
        raise ValueError(f"{column.name} cannot be null")
    if column.type == "int":
        if isinstance(value, bool):
            raise ValueError(f"{column.name} wants an integer")
        return int(value)
    if column.type == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().casefold()
        if text in ("1", "true"):
            return True
        if text in ("0", "false"):
            return False
        raise ValueError(f"{column.name} wants a boolean")
    if column.type == "datetime":
        return utc(value) if isinstance(value, datetime) else parse_so_datetime(str(value))
    if not isinstance(value, str):
        raise ValueError(f"{column.name} wants a string")
    return value
