"""SuperOffice Web API client: the picture SOURCE.

Verbs (vdirsyncer-style, the engine knows nothing else about SuperOffice):
    probe(kind)             read one id: reachable, signed in, allowed to read (daemon readiness;
                            ``syncd check`` uses :func:`probe_read` to explain each failure)
    list(kind, columns)     stream contacts or persons (slim archive rows), keyset-paged on the id
    picture_links(kind)     every picture link of the kind from the Dynamic archive provider, in pages:
                            one pass gives every record's picture fingerprint (syncd.fingerprints)
    fingerprint(kind, id)   ImageInfo identity of the stored picture without downloading it; None = blank
    image_blob_id(kind, id) ImageInfo's BlobId (None = no picture): what the bulk pass is checked against
    image(kind, id)         the stored picture's bytes as stored, or a :class:`NoPicture` saying how
                            sure the service was that there is none (204/empty: sure; 404: not)

Paging: SuperOffice's best practices ask for ``$orderby`` on the primary key and pages of up to 1,000,
and warn that ``$skip`` re-reads scale like O(N²); so every listing asks for ``id gt <last id>``
(keyset paging) instead. A non-null ``odata.nextLink`` is followed; one naming another origin is an
error and gets no request (credentials go nowhere else). Page counts are bounded, and ids must
increase strictly: a service that repeats itself cannot keep a run going.

Works against SuperOffice Online (``https://online.superoffice.com/Cust12345/api/v1``) and onsite
installations (``https://server/SuperOffice/api/v1``) unchanged; auth is injected.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit

import structlog

from syncd.errors import ApiError, MalformedReplyError, NotFoundError
from syncd.http import ApiClient, PageGuard, Response, parse_json
from syncd.types import SourceKind, SourceRow

log = structlog.get_logger("syncd.superoffice")

#: The Web API entity each source kind is read from: the one map of kind to SuperOffice entity.
ENTITY = {"contact": "Contact", "person": "Person"}
ID_COLUMN = {"contact": "contactId", "person": "personId"}
UPDATED_COLUMN = {"contact": "updatedDate", "person": "personUpdatedDate"}
IMAGE_ACCEPT = "image/png, image/jpeg, image/gif, image/tiff, image/*"
MAX_PAGE = 1000  # SuperOffice: "ask for a pagesize of 1000"; larger pages may change the query strategy
MAX_PAGES = 20_000  # pages per listing or pass at most (20 million rows at 1,000): every loop is bounded

# The Dynamic provider's picture links (docs: database/tables/binaryobjectlink.md, enums/bloblinktype.md):
# the owner's table number and the link type that means "the picture of this record".
OWNER_TABLE = {"contact": 5, "person": 6}
PICTURE_LINK_TYPE = {"contact": 17, "person": 1}
_LINK = "BinaryObjectLink"
_BLOB = "BinaryObjectLink:binaryObjectId"  # an INNER join: a link to a missing blob shows no picture
LINK_ID = f"{_LINK}.BinaryObjectLink_id"
OWNER = f"{_LINK}.ownerRecord"
RANK = f"{_LINK}.rank"
BLOB_ID = f"{_LINK}.binaryObjectId"
#: The fingerprint's parts, in order: survives a replacement that makes a new BinaryObject row (the
#: link's binaryObjectId and updated move) and one that updates the row in place (updated,
#: updatedCount and sizes move). ``registered`` too, since a never-modified row's ``updated`` is empty.
FINGERPRINT_COLUMNS = (
    LINK_ID,
    BLOB_ID,
    f"{_BLOB}.registered",
    f"{_BLOB}.updated",
    f"{_BLOB}.updatedCount",
    f"{_BLOB}.originalSize",
    f"{_BLOB}.blobSize",
    f"{_BLOB}.mimeType",
    f"{_LINK}.updated",
)
_SELECT = ",".join(dict.fromkeys([LINK_ID, OWNER, RANK, *FINGERPRINT_COLUMNS]))


Rows = list[Any]  # (``list`` is a method name inside the client class)
Links = list["PictureLink"]


class IncompletePass(ApiError):
    """A listing or picture pass that cannot be trusted to be complete (ids not increasing, a row that
    cannot be read, too many pages): nothing may be concluded from what it did not show."""


@dataclass(frozen=True, slots=True)
class PictureLink:
    """One row of the picture pass: record ``owner_id`` shows BinaryObject ``blob_id`` through link
    ``link_id``; the lowest ``rank`` of an owner's links is its picture."""

    owner_id: int
    link_id: int
    rank: int
    blob_id: int
    fingerprint: str


