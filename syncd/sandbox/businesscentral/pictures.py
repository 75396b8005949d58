"""Business Central emulator, handlers for a record's picture: one per documented endpoint (§2-§4).

``GET .../picture`` (:func:`get_picture`; v2.0: one picture object, v1.0/beta: ``{"value": [picture]}``,
``picture({id})`` one object in both dialects), ``DELETE .../picture`` (:func:`delete_picture`: checks
``If-Match`` only when sent; deleting an empty picture changes nothing), ``GET .../pictureContent``
(:func:`get_picture_content`: the bytes, or ``204`` for an empty picture) and ``PATCH .../pictureContent``
(:func:`patch_picture_content`: the upload, §3). The v2.0 stream is ``pictureContent`` (``content`` is
accepted as the alias the v2 doc examples use); v1.0/beta have ``picture({id})/content``.

Uploads need ``If-Match`` (missing → 400 ``BadRequest_InvalidToken``, ``*`` always passes, an ``If-Match``
that is not a well-formed etag, e.g. the JSON-escaped ``W/\\"…\\"``, is 400 ``BadRequest_InvalidToken``,
stale → 409 ``Request_EntityChanged`` or the ``stale_etag_status`` knob), store the bytes as given, read
width/height/contentType from the bytes (Pillow, in a worker thread), and bump the picture etag plus the
parent's etag and ``lastModifiedDateTime``. Only the documented verbs exist on a picture: PATCH on the
picture object is refused (its properties are read-only), PUT on the stream is 405 like POST.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from syncd.sandbox.businesscentral import state as bc_state
from syncd.sandbox.businesscentral.errors import (
    ODataError,
    _method_not_allowed,
    _segment_not_found,
    _syntax_error,
)
from syncd.sandbox.businesscentral.odata import _picture_properties, _split_etags, parse_select
from syncd.sandbox.businesscentral.state import BCCompany, BCRecord, EntitySchema, _parse_etag

if TYPE_CHECKING:
    from syncd.sandbox.businesscentral.emulator import BusinessCentralEmulator, Ctx

_IF_MATCH_MESSAGE = " ".join(
    (
        "Could not validate the client concurrency token required by the service.",
        "Please provide a valid token in the client request.",
    )
)


# -- the picture object ----------------------------------------------------------------------------
async def get_picture(bc: BusinessCentralEmulator, request: web.Request, ctx: Ctx) -> web.StreamResponse:
    company, schema, rec = bc.resolve_record(request)
    select = parse_select(request.query.get("$select"), _picture_properties(ctx.version), "picture")
    picture = picture_json(ctx, company, schema, rec, select)
    context = f"{ctx.base}/$metadata#companies({company.id})/{schema.entity_set}({rec.id})/picture"
    if ctx.version != "v2.0" and "picture_id" not in request.match_info:
        return bc.odata_json({"@odata.context": context, "value": [picture]})
    return bc.odata_json({"@odata.context": context + "/$entity", **picture})


async def delete_picture(bc: BusinessCentralEmulator, request: web.Request, ctx: Ctx) -> web.StreamResponse:
    rec = bc.resolve_record(request)[2]
    _check_if_match(bc, request, rec, required=False)
    bc.state.apply_picture(rec, None)
    return web.Response(status=204)


async def patch_picture(bc: BusinessCentralEmulator, request: web.Request, ctx: Ctx) -> web.StreamResponse:
    """PATCH on the picture object: its properties are read-only (the upload goes to the stream)."""
    rec = bc.resolve_record(request)[2]
    _check_if_match(bc, request, rec, required=True)
    raise ODataError(
        400,
        "BadRequest_InvalidOperation",
        "The picture's properties are read-only; upload the image with PATCH on its "
        + ("pictureContent" if ctx.version == "v2.0" else "content")
        + " media link.",
    )


async def picture_not_allowed(
    bc: BusinessCentralEmulator, request: web.Request, ctx: Ctx
) -> web.StreamResponse:
    method = request.method
    if method == "POST":
        bc.resolve_record(request)
    raise _method_not_allowed(method, "picture", "Entity")


def picture_json(
    ctx: Ctx, company: BCCompany, schema: EntitySchema, rec: BCRecord, select: list[str] | None
) -> dict[str, Any]:
    """The picture object as a record's ``$expand=picture`` and ``GET .../picture`` show it."""
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
    return {k: v for k, v in full.items() if k == "@odata.etag" or k in select or k.startswith(stream + "@")}


# -- the media stream ------------------------------------------------------------------------------
async def get_picture_content(
    bc: BusinessCentralEmulator, request: web.Request, ctx: Ctx
) -> web.StreamResponse:
    _stream_name(bc, request, ctx)
    rec = bc.resolve_record(request)[2]
    if rec.picture is None:
        return web.Response(status=204)
    return web.Response(body=rec.picture.data, content_type=rec.picture.content_type)


async def patch_picture_content(
    bc: BusinessCentralEmulator, request: web.Request, ctx: Ctx
) -> web.StreamResponse:
    """The picture upload (§3): the raw bytes as the body, ``If-Match`` with the picture's etag."""
    _stream_name(bc, request, ctx)
    rec = bc.resolve_record(request)[2]
    _check_if_match(bc, request, rec, required=True)
    data = await _read_body(bc, request)
    if not data:
        raise ODataError(
            400,
            "Application_DialogException",
            "Media Object cannot be imported because the instream object is empty.",
        )
    picture = await asyncio.to_thread(bc_state.inspect_picture, data)
    _check_if_match(bc, request, rec, required=True)  # again: another write may have won meanwhile
    bc.state.apply_picture(rec, picture)
    return web.Response(status=204)


async def picture_content_not_allowed(
    bc: BusinessCentralEmulator, request: web.Request, ctx: Ctx
) -> web.StreamResponse:
    stream = _stream_name(bc, request, ctx)
    method = request.method
    if method == "POST":
        bc.resolve_record(request)
    raise _method_not_allowed(method, stream, "Primitive")


def _stream_name(bc: BusinessCentralEmulator, request: web.Request, ctx: Ctx) -> str:
    """The stream segment if this dialect has it (else 404), addressed the way this dialect wants."""
    stream = request.match_info["stream"]
    allowed = ("pictureContent", "content") if ctx.version == "v2.0" else ("content",)
    if stream not in allowed:
        bc.resolve_set(request)
        raise _segment_not_found(stream)
    if ctx.version != "v2.0" and "picture_id" not in request.match_info:
        raise _syntax_error()  # v1.0/beta: picture is a collection, the stream needs picture({id})
    return stream


async def _read_body(bc: BusinessCentralEmulator, request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ODataError(
            413,
            "RequestEntityTooLarge",
            f"The request body exceeds the maximum of {bc.max_body_bytes} bytes.",
        ) from None


def _check_if_match(
    bc: BusinessCentralEmulator, request: web.Request, rec: BCRecord, *, required: bool
) -> None:
    header = request.headers.get("If-Match")
    if header is None:
        if required:
            raise ODataError(400, "BadRequest_InvalidToken", _IF_MATCH_MESSAGE)
        return
    if header.strip() == "*":
        return
    tags = [_parse_etag(t) for t in _split_etags(header)]
    if not tags or any(t is None for t in tags):
        raise ODataError(400, "BadRequest_InvalidToken", _IF_MATCH_MESSAGE)
    if rec.picture_etag not in tags:
        raise ODataError(
            bc.limits.stale_etag_status,
            "Request_EntityChanged",
            "Another user has already changed the record.",
        )
