"""A faithful local emulator of the SuperOffice CRM Web API (REST ``/api/v1``), for tests and demos.

What it serves (one tenant, default ``Cust00001``; every path matches case-insensitively, so
``Contact/7/Imageinfo`` and ``contact/7/ImageInfo`` are the same route, as on the real service):

    GET    /{cust}/api                                 version discovery (no auth)
    GET    /{cust}/api/v1/Contact                      SimpleContact archive (OData-ish query options)
    GET    /{cust}/api/v1/Person                       Person archive
    GET    /{cust}/api/v1/Archive/{provider}           SimpleContact | Contact | Person | SimplePerson, and
                                                       dynamic: dot syntax over BinaryObject and
                                                       BinaryObjectLink (so_dynamic.py)
    GET    /{cust}/api/v1/{Contact|Person}/{id}        entity JSON, Last-Modified, If-Modified-Since → 304
    GET    /{cust}/api/v1/{Contact|Person}/{id}/Image  as stored, or scaled/converted (w, h, type), ifBlank
    PUT    /{cust}/api/v1/{Contact|Person}/{id}/Image  raw image/* or multipart body → 200 blob id
    POST   /{cust}/api/v1/{Contact|Person}/{id}/Image  same as PUT
    DELETE /{cust}/api/v1/{Contact|Person}/{id}/Image  → 204
    GET    /{cust}/api/v1/{Contact|Person}/{id}/ImageInfo   BlobEntity, or 200 with an empty body
    PUT    /{cust}/api/v1/{Contact|Person}/{id}/ImageInfo   update Description / ExtraInfo
    POST   /Login/api/PartnerSystemUser/Authenticate   system-user token → JWT carrying a 7T ticket
    GET    /api/state/{cust}                           tenant status (no auth)

Auth: ``Basic`` (onsite style, ``users``), ``SOTicket 7T:…`` together with a known ``SO-AppToken`` header,
``Bearer 8A:…`` (tokens minted by the emulator). Anything else: 401 with
``WWW-Authenticate: Basic realm="SuperOffice Username or Ticket"`` and the SuperOffice error JSON.

Where the vendor documentation is silent the emulator picks the most plausible behaviour and says so in
a comment marked *inferred* (see /work/shared/reference/superoffice-api.md, which uses the same word).

Pictures live in the BinaryObject / BinaryObjectLink tables (``SOState.blobs``/``links``) that PUT/POST/
DELETE …/Image maintain: a replaced picture gets a new BinaryObject row and its link moves to it
(``image_replace_in_place`` updates the row instead: same blob id, ``updated``/``updatedCount`` move);
an entity shows the blob of its lowest-ranked picture link. ``request_limit=(COUNT, SECONDS)`` (``syncd
sandbox --so-rate-limit``) answers 429 with Retry-After beyond COUNT requests per principal in any
SECONDS.

Sandbox-only control routes (no auth, never logged, never faulted), besides the common ones:

    GET    /_sandbox/so/snapshot                       every contact/person/picture (JSON)
    POST   /_sandbox/so/{contact|person}               create (JSON body of archive columns) → row
    PATCH  /_sandbox/so/{contact|person}/{id}          edit archive columns; bumps the updated date
                                                       unless the body sets it or ``?touch=false``
    PUT    /_sandbox/so/{contact|person}/{id}/image    set the picture ("edited by hand"), raw body
    DELETE /_sandbox/so/{contact|person}/{id}/image    clear the picture
    GET    /_sandbox/so/options, PUT same              emulator quirk knobs (see ``SO_OPTIONS``)
    GET    /_sandbox/so/tenant, PUT same               ``{"state": ..., "endpoint": ...}`` for /api/state
    POST   /_sandbox/so/tickets                        mint a ticket and a bearer token
    DELETE /_sandbox/so/tickets                        revoke every ticket and minted bearer token
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import email.utils
import functools
import hashlib
import hmac
import io
import json
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, cast

from aiohttp import BodyPartReader, web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from PIL import Image, ImageDraw

from syncd.sandbox.common import ADMIN_PREFIX, PRINCIPAL, Emulator, Faults, Handler, retry_after_value
from syncd.sandbox.superoffice import archive_query as so_dynamic

SOKind = Literal["contact", "person"]
SO_KINDS: tuple[SOKind, ...] = ("contact", "person")

# -- documented sandbox credentials (printed by `syncd sandbox`; never real secrets) --------------
SANDBOX_SO_TENANT = "Cust00001"
SANDBOX_SO_USER = "syncd"
SANDBOX_SO_PASSWORD = "sandbox-so-password"  # noqa: S105 - fixed, documented sandbox credential
SANDBOX_SO_APP_TOKEN = "sandbox-so-app-token"  # noqa: S105 - the app's client secret / SO-AppToken
SANDBOX_SO_SYSTEM_USER_TOKEN = "syncd-sandbox-SystemUserToken"  # noqa: S105 - "NAME_OF_APP-<random>"
SANDBOX_SO_BEARER_TOKEN = "8A:Cust00001.sandbox-bearer-token"  # noqa: S105 - never expires


def _new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # "BEGIN RSA PRIVATE KEY", as SO's tooling emits
        serialization.NoEncryption(),
    )


def _public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@functools.cache
def _sandbox_keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    """(the partner app's key, the login service's JWT signing key), made once per process on first use
    (RSA key generation takes 50-500 ms, so importing this module does not pay for it)."""
    return _new_rsa_key(), _new_rsa_key()


def sandbox_app_private_key_pem() -> bytes:
    """The partner app's RSA private key: signs the system user token (syncd's system_user auth)."""
    return _private_pem(_sandbox_keys()[0])


def sandbox_app_public_key_pem() -> bytes:
    """Its public half, registered with the emulator for the sandbox application token."""
    return _public_pem(_sandbox_keys()[0])


def sandbox_jwt_public_key_pem() -> bytes:
    """Public key of the emulated SuperOffice login service; verifies the RS256 JWTs it issues."""
    return _public_pem(_sandbox_keys()[1])


# The same PEMs as module constants, computed on first access (PEP 562). In-process tests read them; a
# separate process gets them from the files `syncd sandbox --write-config` writes next to the config.
SANDBOX_APP_PRIVATE_KEY_PEM: bytes
SANDBOX_APP_PUBLIC_KEY_PEM: bytes
SANDBOX_SO_JWT_PUBLIC_KEY_PEM: bytes
_LAZY_CONSTANTS: dict[str, Callable[[], bytes]] = {
    "SANDBOX_APP_PRIVATE_KEY_PEM": sandbox_app_private_key_pem,
    "SANDBOX_APP_PUBLIC_KEY_PEM": sandbox_app_public_key_pem,
    "SANDBOX_SO_JWT_PUBLIC_KEY_PEM": sandbox_jwt_public_key_pem,
}


def __getattr__(name: str) -> bytes:
    make = _LAZY_CONSTANTS.get(name)
    if make is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return make()


#: The quirk knobs ``PUT /_sandbox/so/options`` may change at run time.
SO_OPTIONS: tuple[str, ...] = (
    "image_updates_touch_updated_date",
    "json_image_on_json_accept",
    "ticket_lifetime",
    "image_replace_in_place",
    "dynamic_provider_status",
    "dynamic_fail_after",
    "dynamic_numeric_primary_key",
    "request_limit",
)


def _option_value(name: str, value: Any) -> Any:
    """A knob's value from JSON (ValueError when it does not fit)."""
    if name == "ticket_lifetime":
        return float(value)
    if name == "dynamic_provider_status":
        status = int(value)
        if status and not 400 <= status <= 599:
            raise ValueError("dynamic_provider_status is 0 (answer normally) or an HTTP error status")
        return status
    if name == "dynamic_fail_after":
        return None if value is None else int(value)
    if name == "request_limit":
        if value is None:
            return None
        count, seconds = value
        return (int(count), float(seconds))
    return bool(value)


CLAIM_TICKET = "http://schemes.superoffice.net/identity/ticket"
CLAIM_WEBAPI_URL = "http://schemes.superoffice.net/identity/webapi_url"
CLAIM_NETSERVER_URL = "http://schemes.superoffice.net/identity/netserver_url"
CLAIM_CTX = "http://schemes.superoffice.net/identity/ctx"