log = structlog.get_logger("syncd.superoffice")


# -- where SuperOffice lives (one place for its hosts and URLs) ---------------------------------------

#: SuperOffice's own online hosts (``sod``, ``qaonline``, ``online``, load-balanced ones numbered).
ONLINE_HOST = re.compile(r"(sod|qaonline|online)\d*\.superoffice\.com", re.IGNORECASE)


def _environment(host: str) -> str:
    """``sod2.superoffice.com`` → ``sod``: the environment's main host name (no load-balancer number)."""
    return host.split(".")[0].rstrip("0123456789")


def entity_url(base_url: str, kind: SourceKind | str) -> str:
    """The Web API collection ``kind`` (contact, person) is read from, under ``base_url``."""
    return f"{base_url}/{ENTITY[kind]}"


def login_url(base_url: str) -> str:
    """``https://sod2.superoffice.com/Cust1/api/v1`` → ``https://sod.superoffice.com/login``.

    Online tenants live on load-balanced hosts (sod2, online3…) while the login service is on the
    environment's main host; onsite and sandbox installations serve ``/Login`` on their own host.
    """
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if host.endswith(".superoffice.com"):
        return f"{parts.scheme}://{_environment(host)}.superoffice.com/login"
    return f"{parts.scheme}://{parts.netloc}/Login"


def tenant_state_url(base_url: str, tenant: str, configured: str | None = None) -> str | None:
    """Where the tenant status lives, or None where there is none to ask.

    SuperOffice runs the service on its own online hosts only (``sod``, ``qaonline``, ``online``, see
    superoffice-api.md): ``https://online3.superoffice.com/Cust1/api/v1`` →
    ``https://online.superoffice.com/api/state/Cust1`` (load-balanced hosts answer on the environment's
    main host). A reverse proxy, an onsite server or any other host has no ``/api/state``: nothing is
    probed there (``superoffice.state_url`` names the service explicitly, e.g. for an emulator)."""
    if configured:
        return f"{configured.rstrip('/')}/{tenant}"
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.scheme == "https" and ONLINE_HOST.fullmatch(host):
        return f"https://{_environment(host).lower()}.superoffice.com/api/state/{tenant}"
    return None


async def probe_read(
    api: ApiClient, base_url: str, kind: SourceKind | str, *, allow: tuple[int, ...] = (), what: str
) -> Response:
    """Read one id of ``kind``: proves reachability, sign-in and read rights (``syncd check``, readiness).

    Statuses in ``allow`` come back as the response (``syncd check`` explains them); others raise."""
    return await api.request(
        "GET",
        entity_url(base_url, kind),
        params={"$select": ID_COLUMN[kind], "$top": "1"},
        allow=allow,
        what=what,
    )


class NoPicture(enum.Enum):
    """What ``…/Image`` said instead of sending bytes. Only :attr:`CONFIRMED` is a positive blank signal
    (one that may clear a Business Central picture); the engine checks :attr:`confirmed`."""

    CONFIRMED = "confirmed"  # 204, or the JSON style's empty result: the service says "no picture"
    NOT_FOUND = "not_found"  # 404: no picture, or no such record or route (a proxy, an old installation)

    @property
    def confirmed(self) -> bool:
        return self is NoPicture.CONFIRMED


