"""Business Central emulator, data model: entity schemas, records and pictures, etags, :class:`BCState`.

Every record carries a weak ``@odata.etag`` of BC's form ``W/"<base64 of '<n>;<rowversion>1;00;'>"`` that
changes with every modification; a picture's etag is the same form around a 44-character hash (§2 of
``reference/businesscentral-api.md``). Stored pictures keep the bytes as given plus the width, height and
content type read from them (:func:`inspect_picture`); bytes Pillow cannot identify get width = height = 0
and a content type from the leading magic bytes (``syncd.sandbox.mime``), else ``application/octet-stream``.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import copy
import hashlib
import io
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError

from syncd.sandbox.mime import sniff_mime

API_VERSIONS = ("v2.0", "v1.0", "beta")
ENTITY_SETS = ("customers", "vendors", "employees", "items")
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
BC_MAX_PAGE_SIZE = 20_000
BC_RATE_LIMIT = (6000, 300.0)  # requests per sliding window (seconds), per user or service principal
MAX_BODY_BYTES = 350 * 1024 * 1024
AUTHORIZATION_URI = "https://login.microsoftonline.com/common/oauth2/authorize"
JSON_CONTENT_TYPE = "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8"
ERROR_CONTENT_TYPE = "application/json; charset=utf-8"

FieldKind = Literal["string", "guid", "datetime", "date", "decimal", "boolean", "enum"]

_GUID_RE = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


# ================================================================================================
# Entity schemas (v2.0 resource docs: customer, vendor, employee, item)
# ================================================================================================
_S: FieldKind = "string"
_G: FieldKind = "guid"
_ADDRESS: tuple[tuple[str, FieldKind, Any], ...] = (
    ("addressLine1", _S, ""),
    ("addressLine2", _S, ""),
    ("city", _S, ""),
    ("state", _S, ""),
    ("country", _S, ""),
    ("postalCode", _S, ""),
    ("phoneNumber", _S, ""),
)


@dataclass(frozen=True, slots=True)
class EntitySchema:
    """One entity set's API shape: property names in document order, their kinds and defaults."""

    entity_set: str
    type_name: str  # the OData type, Microsoft.NAV.<type_name>
    parent_type: str  # the picture's parentType
    extra: tuple[tuple[str, FieldKind, Any], ...]  # properties between displayName and lastModifiedDateTime

    @property
    def kinds(self) -> dict[str, FieldKind]:
        kinds: dict[str, FieldKind] = {"id": "guid", "number": "string", "displayName": "string"}
        kinds.update({name: kind for name, kind, _ in self.extra})
        kinds["lastModifiedDateTime"] = "datetime"
        return kinds

    @property
    def defaults(self) -> dict[str, Any]:
        return {name: default for name, _, default in self.extra}