SIGNED_TOKEN_MAX_AGE = 300.0  # seconds a signed system user token's timestamp may lag behind "now"
SIGNED_TOKEN_MAX_AHEAD = 60.0  # ... or run ahead of it (clock skew)
JWT_LIFETIME = 300  # the JWT is meant to be validated immediately (SO error ID4148 "NotOnOrAfter")
MAX_IMAGE_SIDE = 10_000  # w/h beyond this are refused (keeps the emulator from allocating gigabytes)

RUNNING_STATES = frozenset({"Running", "OnlineMaintenance"})  # IsRunning is true only for these


# -- dates ---------------------------------------------------------------------------------------
def utc(dt: datetime) -> datetime:
    """``dt`` as an aware UTC datetime truncated to whole seconds (what SuperOffice stores and shows)."""
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.replace(microsecond=0)


def so_date(dt: datetime | None) -> str:
    """SuperOffice's date display: ISO 8601 without an offset, in UTC (``2015-11-04T15:58:39``)."""
    # Callers hold whole-second UTC datetimes; isoformat is ~30x faster than strftime (listings use it a lot).
    return "" if dt is None else dt.isoformat()[:19]


_DATE_RE = re.compile(
    r"(\d{4})[-.](\d{1,2})[-.](\d{1,2})"
    r"(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?"
)


def parse_so_datetime(text: str) -> datetime:
    """Parse the date forms SuperOffice filters accept (``'2021-1-1'``, ``'2020-05-28T15:00:01'``, …).

    Values without an offset are UTC; values with one are converted. Raises ValueError.
    """
    m = _DATE_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a date: {text!r}")
    year, month, day, hour, minute, second, _frac, tz = m.groups()
    dt = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        dt = dt - sign * offset
    return dt.replace(tzinfo=UTC)


def _http_date(dt: datetime) -> str:
    return email.utils.format_datetime(dt, usegmt=True)