class SuperOfficeClient:
    def __init__(
        self, api: ApiClient, base_url: str, *, page_size: int = MAX_PAGE, max_image_bytes: int
    ) -> None:
        self.api = api
        self.base_url = base_url.rstrip("/")
        self.page_size = page_size
        self.max_image_bytes = max_image_bytes

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    async def probe(self, kind: SourceKind) -> None:
        """Read one id of ``kind``: reachable, signed in, allowed to read; raises the client's error."""
        await probe_read(self.api, self.base_url, kind, what=f"SuperOffice: list one {kind}")

    @property
    def _top(self) -> int:
        return max(1, min(self.page_size, MAX_PAGE))

    async def _pages(
        self, url: str, params: Callable[[int], dict[str, str]], what: str
    ) -> AsyncGenerator[Rows, int]:
        """Keyset-paged rows: ``params(last)`` asks for ids after ``last``; the caller yields each page's
        rows and sends back the highest id it saw (``asend``). A non-null ``odata.nextLink`` is
        followed — the client sends nothing to another origin (:class:`syncd.errors.ForeignOriginError`
        names both) — and a page shorter than ``$top`` without one is the last. Bounded by
        :class:`syncd.http.PageGuard` (a page asked for twice, or repeating an earlier page's rows, is an
        error; ``limits.max_pages``) and ``limits.max_page_bytes``."""
        limits = self.api.limits
        guard = PageGuard(what, api=self.api.api, max_pages=min(limits.max_pages, MAX_PAGES))
        last = 0
        next_link: str | None = None
        while True:
            if next_link:
                guard.follow(next_link)
                resp = await self.api.request("GET", next_link, max_bytes=limits.max_page_bytes, what=what)
            else:
                query = params(last)
                guard.follow(url, query)
                resp = await self.api.request(
                    "GET", url, params=query, max_bytes=limits.max_page_bytes, what=what
                )
            rows, link = _page(resp, what)
            guard.rows([str(r.get("PrimaryKey", "")) if isinstance(r, dict) else "" for r in rows])
            seen = yield rows
            last = max(last, seen or 0)
            next_link = link
            if not next_link and (not rows or len(rows) < self._top):
                return

    async def list(
        self,
        kind: SourceKind,
        columns: Sequence[str],
        *,
        on_bad: Callable[[str], None] | None = None,
    ) -> AsyncIterator[SourceRow]:
        """All rows of the contact (SimpleContact) or person archive, in id order (keyset paging); a row
        without a usable id is skipped and told to ``on_bad``."""
        id_col, updated_col = ID_COLUMN[kind], UPDATED_COLUMN[kind]
        wanted = list(dict.fromkeys([id_col, *columns, updated_col]))
        keep = frozenset(c.casefold() for c in columns)

        def params(last: int) -> dict[str, str]:
            return {
                "$select": ",".join(wanted),
                "$filter": f"{id_col} gt {last}",
                "$orderBy": f"{id_col} asc",
                "$top": str(self._top),
            }

        pages = self._pages(self._url(ENTITY[kind]), params, f"list {kind}s")
        last = 0
        rows = await anext(pages, None)
        while rows is not None:
            stale = 0
            for raw in rows:
                row = _source_row(kind, raw, id_col, updated_col, keep)
                if row is None:
                    _bad(on_bad, f"SuperOffice {kind} row skipped: no usable {id_col}")
                    continue
                if row.id <= last:  # out of order or shifted between pages: seen already (or never)
                    stale += 1
                    continue
                last = row.id
                yield row
            if rows and stale == len(rows):
                raise IncompletePass(
                    f"list {kind}s: a page of ids already listed; the listing does not advance", status=200
                )
            rows = await _asend(pages, last)

    async def picture_links(self, kind: SourceKind) -> AsyncIterator[Links]:
        """Every picture link of ``kind`` (``ownerTable``/``linkType`` of the kind's picture), one page
        at a time, from ``archive/dynamic`` keyset-paged on ``BinaryObjectLink_id``.

        Raises :class:`IncompletePass` when the ids do not increase strictly or a row cannot be read,
        and the API's errors (403/404/400: the provider is not available to us) as they come: a
        caller that did not get to the end has an incomplete pass.
        """
        base = f"{_LINK}.ownerTable eq {OWNER_TABLE[kind]} and {_LINK}.linkType eq {PICTURE_LINK_TYPE[kind]}"

        def params(last: int) -> dict[str, str]:
            return {
                "$select": _SELECT,
                "$filter": f"{base} and {LINK_ID} gt {last}",
                "$orderBy": LINK_ID,
                "$top": str(self._top),
            }

        what = f"{kind} picture links (archive/dynamic)"
        pages = self._pages(self._url("archive/dynamic"), params, what)
        last = 0
        rows = await anext(pages, None)
        while rows is not None:
            links = [_picture_link(raw, what) for raw in rows]
            for link in links:
                if link.link_id <= last:
                    raise IncompletePass(
                        f"{what}: link ids not strictly increasing ({link.link_id} after {last})", status=200
                    )
                last = link.link_id
            yield links
            rows = await _asend(pages, last)

    async def fingerprint(self, kind: SourceKind, entity_id: int) -> str | None:
        """Identity of the stored picture from ``…/ImageInfo`` (BlobId, UpdatedDate, sizes, MIME).

        ``None`` when there is no picture (empty body, ``null`` or ``BlobId`` 0, as documented).
        Raises :class:`NotFoundError` when this installation has no ImageInfo route.
        """
        info = await self._image_info(kind, entity_id)
        if info is None:
            return None
        return "|".join(
            str(info.get(k, "")) for k in ("BlobId", "UpdatedDate", "OriginalSize", "BlobSize", "MimeType")
        )

    async def image_blob_id(self, kind: SourceKind, entity_id: int) -> int | None:
        """ImageInfo's ``BlobId`` (the BinaryObject id), or None when the record has no picture."""
        info = await self._image_info(kind, entity_id)
        if info is None:
            return None
        try:
            return int(str(info["BlobId"]).strip())
        except ValueError:
            raise ApiError(f"{kind} {entity_id} ImageInfo: BlobId is not a number", status=200) from None

    async def _image_info(self, kind: SourceKind, entity_id: int) -> Mapping[str, Any] | None:
        resp = await self.api.request(
            "GET",
            self._url(f"{ENTITY[kind]}/{entity_id}/ImageInfo"),
            headers={"Accept": "application/json"},
            what=f"{kind} {entity_id} ImageInfo",
        )
        if not resp.body.strip():
            return None
        info = resp.json()  # not JSON: MalformedReplyError, the item is decided by download instead
        if info is None or info == "":  # the documented "no image" answers
            return None
        if not isinstance(info, dict):  # a list, a number...: not a BlobEntity, and not a blank either
            raise MalformedReplyError(
                f"{kind} {entity_id} ImageInfo: not a BlobEntity ({type(info).__name__})", status=resp.status
            )
        if not info.get("BlobId"):
            return None
        return info

    async def image(self, kind: SourceKind, entity_id: int) -> bytes | NoPicture:
        """The stored picture's original bytes, or :class:`NoPicture` when the record shows none:
        ``CONFIRMED`` for a 204 or an empty JSON result, ``NOT_FOUND`` for a 404 — the documented "no
        image" answer, but also what a missing record, a missing route or a proxy says, so it is no proof.

        Handles both reply styles: raw ``image/*`` bytes, and a JSON string holding base64 (what the
        service sends when it decides JSON is acceptable). The format is decided later from the
        bytes' magic numbers, never from the header.
        """
        try:
            resp = await self.api.request(
                "GET",
                self._url(f"{ENTITY[kind]}/{entity_id}/Image"),
                headers={"Accept": IMAGE_ACCEPT},
                max_bytes=self.max_image_bytes,
                allow=(204,),
                what=f"{kind} {entity_id} picture",
            )
        except NotFoundError:
            return NoPicture.NOT_FOUND
        if resp.status == 204:
            return NoPicture.CONFIRMED
        if resp.content_type in ("application/json", "text/json"):
            # The JSON style says "no picture" with an empty result (as BLOBAgent does).
            data = _decode_json_image(resp.body, f"{kind} {entity_id}") if resp.body.strip() else None
            return NoPicture.CONFIRMED if data is None else data
        # A 200 with zero bytes is a stored picture that is empty (or a reply cut short), not "no picture":
        # taken for blank, it could clear the BC picture under ``on_source_blank: clear``. The normalizer
        # turns it into a per-item error ("empty picture").
        return resp.body