SCHEMAS: dict[str, EntitySchema] = {
    "customers": EntitySchema(
        "customers",
        "customer",
        "Customer",
        (
            ("type", "enum", "Company"),
            *_ADDRESS,
            ("email", _S, ""),
            ("website", _S, ""),
            ("salespersonCode", _S, ""),
            ("balanceDue", "decimal", 0),
            ("creditLimit", "decimal", 0),
            ("taxLiable", "boolean", False),
            ("taxAreaId", _G, ZERO_GUID),
            ("taxAreaDisplayName", _S, ""),
            ("taxRegistrationNumber", _S, ""),
            ("currencyId", _G, ZERO_GUID),
            ("currencyCode", _S, ""),
            ("paymentTermsId", _G, ZERO_GUID),
            ("shipmentMethodId", _G, ZERO_GUID),
            ("paymentMethodId", _G, ZERO_GUID),
            ("blocked", "enum", "_x0020_"),  # BC's JSON spelling of the blank option " "
        ),
    ),
    "vendors": EntitySchema(
        "vendors",
        "vendor",
        "Vendor",
        (
            *_ADDRESS,
            ("email", _S, ""),
            ("website", _S, ""),
            ("taxRegistrationNumber", _S, ""),
            ("currencyId", _G, ZERO_GUID),
            ("currencyCode", _S, ""),
            ("irs1099Code", _S, ""),
            ("paymentTermsId", _G, ZERO_GUID),
            ("paymentMethodId", _G, ZERO_GUID),
            ("taxLiable", "boolean", False),
            ("blocked", "enum", "_x0020_"),
            ("balance", "decimal", 0),
        ),
    ),
    "employees": EntitySchema(
        "employees",
        "employee",
        "Employee",
        (
            ("givenName", _S, ""),
            ("middleName", _S, ""),
            ("surname", _S, ""),
            ("jobTitle", _S, ""),
            *_ADDRESS[:6],
            ("phoneNumber", _S, ""),
            ("mobilePhone", _S, ""),
            ("email", _S, ""),
            ("personalEmail", _S, ""),
            ("employmentDate", "date", "0001-01-01"),
            ("terminationDate", "date", "0001-01-01"),
            ("status", "enum", "Active"),
            ("birthDate", "date", "0001-01-01"),
            ("statisticsGroupCode", _S, ""),
        ),
    ),
    "items": EntitySchema(
        "items",
        "item",
        "Item",
        (
            ("type", "enum", "Inventory"),
            ("itemCategoryId", _G, ZERO_GUID),
            ("itemCategoryCode", _S, ""),
            ("blocked", "boolean", False),
            ("gtin", _S, ""),
            ("inventory", "decimal", 0),
            ("unitPrice", "decimal", 0),
            ("priceIncludesTax", "boolean", False),
            ("unitCost", "decimal", 0),
            ("taxGroupId", _G, ZERO_GUID),
            ("taxGroupCode", _S, ""),
            ("baseUnitOfMeasureId", _G, ZERO_GUID),
            ("baseUnitOfMeasureCode", _S, ""),
            ("generalProductPostingGroupId", _G, ZERO_GUID),
            ("generalProductPostingGroupCode", _S, ""),
            ("inventoryPostingGroupId", _G, ZERO_GUID),
            ("inventoryPostingGroupCode", _S, ""),
        ),
    ),
}

COMPANY_KINDS: dict[str, FieldKind] = {
    "id": "guid",
    "systemVersion": "string",
    "name": "string",
    "displayName": "string",
    "businessProfileId": "string",
}


# ================================================================================================
# Etags and timestamps
# ================================================================================================
def _weak_etag(value: str) -> str:
    """BC's etag form: ``W/"<base64 of '<len>;<value>1;00;'>"`` (decoded from documented examples)."""
    inner = f"'{len(value)};{value}1;00;'"
    return 'W/"' + base64.b64encode(inner.encode("ascii")).decode("ascii") + '"'