# -- pictures ------------------------------------------------------------------------------------
def sniff_mime(data: bytes) -> str | None:
    """The MIME type the bytes' magic number says, or None (SuperOffice derives ImageInfo's from it)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if data.startswith(b"BM"):
        return "image/bmp"
    return None


@dataclass
class SOImage:
    """One stored picture (a BinaryObject row plus its link to the owner)."""

    data: bytes | Callable[[], bytes]  # lazily generated bytes allowed (12 MP pictures are slow to make)
    mime: str
    blob_id: int
    created: datetime
    updated: datetime
    description: str = ""
    extra_info: str = ""
    label: str | None = None  # identifies lazily made bytes in snapshots without making them
    # BinaryObject.updated / updatedCount: null and 0 until the row is modified in place (the documented
    # SQL how-to inserts updated=0, updatedCount=0); ImageInfo's UpdatedDate shows ``updated`` instead.
    modified: datetime | None = None
    updated_count: int = 0
    conceptual_type: str = ""

    @property
    def resolved(self) -> bool:
        return isinstance(self.data, bytes)

    def content(self) -> bytes:
        """The bytes, generating (and keeping) them on first use. Call off the event loop if unresolved."""
        if not isinstance(self.data, bytes):
            self.data = self.data()
        return self.data

    def identity(self) -> str:
        """A stable name for the content: the label of lazy bytes, else the sha256 of the bytes."""
        if self.label is not None:
            return f"lazy:{self.label}"
        return "sha256:" + hashlib.sha256(self.content()).hexdigest()


@dataclass(slots=True)
class SOLink:
    """One BinaryObjectLink row: which owner record shows which BinaryObject, as what, in what rank."""

    link_id: int
    blob_id: int
    owner_table: int  # 5 contact, 6 person (the tables' numbers in the SuperOffice dictionary)
    owner_record: int
    link_type: int  # BlobLinkType: 1 PersonImage, 17 ContactImage, others for other uses
    rank: int
    registered: datetime
    updated: datetime | None = None
    updated_count: int = 0


#: Table numbers and picture link types (docs: database/tables/{contact,person}.md, enums/bloblinktype.md).
OWNER_TABLE: dict[str, int] = {"contact": 5, "person": 6}
PICTURE_LINK_TYPE: dict[str, int] = {"contact": 17, "person": 1}
#: BinaryObject.conceptualType as written for each kind (documented PERSONPHOTO; the contact's is inferred).
CONCEPTUAL_TYPE: dict[str, str] = {"contact": "CONTACTIMAGE", "person": "PERSONPHOTO"}


# -- entities ------------------------------------------------------------------------------------
_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


@dataclass
class SOContact:
    """A contact (company): the columns the SimpleContact archive and ContactEntity expose."""

    contact_id: int
    name: str
    department: str = ""
    number: str = ""  # Number1 (inferred: archive `number` is Number1)
    code: str = ""  # Number2 (inferred: archive `code` is Number2)
    orgnr: str = ""
    email: str = ""
    category: str = ""
    business: str = ""
    country: str = ""
    updated_by: str = ""
    registered: datetime = _EPOCH
    updated: datetime = _EPOCH
    active_erp_links: int = 0
    deleted: bool = False
    deleted_date: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)  # udef/extra columns by archive name
    image: SOImage | None = None


@dataclass
class SOPerson:
    """A person: the columns the Person archive and PersonEntity expose."""

    person_id: int
    contact_id: int
    first_name: str
    last_name: str
    person_number: str = ""
    email: str = ""
    title: str = ""
    registered: datetime = _EPOCH
    updated: datetime = _EPOCH
    retired: bool = False
    active_erp_links: int = 0
    deleted_date: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)
    image: SOImage | None = None

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


SOEntity = SOContact | SOPerson
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


class SOState:
    """The tenant's data: contacts, persons and their pictures, indexed by id.

    ``clock`` (seconds since the epoch) stamps edits; the emulator points it at its own clock.
    ``checkpoint()`` remembers the current data and ``restore()`` returns to it (admin reset).
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.clock: Callable[[], float] = clock or time.time
        self.contacts: dict[int, SOContact] = {}
        self.persons: dict[int, SOPerson] = {}
        self.extra_columns: dict[SOKind, dict[str, str]] = {"contact": {}, "person": {}}  # casefold → name
        self._next_blob_id = 100
        self._checkpoint: dict[str, Any] | None = None
        # The BinaryObject and BinaryObjectLink tables (the archive/dynamic provider reads them); the
        # entities' ``image`` is the BinaryObject their lowest-ranked picture link points at.
        self.blobs: dict[int, SOImage] = {}
        self.links: dict[int, SOLink] = {}
        self._links_by_owner: dict[tuple[int, int, int], list[int]] = {}  # (table, record, type) → ids
        self._next_link_id = 0
        #: A replaced picture updates its BinaryObject row in place (same blob id, ``updated`` and
        #: ``updatedCount`` move) instead of getting a new row that the link is moved to (the default,
        #: as the agent model CreateDefaultBlobEntity + ChangePersonImage suggests; undocumented).
        self.image_replace_in_place = False

    # -- building ---------------------------------------------------------------------------------
    def now(self) -> datetime:
        return utc(datetime.fromtimestamp(self.clock(), UTC))

    def add_contact(
        self,
        *,
        name: str,
        number: str = "",
        code: str = "",
        orgnr: str = "",
        email: str = "",
        contact_id: int | None = None,
        **columns: Any,
    ) -> int:
        """Add a contact; ``columns`` are further archive columns (``category="Kunde"``,
        ``registeredDate=datetime(...)``, ``"contactUdef/SuperOffice:1": "x"``). Returns its id."""
        cid = contact_id if contact_id is not None else max(self.contacts, default=0) + 1
        if cid in self.contacts:
            raise ValueError(f"contact {cid} exists")
        now = self.now()
        contact = SOContact(
            cid, name, number=number, code=code, orgnr=orgnr, email=email, registered=now, updated=now
        )
        columns.setdefault("updatedDate", columns.get("registeredDate", now))
        self._apply(contact, "contact", columns)
        self.contacts[cid] = contact
        return cid

    def add_person(
        self,
        *,
        contact_id: int,
        first_name: str,
        last_name: str,
        person_number: str = "",
        email: str = "",
        person_id: int | None = None,
        **columns: Any,
    ) -> int:
        """Add a person (of contact ``contact_id``); ``columns`` as for ``add_contact``. Returns its id."""
        if contact_id not in self.contacts:
            raise ValueError(f"no contact {contact_id}")
        pid = person_id if person_id is not None else max(self.persons, default=0) + 1
        if pid in self.persons:
            raise ValueError(f"person {pid} exists")
        now = self.now()
        person = SOPerson(
            pid,
            contact_id,
            first_name,
            last_name,
            person_number=person_number,
            email=email,
            registered=now,
            updated=now,
        )
        columns.setdefault("personUpdatedDate", columns.get("personRegisteredDate", now))
        self._apply(person, "person", columns)
        self.persons[pid] = person
        return pid

    def column(self, kind: SOKind, name: str) -> Column | None:
        """The column called ``name`` (case-insensitive; ``___`` may stand for ``/``), or None."""
        key = name.strip().replace("___", "/").casefold()
        col = COLUMNS[kind].get(key)
        if col is not None:
            return col
        canonical = self.extra_columns[kind].get(key)
        if canonical is None:
            return None

        def setter(entity: Any, value: Any) -> None:
            entity.extra[canonical] = value

        return Column(canonical, "string", lambda e: cast(SOEntity, e).extra.get(canonical, ""), setter)

    def columns(self, kind: SOKind) -> list[Column]:
        fixed = list(COLUMNS[kind].values())
        extra = [self.column(kind, n) for n in self.extra_columns[kind].values()]
        return fixed + [c for c in extra if c is not None]

    def _apply(self, entity: SOEntity, kind: SOKind, columns: Mapping[str, Any]) -> None:
        """Set archive columns on ``entity``; unknown names become extra (udef) string columns when
        they look like one (or when building data in code), else ValueError."""
        for name, value in columns.items():
            col = self.column(kind, name)
            if col is None:
                if not isinstance(value, str):
                    raise ValueError(f"unknown {kind} column {name!r}")
                self.extra_columns[kind][name.casefold()] = name
                col = self.column(kind, name)
                assert col is not None
            if col.set is None:
                raise ValueError(f"{kind} column {col.name} is read-only")
            if kind == "person" and col.name == "contactId" and int(value) not in self.contacts:
                raise ValueError(f"no contact {value}")
            col.set(entity, _coerce(col, value))

    def edit(self, kind: SOKind, entity_id: int, columns: Mapping[str, Any], *, touch: bool = True) -> None:
        """Change columns as a user would in the CRM: the updated date moves to now unless the edit
        sets it itself or ``touch`` is False. Unknown column names need a udef/extra prefix."""
        entity = self.entity(kind, entity_id)
        if entity is None:
            raise KeyError(entity_id)
        for name in columns:
            if self.column(kind, name) is None and not name.casefold().startswith(_EXTRA_PREFIXES[kind]):
                raise ValueError(f"unknown {kind} column {name!r}")
        self._apply(entity, kind, columns)
        updated_col = _UPDATED_COLUMN[kind].casefold()
        if touch and not any(n.casefold() == updated_col for n in columns):
            entity.updated = self.now()

    def entity(self, kind: SOKind, entity_id: int) -> SOEntity | None:
        table: Mapping[int, SOEntity] = self.contacts if kind == "contact" else self.persons
        return table.get(entity_id)

    def table(self, kind: SOKind) -> Iterable[SOEntity]:
        return self.contacts.values() if kind == "contact" else self.persons.values()

    # -- pictures ---------------------------------------------------------------------------------
    def set_image(
        self,
        kind: str,
        entity_id: int,
        data: bytes | Callable[[], bytes] | None,
        mime: str | None = None,
        *,
        label: str | None = None,
        when: datetime | None = None,
        touch: bool = False,
    ) -> int | None:
        """Store (or with ``data=None`` clear) a picture; returns the new blob id.

        ``mime`` defaults to what the bytes' magic says (lazy bytes need it given). ``label`` names lazy
        bytes in snapshots. ``touch`` also moves the entity's updated date (off by default: SuperOffice
        keeps pictures in separate tables, so a picture edit is assumed not to touch it — inferred).
        """
        so_kind = _kind(kind)
        entity = self.entity(so_kind, entity_id)
        if entity is None:
            raise KeyError(entity_id)
        stamp = utc(when) if when is not None else self.now()
        if touch:
            entity.updated = stamp
        owner = (OWNER_TABLE[so_kind], entity_id, PICTURE_LINK_TYPE[so_kind])
        if data is None:
            for link_id in list(self._links_by_owner.get(owner, ())):
                self.remove_link(link_id)
            entity.image = None
            return None
        if mime is None:
            if not isinstance(data, bytes):
                raise ValueError("lazy picture data needs an explicit mime")
            mime = sniff_mime(data) or "application/octet-stream"
        current = entity.image
        if current is not None and self.image_replace_in_place:
            current.data, current.mime, current.label = data, mime, label
            current.updated = current.modified = stamp
            current.updated_count += 1
            return current.blob_id
        blob = SOImage(data, mime, self.new_blob_id(), stamp, stamp, label=label)
        blob.conceptual_type = CONCEPTUAL_TYPE[so_kind]
        self.blobs[blob.blob_id] = blob
        ids = self._links_by_owner.get(owner)
        if ids:  # relink the shown picture's link to the new row (ChangePersonImage(blobId))
            link = min((self.links[i] for i in ids), key=lambda lk: (lk.rank, lk.link_id))
            old = link.blob_id
            link.blob_id, link.updated = blob.blob_id, stamp
            link.updated_count += 1
            self._drop_orphan(old)
        else:
            self.add_link(so_kind, entity_id, blob.blob_id, rank=1, when=stamp)
        self._resolve(so_kind, entity_id)
        return blob.blob_id

    # -- BinaryObjectLink rows --------------------------------------------------------------------
    def add_link(
        self,
        kind: str,
        entity_id: int,
        blob_id: int,
        *,
        rank: int = 1,
        link_type: int | None = None,
        when: datetime | None = None,
    ) -> int:
        """Add a BinaryObjectLink row from ``entity_id`` to BinaryObject ``blob_id``; returns its id.
        ``link_type`` defaults to the kind's picture link type (another type is not a picture)."""
        so_kind = _kind(kind)
        if blob_id not in self.blobs:
            raise KeyError(blob_id)
        self._next_link_id += 1
        lt = PICTURE_LINK_TYPE[so_kind] if link_type is None else link_type
        link = SOLink(
            self._next_link_id, blob_id, OWNER_TABLE[so_kind], entity_id, lt, rank, utc(when or self.now())
        )
        self.links[link.link_id] = link
        self._links_by_owner.setdefault((link.owner_table, entity_id, lt), []).append(link.link_id)
        self._resolve(so_kind, entity_id)
        return link.link_id

    def remove_link(self, link_id: int) -> None:
        link = self.links.pop(link_id)
        key = (link.owner_table, link.owner_record, link.link_type)
        ids = self._links_by_owner.get(key, [])
        if link_id in ids:
            ids.remove(link_id)
        if not ids:
            self._links_by_owner.pop(key, None)
        self._drop_orphan(link.blob_id)
        kind: SOKind = "contact" if link.owner_table == OWNER_TABLE["contact"] else "person"
        self._resolve(kind, link.owner_record)

    def _drop_orphan(self, blob_id: int) -> None:
        """A BinaryObject no link points at any more is deleted (DELETE …/Image removes the picture)."""
        if not any(lk.blob_id == blob_id for lk in self.links.values()):
            self.blobs.pop(blob_id, None)

    def _resolve(self, kind: SOKind, entity_id: int) -> None:
        """Point the entity's ``image`` at the BinaryObject of its lowest-ranked picture link."""
        entity = self.entity(kind, entity_id)
        if entity is None:
            return
        ids = self._links_by_owner.get((OWNER_TABLE[kind], entity_id, PICTURE_LINK_TYPE[kind]))
        if not ids:
            entity.image = None
            return
        link = min((self.links[i] for i in ids), key=lambda lk: (lk.rank, lk.link_id))
        entity.image = self.blobs.get(link.blob_id)

    def new_blob_id(self) -> int:
        self._next_blob_id += 1
        return self._next_blob_id

    # -- snapshot / reset -------------------------------------------------------------------------
    def row(self, kind: SOKind, entity: SOEntity) -> dict[str, Any]:
        """Every column of one entity as display strings, plus its picture's metadata."""
        out: dict[str, Any] = {c.name: display(c, c.get(entity)) for c in self.columns(kind)}
        img = entity.image
        out["image"] = (
            None
            if img is None
            else {
                "blobId": img.blob_id,
                "mimeType": img.mime,
                "created": so_date(img.created),
                "updated": so_date(img.updated),
                "description": img.description,
                "extraInfo": img.extra_info,
                "content": img.identity(),
            }
        )
        return out

    def snapshot(self) -> dict[str, Any]:
        """JSON-able copy of everything, stable across processes for the same data (for identity
        checks: a dry run must leave it unchanged). Lazy pictures are named by label, not made."""
        return {
            "contacts": [self.row("contact", c) for _, c in sorted(self.contacts.items())],
            "persons": [self.row("person", p) for _, p in sorted(self.persons.items())],
        }

    @property
    def has_checkpoint(self) -> bool:
        return self._checkpoint is not None

    def checkpoint(self) -> None:
        """Remember the current data as the state ``restore()`` returns to."""
        self._checkpoint = copy.deepcopy(
            {
                "contacts": self.contacts,
                "persons": self.persons,
                "extra": self.extra_columns,
                "blob": self._next_blob_id,
                "blobs": self.blobs,
                "links": self.links,
                "by_owner": self._links_by_owner,
                "link": self._next_link_id,
            }
        )

    def restore(self) -> None:
        if self._checkpoint is None:
            return
        saved = copy.deepcopy(self._checkpoint)
        self.contacts = saved["contacts"]
        self.persons = saved["persons"]
        self.extra_columns = saved["extra"]
        self._next_blob_id = saved["blob"]
        self.blobs = saved["blobs"]
        self.links = saved["links"]
        self._links_by_owner = saved["by_owner"]
        self._next_link_id = saved["link"]


