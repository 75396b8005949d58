"""SuperOffice emulator, handlers for an entity's picture: one per documented endpoint and entity kind.

``GET|PUT|POST|DELETE {Contact|Person}/{id}/Image`` and ``GET|PUT {Contact|Person}/{id}/ImageInfo``:
:func:`get_contact_image`, :func:`put_contact_image`, … :func:`put_person_image_info`. Uploads store the
bytes with the MIME type their magic bytes say (``syncd.sandbox.mime``), else the declared one.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from syncd.sandbox.mime import sniff_mime
from syncd.sandbox.superoffice.columns import SOKind
from syncd.sandbox.superoffice.dates import http_date, so_date
from syncd.sandbox.superoffice.errors import SOError
from syncd.sandbox.superoffice.odata import (
    ArchiveQueryError,
    _int_option,
)
from syncd.sandbox.superoffice.rendering import (
    _FORMATS,
    IF_BLANK,
    ImageRenderError,
    clear_pixel_png,
    placeholder_png,
    render_image,
)
from syncd.sandbox.superoffice.state import SOImage, entity_id

if TYPE_CHECKING:
    from syncd.sandbox.superoffice.emulator import Ctx, SuperOfficeEmulator

MAX_IMAGE_SIDE = 10_000  # w/h beyond this are refused (keeps the emulator from allocating gigabytes)


async def get_contact_image(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    """``GET Contact/{id}/Image``: as stored, or scaled/converted (w, h, type), ifBlank."""
    return await _get_image(so, "contact", request)


async def put_contact_image(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    """``PUT Contact/{id}/Image``: raw image/* or multipart body → 200 blob id."""
    return await _put_image(so, "contact", request)


async def post_contact_image(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    """``POST Contact/{id}/Image``: the same as PUT."""
    return await _put_image(so, "contact", request)


async def delete_contact_image(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    """``DELETE Contact/{id}/Image`` → 204."""
    return await _delete_image(so, "contact", request)


async def get_contact_image_info(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    """``GET Contact/{id}/ImageInfo``: BlobEntity, or 200 with an empty body."""
    return await _get_image_info(so, "contact", request)


async def put_contact_image_info(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    """``PUT Contact/{id}/ImageInfo``: update Description / ExtraInfo."""
    return await _put_image_info(so, "contact", request)


async def get_person_image(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    """``GET Person/{id}/Image``: as stored, or scaled/converted (w, h, type), ifBlank."""
    return await _get_image(so, "person", request)


async def put_person_image(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    """``PUT Person/{id}/Image``: raw image/* or multipart body → 200 blob id."""
    return await _put_image(so, "person", request)


async def post_person_image(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    """``POST Person/{id}/Image``: the same as PUT."""
    return await _put_image(so, "person", request)


async def delete_person_image(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    """``DELETE Person/{id}/Image`` → 204."""
    return await _delete_image(so, "person", request)


async def get_person_image_info(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    """``GET Person/{id}/ImageInfo``: BlobEntity, or 200 with an empty body."""
    return await _get_image_info(so, "person", request)


async def put_person_image_info(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    """``PUT Person/{id}/ImageInfo``: update Description / ExtraInfo."""
    return await _put_image_info(so, "person", request)


async def _image_bytes(so: SuperOfficeEmulator, image: SOImage) -> bytes:
    if isinstance(image.data, bytes):
        return image.data
    return await asyncio.to_thread(image.content)


def _blob_entity(so: SuperOfficeEmulator, kind: SOKind, image: SOImage, data: bytes) -> dict[str, Any]:
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


def _image_response(so: SuperOfficeEmulator, request: web.Request, data: bytes, mime: str) -> web.Response:
    if so.json_image_on_json_accept:
        accept = request.headers.get("Accept", "")
        if "application/json" in accept and "image/" not in accept:
            body = json.dumps(base64.b64encode(data).decode("ascii"))
            return web.Response(text=body, content_type="application/json", charset="utf-8")
    return web.Response(body=data, headers={"Content-Type": mime})


async def _get_image(so: SuperOfficeEmulator, kind: SOKind, request: web.Request) -> web.Response:
    entity = so.entity(kind, request)
    q = request.query
    try:
        w = _int_option("w", q.get("w")) or None
        h = _int_option("h", q.get("h")) or None
    except ArchiveQueryError as exc:
        raise SOError(400, "ArgumentException", str(exc)) from None
    if (w or 0) > MAX_IMAGE_SIDE or (h or 0) > MAX_IMAGE_SIDE:
        raise SOError(400, "ArgumentException", f"w and h must not exceed {MAX_IMAGE_SIDE}")
    fmt = q.get("type", "").strip().upper() or None
    if fmt is not None and fmt not in _FORMATS:
        raise SOError(400, "ArgumentException", f"type must be JPEG, PNG or GIF, not {q['type']!r}")
    if_blank = next((v for v in IF_BLANK if v.casefold() == q.get("ifBlank", "Null").casefold()), None)
    if if_blank is None:
        raise SOError(400, "ArgumentException", f"ifBlank {q['ifBlank']!r} is not one of {IF_BLANK}")
    image = entity.image
    if image is None:
        if if_blank == "Null":
            label = "contact" if kind == "contact" else "person"
            raise SOError(404, "SoNotFoundException", f"No image on this {label}")
        if if_blank == "ClearPixel":
            return _image_response(so, request, clear_pixel_png(), "image/png")
        data, mime = placeholder_png(if_blank), "image/png"
    else:
        data, mime = await _image_bytes(so, image), image.mime
    if w or h or fmt:
        try:
            data, mime = await asyncio.to_thread(render_image, data, w, h, fmt)
        except ImageRenderError:
            # What .NET's System.Drawing says about bytes it cannot decode.
            raise SOError(500, "ArgumentException", "Parameter is not valid.") from None
    return _image_response(so, request, data, mime)


async def _read_image_body(so: SuperOfficeEmulator, request: web.Request) -> tuple[bytes, str | None]:
    """The uploaded bytes (raw body, or the first file of a multipart form) and their declared type."""
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader):
                return bytes(await part.read(decode=True)), part.headers.get("Content-Type")
        return b"", None
    ctype = request.content_type
    return await request.read(), ctype if ctype.startswith("image/") else None


async def _put_image(so: SuperOfficeEmulator, kind: SOKind, request: web.Request) -> web.Response:
    entity = so.entity(kind, request, status=400)  # documented: 400 when the id is invalid
    data, declared = await _read_image_body(so, request)
    if not data:
        raise SOError(400, "ArgumentException", "The request contains no bitmap")
    mime = sniff_mime(data) or declared or "application/octet-stream"
    blob_id = so.state.set_image(
        kind, entity_id(entity), data, mime, touch=so.image_updates_touch_updated_date
    )
    return web.json_response(blob_id)


async def _delete_image(so: SuperOfficeEmulator, kind: SOKind, request: web.Request) -> web.Response:
    entity = so.entity(kind, request)
    if entity.image is not None:
        so.state.set_image(kind, entity_id(entity), None, touch=so.image_updates_touch_updated_date)
    return web.Response(status=204)


async def _get_image_info(so: SuperOfficeEmulator, kind: SOKind, request: web.Request) -> web.Response:
    entity = so.entity(kind, request)
    image = entity.image
    if image is None:
        return web.Response(status=200, body=b"", content_type="application/json")
    data = await _image_bytes(so, image)
    return web.json_response(
        _blob_entity(so, kind, image, data), headers={"Last-Modified": http_date(image.updated)}
    )


async def _put_image_info(so: SuperOfficeEmulator, kind: SOKind, request: web.Request) -> web.Response:
    entity = so.entity(kind, request)
    try:
        body = await request.json()
    except ValueError:
        raise SOError(400, "ArgumentException", "The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise SOError(400, "ArgumentException", "The request body must be a BlobEntity object")
    image = entity.image
    if image is None:
        label = "contact" if kind == "contact" else "person"
        raise SOError(404, "SoNotFoundException", f"No image on this {label}")
    for key, attr in (("Description", "description"), ("ExtraInfo", "extra_info")):
        if key in body:
            setattr(image, attr, "" if body[key] is None else str(body[key]))
    image.updated = so.state.now()
    data = await _image_bytes(so, image)
    return web.json_response(
        _blob_entity(so, kind, image, data), headers={"Last-Modified": http_date(image.updated)}
    )