async def _asend(pages: AsyncGenerator[Rows, int], last: int) -> Rows | None:
    try:
        return await pages.asend(last)
    except StopAsyncIteration:
        return None


def _page(resp: Response, what: str) -> tuple[Rows, str | None]:
    """A listing page's rows and its ``odata.nextLink`` (absolute, or resolved against the request)."""
    data = resp.json()  # not JSON, or nested too deeply: MalformedReplyError
    rows = data.get("value") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise MalformedReplyError(f"{what}: unexpected reply (no 'value' list)", status=resp.status)
    link = data.get("odata.nextLink")
    if link is not None and not isinstance(link, str):
        raise MalformedReplyError(f"{what}: odata.nextLink is not a link", status=resp.status)
    return rows, (urljoin(resp.url, link) if link else None)


def _int(value: Any) -> int | None:
    """An int column as the provider may send it: a JSON number or a string ("12", "12.0" never)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    if isinstance(value, dict):  # $mode=Full: {"RawValue": ..., "DisplayValue": ...}
        return _int(value.get("RawValue", value.get("DisplayValue")))
    return None


_DATE = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})?"
)


def normalize_date(value: Any) -> str:
    """A provider date for comparing with the same column in a later pass: ISO, to the second, in UTC
    when an offset is given. Empty for null/0/"" (a never-modified row); unknown forms kept verbatim.
    Never compared with ImageInfo's dates (their time zone handling may differ)."""
    if value is None or value in ("", 0, "0"):
        return ""
    if isinstance(value, dict):
        value = value.get("RawValue", value.get("DisplayValue"))
    text = str(value).strip()
    m = _DATE.fullmatch(text)
    if m is None:
        return text
    y, mo, d, h, mi, sec = (int(g or 0) for g in m.groups()[:6])
    try:
        dt = datetime(y, mo, d, h, mi, sec)
    except ValueError:
        return text
    tz = m.group(7)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        dt -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    if dt.year <= 1900:  # .NET/SQL minimum dates stand for "never"
        return ""
    return dt.replace(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _scalar(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("RawValue", value.get("DisplayValue"))
    return "" if value is None else str(value).strip()


def _picture_link(raw: Any, what: str) -> PictureLink:
    if not isinstance(raw, dict):
        raise IncompletePass(f"{what}: a row is not an object", status=200)
    link_id = _int(raw.get(LINK_ID, raw.get("PrimaryKey")))
    owner, blob = _int(raw.get(OWNER)), _int(raw.get(BLOB_ID))
    rank = _int(raw.get(RANK))
    if link_id is None or owner is None or owner <= 0 or blob is None:
        raise IncompletePass(f"{what}: a row without a readable link id, owner or blob id", status=200)
    parts = []
    for col in FINGERPRINT_COLUMNS:
        v = raw.get(col)
        parts.append(
            normalize_date(v) if col.endswith(".registered") or col.endswith(".updated") else _scalar(v)
        )
    return PictureLink(owner, link_id, 0 if rank is None else rank, blob, "bulk:" + "|".join(parts))


def _decode_json_image(body: bytes, what: str) -> bytes | None:
    try:
        value: Any = parse_json(body)
    except ValueError:
        raise ApiError(f"{what} picture: JSON reply that is not JSON", status=200) from None
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ApiError(f"{what} picture: JSON reply is not a base64 string", status=200)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(f"{what} picture: JSON reply is not valid base64", status=200) from None


def _source_row(
    kind: SourceKind, raw: Any, id_col: str, updated_col: str, keep: frozenset[str] | None = None
) -> SourceRow | None:
    """A listed row; ``columns`` holds the ``keep`` columns (casefolded names; None: all of them) — the
    engine holds one row per record for the whole run, so id and updated date are attributes only."""
    if not isinstance(raw, dict):
        return None
    key = raw.get("PrimaryKey", raw.get(id_col))
    if not isinstance(key, str | int) or isinstance(key, bool):
        return None
    try:
        entity_id = int(str(key).strip())
    except ValueError:
        return None
    if not 0 < entity_id < 2**63:
        return None
    columns = {
        k: _display(v)
        for k, v in raw.items()
        if k not in ("PrimaryKey", "EntityName") and (keep is None or k.casefold() in keep)
    }
    updated = _display(raw.get(updated_col)) or None
    return SourceRow(kind=kind, id=entity_id, columns=columns, updated=updated)


def _display(value: Any) -> str:
    """Slim mode gives display strings; $mode=Full gives {"DisplayValue": ...}; be lenient."""
    if isinstance(value, dict):
        value = value.get("DisplayValue", value.get("RawValue", ""))
    return "" if value is None else str(value)


def _bad(on_bad: Callable[[str], None] | None, text: str) -> None:
    log.warning("malformed record skipped", detail=text)
    if on_bad is not None:
        on_bad(text)
