"""Business Central API client: the picture TARGET.

Verbs (the engine knows nothing else about Business Central):
    resolve_company()              company name or id → company id
    probe()                        reachable, signed in, the company exists (daemon readiness; ``syncd
                                   check`` explains each failure with :func:`probe_read` and
                                   :meth:`CompanyDirectory.probe`)
    list(kind, fields)             stream records with their picture (``$expand=picture``), following
                                   the absolute ``@odata.nextLink`` unchanged (server-driven paging)
    get_picture(kind, id)          one record's picture object (fresh etag)
    picture_content(kind, id, pic) the stored picture's bytes
    put_picture(kind, id, pic, data, if_match)   PATCH raw bytes to the media edit link → new etag or None
    delete_picture(kind, id, if_match)

Both dialects work: API v2.0 (``picture`` is one object, stream ``pictureContent``) and v1.0/beta
(``picture`` is a collection, stream ``content`` at ``picture({id})/content``). We use the media links
the API returns and build them only when absent.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

import structlog

from syncd.errors import ConfigError, MalformedReplyError, NotFoundError
from syncd.http import ApiClient, PageGuard, Response
from syncd.types import TargetKind, TargetPicture, TargetRow

_ROW_ATTRIBUTES = frozenset({"id", "number", "displayName"})  # TargetRow attributes, not kept in fields
_ETAG = re.compile(r"[\x20-\x7e]{1,1024}")  # printable ASCII: it goes back into an If-Match header
_MAX_DIMENSION = 100_000
MAX_PICTURE_BYTES = 20_000_000  # a BC picture read back (after a 409); syncd writes ≤ picture.max_bytes

log = structlog.get_logger("syncd.businesscentral")


# -- where Business Central lives (one place for its URLs) --------------------------------------------


def companies_url(base_url: str) -> str:
    """The environment's company list under the API root ``base_url``."""
    return f"{base_url}/companies"


def entity_url(base_url: str, company_id: str, kind: str, record_id: str | None = None) -> str:
    """The entity set ``kind`` (customers, items, …) of one company, or one record of it."""
    url = f"{base_url}/companies({company_id})/{kind}"
    return f"{url}({record_id})" if record_id else url


def location(base_url: str) -> tuple[str | None, str | None]:
    """(tenant, environment) named in a BC online base URL; None where the URL does not name one
    (``/v2.0/{environment}/api/…`` takes the tenant from the token; on-premises names neither)."""
    segments = [s for s in urlsplit(base_url).path.split("/") if s]
    if "api" not in segments:
        return None, None
    before = segments[: len(segments) - 1 - segments[::-1].index("api")]
    if before[:1] == ["v2.0"] and len(before) == 3:
        return before[1], before[2]
    if before[:1] == ["v2.0"] and len(before) == 2:
        return None, before[1]
    if before[:1] == ["v1.0"] and len(before) == 2:
        return before[1], "production"
    return None, None


async def probe_read(
    api: ApiClient, base_url: str, company_id: str, kind: str, *, allow: tuple[int, ...] = (), what: str
) -> Response:
    """Read one record of ``kind`` with its picture: proves the permission to read it (``syncd check``).

    Statuses in ``allow`` come back as the response; others raise."""
    return await api.request(
        "GET",
        entity_url(base_url, company_id, kind),
        params={"$top": "1", "$expand": "picture"},
        allow=allow,
        what=what,
    )


def _company_rows(resp: Response) -> list[Any] | None:
    """The ``value`` list of a company list reply, or None without one (ValueError: not JSON)."""
    data = resp.json()
    value = data.get("value") if isinstance(data, dict) else None
    return value if isinstance(value, list) else None


def _with_ids(rows: list[Any]) -> list[dict[str, Any]]:
    return [c for c in rows if isinstance(c, dict) and isinstance(c.get("id"), str) and c["id"]]


