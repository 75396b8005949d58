"""SuperOffice emulator, its own admin API under ``/_sandbox/so`` (no auth, never logged or faulted).

One handler per route of the admin table in ``app.py``: data (snapshot, create/edit an entity, set/clear
its picture "by hand"), quirk knobs (``SO_OPTIONS``), the tenant's state, and tickets (mint, revoke).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from syncd.sandbox.mime import sniff_mime
from syncd.sandbox.superoffice.columns import SOKind
from syncd.sandbox.superoffice.state import SOEntity, _kind, entity_id

if TYPE_CHECKING:
    from syncd.sandbox.superoffice.emulator import SuperOfficeEmulator

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


#: An admin handler: ``(emulator, request)``.
AdminHandler = Callable[["SuperOfficeEmulator", web.Request], Awaitable[web.Response]]


def _kind_of(so: SuperOfficeEmulator, request: web.Request) -> SOKind:
    try:
        return _kind(request.match_info["kind"])
    except ValueError as exc:
        raise web.HTTPNotFound(text=str(exc)) from None


def _entity_of(so: SuperOfficeEmulator, request: web.Request) -> tuple[SOKind, SOEntity]:
    kind = _kind_of(so, request)
    try:
        entity = so.state.entity(kind, int(request.match_info["id"]))
    except ValueError:
        entity = None
    if entity is None:
        raise web.HTTPNotFound(text=f"no {kind} {request.match_info['id']}")
    return kind, entity


async def get_snapshot(so: SuperOfficeEmulator, request: web.Request) -> web.Response:
    snap = await asyncio.to_thread(so.state.snapshot)
    return web.json_response(snap)


async def create_entity(so: SuperOfficeEmulator, request: web.Request) -> web.Response:
    kind = _kind_of(so, request)
    body = await _body(request)
    try:
        if kind == "contact":
            eid = so.state.add_contact(name=str(body.pop("name", "")), **body)
        else:
            eid = so.state.add_person(
                contact_id=int(body.pop("contactId")),
                first_name=str(body.pop("firstName", "")),
                last_name=str(body.pop("lastName", "")),
                **body,
            )
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    entity = so.state.entity(kind, eid)
    assert entity is not None
    return web.json_response(so.state.row(kind, entity), status=201)


async def edit_entity(so: SuperOfficeEmulator, request: web.Request) -> web.Response:
    kind, entity = _entity_of(so, request)
    body = await _body(request)
    touch = request.query.get("touch", "true").casefold() != "false"
    try:
        so.state.edit(kind, entity_id(entity), body, touch=touch)
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(so.state.row(kind, entity))


async def set_image(so: SuperOfficeEmulator, request: web.Request) -> web.Response:
    kind, entity = _entity_of(so, request)
    data = await request.read()
    if not data:
        return web.json_response({"error": "empty body; use DELETE to clear"}, status=400)
    declared = request.content_type if request.content_type.startswith("image/") else None
    so.state.set_image(
        kind,
        entity_id(entity),
        data,
        sniff_mime(data) or declared,
        touch=so.image_updates_touch_updated_date,
    )
    return web.json_response(so.state.row(kind, entity))


async def clear_image(so: SuperOfficeEmulator, request: web.Request) -> web.Response:
    kind, entity = _entity_of(so, request)
    so.state.set_image(kind, entity_id(entity), None, touch=so.image_updates_touch_updated_date)
    return web.Response(status=204)


# -- admin: knobs, tenant, credentials --------------------------------------------------------


def _options(so: SuperOfficeEmulator) -> dict[str, Any]:
    return {name: getattr(so, name) for name in SO_OPTIONS}


async def get_options(so: SuperOfficeEmulator, request: web.Request) -> web.Response:
    return web.json_response(_options(so))


async def put_options(so: SuperOfficeEmulator, request: web.Request) -> web.Response:
    body = await _body(request)
    if set(body) - set(SO_OPTIONS):
        return web.json_response({"error": f"options are {list(SO_OPTIONS)}"}, status=400)
    try:
        values = {name: _option_value(name, value) for name, value in body.items()}
    except (TypeError, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    for name, value in values.items():
        setattr(so, name, value)
        if name == "dynamic_fail_after":
            so._dynamic_served = 0
    return web.json_response(_options(so))


def _tenant_json(so: SuperOfficeEmulator) -> dict[str, Any]:
    return {"tenant": so.tenant, "state": so.tenant_state, "endpoint": so.tenant_endpoint}


async def get_tenant(so: SuperOfficeEmulator, request: web.Request) -> web.Response:
    return web.json_response(
        _tenant_json(
            so,
        )
    )


async def put_tenant(so: SuperOfficeEmulator, request: web.Request) -> web.Response:
    body = await _body(request)
    if set(body) - {"state", "endpoint"}:
        return web.json_response({"error": 'body is {"state": ..., "endpoint": ...}'}, status=400)
    if "state" in body:
        so.tenant_state = str(body["state"])
    if "endpoint" in body:
        so.tenant_endpoint = None if body["endpoint"] is None else str(body["endpoint"])
    return web.json_response(
        _tenant_json(
            so,
        )
    )


async def mint_tickets(so: SuperOfficeEmulator, request: web.Request) -> web.Response:
    body = await _body(request) if request.can_read_body else {}
    principal = str(body.get("principal", "sandbox"))
    return web.json_response(
        {
            "ticket": so.issue_ticket(principal),
            "app_token_header": "SO-AppToken",
            "bearer": so.issue_bearer_token(principal),
        }
    )


async def revoke_tickets(so: SuperOfficeEmulator, request: web.Request) -> web.Response:
    so.revoke_all()
    return web.Response(status=204)


async def _body(request: web.Request) -> dict[str, Any]:
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
