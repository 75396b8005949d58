"""Business Central emulator, its own admin API under ``/_sandbox/bc`` (no auth, never logged or faulted).

One handler per route of the table in ``app.py``: :func:`get_snapshot`, :func:`set_picture` and
:func:`clear_picture` ("by hand in BC"), :func:`revoke_tokens`, :func:`get_limits`, :func:`put_limits`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from syncd.sandbox.businesscentral import state as bc_state
from syncd.sandbox.businesscentral.state import BCRecord, format_datetime

if TYPE_CHECKING:
    from syncd.sandbox.businesscentral.emulator import BusinessCentralEmulator


async def get_snapshot(bc: BusinessCentralEmulator, request: web.Request) -> web.Response:
    include = request.query.get("bytes", "false").lower() == "true"
    return web.json_response(bc.state.snapshot(include_bytes=include))


async def set_picture(bc: BusinessCentralEmulator, request: web.Request) -> web.Response:
    rec = _record(bc, request)
    data = await request.read()
    if not data:
        return web.json_response({"error": "empty body; use DELETE to clear a picture"}, status=400)
    picture = await asyncio.to_thread(bc_state.inspect_picture, data)
    bc.state.apply_picture(rec, picture)
    return web.json_response(_picture_info(rec))


async def clear_picture(bc: BusinessCentralEmulator, request: web.Request) -> web.Response:
    rec = _record(bc, request)
    bc.state.apply_picture(rec, None)
    return web.json_response(_picture_info(rec))


async def revoke_tokens(bc: BusinessCentralEmulator, request: web.Request) -> web.Response:
    return web.json_response({"revoked": bc.entra.revoke_all()})


async def get_limits(bc: BusinessCentralEmulator, request: web.Request) -> web.Response:
    return web.json_response({**bc.limits.as_json(), "gates": bc.gate.stats()})


async def put_limits(bc: BusinessCentralEmulator, request: web.Request) -> web.Response:
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        bc.limits = bc.limits.merged(body)
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(bc.limits.as_json())


def _record(bc: BusinessCentralEmulator, request: web.Request) -> BCRecord:
    info = request.match_info
    try:
        return bc.state.get_record(info["company_id"], info["entity_set"], info["record_id"])
    except KeyError as exc:
        raise web.HTTPNotFound(text=str(exc)) from None


def _picture_info(rec: BCRecord) -> dict[str, Any]:
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


#: An admin handler: ``(emulator, request)``.
AdminHandler = Callable[["BusinessCentralEmulator", web.Request], Awaitable[web.Response]]