class MalformedRecord(MalformedReplyError):
    """One listed record that does not have the documented shape (skipped and reported)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=200)


class CompanyDirectory:
    """The environment's companies, read once (``GET …/companies``) and shared by the clients of every
    company a config writes to: several companies cost one request, not one each."""

    def __init__(self, api: ApiClient, base_url: str) -> None:
        self.api = api
        self.base_url = base_url.rstrip("/")
        self._companies: list[dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def companies(self) -> list[dict[str, Any]]:
        async with self._lock:
            if self._companies is None:
                resp = await self.api.request("GET", companies_url(self.base_url), what="list companies")
                value = _company_rows(resp)
                if value is None:
                    raise MalformedReplyError(
                        "list companies: unexpected reply (no 'value' list)", status=resp.status
                    )
                self._companies = _with_ids(value)
            return self._companies

    async def probe(self, *, allow: tuple[int, ...] = (), what: str = "list companies") -> Response:
        """``GET …/companies`` for ``syncd check``: statuses in ``allow`` come back for it to explain; a
        good list is kept, so that resolving the companies afterwards costs no second request."""
        async with self._lock:
            resp = await self.api.request("GET", companies_url(self.base_url), allow=allow, what=what)
            if resp.status == 200:
                try:
                    value = _company_rows(resp)
                except ValueError:
                    value = None
                if value is not None:
                    self._companies = _with_ids(value)
            return resp

    async def resolve(self, company: str) -> tuple[str, str]:
        """``(id, name)`` of the company with this id, or else this name or display name (names compare
        case-insensitively). Raises :class:`ConfigError` naming the companies there are."""
        companies = await self.companies()
        wanted = company.strip()
        for c in companies:
            if str(c["id"]).lower() == wanted.lower():
                return str(c["id"]), str(c.get("name") or c.get("displayName") or c["id"])
        by_name = [
            c
            for c in companies
            if wanted.casefold()
            in (str(c.get("name", "")).casefold(), str(c.get("displayName", "")).casefold())
        ]
        if len(by_name) == 1:
            return str(by_name[0]["id"]), str(by_name[0].get("name") or wanted)
        names = ", ".join(repr(c.get("name")) for c in companies) or "none"
        if len(by_name) > 1:
            raise ConfigError(
                f"Business Central company {wanted!r} matches {len(by_name)} companies",
                hint="use the company id instead of its name",
            )
        raise ConfigError(
            f"Business Central company {wanted!r} not found in this environment",
            hint=f"companies available: {names} (businesscentral.company, or `company:` of a mapping)",
        )


class BusinessCentralClient:
    """One company of one environment. Clients of several companies share one :class:`ApiClient` (one
    token, one rate limit) and one :class:`CompanyDirectory`."""

    def __init__(
        self,
        api: ApiClient,
        base_url: str,
        company: str,
        *,
        page_size: int = 1000,
        max_picture_bytes: int = MAX_PICTURE_BYTES,
        directory: CompanyDirectory | None = None,
    ) -> None:
        self.api = api
        self.max_picture_bytes = max_picture_bytes
        self.base_url = base_url.rstrip("/")
        self.company = company
        self.page_size = page_size
        self.dialect = self.base_url.rsplit("/", 1)[-1]  # v2.0 | v1.0 | beta
        self.company_id: str | None = None
        self.company_name: str | None = None
        self.directory = directory or CompanyDirectory(api, self.base_url)

    @property
    def v2(self) -> bool:
        return self.dialect == "v2.0"

    @property
    def _stream(self) -> str:
        return "pictureContent" if self.v2 else "content"

    # -- company --------------------------------------------------------------------------------
    async def resolve_company(self) -> str:
        """The company id for the configured name or id (case-insensitive on names)."""
        if self.company_id:
            return self.company_id
        self.company_id, self.company_name = await self.directory.resolve(self.company)
        return self.company_id

    async def probe(self) -> str:
        """Reachable, signed in, and the company exists: its id (``resolve_company``); raises the
        client's error otherwise. What the daemon's readiness asks of Business Central."""
        return await self.resolve_company()

    def _entity_url(self, kind: TargetKind, record_id: str | None = None) -> str:
        assert self.company_id, "resolve_company() first"
        return entity_url(self.base_url, self.company_id, kind, record_id)

    # -- listing --------------------------------------------------------------------------------
    async def list(
        self,
        kind: TargetKind,
        fields: Sequence[str],
        *,
        on_bad: Callable[[str], None] | None = None,
    ) -> AsyncIterator[TargetRow]:
        """Every record of ``kind`` with its picture, one page at a time.

        Bounded (see :class:`syncd.http.PageGuard`): each page by ``limits.max_page_bytes``, the listing
        by ``limits.max_pages``; a next link seen before, or a page repeating an earlier one, is an
        error. A record without the documented shape is skipped and told to ``on_bad`` (a line of text).
        """
        await self.resolve_company()
        select = list(dict.fromkeys(["id", "number", "displayName", *fields]))
        extra = tuple(f for f in select if f not in _ROW_ATTRIBUTES)
        url: str | None = self._entity_url(kind)
        params: dict[str, str] | None = {"$select": ",".join(select), "$expand": "picture"}
        headers = {"Prefer": f"odata.maxpagesize={self.page_size}", "Accept": "application/json"}
        limits = self.api.limits
        guard = PageGuard(f"list {kind}", api=self.api.api, max_pages=limits.max_pages)
        page_bytes = limits.max_page_bytes
        while url:
            guard.follow(url, params)
            resp = await self.api.request(
                "GET", url, params=params, headers=headers, max_bytes=page_bytes, what=f"list {kind}"
            )
            data = resp.json()
            if not isinstance(data, dict) or not isinstance(data.get("value"), list):
                raise MalformedReplyError(
                    f"list {kind}: unexpected reply (no 'value' list)", status=resp.status
                )
            keys: list[str] = []
            for raw in data["value"]:
                try:
                    row = self._row(kind, raw, extra)
                except MalformedRecord as exc:
                    _bad(on_bad, f"Business Central {kind} record skipped: {exc}")
                    continue
                keys.append(row.id)
                yield row
            guard.rows(keys)
            link = data.get("@odata.nextLink")
            if link is not None and not isinstance(link, str):
                raise MalformedReplyError(f"list {kind}: @odata.nextLink is not a link", status=resp.status)
            url = urljoin(url, link) if link else None  # absolute as documented; a relative one resolved
            params = None  # the next link carries every query option; follow it unchanged

    def _row(self, kind: TargetKind, raw: Any, extra: Sequence[str] = ()) -> TargetRow:
        """A listed record, slim: the engine holds one per record for the whole run, so ``fields`` keeps
        only the ``extra`` fields asked for (id, number and displayName are attributes already).
        Raises :class:`MalformedRecord` for a record without the documented shape."""
        if not isinstance(raw, dict):
            raise MalformedRecord(f"not an object ({type(raw).__name__})")
        record_id = raw.get("id")
        if not isinstance(record_id, str) or not record_id.strip() or len(record_id) > 100:
            raise MalformedRecord("no usable id")
        label = f"id {record_id!r}"
        number = _scalar(raw.get("number"), f"{label}: number")
        name = _scalar(raw.get("displayName"), f"{label}: displayName")
        pic_raw = raw.get("picture")
        if isinstance(pic_raw, dict) and isinstance(pic_raw.get("value"), list):
            pic_raw = pic_raw["value"]
        if isinstance(pic_raw, list):  # v1.0/beta: picture is a collection
            pic_raw = pic_raw[0] if pic_raw else None
        if pic_raw is not None and not isinstance(pic_raw, dict):
            raise MalformedRecord(f"{label}: picture is not an object")
        try:
            picture = self._picture(kind, record_id, pic_raw) if pic_raw is not None else None
        except MalformedReplyError as exc:
            raise MalformedRecord(f"{label}: {exc.message}") from None
        return TargetRow(
            kind=kind,
            id=record_id,
            number=number,
            display_name=name,
            fields={k: _field(raw[k], f"{label}: {k}") for k in extra if k in raw},
            picture=picture,
        )

    def _picture(self, kind: TargetKind, record_id: str, raw: dict[str, Any]) -> TargetPicture:
        """The picture object as documented; :class:`MalformedReplyError` for one that is not (a width
        that is no number, an etag with control characters, a link that is not a string)."""
        edit = raw.get(f"{self._stream}@odata.mediaEditLink") or raw.get("pictureContent@odata.mediaEditLink")
        edit = edit or raw.get("content@odata.mediaEditLink")
        if edit is not None and not isinstance(edit, str):
            raise MalformedReplyError("picture media link is not a string", status=200)
        if edit and self.company_id and edit == self._built_media_link(kind, record_id):
            edit = None  # the link media_link() builds anyway: not kept once per record (~230 bytes)
        return TargetPicture(
            etag=clean_etag(raw.get("@odata.etag")),
            width=_dimension(raw.get("width"), "width"),
            height=_dimension(raw.get("height"), "height"),
            content_type=sys.intern(_scalar(raw.get("contentType"), "picture contentType")[:100]),
            edit_link=edit or None,
        )

    def media_link(self, kind: TargetKind, record_id: str, picture: TargetPicture | None) -> str:
        """The link to PATCH/GET the picture stream: as returned by the API, else built."""
        if picture is not None and picture.edit_link:
            return picture.edit_link
        return self._built_media_link(kind, record_id)

    def _built_media_link(self, kind: TargetKind, record_id: str) -> str:
        if self.v2:
            return f"{self._entity_url(kind, record_id)}/picture/pictureContent"
        return f"{self._entity_url(kind, record_id)}/picture({record_id})/content"

    # -- single picture -------------------------------------------------------------------------
    async def get_picture(self, kind: TargetKind, record_id: str) -> TargetPicture:
        await self.resolve_company()
        url = f"{self._entity_url(kind, record_id)}/picture"
        if not self.v2:
            url = f"{url}({record_id})"
        resp = await self.api.request("GET", url, what=f"{kind} {record_id} picture")
        data = resp.json()
        if isinstance(data, dict) and isinstance(data.get("value"), list):
            data = data["value"][0] if data["value"] else {}
        if not isinstance(data, dict):
            raise MalformedReplyError(f"{kind} {record_id} picture: unexpected reply", status=resp.status)
        try:
            return self._picture(kind, record_id, data)
        except MalformedReplyError as exc:
            raise MalformedReplyError(f"{kind} {record_id} picture: {exc.message}", status=200) from None

    async def picture_content(self, kind: TargetKind, record_id: str, picture: TargetPicture) -> bytes:
        await self.resolve_company()
        resp = await self.api.request(
            "GET",
            self.media_link(kind, record_id, picture),
            allow=(204,),
            max_bytes=self.max_picture_bytes,
            what=f"{kind} {record_id} picture content",
        )
        return resp.body if resp.status == 200 else b""

    async def put_picture(
        self, kind: TargetKind, record_id: str, picture: TargetPicture | None, data: bytes, *, if_match: str
    ) -> str | None:
        """PATCH the raw bytes. Returns the new picture etag when the reply tells it, else None.

        ``if_match`` is the picture's etag as last read (never ``*`` unless the caller insists): a
        stale one raises :class:`syncd.errors.PreconditionFailedError` (BC answers 409
        ``Request_EntityChanged``; 412 handled alike).
        """
        await self.resolve_company()
        resp = await self.api.request(
            "PATCH",
            self.media_link(kind, record_id, picture),
            headers={"Content-Type": "application/octet-stream", "If-Match": if_match},
            data=data,
            ok=(200, 204),
            what=f"write picture of {kind} {record_id}",
        )
        return _etag_of(resp)

    async def delete_picture(self, kind: TargetKind, record_id: str, *, if_match: str | None) -> None:
        await self.resolve_company()
        url = f"{self._entity_url(kind, record_id)}/picture"
        if not self.v2:
            url = f"{url}({record_id})"
        headers = {"If-Match": if_match} if if_match else {}
        try:
            await self.api.request(
                "DELETE", url, headers=headers, ok=(200, 204), what=f"clear picture of {kind} {record_id}"
            )
        except NotFoundError:
            return  # already gone


def _etag_of(resp: Response) -> str | None:
    """The new picture etag a write's reply tells, or None (then the next listing confirms it)."""
    if resp.body:
        try:
            data = resp.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            if isinstance(data.get("value"), list) and data["value"]:
                data = data["value"][0]
            if isinstance(data, dict) and data.get("@odata.etag"):
                try:
                    return clean_etag(data.get("@odata.etag"))
                except MalformedReplyError:
                    return None
    try:
        return clean_etag(resp.headers.get("ETag") or None)
    except MalformedReplyError:
        return None


