"""A local Business Central API emulator: customers, vendors, employees, items and their pictures.

Built from the vendor documents summarised in ``reference/businesscentral-api.md`` (section numbers below
refer to it), not from what is convenient for syncd. What it serves, on one port:

Routes (``{v}`` is ``v2.0``, ``v1.0`` or ``beta``; keys are unquoted GUIDs)::

    /v2.0/{tenant}/{environment}/api/{v}/...     online, Bearer token                     §1
    /v2.0/{environment}/api/{v}/...              online, tenant taken from the token
    /v1.0/{tenant}/api/{v1.0|beta}/...           the old online form (environment "production")
    /{instance}/api/{v}/...                      on-premises: Basic (user + web service access key) or Bearer
    /{tenant}/oauth2/v2.0/token                  Entra ID client credentials (see ``entra.py``)       §5

    companies                                    {"@odata.context", "value": [company, ...]}
    companies({c})                               one company
    companies({c})/{set}                         set = customers | vendors | employees | items
    companies({c})/{set}({id})                   one record
    .../{set}({id})/picture                      v2.0: one picture object; v1.0/beta: {"value": [picture]}
    .../{set}({id})/picture({id})                one picture object (both dialects)
    .../picture/pictureContent                   v2.0 media stream (``content`` is accepted as the alias the
    .../picture({id})/pictureContent|content     v2 doc examples use); v1.0/beta: ``picture({id})/content``
    {set}...?company={c}                         the same, company given as a query option

Collections honour ``$filter`` (eq ne gt ge lt le, in, and/or/not, startswith/endswith/contains,
tolower/toupper; ``or`` across two different fields is refused like BC does), ``$select``, ``$expand=picture``
(with nested ``$select``), ``$orderby``, ``$top``, ``$skip``, ``$count`` and server-driven paging
(``Prefer: odata.maxpagesize=N`` answered with ``Preference-Applied``; an absolute ``@odata.nextLink`` with an
opaque ``$skiptoken`` that is followed unchanged).

Every record carries a weak ``@odata.etag`` of BC's form ``W/"<base64 of '<n>;<rowversion>1;00;'>"`` that
changes with every modification; a picture's etag is the same form around a 44-character hash (§2).
Picture uploads (PATCH on the stream, §3) need ``If-Match`` (missing → 400 ``BadRequest_InvalidToken``,
``*`` always passes, stale → 409 ``Request_EntityChanged`` or the ``stale_etag_status`` knob), store the bytes
as given, read width/height/contentType from the bytes (Pillow, in a worker thread), and bump the picture
etag plus the parent's etag and ``lastModifiedDateTime``. DELETE (§4) checks ``If-Match`` only when sent.
Errors are ``{"error": {"code", "message": "…  CorrelationId:  <guid>."}}``.

Choices the documents leave open (all marked "inferred" in the reference):
  * GET on the stream of an empty picture answers ``204 No Content``.
  * An upload whose bytes Pillow cannot identify is stored with width = height = 0 and a content type from
    the leading magic bytes, else ``application/octet-stream``.
  * ``Prefer: odata.maxpagesize`` above the maximum page size is capped (``oversize_page_preference="413"``
    turns it into the 413 of the limits table instead).
  * Deleting a picture that is already empty changes nothing (no etag bump), like a ``Modify`` with no
    changed field.
  * A client without permission sets may list companies (as observed in BC) but gets ``403``
    ``Authorization_InsufficientPermissions`` elsewhere (``no_permission_status=400`` gives the
    ``Internal_ServerError`` 400 that real tenants have been seen to send).
  * Only the documented verbs exist on a picture: PUT on the stream is 405 like POST; an ``If-Match`` that
    is not a well-formed etag (e.g. the JSON-escaped ``W/\"…\"``) is 400 ``BadRequest_InvalidToken``, a
    well-formed but outdated one is the stale-etag error.
  * v1.0/beta differ from v2.0 only where syncd meets them (the picture navigation and stream names);
    records carry the v2.0 property set in every dialect.
  * The request-rate limit is off unless asked for (``rate_limit=BC_RATE_LIMIT`` is BC's 6000 per 5 min);
    the concurrency cap of 5 per principal with a queue of 95 is on, as in BC.

Operational limits (§6; knobs, changeable at run time through the admin API): a sliding-window request
limit per principal (429 with ``Retry-After``), a cap of concurrent requests per principal with a queue
(queue full → 429, waiting longer than ``queue_timeout`` → 503 with ``retry-after``), random 408s, and the
shared fault knobs of ``common.py`` (5xx with ``retry-after`` on 502/503, 429, resets, slow bodies).

Admin API (no auth, never logged or faulted), besides the common ``/_sandbox/`` routes::

    GET    /_sandbox/bc/snapshot[?bytes=true]                      every company/record/picture (sha256)
    PUT    /_sandbox/bc/companies/{cid}/{set}/{id}/picture         raw body: set the picture "by hand in BC"
    DELETE /_sandbox/bc/companies/{cid}/{set}/{id}/picture         clear it by hand
    POST   /_sandbox/bc/revoke-tokens                              every issued token stops working
    GET    /_sandbox/bc/limits                                     limit knobs + per-principal gate stats
    PUT    /_sandbox/bc/limits                                     merge the given knobs; unknown keys → 400
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import contextlib
import copy
import dataclasses
import hashlib
import io
import json
import math
import random
import re
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from aiohttp import web
from PIL import Image, UnidentifiedImageError

from syncd.sandbox.common import PRINCIPAL, Emulator, Faults, retry_after_value
from syncd.sandbox.entra import EntraEmulator, TokenProblem

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
    return BCPicture(data=data, content_type=content_type or _sniff(data), width=width, height=height)


def _sniff(data: bytes) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:2] == b"BM":
        return "image/bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return "application/octet-stream"


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


# ================================================================================================
# Errors
# ================================================================================================
class ODataError(Exception):
    """An error reply in BC's shape; raised anywhere below a request handler."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = {"error": {"code": code, "message": f"{message}  CorrelationId:  {uuid.uuid4()}."}}
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        headers={"Content-Type": ERROR_CONTENT_TYPE, **(headers or {})},
    )