def _parse_etag(tag: str) -> str | None:
    """The etag in canonical form if ``tag`` is a well-formed BC weak etag, else None."""
    tag = tag.strip()
    if not (tag.startswith('W/"') and tag.endswith('"')) or len(tag) < 5:
        return None
    payload = tag[3:-1]
    try:
        inner = base64.b64decode(payload, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not (inner.startswith("'") and inner.endswith(";00;'") and ";" in inner[1:]):
        return None
    return tag


def format_datetime(value: datetime) -> str:
    """``lastModifiedDateTime`` as BC writes it: UTC, milliseconds without trailing zeros, ``Z``."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    ms = value.microsecond // 1000
    if ms:
        text += f".{ms:03d}".rstrip("0")
    return text + "Z"


def _to_ms(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


# ================================================================================================
# State
# ================================================================================================
@dataclass
class BCPicture:
    """A stored picture: the bytes as uploaded and what BC reports about them."""

    data: bytes
    content_type: str  # from the bytes: image/jpeg, image/png, ... (application/octet-stream if unknown)
    width: int
    height: int


@dataclass
class BCRecord:
    """One customer, vendor, employee or item."""

    id: str  # GUID string, lower-case
    entity_set: str  # "customers" | "vendors" | "employees" | "items"
    number: str
    display_name: str
    fields: dict[str, Any]  # other API properties that differ from their defaults: email, givenName, ...
    last_modified: datetime  # UTC, millisecond precision
    version: int  # row version: bumps on every modification; the record etag derives from it
    picture: BCPicture | None
    picture_version: int  # bumps on every picture write/delete; the picture etag derives from it

    @property
    def etag(self) -> str:
        return _weak_etag(str(self.version))

    @property
    def picture_etag(self) -> str:
        digest = hashlib.sha256(f"{self.id}|{self.picture_version}".encode()).digest()
        return _weak_etag(base64.b64encode(digest).decode("ascii"))


@dataclass
class BCCompany:
    """A company and its records, each entity set indexed by id and kept in primary-key order."""

    id: str
    name: str
    display_name: str
    system_version: str = "24.0.16410.18040"
    business_profile_id: str = ""
    by_id: dict[str, dict[str, BCRecord]] = field(default_factory=lambda: {s: {} for s in ENTITY_SETS})
    ordered: dict[str, list[BCRecord]] = field(default_factory=lambda: {s: [] for s in ENTITY_SETS})

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "systemVersion": self.system_version,
            "name": self.name,
            "displayName": self.display_name,
            "businessProfileId": self.business_profile_id,
        }


def inspect_picture(data: bytes) -> BCPicture:
    """Width, height and content type read from the bytes (blocking: run it in a worker thread)."""
    width = height = 0
    content_type = ""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            fmt = img.format or ""
            content_type = "image/jpeg" if fmt == "MPO" else Image.MIME.get(fmt, "")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        width = height = 0
    return BCPicture(
        data=data,
        content_type=content_type or sniff_mime(data) or "application/octet-stream",
        width=width,
        height=height,
    )


def _normalize_guid(value: str) -> str:
    if not _GUID_RE.fullmatch(value):
        raise ValueError(f"not a GUID: {value!r}")
    return value.lower()


def _default_clock() -> datetime:
    return datetime.now(UTC)


class BCState:
    """Companies and their records; the emulator serves it, tests and the data builder fill it.

    ``seed`` makes generated ids deterministic; ``clock`` (aware datetimes) stamps ``lastModifiedDateTime``.
    """

    def __init__(self, *, seed: int = 0, clock: Callable[[], datetime] | None = None) -> None:
        self.clock: Callable[[], datetime] = clock or _default_clock
        self._rng = random.Random(seed)
        # Row versions are 19 digits like SQL rowversions seen in BC etags, so etags start with "JzE5O" too.
        self._rowversion = 1_206_304_221_977_147_000
        self.companies: dict[str, BCCompany] = {}

    # -- building --------------------------------------------------------------------------------
    def _new_guid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _next_rowversion(self) -> int:
        self._rowversion += 1
        return self._rowversion

    def add_company(self, name: str, company_id: str | None = None) -> str:
        cid = _normalize_guid(company_id) if company_id else self._new_guid()
        if cid in self.companies:
            raise ValueError(f"company {cid} exists")
        self.companies[cid] = BCCompany(id=cid, name=name, display_name=name)
        return cid

    def add_record(
        self,
        company_id: str,
        entity_set: str,
        *,
        number: str,
        display_name: str,
        picture: bytes | None = None,
        record_id: str | None = None,
        **fields: Any,
    ) -> str:
        """Add a record; ``fields`` are API property names of the entity set (``email``, ``givenName`` …).

        ``lastModifiedDateTime`` may be given as an aware datetime to back-date the record.
        """
        company = self._company(company_id)
        schema = _schema(entity_set)
        last_modified = fields.pop("lastModifiedDateTime", None)
        unknown = set(fields) - set(schema.defaults)
        if unknown:
            raise ValueError(
                f"{entity_set} has no properties {sorted(unknown)}; allowed: {sorted(schema.defaults)}"
            )
        rid = _normalize_guid(record_id) if record_id else self._new_guid()
        if rid in company.by_id[entity_set]:
            raise ValueError(f"{entity_set} record {rid} exists")
        if isinstance(last_modified, str):
            last_modified = datetime.fromisoformat(last_modified.replace("Z", "+00:00"))
        if last_modified is not None and not isinstance(last_modified, datetime):
            raise ValueError("lastModifiedDateTime must be a datetime or an ISO 8601 string")
        rec = BCRecord(
            id=rid,
            entity_set=entity_set,
            number=number,
            display_name=display_name,
            fields={
                k: (v.lower() if schema.kinds[k] == "guid" and isinstance(v, str) else v)
                for k, v in fields.items()
            },
            last_modified=_to_ms(last_modified or self.clock()),
            version=self._next_rowversion(),
            picture=inspect_picture(picture) if picture else None,
            picture_version=1 if picture else 0,
        )
        company.by_id[entity_set][rid] = rec
        bisect.insort(company.ordered[entity_set], rec, key=_primary_key)
        return rid

    # -- reading ---------------------------------------------------------------------------------
    def _company(self, company_id: str) -> BCCompany:
        try:
            return self.companies[company_id.lower()]
        except KeyError:
            raise KeyError(f"no company {company_id}") from None

    def get_record(self, company_id: str, entity_set: str, record_id: str) -> BCRecord:
        try:
            return self._company(company_id).by_id[entity_set][record_id.lower()]
        except KeyError:
            raise KeyError(f"no {entity_set} record {record_id} in company {company_id}") from None

    def records(self, company_id: str, entity_set: str) -> list[BCRecord]:
        """The entity set in primary-key order (number, then id). Do not mutate the list."""
        return self._company(company_id).ordered[_schema(entity_set).entity_set]

    def company_by_name(self, name: str) -> BCCompany | None:
        for company in self.companies.values():
            if company.name == name:
                return company
        return None

    # -- changing --------------------------------------------------------------------------------
    def set_picture(self, company_id: str, entity_set: str, record_id: str, data: bytes | None) -> None:
        """An edit by hand in BC: replace (or with None clear) the picture; the parent is modified too."""
        if data is not None and not data:
            raise ValueError("picture bytes are empty; pass None to clear the picture")
        rec = self.get_record(company_id, entity_set, record_id)
        self.apply_picture(rec, inspect_picture(data) if data is not None else None)

    def apply_picture(self, rec: BCRecord, picture: BCPicture | None) -> bool:
        """Store an inspected picture (or clear it) like BC's SavePicture/DeletePicture + Modify(true).

        Returns False when nothing changed (clearing an empty picture).
        """
        if picture is None and rec.picture is None:
            return False
        rec.picture = picture
        rec.picture_version += 1
        rec.version = self._next_rowversion()
        rec.last_modified = _to_ms(self.clock())
        return True

    # -- copying ---------------------------------------------------------------------------------
    def checkpoint(self) -> BCState:
        """A deep copy to restore later (picture bytes are shared, they are immutable)."""
        return copy.deepcopy(self)

    def restore(self, saved: BCState) -> None:
        """Make this state equal to ``saved`` again, keeping this object's identity."""
        fresh = copy.deepcopy(saved)
        self.companies = fresh.companies
        self._rng = fresh._rng
        self._rowversion = fresh._rowversion

    def snapshot(self, include_bytes: bool = False) -> dict[str, Any]:
        """JSON-able copy of everything; pictures as sha256 (and base64 bytes when asked)."""
        companies = []
        for company in self.companies.values():
            entities: dict[str, list[dict[str, Any]]] = {}
            for entity_set in ENTITY_SETS:
                rows = []
                for rec in company.ordered[entity_set]:
                    pic: dict[str, Any] | None = None
                    if rec.picture is not None:
                        pic = {
                            "sha256": hashlib.sha256(rec.picture.data).hexdigest(),
                            "size": len(rec.picture.data),
                            "contentType": rec.picture.content_type,
                            "width": rec.picture.width,
                            "height": rec.picture.height,
                        }
                        if include_bytes:
                            pic["data"] = base64.b64encode(rec.picture.data).decode("ascii")
                    rows.append(
                        {
                            "id": rec.id,
                            "number": rec.number,
                            "displayName": rec.display_name,
                            "fields": copy.deepcopy(rec.fields),
                            "lastModifiedDateTime": format_datetime(rec.last_modified),
                            "version": rec.version,
                            "etag": rec.etag,
                            "pictureVersion": rec.picture_version,
                            "pictureEtag": rec.picture_etag,
                            "picture": pic,
                        }
                    )
                entities[entity_set] = rows
            companies.append({**company.as_json(), "entities": entities})
        return {"companies": companies}


def _primary_key(rec: BCRecord) -> tuple[str, str]:
    return (rec.number, rec.id)


def _schema(entity_set: str) -> EntitySchema:
    try:
        return SCHEMAS[entity_set]
    except KeyError:
        raise ValueError(f"unknown entity set {entity_set!r}; one of {ENTITY_SETS}") from None