def clean_etag(value: Any) -> str | None:
    """An etag as BC sends it (``W/"JzQ0O…"``): printable ASCII, or :class:`MalformedReplyError` —
    an etag is sent back in ``If-Match``, where a CR/LF would be a header injection."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _ETAG.fullmatch(value):
        raise MalformedReplyError("picture etag is not a printable string", status=200)
    return value


def _dimension(value: Any, what: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise MalformedReplyError(f"picture {what} is not a number", status=200)
    try:
        number = int(value)
    except (ValueError, OverflowError):
        raise MalformedReplyError(f"picture {what} {str(value)[:20]!r} is not a number", status=200) from None
    if not 0 <= number <= _MAX_DIMENSION:
        raise MalformedReplyError(f"picture {what} {number} is out of range", status=200)
    return number


def _scalar(value: Any, what: str) -> str:
    """A text field: a string or number as text, missing as ""; a dict or list is a malformed record."""
    if value is None:
        return ""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise MalformedRecord(f"{what} is not text ({type(value).__name__})")


def _field(value: Any, what: str) -> Any:
    """A match field's value: a scalar (kept as it is) or null; a dict or list is a malformed record."""
    if value is None or isinstance(value, bool):
        return value
    _scalar(value, what)
    return value


def _bad(on_bad: Callable[[str], None] | None, text: str) -> None:
    log.warning("malformed record skipped", detail=text)
    if on_bad is not None:
        on_bad(text)