def _syntax_error() -> ODataError:
    return ODataError(400, "BadRequest_NotFound", "Bad Request - Error in query syntax.")


def _no_property(name: str, type_name: str) -> ODataError:
    return ODataError(
        400, "BadRequest", f"Could not find a property named '{name}' on type 'Microsoft.NAV.{type_name}'."
    )


def _segment_not_found(segment: str) -> ODataError:
    return ODataError(404, "BadRequest_ResourceNotFound", f"Resource not found for the segment '{segment}'.")


def _method_not_allowed(method: str, segment: str, edm_type: str) -> ODataError:
    return ODataError(
        405,
        "BadRequest_MethodNotAllowed",
        f"'{method}' requests for '{segment}' of EdmType '{edm_type}' are not allowed within Dynamics 365 "
        "Business Central OData web services.",
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


# ================================================================================================
# Operational limits
# ================================================================================================
@dataclass(slots=True)
class BCLimits:
    """Operational-limit knobs (§6). Defaults: BC's own numbers where harmless, the rest off."""

    rate_limit: tuple[int, float] | None = None  # (requests, window seconds) per principal; BC: (6000, 300)
    retry_after_on_429: bool = True
    max_concurrent: int | None = 5  # per principal; None = unlimited
    max_queue: int = 95  # queued beyond max_concurrent before 429
    queue_timeout: float = 480.0  # seconds in the queue before 503
    queue_retry_after: int = 10  # seconds in the retry-after of that 503
    processing_ms: float = 0.0  # service time spent holding a concurrency slot (to make queues visible)
    rate_408: float = 0.0  # probability of an operation-timeout 408
    max_page_size: int = BC_MAX_PAGE_SIZE
    oversize_page_preference: str = "cap"  # "cap" | "413"
    stale_etag_status: int = 409
    no_permission_status: int = 403
    clients_without_permissions: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["rate_limit"] = list(self.rate_limit) if self.rate_limit else None
        return data

    def merged(self, changes: Mapping[str, Any]) -> BCLimits:
        known = {f.name for f in dataclasses.fields(BCLimits)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown limit knobs: {sorted(unknown)}")
        data = {**dataclasses.asdict(self), **changes}
        rate = data["rate_limit"]
        data["rate_limit"] = (int(rate[0]), float(rate[1])) if rate else None
        data["clients_without_permissions"] = list(data["clients_without_permissions"])
        limits = BCLimits(**data)
        limits.validate()
        return limits

    def validate(self) -> None:
        if self.oversize_page_preference not in ("cap", "413"):
            raise ValueError("oversize_page_preference must be 'cap' or '413'")
        if self.stale_etag_status not in (409, 412):
            raise ValueError("stale_etag_status must be 409 or 412")
        if self.no_permission_status not in (400, 403):
            raise ValueError("no_permission_status must be 403 or 400")
        if not 1 <= self.max_page_size <= BC_MAX_PAGE_SIZE:
            raise ValueError(f"max_page_size must be 1..{BC_MAX_PAGE_SIZE}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError("max_concurrent must be ≥ 1 or None")


@dataclass(slots=True)
class _Gate:
    active: int = 0
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    peak: int = 0
    queued_total: int = 0
    rejected: int = 0
    timed_out: int = 0


class ConcurrencyGate:
    """At most ``max_concurrent`` requests per principal in progress; the rest wait in a bounded queue."""

    def __init__(self, limits: Callable[[], BCLimits]) -> None:
        self._limits = limits
        self.gates: dict[str, _Gate] = {}

    async def acquire(self, principal: str) -> None:
        limits = self._limits()
        gate = self.gates.get(principal)
        if gate is None:
            gate = self.gates[principal] = _Gate()
        cap = limits.max_concurrent
        if cap is None or (gate.active < cap and not gate.waiters):
            gate.active += 1
            gate.peak = max(gate.peak, gate.active)
            return
        if len(gate.waiters) >= limits.max_queue:
            gate.rejected += 1
            total = gate.active + len(gate.waiters) + 1
            raise ODataError(
                429,
                "Application_TooManyRequests",
                f"Too many requests reached.  Actual ({total}). Maximum ({cap + limits.max_queue}).",
            )
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        gate.waiters.append(waiter)
        gate.queued_total += 1
        timer = loop.call_later(limits.queue_timeout, _expire, waiter)
        try:
            await waiter
        except TimeoutError:
            self._forget(gate, waiter)
            gate.timed_out += 1
            raise ODataError(
                503,
                "Application_ServiceUnavailable",
                "The request waited too long in the queue of pending requests. Please retry.",
                {"retry-after": str(limits.queue_retry_after)},
            ) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(principal)  # handed a slot just as we were cancelled: pass it on
            else:
                self._forget(gate, waiter)
            raise
        finally:
            timer.cancel()
        gate.peak = max(gate.peak, gate.active)

    @staticmethod
    def _forget(gate: _Gate, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            gate.waiters.remove(waiter)

    def release(self, principal: str) -> None:
        gate = self.gates[principal]
        while gate.waiters:
            waiter = gate.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next in line
                return
        gate.active -= 1

    def stats(self) -> dict[str, Any]:
        return {
            p: {
                "active": g.active,
                "queued": len(g.waiters),
                "peak": g.peak,
                "queued_total": g.queued_total,
                "rejected_429": g.rejected,
                "timed_out_503": g.timed_out,
            }
            for p, g in self.gates.items()
        }


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class SlidingWindow:
    """Per-principal request timestamps within the last ``window`` seconds."""

    def __init__(self) -> None:
        self.hits: dict[str, deque[float]] = {}

    def hit(self, principal: str, now: float, limit: int, window: float) -> float | None:
        """Count one request; returns None if allowed, else seconds until a slot frees up."""
        hits = self.hits.get(principal)
        if hits is None:
            hits = self.hits[principal] = deque()
        cutoff = now - window
        while hits and hits[0] <= cutoff:
            hits.popleft()
        if len(hits) >= limit:
            return hits[0] + window - now
        hits.append(now)
        return None


# ================================================================================================
# The emulator
# ================================================================================================
@dataclass(slots=True)
class _Ctx:
    """What the route prefix and authentication established for one API request."""

    version: str
    base: str  # absolute URL of the API root as the client addressed it
    principal: str


Handler = Callable[[web.Request, _Ctx], Awaitable[web.StreamResponse]]

_V = r"{version:v2\.0|v1\.0|beta}"
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("online", "/v2.0/{tenant}/{environment}/api/" + _V),
    ("online", "/v2.0/{environment}/api/" + _V),
    ("online", r"/v1.0/{tenant}/api/{version:v1\.0|beta}"),
    ("onprem", "/{instance}/api/" + _V),
)
_CID = "{company_id:[^/()]*}"
_SET = "{entity_set:[A-Za-z][A-Za-z0-9]*}"
_RID = "{record_id:[^/()]*}"
_PID = "{picture_id:[^/()]*}"
_STREAM = "{stream:[A-Za-z][A-Za-z0-9]*}"


class BusinessCentralEmulator(Emulator):
    """Serves a :class:`BCState` as Business Central's API (v2.0, v1.0, beta) plus the Entra token endpoint.

    Auth: ``clients`` (client id → secret) and ``client_certificates`` (client id → PEM certificate/public
    key for ``client_assertion``) may get tokens; ``basic_users`` (user → web service access key) may use
    the on-premises routes. ``clients_without_permissions`` authenticate but are refused data (403).
    The remaining keyword arguments are the :class:`BCLimits` knobs; ``instance`` names the on-prem server
    instance; ``beta_enabled=False`` retires the beta endpoint (404).
    """

    api_name = "businesscentral"

    def __init__(
        self,
        state: BCState,
        *,
        tenant: str = "sandbox-tenant",
        environment: str = "production",
        clients: dict[str, str] | None = None,
        basic_users: dict[str, str] | None = None,
        token_lifetime: float = 3599.0,
        faults: Faults | None = None,
        client_certificates: dict[str, bytes] | None = None,
        clients_without_permissions: Iterable[str] = (),
        instance: str = "BC",
        beta_enabled: bool = True,
        max_page_size: int = BC_MAX_PAGE_SIZE,
        oversize_page_preference: Literal["cap", "413"] = "cap",
        stale_etag_status: int = 409,
        no_permission_status: int = 403,
        rate_limit: tuple[int, float] | None = None,
        retry_after_on_429: bool = True,
        max_concurrent: int | None = 5,
        max_queue: int = 95,
        queue_timeout: float = 480.0,
        processing_ms: float = 0.0,
        rate_408: float = 0.0,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        super().__init__(faults)
        self.state = state
        self.tenant = tenant
        self.environment = environment
        self.instance = instance
        self.beta_enabled = beta_enabled
        self.basic_users: dict[str, str] = dict(basic_users or {})
        self.max_body_bytes = max_body_bytes
        self.entra = EntraEmulator(
            tenant=tenant,
            clients=clients,
            client_certificates=client_certificates,
            token_lifetime=token_lifetime,
            clock=lambda: self.clock(),
        )
        self.limits = BCLimits(
            rate_limit=rate_limit,
            retry_after_on_429=retry_after_on_429,
            max_concurrent=max_concurrent,
            max_queue=max_queue,
            queue_timeout=queue_timeout,
            processing_ms=processing_ms,
            rate_408=rate_408,
            max_page_size=max_page_size,
            oversize_page_preference=oversize_page_preference,
            stale_etag_status=stale_etag_status,
            no_permission_status=no_permission_status,
            clients_without_permissions=list(clients_without_permissions),
        )
        self.limits.validate()
        self.gate = ConcurrencyGate(lambda: self.limits)
        self.window = SlidingWindow()
        self._limit_rng = random.Random(0)
        self._saved: BCState | None = None

    def __repr__(self) -> str:
        return f"BusinessCentralEmulator(tenant={self.tenant!r}, environment={self.environment!r})"

    # -- wiring ------------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        """The aiohttp application: admin routes, the token endpoint and the API."""
        self._saved = self.state.checkpoint()
        app = web.Application(middlewares=[self.middleware], client_max_size=self.max_body_bytes)
        self.add_admin_routes(app)
        self._add_bc_admin_routes(app)
        self.entra.add_routes(app)
        self._add_api_routes(app)
        return app

    def reset_data(self) -> None:
        if self._saved is not None:
            self.state.restore(self._saved)

    def _add_api_routes(self, app: web.Application) -> None:
        company = f"/companies({_CID})"
        record = f"/{_SET}({_RID})"
        suffixes: list[tuple[str, Handler, bool]] = [
            ("/companies", self._companies, False),
            (company, self._company, False),
        ]
        for scope in (company, ""):  # companies({c})/... and ...?company={c}
            suffixes += [
                (f"{scope}/{_SET}", self._collection, True),
                (f"{scope}{record}", self._record, True),
                (f"{scope}{record}/picture", self._picture, True),
                (f"{scope}{record}/picture({_PID})", self._picture, True),
                (f"{scope}{record}/picture/{_STREAM}", self._picture_stream, True),
                (f"{scope}{record}/picture({_PID})/{_STREAM}", self._picture_stream, True),
            ]
        for kind, prefix in _PREFIXES:
            for suffix, handler, needs_permission in suffixes:
                app.router.add_route("*", prefix + suffix, self._endpoint(kind, handler, needs_permission))
            app.router.add_route("*", prefix + "/{tail:.*}", self._endpoint(kind, self._unknown, True))

    def _add_bc_admin_routes(self, app: web.Application) -> None:
        base = "/_sandbox/bc"
        app.router.add_get(base + "/snapshot", self._admin_snapshot)
        pic = base + "/companies/{company_id}/{entity_set}/{record_id}/picture"
        app.router.add_put(pic, self._admin_set_picture)
        app.router.add_delete(pic, self._admin_clear_picture)
        app.router.add_post(base + "/revoke-tokens", self._admin_revoke)
        app.router.add_get(base + "/limits", self._admin_get_limits)
        app.router.add_put(base + "/limits", self._admin_put_limits)

    # -- request pipeline: prefix, auth, limits, handler --------------------------------------------
    def _endpoint(
        self, kind: str, handler: Handler, needs_permission: bool
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            try:
                ctx = self._open(request, kind)
                if needs_permission and ctx.principal in self.limits.clients_without_permissions:
                    raise self._no_permission(request)
                self._count_rate(ctx.principal)
                await self.gate.acquire(ctx.principal)
                try:
                    limits = self.limits
                    if limits.processing_ms > 0:
                        await asyncio.sleep(limits.processing_ms / 1000)
                    if limits.rate_408 > 0 and self._limit_rng.random() < limits.rate_408:
                        raise ODataError(
                            408, "Internal_RequestTimeout", "The operation timed out and was cancelled."
                        )
                    return await handler(request, ctx)
                finally:
                    self.gate.release(ctx.principal)
            except ODataError as err:
                return error_response(err.status, err.code, err.message, err.headers)

        return endpoint

    def _open(self, request: web.Request, kind: str) -> _Ctx:
        info = request.match_info
        version = info["version"]
        if kind == "onprem":
            if info["instance"] != self.instance:
                raise ODataError(
                    404, "BadRequest_NotFound", f"The server instance '{info['instance']}' was not found."
                )
            principal = self._authenticate_onprem(request)
        else:
            principal, tenant = self._authenticate_bearer(request)
            url_tenant = info.get("tenant")
            if url_tenant is not None and url_tenant.lower() != tenant.lower():
                raise self._unauthorized("invalid_token", "The token is not valid for this tenant.")
            environment = info.get("environment", "production")
            if environment != self.environment:
                raise ODataError(
                    404, "BadRequest_NotFound", f"The environment '{environment}' does not exist."
                )
        request[PRINCIPAL] = principal
        if version == "beta" and not self.beta_enabled:
            raise _segment_not_found("beta")
        path = request.raw_path.split("?", 1)[0]
        marker = f"/api/{version}"
        base = path[: path.index(marker) + len(marker)]
        return _Ctx(version=version, base=f"{request.scheme}://{request.host}{base}", principal=principal)

    def _authenticate_bearer(self, request: web.Request) -> tuple[str, str]:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if not header:
            raise self._unauthorized(None, None)
        if scheme.lower() != "bearer" or not credentials.strip():
            # Web service access keys (Basic) are not accepted online since 2022.
            raise self._unauthorized("invalid_token", "Only Bearer tokens are accepted.")
        try:
            issued = self.entra.validate(credentials.strip())
        except TokenProblem as problem:
            if problem.reason == "expired":
                raise self._unauthorized("invalid_token", "The access token has expired.") from None
            raise self._unauthorized("invalid_token", "The access token is invalid.") from None
        return issued.client_id, issued.tenant

    def _authenticate_onprem(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer":
            return self._authenticate_bearer(request)[0]
        challenge = {"WWW-Authenticate": 'Basic realm=""'}
        if scheme.lower() != "basic":
            raise ODataError(
                401,
                "Authentication_InvalidCredentials",
                "The server has rejected the client credentials.",
                challenge,
            )
        try:
            user, sep, key = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, sep, key = "", "", ""
        expected = self.basic_users.get(user)
        if not sep or expected is None or key != expected:
            raise ODataError(
                401,
                "Authentication_InvalidCredentials",
                "The server has rejected the client credentials.",
                challenge,
            )
        return user

    def _unauthorized(self, error: str | None, description: str | None) -> ODataError:
        challenge = f'Bearer authorization_uri="{AUTHORIZATION_URI}"'
        if error:
            challenge += f', error="{error}", error_description="{description}"'
        return ODataError(
            401,
            "Authentication_InvalidCredentials",
            "The server has rejected the client credentials.",
            {"WWW-Authenticate": challenge},
        )

    def _no_permission(self, request: web.Request) -> ODataError:
        segment = request.match_info.get("entity_set", "companies")
        page = {"customers": "Customers", "vendors": "Vendors", "employees": "Employees", "items": "Items"}
        message = (
            f"You do not have the following permissions on Page APIV2 - {page.get(segment, 'Companies')}: "
            "Execute.\r\n\r\nTo view details about your permissions, see the Effective Permissions page. To "
            "report a problem, refer to the following server session ID: '1'."
        )
        if self.limits.no_permission_status == 400:
            return ODataError(400, "Internal_ServerError", message)
        return ODataError(403, "Authorization_InsufficientPermissions", message)

    def _count_rate(self, principal: str) -> None:
        rate = self.limits.rate_limit
        if rate is None:
            return
        wait = self.window.hit(principal, self.clock(), rate[0], rate[1])
        if wait is None:
            return
        headers = {"Retry-After": str(max(1, math.ceil(wait)))} if self.limits.retry_after_on_429 else {}
        raise ODataError(
            429,
            "Application_TooManyRequests",
            f"Too many requests reached.  Actual ({rate[0] + 1}). Maximum ({rate[0]}) per {rate[1]:g} "
            "seconds.",
            headers,
        )

    # -- fault replies (common.Faults) -------------------------------------------------------------
    def fault_response(self, kind: str, request: web.Request) -> web.Response:
        faults = self.fault_state.faults
        if kind == "429":
            value, _ = retry_after_value(faults, self.clock())
            headers = {"Retry-After": value} if value is not None else {}
            return error_response(
                429,
                "Application_TooManyRequests",
                "Too many requests reached.  Actual (101). Maximum (100).",
                headers,
            )
        status = self.fault_state.rng.choice((500, 502, 503, 504))
        retry = {"retry-after": str(max(1, round(faults.retry_after_seconds)))}
        if status == 502:
            return error_response(
                502, "BadGateway", "The service is temporarily unavailable (bad gateway).", retry
            )
        if status == 503:
            return error_response(
                503,
                "Application_ServiceUnavailable",
                "The service is temporarily unavailable. Please retry.",
                retry,
            )
        if status == 504:
            return error_response(504, "GatewayTimeout", "The request exceeded the 10 minute execution time.")
        return error_response(500, "Internal_ServerError", "An unexpected error occurred on the server.")

    # -- resolution helpers --------------------------------------------------------------------------
    def _resolve_company(self, request: web.Request) -> BCCompany:
        raw = request.match_info.get("company_id")
        if raw is None:
            raw = request.query.get("company")
            if not raw:
                raise ODataError(
                    400,
                    "Internal_CompanyNotFound",
                    _COMPANY_NOT_FOUND,
                )
            company = self.state.companies.get(raw.lower()) or self.state.company_by_name(raw)
        else:
            company = self.state.companies.get(_key(raw))
        if company is None:
            raise ODataError(404, "BadRequest_NotFound", f"The company '{raw}' does not exist.")
        return company

    def _resolve_set(self, request: web.Request) -> EntitySchema:
        entity_set = request.match_info["entity_set"]
        schema = SCHEMAS.get(entity_set)
        if schema is None:
            raise _segment_not_found(entity_set)
        return schema

    def _resolve_record(self, request: web.Request) -> tuple[BCCompany, EntitySchema, BCRecord]:
        schema = self._resolve_set(request)  # an unknown segment is a 404 before anything else
        rid = _key(request.match_info["record_id"])
        company = self._resolve_company(request)
        rec = company.by_id[schema.entity_set].get(rid)
        if rec is None:
            raise ODataError(
                404,
                "BadRequest_NotFound",
                f"The {schema.parent_type} does not exist. Identification fields and values: Id='{rid}'",
            )
        pid = request.match_info.get("picture_id")
        if pid is not None and _key(pid) != rec.id:
            raise ODataError(
                404,
                "BadRequest_NotFound",
                f"The picture does not exist. Identification fields and values: Id='{_key(pid)}'",
            )
        return company, schema, rec

    def _json(
        self, body: dict[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        return web.Response(
            status=status,
            body=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
            headers={"Content-Type": JSON_CONTENT_TYPE, "OData-Version": "4.0", **(headers or {})},
        )

    # -- handlers: companies -------------------------------------------------------------------------
    async def _companies(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        if request.method != "GET":
            raise _method_not_allowed(request.method, "companies", "EntitySet")
        companies = list(self.state.companies.values())
        flt = request.query.get("$filter")
        if flt is not None:
            pred = FilterCompiler(flt, COMPANY_KINDS, _company_getter, "company").compile()
            companies = [c for c in companies if pred(c)]
        select = parse_select(request.query.get("$select"), COMPANY_KINDS, "company")
        rows = [_pick(c.as_json(), select) for c in companies]
        return self._json({"@odata.context": f"{ctx.base}/$metadata#companies", "value": rows})

    async def _company(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        if request.method != "GET":
            raise _method_not_allowed(request.method, "companies", "Entity")
        company = self._resolve_company(request)
        select = parse_select(request.query.get("$select"), COMPANY_KINDS, "company")
        body = {
            "@odata.context": f"{ctx.base}/$metadata#companies/$entity",
            **_pick(company.as_json(), select),
        }
        return self._json(body)

    async def _unknown(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        tail = request.match_info.get("tail", "")
        known = ("companies", *ENTITY_SETS, "picture", "pictureContent", "content")
        for segment in tail.split("/"):
            name = segment.split("(", 1)[0]
            if name not in known:
                raise _segment_not_found(name or tail)
        raise _syntax_error()

    # -- handlers: records -----------------------------------------------------------------------
    async def _collection(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        schema = self._resolve_set(request)
        if request.method != "GET":
            raise _method_not_allowed(request.method, schema.entity_set, "EntitySet")
        company = self._resolve_company(request)
        q = request.query
        kinds = schema.kinds
        for key in q:
            if key.startswith("$") and key not in _QUERY_OPTIONS:
                raise ODataError(400, "BadRequest", f"The query parameter '{key}' is not supported.")
        select = parse_select(q.get("$select"), kinds, schema.type_name)
        expand = parse_expand(q.get("$expand"), ctx.version, schema.type_name)
        rows: list[BCRecord] = self.state.records(company.id, schema.entity_set)
        getter = record_getter(schema)
        if "$filter" in q:
            pred = FilterCompiler(q["$filter"], kinds, getter, schema.type_name).compile()
            rows = [r for r in rows if pred(r)]
        orderby = parse_orderby(q.get("$orderby"), kinds, schema.type_name)
        for name, desc in reversed(orderby):  # stable sorts, last key first
            rows = sorted(rows, key=_sort_key_of(getter(name)), reverse=desc)
        total = len(rows)

        # Page size: the Prefer header, else what the skiptoken remembers, capped at the maximum.
        max_page = self.limits.max_page_size
        preferred = parse_maxpagesize(request.headers.get("Prefer"))
        if preferred is not None and preferred > max_page and self.limits.oversize_page_preference == "413":
            raise ODataError(
                413,
                "RequestEntityTooLarge",
                f"The requested page size {preferred} exceeds the maximum page size {max_page}.",
            )
        token_text = q.get("$skiptoken")
        token = _decode_skiptoken(token_text) if token_text is not None else None
        page_size = min(preferred or (token or {}).get("n") or max_page, max_page)

        if token is None:
            start = _nonneg_int(q.get("$skip"), "$skip") or 0
            remaining = _nonneg_int(q.get("$top"), "$top")
        else:
            start = _resume_position(rows, token)
            remaining = token.get("top")
        take = page_size if remaining is None else min(page_size, remaining)
        page = rows[start : start + take]
        end = start + len(page)
        left = None if remaining is None else remaining - len(page)

        body: dict[str, Any] = {"@odata.context": self._collection_context(ctx, company, schema, select)}
        if q.get("$count", "").lower() == "true":
            body["@odata.count"] = total
        body["value"] = [self._row(ctx, company, schema, rec, select, expand) for rec in page]
        if end < len(rows) and (left is None or left > 0) and page:
            next_token = {"pos": end, "after": page[-1].id, "n": page_size, "top": left}
            body["@odata.nextLink"] = self._next_link(request, _encode_skiptoken(next_token))
        headers = {"Preference-Applied": f"odata.maxpagesize={page_size}"} if preferred is not None else None
        return self._json(body, headers=headers)

    def _collection_context(
        self, ctx: _Ctx, company: BCCompany, schema: EntitySchema, select: list[str] | None
    ) -> str:
        context = f"{ctx.base}/$metadata#companies({company.id})/{schema.entity_set}"
        if select is not None:
            context += "(" + ",".join(select) + ")"
        return context

    def _next_link(self, request: web.Request, token: str) -> str:
        path = request.raw_path.split("?", 1)[0]
        params = [(k, v) for k, v in request.query.items() if k != "$skiptoken"]
        params.append(("$skiptoken", token))
        query = "&".join(f"{quote(k, safe='$')}={quote(v, safe=_QUERY_SAFE)}" for k, v in params)
        return f"{request.scheme}://{request.host}{path}?{query}"

    async def _record(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        if request.method != "GET":
            schema = self._resolve_set(request)
            raise _method_not_allowed(request.method, schema.entity_set, "Entity")
        company, schema, rec = self._resolve_record(request)
        select = parse_select(request.query.get("$select"), schema.kinds, schema.type_name)
        expand = parse_expand(request.query.get("$expand"), ctx.version, schema.type_name)
        body = {
            "@odata.context": f"{ctx.base}/$metadata#companies({company.id})/{schema.entity_set}/$entity",
            **self._row(ctx, company, schema, rec, select, expand),
        }
        return self._json(body)

    def _row(
        self,
        ctx: _Ctx,
        company: BCCompany,
        schema: EntitySchema,
        rec: BCRecord,
        select: list[str] | None,
        expand: _Expand,
    ) -> dict[str, Any]:
        full: dict[str, Any] = {
            "@odata.etag": rec.etag,
            "id": rec.id,
            "number": rec.number,
            "displayName": rec.display_name,
        }
        fields = rec.fields
        for name, _, default in schema.extra:
            full[name] = fields.get(name, default)
        full["lastModifiedDateTime"] = format_datetime(rec.last_modified)
        row = full if select is None else {"@odata.etag": rec.etag, **{k: full[k] for k in select}}
        if expand.picture:
            picture = self._picture_json(ctx, company, schema, rec, expand.picture_select)
            row["picture"] = picture if ctx.version == "v2.0" else [picture]
        return row

    # -- handlers: pictures ------------------------------------------------------------------------
    def _picture_json(
        self, ctx: _Ctx, company: BCCompany, schema: EntitySchema, rec: BCRecord, select: list[str] | None
    ) -> dict[str, Any]:
        pic = rec.picture
        base = f"{ctx.base}/companies({company.id})/{schema.entity_set}({rec.id})"
        if ctx.version == "v2.0":
            stream, link = "pictureContent", f"{base}/picture/pictureContent"
        else:
            stream, link = "content", f"{base}/picture({rec.id})/content"
        full: dict[str, Any] = {"@odata.etag": rec.picture_etag, "id": rec.id}
        if ctx.version == "v2.0":
            full["parentType"] = schema.parent_type
        full["width"] = pic.width if pic else 0
        full["height"] = pic.height if pic else 0
        full["contentType"] = pic.content_type if pic else ""
        if select is None or stream in select:
            full[f"{stream}@odata.mediaEditLink"] = link
            full[f"{stream}@odata.mediaReadLink"] = link
        if select is None:
            return full
        return {
            k: v for k, v in full.items() if k == "@odata.etag" or k in select or k.startswith(stream + "@")
        }

    async def _picture(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        method = request.method
        if method == "POST":
            self._resolve_record(request)
            raise _method_not_allowed("POST", "picture", "Entity")
        if method not in ("GET", "DELETE", "PATCH"):
            raise _method_not_allowed(method, "picture", "Entity")
        company, schema, rec = self._resolve_record(request)
        if method == "DELETE":
            self._check_if_match(request, rec, required=False)
            self.state.apply_picture(rec, None)
            return web.Response(status=204)
        if method == "PATCH":
            self._check_if_match(request, rec, required=True)
            raise ODataError(
                400,
                "BadRequest_InvalidOperation",
                "The picture's properties are read-only; upload the image with PATCH on its "
                + ("pictureContent" if ctx.version == "v2.0" else "content")
                + " media link.",
            )
        select = parse_select(request.query.get("$select"), _picture_properties(ctx.version), "picture")
        picture = self._picture_json(ctx, company, schema, rec, select)
        context = f"{ctx.base}/$metadata#companies({company.id})/{schema.entity_set}({rec.id})/picture"
        if ctx.version != "v2.0" and "picture_id" not in request.match_info:
            return self._json({"@odata.context": context, "value": [picture]})
        return self._json({"@odata.context": context + "/$entity", **picture})

    async def _picture_stream(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        stream = request.match_info["stream"]
        allowed = ("pictureContent", "content") if ctx.version == "v2.0" else ("content",)
        if stream not in allowed:
            self._resolve_set(request)
            raise _segment_not_found(stream)
        if ctx.version != "v2.0" and "picture_id" not in request.match_info:
            raise _syntax_error()  # v1.0/beta: picture is a collection, the stream needs picture({id})
        method = request.method
        if method == "POST":
            self._resolve_record(request)
            raise _method_not_allowed("POST", stream, "Primitive")
        if method not in ("GET", "PATCH"):
            raise _method_not_allowed(method, stream, "Primitive")
        rec = self._resolve_record(request)[2]
        if method == "GET":
            if rec.picture is None:
                return web.Response(status=204)
            return web.Response(body=rec.picture.data, content_type=rec.picture.content_type)
        self._check_if_match(request, rec, required=True)
        data = await self._read_body(request)
        if not data:
            raise ODataError(
                400,
                "Application_DialogException",
                "Media Object cannot be imported because the instream object is empty.",
            )
        picture = await asyncio.to_thread(inspect_picture, data)
        self._check_if_match(request, rec, required=True)  # again: another write may have won meanwhile
        self.state.apply_picture(rec, picture)
        return web.Response(status=204)

    async def _read_body(self, request: web.Request) -> bytes:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ODataError(
                413,
                "RequestEntityTooLarge",
                f"The request body exceeds the maximum of {self.max_body_bytes} bytes.",
            ) from None

    def _check_if_match(self, request: web.Request, rec: BCRecord, *, required: bool) -> None:
        header = request.headers.get("If-Match")
        if header is None:
            if required:
                raise ODataError(
                    400,
                    "BadRequest_InvalidToken",
                    _IF_MATCH_MESSAGE,
                )
            return
        if header.strip() == "*":
            return
        tags = [_parse_etag(t) for t in _split_etags(header)]
        if not tags or any(t is None for t in tags):
            raise ODataError(
                400,
                "BadRequest_InvalidToken",
                _IF_MATCH_MESSAGE,
            )
        if rec.picture_etag not in tags:
            raise ODataError(
                self.limits.stale_etag_status,
                "Request_EntityChanged",
                "Another user has already changed the record.",
            )

    # -- admin -------------------------------------------------------------------------------------
    async def _admin_snapshot(self, request: web.Request) -> web.Response:
        include = request.query.get("bytes", "false").lower() == "true"
        return web.json_response(self.state.snapshot(include_bytes=include))

    def _admin_record(self, request: web.Request) -> BCRecord:
        info = request.match_info
        try:
            return self.state.get_record(info["company_id"], info["entity_set"], info["record_id"])
        except KeyError as exc:
            raise web.HTTPNotFound(text=str(exc)) from None

    async def _admin_set_picture(self, request: web.Request) -> web.Response:
        rec = self._admin_record(request)
        data = await request.read()
        if not data:
            return web.json_response({"error": "empty body; use DELETE to clear a picture"}, status=400)
        picture = await asyncio.to_thread(inspect_picture, data)
        self.state.apply_picture(rec, picture)
        return web.json_response(self._admin_picture_info(rec))

    async def _admin_clear_picture(self, request: web.Request) -> web.Response:
        rec = self._admin_record(request)
        self.state.apply_picture(rec, None)
        return web.json_response(self._admin_picture_info(rec))

    @staticmethod
    def _admin_picture_info(rec: BCRecord) -> dict[str, Any]:
        pic = rec.picture
        return {
            "id": rec.id,
            "etag": rec.etag,
            "pictureEtag": rec.picture_etag,
            "lastModifiedDateTime": format_datetime(rec.last_modified),
            "width": pic.width if pic else 0,
            "height": pic.height if pic else 0,
            "contentType": pic.content_type if pic else "",
            "sha256": hashlib.sha256(pic.data).hexdigest() if pic else None,
        }

    async def _admin_revoke(self, request: web.Request) -> web.Response:
        return web.json_response({"revoked": self.entra.revoke_all()})

    async def _admin_get_limits(self, request: web.Request) -> web.Response:
        return web.json_response({**self.limits.as_json(), "gates": self.gate.stats()})

    async def _admin_put_limits(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            self.limits = self.limits.merged(body)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.limits.as_json())


_COMPANY_NOT_FOUND = (
    "Cannot process the request because the default company cannot be found. You can specify a default "
    "company in the service configuration file, or specify one for each tenant, or you can add a query "
    'string in the form of "company=[name]". You can see the available companies by accessing the default '
    'OData web service, Company. For more information, see "OData Web Services" in Help'
)
_IF_MATCH_MESSAGE = " ".join(
    (
        "Could not validate the client concurrency token required by the service.",
        "Please provide a valid token in the client request.",
    )
)
_QUERY_OPTIONS = frozenset(
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
_QUERY_SAFE = "$'(),:/@!*;-._~"  # never '+' (it would come back as a space) nor '&', '='


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