def _kind(kind: str) -> SOKind:
    k = kind.casefold()
    if k == "contact":
        return "contact"
    if k == "person":
        return "person"
    raise ValueError(f"kind must be contact or person, not {kind!r}")


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


# -- image rendering (runs in a worker thread) ---------------------------------------------------
_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif"}
IF_BLANK = ("Default", "ClearPixel", "SrNoPhoto", "SrNoPhotoWithBorder", "Null", "GenericFileIcon")


class ImageRenderError(Exception):
    """The stored bytes are not a picture Pillow can scale (SuperOffice answers 500)."""


def _to_8bit(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    return im


def render_image(data: bytes, w: int | None, h: int | None, fmt: str | None) -> tuple[bytes, str]:
    """Scale to fit ``w``×``h`` (either may be None: keep the aspect; upscaling allowed) and encode as
    ``fmt`` (JPEG/PNG/GIF; default: the stored format when it is one of those, else PNG).
    SuperOffice does not document its scaling; fitting inside the box is inferred."""
    try:
        with Image.open(io.BytesIO(data)) as src:
            src_fmt = (src.format or "").upper()
            out_fmt = fmt or (src_fmt if src_fmt in _FORMATS else "PNG")
            sw, sh = src.size
            if w and h:
                scale = min(w / sw, h / sh)
            elif w:
                scale = w / sw
            elif h:
                scale = h / sh
            else:
                scale = 1.0
            tw, th = max(1, round(sw * scale)), max(1, round(sh * scale))
            if src_fmt == "JPEG" and scale < 1:
                src.draft(src.mode, (tw, th))
            im = _to_8bit(src.convert() if src.mode == "P" else src)
            im.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRenderError(str(exc)) from exc
    if im.mode == "CMYK":
        im = im.convert("RGB")
    if im.size != (tw, th):
        im = im.resize((tw, th), Image.Resampling.LANCZOS, reducing_gap=3.0)
    has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
    if out_fmt == "JPEG":
        if has_alpha:
            rgba = im.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            im = flat
        elif im.mode not in ("RGB", "L"):
            im = im.convert("RGB")
    elif im.mode not in ("RGB", "RGBA", "L", "LA", "P", "1"):
        im = im.convert("RGBA" if has_alpha else "RGB")
    buf = io.BytesIO()
    im.save(buf, format=out_fmt, **({"quality": 90} if out_fmt == "JPEG" else {}))
    return buf.getvalue(), _FORMATS[out_fmt]


@functools.cache
def clear_pixel_png() -> bytes:
    """The 1×1 fully transparent PNG ``ifBlank=ClearPixel`` answers with."""
    buf = io.BytesIO()
    Image.new("RGBA", (1, 1), (0, 0, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


@functools.lru_cache(maxsize=8)
def placeholder_png(variant: str) -> bytes:
    """A generated stand-in for SuperOffice's no-photo / generic-file pictures (128×128 PNG)."""
    size = 128
    im = Image.new("RGB", (size, size), (232, 234, 237))
    d = ImageDraw.Draw(im)
    grey = (160, 166, 173)
    if variant == "GenericFileIcon":
        d.polygon([(36, 20), (78, 20), (96, 38), (96, 108), (36, 108)], fill=(255, 255, 255), outline=grey)
        d.polygon([(78, 20), (78, 38), (96, 38)], fill=grey)
        for y in (54, 66, 78, 90):
            d.line([(46, y), (86, y)], fill=grey, width=3)
    else:
        d.ellipse([44, 22, 84, 62], fill=grey)  # head
        d.pieslice([20, 66, 108, 154], 180, 360, fill=grey)  # shoulders
        if variant == "SrNoPhotoWithBorder":
            d.rectangle([0, 0, size - 1, size - 1], outline=(96, 102, 110), width=4)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


# -- JWT (RS256, built with `cryptography`) ------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_jwt(claims: Mapping[str, Any], key: rsa.RSAPrivateKey | None = None) -> str:
    """An RS256 JWT over ``claims``, signed by ``key`` (default: the sandbox login service's key)."""
    header = {"alg": "RS256", "typ": "JWT", "kid": "superoffice-sandbox"}
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
    )
    signer = key if key is not None else _sandbox_keys()[1]
    signature = signer.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64url(signature)


def sign_system_user_token(
    system_user_token: str, private_key_pem: bytes, when: datetime | None = None
) -> str:
    """``{token}.{yyyyMMddHHmm}.{base64 RSA-SHA256 PKCS#1 v1.5 signature}`` as a partner app signs it."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the system user token must be signed with an RSA key")
    stamp = (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M")
    data = f"{system_user_token}.{stamp}"
    sig = key.sign(data.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return f"{data}.{base64.b64encode(sig).decode('ascii')}"


# -- HTTP plumbing -------------------------------------------------------------------------------
class _CaseInsensitiveResource(web.DynamicResource):
    """A route whose literal path parts match in any letter case, as SuperOffice's (IIS) routes do.

    Every such route starts with a variable segment, so aiohttp's per-prefix index files it under "/"
    and the case-insensitive pattern decides."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._pattern = re.compile(self._pattern.pattern, re.IGNORECASE)


class _Reply(Exception):
    """Raised by helpers to answer the request right away with ``response``."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def so_error(status: int, error_type: str, message: str, **headers: str) -> web.Response:
    """SuperOffice's error body: ``{"Error":true,"ErrorType":…,"ErrorMessage":…,"ErrorSource":…}``."""
    body = {
        "Error": True,
        "ErrorType": error_type,
        "ErrorMessage": message,
        "ErrorSource": "SuperOffice.Services.Implementation",
    }
    return web.json_response(body, status=status, headers=headers or None)


_MAINTENANCE_HTML = (
    "<!DOCTYPE html><html><head><title>SuperOffice - Maintenance</title></head><body>"
    "<h1>We are upgrading SuperOffice</h1><p>The service is temporarily unavailable during scheduled "
    "maintenance. Please try again later.</p></body></html>"
)
_WWW_AUTHENTICATE = 'Basic realm="SuperOffice Username or Ticket"'


@dataclass
class _Grant:
    principal: str
    expires: float
    app_token: str | None = None  # tickets are bound to the app that obtained them
    sliding: bool = True


def _blob_size(blob: SOImage) -> int:
    return len(blob.content())


def dynamic_tables(state: SOState) -> dict[str, so_dynamic.Table]:
    """BinaryObject and BinaryObjectLink as the Dynamic provider sees them (docs/en/database/tables/
    binaryobject.md, binaryobjectlink.md): the emulator's picture tables, read live."""
    F = so_dynamic.Field

    def fields(*items: so_dynamic.Field) -> dict[str, so_dynamic.Field]:
        return {f.name.casefold(): f for f in items}

    blob = so_dynamic.Table(
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
    link = so_dynamic.Table(
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


class _Window:
    """Request instants per principal within a sliding window (``request_limit``)."""

    def __init__(self) -> None:
        self.hits: dict[str, deque[float]] = {}

    def hit(self, principal: str, now: float, limit: int, window: float) -> float | None:
        """Count one request; None if allowed, else the seconds until a slot frees up."""
        hits = self.hits.setdefault(principal, deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) >= limit:
            return hits[0] + window - now
        hits.append(now)
        return None


class SuperOfficeEmulator(Emulator):
    """The SuperOffice Web API for one tenant, backed by an ``SOState``.

    Knobs: ``ticket_lifetime`` (sliding, seconds), ``image_updates_touch_updated_date`` (picture writes
    also move the entity's updated date), ``json_image_on_json_accept`` (GET Image answers a JSON base64
    string when the client accepts only JSON, like the agent endpoints and the doc samples).
    """

    api_name = "superoffice"

    def __init__(
        self,
        state: SOState,
        *,
        tenant: str = SANDBOX_SO_TENANT,
        users: dict[str, str] | None = None,
        app_tokens: dict[str, bytes] | None = None,
        system_user_token: str = SANDBOX_SO_SYSTEM_USER_TOKEN,
        ticket_lifetime: float = 6 * 3600,
        bearer_tokens: dict[str, str] | None = None,
        bearer_lifetime: float = 3600.0,
        image_updates_touch_updated_date: bool = False,
        json_image_on_json_accept: bool = False,
        image_replace_in_place: bool = False,
        request_limit: tuple[int, float] | None = None,
        faults: Faults | None = None,
    ) -> None:
        super().__init__(faults)
        self.state = state
        state.image_replace_in_place = image_replace_in_place
        #: Throttling as ``--so-rate-limit COUNT/SECONDS``: at most COUNT requests per principal in any
        #: SECONDS, then 429 with Retry-After (inferred: SuperOffice documents no limit, only that it
        #: "may throttle"; a third-party SDK says 10 calls per second).
        self.request_limit = request_limit
        self._window = _Window()
        #: Dynamic archive provider knobs: answer every query with this error status (0: normally), e.g.
        #: 403 as a tenant that does not allow it; fail with 500 after this many answered queries
        #: (an interrupted pass; None: never); PrimaryKey as a number instead of the documented string.
        self.dynamic_provider_status = 0
        self.dynamic_fail_after: int | None = None
        self.dynamic_numeric_primary_key = False
        self._dynamic_served = 0
        self._dynamic_tables = dynamic_tables(state)
        state.clock = lambda: self.clock()
        if not state.has_checkpoint:
            state.checkpoint()
        self.tenant = tenant
        self.users = {SANDBOX_SO_USER: SANDBOX_SO_PASSWORD} if users is None else dict(users)
        self.app_tokens = (
            {SANDBOX_SO_APP_TOKEN: sandbox_app_public_key_pem()} if app_tokens is None else dict(app_tokens)
        )
        self.system_user_token = system_user_token
        self.ticket_lifetime = float(ticket_lifetime)
        self.bearer_lifetime = bearer_lifetime
        self.image_updates_touch_updated_date = image_updates_touch_updated_date
        self.json_image_on_json_accept = json_image_on_json_accept
        self.tenant_state = "Running"
        self.tenant_endpoint: str | None = None  # None: this server's own origin
        self._fixed_bearer = (
            {SANDBOX_SO_BEARER_TOKEN: "bearer:sandbox"}
            if bearer_tokens is None
            else {t: f"bearer:{p}" for t, p in bearer_tokens.items()}
        )
        self._grants: dict[str, _Grant] = {}  # "7T:…" tickets and minted "8A:…" tokens
        self._basic_cache: dict[str, str] = {}  # Authorization header → principal (users are fixed)
        self._public: set[web.AbstractResource] = set()
        self._tenant_scoped: set[web.AbstractResource] = set()

    def principal_of(self, request: web.Request) -> str | None:
        return request.get(PRINCIPAL)

    @property
    def image_replace_in_place(self) -> bool:
        return self.state.image_replace_in_place

    @image_replace_in_place.setter
    def image_replace_in_place(self, value: bool) -> None:
        self.state.image_replace_in_place = value

    # -- credentials ------------------------------------------------------------------------------
    def issue_ticket(self, principal: str = "system-user", app_token: str | None = None) -> str:
        """A new ``7T:`` ticket (use with ``Authorization: SOTicket`` and ``SO-AppToken``)."""
        ticket = "7T:" + base64.b64encode(secrets.token_bytes(36)).decode("ascii")
        app = app_token if app_token is not None else next(iter(self.app_tokens), None)
        self._grants[ticket] = _Grant(principal, self.clock() + self.ticket_lifetime, app, sliding=True)
        return ticket

    def issue_bearer_token(self, principal: str = "bearer") -> str:
        """A new ``8A:`` access token valid for ``bearer_lifetime`` seconds (not sliding)."""
        token = f"8A:{self.tenant}." + base64.b64encode(secrets.token_bytes(36)).decode("ascii")
        self._grants[token] = _Grant(
            f"bearer:{principal}", self.clock() + self.bearer_lifetime, sliding=False
        )
        return token

    def revoke_all(self) -> None:
        """Invalidate every ticket and minted bearer token (the next call with one gets 401)."""
        self._grants.clear()

    def _authenticate(self, request: web.Request) -> str | None:
        """The principal the request authenticates as, or None."""
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        scheme = scheme.casefold()
        credential = credential.strip()
        if scheme == "basic":
            cached = self._basic_cache.get(header)
            if cached is not None:
                return cached
            try:
                user, _, password = base64.b64decode(credential, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            expected = self.users.get(user)
            if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
                return None
            if len(self._basic_cache) < 1024:
                self._basic_cache[header] = user
            return user
        if scheme == "soticket":
            app_token = request.headers.get("SO-AppToken")
            if not credential.startswith("7T:") or app_token is None or app_token not in self.app_tokens:
                return None  # a ticket without a known SO-AppToken is refused (inferred)
            grant = self._grant(credential)
            if grant is None or (grant.app_token is not None and grant.app_token != app_token):
                return None
            return grant.principal
        if scheme == "bearer" and credential.startswith("8A:"):
            fixed = self._fixed_bearer.get(credential)
            if fixed is not None:
                return fixed
            grant = self._grant(credential)
            return None if grant is None else grant.principal
        return None

    def _grant(self, token: str) -> _Grant | None:
        grant = self._grants.get(token)
        if grant is None:
            return None
        now = self.clock()
        if now >= grant.expires:
            del self._grants[token]
            return None
        if grant.sliding:
            grant.expires = now + self.ticket_lifetime
        return grant

    # -- app --------------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware, self._so_middleware], client_max_size=256 * 2**20)
        api = "/{cust}/api/v1"
        self._route(app, "GET", "/{cust}/api", self._version, public=True)
        for kind, name in (("contact", "Contact"), ("person", "Person")):
            k = cast(SOKind, kind)
            self._route(app, "GET", f"{api}/{name}", functools.partial(self._list, k))
            self._route(app, "GET", f"{api}/{name}/{{id}}", functools.partial(self._get_entity, k))
            img = f"{api}/{name}/{{id}}/Image"
            self._route(app, "GET", img, functools.partial(self._get_image, k))
            self._route(app, "PUT", img, functools.partial(self._put_image, k))
            self._route(app, "POST", img, functools.partial(self._put_image, k))
            self._route(app, "DELETE", img, functools.partial(self._delete_image, k))
            info = f"{api}/{name}/{{id}}/ImageInfo"
            self._route(app, "GET", info, functools.partial(self._get_image_info, k))
            self._route(app, "PUT", info, functools.partial(self._put_image_info, k))
        self._route(app, "GET", f"{api}/Archive/{{provider}}", self._archive)
        self._route(
            app,
            "POST",
            "/{login:Login}/api/PartnerSystemUser/Authenticate",
            self._partner_auth,
            public=True,
            tenant_scoped=False,
        )
        self._route(
            app, "GET", "/{api:api}/state/{cust}", self._tenant_status, public=True, tenant_scoped=False
        )
        self.add_admin_routes(app)
        so = ADMIN_PREFIX + "so"
        app.router.add_get(so + "/snapshot", self._admin_snapshot)
        app.router.add_get(so + "/options", self._admin_get_options)
        app.router.add_put(so + "/options", self._admin_put_options)
        app.router.add_get(so + "/tenant", self._admin_get_tenant)
        app.router.add_put(so + "/tenant", self._admin_put_tenant)
        app.router.add_post(so + "/tickets", self._admin_mint)
        app.router.add_delete(so + "/tickets", self._admin_revoke)
        app.router.add_post(so + "/{kind}", self._admin_create)
        app.router.add_patch(so + "/{kind}/{id}", self._admin_edit)
        app.router.add_put(so + "/{kind}/{id}/image", self._admin_set_image)
        app.router.add_delete(so + "/{kind}/{id}/image", self._admin_clear_image)
        return app

    def _route(
        self,
        app: web.Application,
        method: str,
        path: str,
        handler: Handler,
        *,
        public: bool = False,
        tenant_scoped: bool = True,
    ) -> None:
        resource = _CaseInsensitiveResource(path)
        app.router.register_resource(resource)
        resource.add_route(method, handler)
        if public:
            self._public.add(resource)
        if tenant_scoped:
            self._tenant_scoped.add(resource)

    @web.middleware
    async def _so_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Tenant check, maintenance state and authentication, then the handler."""
        if request.path.startswith(ADMIN_PREFIX):
            return await handler(request)
        resource = request.match_info.route.resource
        try:
            if resource in self._tenant_scoped:
                cust = request.match_info.get("cust", "")
                if cust.casefold() != self.tenant.casefold():
                    # Inferred: the online load balancer's answer for an unknown tenant is undocumented.
                    return so_error(404, "SoTenantNotFoundException", f"Tenant {cust!r} not found")
                if self.tenant_state not in RUNNING_STATES:
                    return web.Response(status=503, text=_MAINTENANCE_HTML, content_type="text/html")
            if resource is not None and resource not in self._public:
                principal = self._authenticate(request)
                if principal is None:
                    return so_error(
                        401,
                        "UnauthorizedAccessException",
                        "Authentication failed: missing, invalid or expired credentials",
                        **{"WWW-Authenticate": _WWW_AUTHENTICATE},
                    )
                request[PRINCIPAL] = principal
                if self.request_limit is not None:
                    count, window = self.request_limit
                    wait = self._window.hit(principal, self.clock(), count, window)
                    if wait is not None:
                        return so_error(
                            429,
                            "TooManyRequestsException",
                            f"Too many requests: at most {count} per {window:g} seconds",
                            **{"Retry-After": str(max(1, math.ceil(wait)))},
                        )
            return await handler(request)
        except _Reply as reply:
            return reply.response

    def fault_response(self, kind: str, request: web.Request) -> web.Response:
        """Injected faults in SuperOffice's shapes: 429 with Retry-After as the knobs ask; for 5xx one
        of 503 + Retry-After (SO error JSON), 500 (SO error JSON) or the HTML maintenance page (503)."""
        faults = self.fault_state.faults
        retry_after, _ = retry_after_value(faults, self.clock())
        extra = {"Retry-After": retry_after} if retry_after is not None else {}
        if kind == "429":
            # Inferred: no throttling response is documented; SuperOffice reserves the right to throttle.
            return so_error(429, "TooManyRequestsException", "Too many requests; slow down", **extra)
        variant = self.fault_state.rng.choice(("503", "500", "maintenance"))
        if variant == "503":
            return so_error(
                503, "ServiceUnavailableException", "The service is temporarily unavailable", **extra
            )
        if variant == "500":
            return so_error(500, "SoException", "An unexpected error occurred on the server")
        return web.Response(status=503, text=_MAINTENANCE_HTML, content_type="text/html")

    def reset_data(self) -> None:
        self.state.restore()
        self._dynamic_tables = dynamic_tables(self.state)
        self.tenant_state = "Running"
        self.tenant_endpoint = None

    # -- helpers ----------------------------------------------------------------------------------
    def _origin(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def _entity(self, kind: SOKind, request: web.Request, *, status: int = 404) -> SOEntity:
        raw = request.match_info["id"]
        label = "Contact" if kind == "contact" else "Person"
        try:
            entity_id = int(raw)
        except ValueError:
            entity_id = None
        entity = self.state.entity(kind, entity_id) if entity_id is not None else None
        if entity is None:
            error_type = "SoNotFoundException" if status == 404 else "ArgumentException"
            raise _Reply(so_error(status, error_type, f"{label} id {raw} not found"))
        return entity

    async def _image_bytes(self, image: SOImage) -> bytes:
        if isinstance(image.data, bytes):
            return image.data
        return await asyncio.to_thread(image.content)

    def _blob_entity(self, kind: SOKind, image: SOImage, data: bytes) -> dict[str, Any]:
        return {
            "BlobId": image.blob_id,
            "BlobSize": len(data),
            "Description": image.description,
            "ExtraInfo": image.extra_info,
            "IsEncrypted": False,
            "IsZipped": False,
            "MimeType": image.mime,
            "OriginalSize": len(data),
            "CreatedDate": so_date(image.created),
            "UpdatedDate": so_date(image.updated),
            "CreatedBy": None,
            "UpdatedBy": None,
            # PERSONPHOTO is documented; the contact's conceptual type is inferred from linkType 17.
            "ConceptualType": "PERSONPHOTO" if kind == "person" else "CONTACTIMAGE",
            "TableRight": None,
            "FieldProperties": {},
        }

    # -- public routes ----------------------------------------------------------------------------
    async def _version(self, request: web.Request) -> web.Response:
        base = f"{self._origin(request)}/{request.match_info['cust']}/api"
        return web.json_response(
            {"v1": f"{base}/v1", "Version": "v1", "NetServerVersion": "10.3.8.0-sandbox"}
        )

    async def _tenant_status(self, request: web.Request) -> web.Response:
        cust = request.match_info["cust"]
        if cust.casefold() != self.tenant.casefold():
            return so_error(404, "SoTenantNotFoundException", f"Tenant {cust!r} not found")
        endpoint = self.tenant_endpoint or f"{self._origin(request)}/{self.tenant}"
        valid = datetime.fromtimestamp(self.clock() + 3600, UTC)
        return web.json_response(
            {
                "ContextIdentifier": self.tenant,
                "Endpoint": endpoint,
                "State": self.tenant_state,
                "IsRunning": self.tenant_state in RUNNING_STATES,
                "ValidUntil": valid.strftime("%Y-%m-%dT%H:%M:%S.") + f"{valid.microsecond // 10000:02d}Z",
                "Api": f"{endpoint}/api",
            }
        )

    async def _partner_auth(self, request: web.Request) -> web.Response:
        """The system-user exchange. Failures answer HTTP 200 with ``IsSuccessful: false``: the
        documented client (derKosi SystemUserClient) reads the flag and message from a 200 body, so that
        is taken as the service's behaviour (inferred); only an unreadable request body gets 400."""

        def fail(message: str, status: int = 200) -> web.Response:
            return web.json_response(
                {"IsSuccessful": False, "Token": None, "ErrorMessage": message}, status=status
            )

        try:
            body = json.loads(await request.read() or b"null")
        except (ValueError, UnicodeDecodeError):
            return fail("The request body is not valid JSON", 400)
        if not isinstance(body, dict):
            return fail("The request body must be a JSON object", 400)
        signed = body.get("SignedSystemToken")
        app_token = body.get("ApplicationToken")
        context = body.get("ContextIdentifier")
        token_type = body.get("ReturnTokenType") or "JWT"
        if not isinstance(app_token, str) or app_token not in self.app_tokens:
            return fail("Invalid application token")
        if not isinstance(context, str) or context.casefold() != self.tenant.casefold():
            return fail(f"Unknown or inaccessible context identifier {context!r}")
        if not isinstance(token_type, str) or token_type.casefold() != "jwt":
            return fail("Unsupported ReturnTokenType; use JWT")
        if not isinstance(signed, str) or signed.count(".") < 2:
            return fail("SignedSystemToken is malformed")
        token, stamp, signature = signed.rsplit(".", 2)
        try:
            signed_at = datetime.strptime(stamp, "%Y%m%d%H%M").replace(tzinfo=UTC).timestamp()
        except ValueError:
            return fail("SignedSystemToken timestamp is malformed (want UTC yyyyMMddHHmm)")
        age = self.clock() - signed_at
        if age > SIGNED_TOKEN_MAX_AGE or age < -SIGNED_TOKEN_MAX_AHEAD:
            return fail("SignedSystemToken has expired or its timestamp is not current")
        try:
            public_key = serialization.load_pem_public_key(self.app_tokens[app_token])
            if not isinstance(public_key, rsa.RSAPublicKey):
                return fail("The application's public key is not an RSA key")
            public_key.verify(
                base64.b64decode(signature, validate=True),
                f"{token}.{stamp}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, binascii.Error, ValueError):
            return fail("SignedSystemToken signature is not valid")
        if not hmac.compare_digest(token.encode(), self.system_user_token.encode()):
            return fail("Unknown system user token")
        ticket = self.issue_ticket("system-user", app_token)
        now = int(self.clock())
        origin = self._origin(request)
        claims = {
            "iss": "https://sod.superoffice.com",
            "sub": "system-user",
            "iat": now,
            "nbf": now,
            "exp": now + JWT_LIFETIME,
            CLAIM_TICKET: ticket,
            CLAIM_WEBAPI_URL: f"{origin}/{self.tenant}/api/",
            CLAIM_NETSERVER_URL: f"{origin}/{self.tenant}/Remote/Services88/",
            CLAIM_CTX: self.tenant,
            "http://schemes.superoffice.net/identity/associateid": "1",
            "http://schemes.superoffice.net/identity/upn": "SYSTEM",
            "http://schemes.superoffice.net/identity/is_administrator": "False",
        }
        return web.json_response({"IsSuccessful": True, "Token": make_jwt(claims), "ErrorMessage": None})

    # -- listings ---------------------------------------------------------------------------------
    async def _list(self, kind: SOKind, request: web.Request) -> web.Response:
        try:
            q = parse_query(self.state, kind, request.query)
        except ArchiveQueryError as exc:
            return so_error(400, "ArgumentException", str(exc))
        rows = render_rows(q, run_query(self.state, q))
        host = request.url.host
        port = request.url.port
        metadata = f"{request.scheme}://{host}:{port}/{request.match_info['cust']}/api/v1/Archive//$metadata"
        return web.json_response({"odata.metadata": metadata, "odata.nextLink": None, "value": rows})

    async def _archive(self, request: web.Request) -> web.Response:
        provider = request.match_info["provider"].casefold()
        if provider == "dynamic":
            return await self._dynamic(request)
        if provider in ("simplecontact", "contact"):
            return await self._list("contact", request)
        if provider in ("person", "simpleperson"):
            return await self._list("person", request)
        return so_error(
            400, "ArgumentException", f"Archive provider {request.match_info['provider']!r} is not emulated"
        )

    async def _dynamic(self, request: web.Request) -> web.Response:
        """``Archive/dynamic``: dot-syntax queries over BinaryObject / BinaryObjectLink (so_dynamic)."""
        if self.dynamic_provider_status:
            status = self.dynamic_provider_status
            return so_error(
                status,
                "SoAccessDeniedException" if status == 403 else "SoException",
                "Access to the Dynamic archive provider is denied"
                if status == 403
                else f"The Dynamic archive provider failed (HTTP {status})",
            )
        if self.dynamic_fail_after is not None and self._dynamic_served >= self.dynamic_fail_after:
            return so_error(500, "SoException", "An unexpected error occurred on the server")
        try:
            query = so_dynamic.parse_query(self._dynamic_tables, request.query)
            page = so_dynamic.run(query)
        except so_dynamic.DynamicQueryError as exc:
            return so_error(400, "SoArchiveException", str(exc))
        for _, row in page:  # sizes need the bytes: make lazy pictures off the event loop
            blob = row if isinstance(row, SOImage) else self.state.blobs.get(getattr(row, "blob_id", -1))
            if blob is not None and not blob.resolved:
                await asyncio.to_thread(blob.content)
        rows = so_dynamic.render(query, page, so_date, numeric_pk=self.dynamic_numeric_primary_key)
        self._dynamic_served += 1
        metadata = f"{self._origin(request)}/{request.match_info['cust']}/api/v1/Archive/$metadata"
        return web.json_response({"odata.metadata": metadata, "odata.nextLink": None, "value": rows})

    # -- entities ---------------------------------------------------------------------------------
    async def _get_entity(self, kind: SOKind, request: web.Request) -> web.Response:
        entity = self._entity(kind, request)
        headers = {"Last-Modified": _http_date(entity.updated)}
        ims = request.headers.get("If-Modified-Since")
        if ims:
            try:
                since = email.utils.parsedate_to_datetime(ims)
            except (TypeError, ValueError):
                since = None
            if since is not None and entity.updated <= utc(since):
                return web.Response(status=304, headers=headers)
        body = self._contact_json(entity) if isinstance(entity, SOContact) else self._person_json(entity)
        return web.json_response(body, headers=headers)

    @staticmethod
    def _emails(address: str) -> list[dict[str, Any]]:
        if not address:
            return []
        return [{"Value": address, "StrippedValue": address.strip().lower(), "Description": "", "Rank": 1}]

    def _contact_json(self, c: SOContact) -> dict[str, Any]:
        return {
            "ContactId": c.contact_id,
            "Name": c.name,
            "Department": c.department,
            "OrgNr": c.orgnr,
            "Number1": c.number,
            "Number2": c.code,
            "Category": {"Value": c.category} if c.category else None,
            "Business": {"Value": c.business} if c.business else None,
            "Country": {"Name": c.country} if c.country else None,
            "Emails": self._emails(c.email),
            "UpdatedDate": so_date(c.updated),
            "CreatedDate": so_date(c.registered),
            "UpdatedBy": c.updated_by,
            "Deleted": c.deleted,
            "ActiveErpLinks": c.active_erp_links,
            "DbiAgentId": 0,
            "DbiKey": "",
            "DbiLastModified": None,
            "DbiLastSyncronized": None,
            "UserDefinedFields": {k: v for k, v in c.extra.items() if "udef/" in k.casefold()},
            "ExtraFields": {k: v for k, v in c.extra.items() if "extra/" in k.casefold()},
            "CustomFields": dict(c.extra),
            "TableRight": None,
            "FieldProperties": {},
        }

    def _person_json(self, p: SOPerson) -> dict[str, Any]:
        contact = self.state.contacts.get(p.contact_id)
        return {
            "PersonId": p.person_id,
            "Firstname": p.first_name,
            "MiddleName": "",
            "Lastname": p.last_name,
            "FullName": p.full_name,
            "PersonNumber": p.person_number,
            "Title": p.title,
            "Emails": self._emails(p.email),
            "Contact": None
            if contact is None
            else {
                "ContactId": contact.contact_id,
                "Name": contact.name,
                "Department": contact.department,
                "OrgNr": contact.orgnr,
                "Number1": contact.number,
                "Number2": contact.code,
            },
            "UpdatedDate": so_date(p.updated),
            "CreatedDate": so_date(p.registered),
            "Retired": p.retired,
            "ActiveErpLinks": p.active_erp_links,
            "DbiAgentId": 0,
            "DbiKey": "",
            "DbiLastModified": None,
            "DbiLastSyncronized": None,
            "UserDefinedFields": {k: v for k, v in p.extra.items() if "udef/" in k.casefold()},
            "ExtraFields": {k: v for k, v in p.extra.items() if "extra/" in k.casefold()},
            "CustomFields": dict(p.extra),
            "TableRight": None,
            "FieldProperties": {},
        }

    # -- pictures ---------------------------------------------------------------------------------
    def _image_response(self, request: web.Request, data: bytes, mime: str) -> web.Response:
        if self.json_image_on_json_accept:
            accept = request.headers.get("Accept", "")
            if "application/json" in accept and "image/" not in accept:
                body = json.dumps(base64.b64encode(data).decode("ascii"))
                return web.Response(text=body, content_type="application/json", charset="utf-8")
        return web.Response(body=data, headers={"Content-Type": mime})

    async def _get_image(self, kind: SOKind, request: web.Request) -> web.Response:
        entity = self._entity(kind, request)
        q = request.query
        try:
            w = _int_option("w", q.get("w")) or None
            h = _int_option("h", q.get("h")) or None
        except ArchiveQueryError as exc:
            return so_error(400, "ArgumentException", str(exc))
        if (w or 0) > MAX_IMAGE_SIDE or (h or 0) > MAX_IMAGE_SIDE:
            return so_error(400, "ArgumentException", f"w and h must not exceed {MAX_IMAGE_SIDE}")
        fmt = q.get("type", "").strip().upper() or None
        if fmt is not None and fmt not in _FORMATS:
            return so_error(400, "ArgumentException", f"type must be JPEG, PNG or GIF, not {q['type']!r}")
        if_blank = next((v for v in IF_BLANK if v.casefold() == q.get("ifBlank", "Null").casefold()), None)
        if if_blank is None:
            return so_error(400, "ArgumentException", f"ifBlank {q['ifBlank']!r} is not one of {IF_BLANK}")
        image = entity.image
        if image is None:
            if if_blank == "Null":
                label = "contact" if kind == "contact" else "person"
                return so_error(404, "SoNotFoundException", f"No image on this {label}")
            if if_blank == "ClearPixel":
                return self._image_response(request, clear_pixel_png(), "image/png")
            data, mime = placeholder_png(if_blank), "image/png"
        else:
            data, mime = await self._image_bytes(image), image.mime
        if w or h or fmt:
            try:
                data, mime = await asyncio.to_thread(render_image, data, w, h, fmt)
            except ImageRenderError:
                # What .NET's System.Drawing says about bytes it cannot decode.
                return so_error(500, "ArgumentException", "Parameter is not valid.")
        return self._image_response(request, data, mime)

    async def _read_image_body(self, request: web.Request) -> tuple[bytes, str | None]:
        """The uploaded bytes (raw body, or the first file of a multipart form) and their declared type."""
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if isinstance(part, BodyPartReader):
                    return bytes(await part.read(decode=True)), part.headers.get("Content-Type")
            return b"", None
        ctype = request.content_type
        return await request.read(), ctype if ctype.startswith("image/") else None

    async def _put_image(self, kind: SOKind, request: web.Request) -> web.Response:
        entity = self._entity(kind, request, status=400)  # documented: 400 when the id is invalid
        data, declared = await self._read_image_body(request)
        if not data:
            return so_error(400, "ArgumentException", "The request contains no bitmap")
        mime = sniff_mime(data) or declared or "application/octet-stream"
        blob_id = self.state.set_image(
            kind, _entity_id(entity), data, mime, touch=self.image_updates_touch_updated_date
        )
        return web.json_response(blob_id)

    async def _delete_image(self, kind: SOKind, request: web.Request) -> web.Response:
        entity = self._entity(kind, request)
        if entity.image is not None:
            self.state.set_image(kind, _entity_id(entity), None, touch=self.image_updates_touch_updated_date)
        return web.Response(status=204)

    async def _get_image_info(self, kind: SOKind, request: web.Request) -> web.Response:
        entity = self._entity(kind, request)
        image = entity.image
        if image is None:
            return web.Response(status=200, body=b"", content_type="application/json")
        data = await self._image_bytes(image)
        return web.json_response(
            self._blob_entity(kind, image, data), headers={"Last-Modified": _http_date(image.updated)}
        )

    async def _put_image_info(self, kind: SOKind, request: web.Request) -> web.Response:
        entity = self._entity(kind, request)
        try:
            body = await request.json()
        except ValueError:
            return so_error(400, "ArgumentException", "The request body is not valid JSON")
        if not isinstance(body, dict):
            return so_error(400, "ArgumentException", "The request body must be a BlobEntity object")
        image = entity.image
        if image is None:
            label = "contact" if kind == "contact" else "person"
            return so_error(404, "SoNotFoundException", f"No image on this {label}")
        for key, attr in (("Description", "description"), ("ExtraInfo", "extra_info")):
            if key in body:
                setattr(image, attr, "" if body[key] is None else str(body[key]))
        image.updated = self.state.now()
        data = await self._image_bytes(image)
        return web.json_response(
            self._blob_entity(kind, image, data), headers={"Last-Modified": _http_date(image.updated)}
        )

    # -- admin: data ------------------------------------------------------------------------------
    def _admin_kind(self, request: web.Request) -> SOKind:
        try:
            return _kind(request.match_info["kind"])
        except ValueError as exc:
            raise web.HTTPNotFound(text=str(exc)) from None

    def _admin_entity(self, request: web.Request) -> tuple[SOKind, SOEntity]:
        kind = self._admin_kind(request)
        try:
            entity = self.state.entity(kind, int(request.match_info["id"]))
        except ValueError:
            entity = None
        if entity is None:
            raise web.HTTPNotFound(text=f"no {kind} {request.match_info['id']}")
        return kind, entity

    async def _admin_snapshot(self, request: web.Request) -> web.Response:
        snap = await asyncio.to_thread(self.state.snapshot)
        return web.json_response(snap)

    async def _admin_create(self, request: web.Request) -> web.Response:
        kind = self._admin_kind(request)
        body = await _admin_body(request)
        try:
            if kind == "contact":
                eid = self.state.add_contact(name=str(body.pop("name", "")), **body)
            else:
                eid = self.state.add_person(
                    contact_id=int(body.pop("contactId")),
                    first_name=str(body.pop("firstName", "")),
                    last_name=str(body.pop("lastName", "")),
                    **body,
                )
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        entity = self.state.entity(kind, eid)
        assert entity is not None
        return web.json_response(self.state.row(kind, entity), status=201)

    async def _admin_edit(self, request: web.Request) -> web.Response:
        kind, entity = self._admin_entity(request)
        body = await _admin_body(request)
        touch = request.query.get("touch", "true").casefold() != "false"
        try:
            self.state.edit(kind, _entity_id(entity), body, touch=touch)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.state.row(kind, entity))

    async def _admin_set_image(self, request: web.Request) -> web.Response:
        kind, entity = self._admin_entity(request)
        data = await request.read()
        if not data:
            return web.json_response({"error": "empty body; use DELETE to clear"}, status=400)
        declared = request.content_type if request.content_type.startswith("image/") else None
        self.state.set_image(
            kind,
            _entity_id(entity),
            data,
            sniff_mime(data) or declared,
            touch=self.image_updates_touch_updated_date,
        )
        return web.json_response(self.state.row(kind, entity))

    async def _admin_clear_image(self, request: web.Request) -> web.Response:
        kind, entity = self._admin_entity(request)
        self.state.set_image(kind, _entity_id(entity), None, touch=self.image_updates_touch_updated_date)
        return web.Response(status=204)

    # -- admin: knobs, tenant, credentials --------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SO_OPTIONS}

    async def _admin_get_options(self, request: web.Request) -> web.Response:
        return web.json_response(self._options())

    async def _admin_put_options(self, request: web.Request) -> web.Response:
        body = await _admin_body(request)
        if set(body) - set(SO_OPTIONS):
            return web.json_response({"error": f"options are {list(SO_OPTIONS)}"}, status=400)
        try:
            values = {name: _option_value(name, value) for name, value in body.items()}
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        for name, value in values.items():
            setattr(self, name, value)
            if name == "dynamic_fail_after":
                self._dynamic_served = 0
        return web.json_response(self._options())

    def _tenant_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "state": self.tenant_state, "endpoint": self.tenant_endpoint}

    async def _admin_get_tenant(self, request: web.Request) -> web.Response:
        return web.json_response(self._tenant_json())

    async def _admin_put_tenant(self, request: web.Request) -> web.Response:
        body = await _admin_body(request)
        if set(body) - {"state", "endpoint"}:
            return web.json_response({"error": 'body is {"state": ..., "endpoint": ...}'}, status=400)
        if "state" in body:
            self.tenant_state = str(body["state"])
        if "endpoint" in body:
            self.tenant_endpoint = None if body["endpoint"] is None else str(body["endpoint"])
        return web.json_response(self._tenant_json())

    async def _admin_mint(self, request: web.Request) -> web.Response:
        body = await _admin_body(request) if request.can_read_body else {}
        principal = str(body.get("principal", "sandbox"))
        return web.json_response(
            {
                "ticket": self.issue_ticket(principal),
                "app_token_header": "SO-AppToken",
                "bearer": self.issue_bearer_token(principal),
            }
        )

    async def _admin_revoke(self, request: web.Request) -> web.Response:
        self.revoke_all()
        return web.Response(status=204)


async def _admin_body(request: web.Request) -> dict[str, Any]:
    """The JSON object an admin route was sent; 400 when it is not one."""
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"error": "the body is not JSON"}', content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text='{"error": "a JSON object is expected"}', content_type="application/json"
        )
    return body


def _entity_id(entity: SOEntity) -> int:
    return entity.contact_id if isinstance(entity, SOContact) else entity.person_id
