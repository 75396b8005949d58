"""SuperOffice Web API client: the picture SOURCE.

Verbs (vdirsyncer-style, the engine knows nothing else about SuperOffice):
    list(kind, columns)     stream contacts or persons (slim archive rows), paged with $top/$skip
    fingerprint(kind, id)   ImageInfo identity of the stored picture without downloading it; None = blank
    image(kind, id)         the stored picture's bytes as stored; None = blank (404)

Works against SuperOffice Online (``https://online.superoffice.com/Cust12345/api/v1``) and onsite
installations (``https://server/SuperOffice/api/v1``) unchanged; auth is injected.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from urllib.parse import urljoin

import structlog

from syncd.errors import ApiError, MalformedReplyError, NotFoundError
from syncd.http import ApiClient, PageGuard, parse_json
from syncd.types import SourceKind, SourceRow

_ENTITY = {"contact": "Contact", "person": "Person"}
ID_COLUMN = {"contact": "contactId", "person": "personId"}
UPDATED_COLUMN = {"contact": "updatedDate", "person": "personUpdatedDate"}
IMAGE_ACCEPT = "image/png, image/jpeg, image/gif, image/tiff, image/*"

log = structlog.get_logger("syncd.superoffice")


class SuperOfficeClient:
    def __init__(self, api: ApiClient, base_url: str, *, page_size: int = 500, max_image_bytes: int) -> None:
        self.api = api
        self.base_url = base_url.rstrip("/")
        self.page_size = page_size
        self.max_image_bytes = max_image_bytes
        self.image_info_supported = True

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    async def list(
        self,
        kind: SourceKind,
        columns: Sequence[str],
        *,
        on_bad: Callable[[str], None] | None = None,
    ) -> AsyncIterator[SourceRow]:
        """All rows of the contact (SimpleContact) or person archive, ordered by id.

        Pages with ``$top``/``$skip`` and a stable ``$orderBy`` on the primary key; stops at a short
        page. A non-null ``odata.nextLink`` is followed instead, should the service send one. Bounded
        by :class:`syncd.http.PageGuard` (a repeated link or page is an error, ``limits.max_pages``)
        and ``limits.max_page_bytes``; a row without a usable id is skipped and told to ``on_bad``.
        """
        id_col, updated_col = ID_COLUMN[kind], UPDATED_COLUMN[kind]
        wanted = list(dict.fromkeys([id_col, *columns, updated_col]))
        keep = frozenset(c.casefold() for c in columns)
        skip = 0
        next_link: str | None = None
        seen: set[int] = set()
        limits = self.api.limits
        guard = PageGuard(f"list {kind}s", api=self.api.api, max_pages=limits.max_pages)
        page_bytes = limits.max_page_bytes
        while True:
            if next_link:
                url = urljoin(self.base_url + "/", next_link)
                guard.follow(url)
                resp = await self.api.request("GET", url, max_bytes=page_bytes, what=f"list {kind}s")
            else:
                params = {
                    "$select": ",".join(wanted),
                    "$orderBy": f"{id_col} asc",
                    "$top": str(self.page_size),
                    "$skip": str(skip),
                }
                guard.follow(self._url(_ENTITY[kind]), params)
                resp = await self.api.request(
                    "GET", self._url(_ENTITY[kind]), params=params, max_bytes=page_bytes, what=f"list {kind}s"
                )
            data = resp.json()
            rows = data.get("value") if isinstance(data, dict) else None
            if not isinstance(rows, list):
                raise MalformedReplyError(
                    f"list {kind}s: unexpected reply (no 'value' list)", status=resp.status
                )
            keys: list[str] = []
            for raw in rows:
                row = _source_row(kind, raw, id_col, updated_col, keep)
                if row is None:
                    _bad(on_bad, f"SuperOffice {kind} row skipped: no usable {id_col}")
                    continue
                keys.append(str(row.id))
                if row.id not in seen:  # rows shifting between pages: dedupe
                    seen.add(row.id)
                    yield row
            guard.rows(keys)
            link = data.get("odata.nextLink") if isinstance(data, dict) else None
            if link is not None and not isinstance(link, str):
                raise MalformedReplyError(f"list {kind}s: odata.nextLink is not a link", status=resp.status)
            next_link = link or None
            if next_link:
                continue
            if len(rows) < self.page_size:
                return
            skip += len(rows)

    async def fingerprint(self, kind: SourceKind, entity_id: int) -> str | None:
        """Identity of the stored picture from ``…/ImageInfo`` (BlobId, UpdatedDate, sizes, MIME).

        ``None`` when there is no picture (empty body, ``null`` or ``BlobId`` 0, as documented).
        Raises :class:`NotFoundError` when this installation has no ImageInfo route.
        """
        resp = await self.api.request(
            "GET",
            self._url(f"{_ENTITY[kind]}/{entity_id}/ImageInfo"),
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
        return "|".join(
            str(info.get(k, "")) for k in ("BlobId", "UpdatedDate", "OriginalSize", "BlobSize", "MimeType")
        )

    async def image(self, kind: SourceKind, entity_id: int) -> bytes | None:
        """The stored picture's original bytes, or ``None`` when the record has no picture (404/204).

        Handles both reply styles: raw ``image/*`` bytes, and a JSON string holding base64 (what the
        service sends when it decides JSON is acceptable). The format is decided later from the
        bytes' magic numbers, never from the header.
        """
        try:
            resp = await self.api.request(
                "GET",
                self._url(f"{_ENTITY[kind]}/{entity_id}/Image"),
                headers={"Accept": IMAGE_ACCEPT},
                max_bytes=self.max_image_bytes,
                allow=(204,),
                what=f"{kind} {entity_id} picture",
            )
        except NotFoundError:
            return None
        if resp.status == 204:
            return None
        if resp.content_type in ("application/json", "text/json"):
            # The JSON style says "no picture" with an empty result (as BLOBAgent does).
            return _decode_json_image(resp.body, f"{kind} {entity_id}") if resp.body.strip() else None
        # A 200 with zero bytes is a stored picture that is empty (or a reply cut short), not "no picture":
        # taken for blank, it could clear the BC picture under ``on_source_blank: clear``. The normalizer
        # turns it into a per-item error ("empty picture").
        return resp.body


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
