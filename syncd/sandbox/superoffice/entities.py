"""SuperOffice emulator, handlers for contacts, persons and archives: one per documented endpoint.

``GET Contact`` / ``GET Person`` (:func:`list_contacts`, :func:`list_persons`: the archives with their
OData-ish options, ``odata.py``), ``GET Archive/{provider}`` (:func:`get_archive`: SimpleContact, Contact,
Person, SimplePerson, and the Dynamic provider's dot syntax over BinaryObject and BinaryObjectLink,
``archive_query.py``) and ``GET Contact/{id}`` / ``GET Person/{id}`` (:func:`get_contact`,
:func:`get_person`).
"""

from __future__ import annotations

import asyncio
import email.utils
from typing import TYPE_CHECKING, Any

from aiohttp import web

from syncd.sandbox.superoffice import archive_query
from syncd.sandbox.superoffice.columns import SOKind
from syncd.sandbox.superoffice.dates import http_date, so_date, utc
from syncd.sandbox.superoffice.errors import SOError
from syncd.sandbox.superoffice.odata import (
    ArchiveQueryError,
    parse_query,
    render_rows,
    run_query,
)
from syncd.sandbox.superoffice.state import SOContact, SOImage, SOPerson

if TYPE_CHECKING:
    from syncd.sandbox.superoffice.emulator import Ctx, SuperOfficeEmulator


async def list_contacts(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    """``GET /{cust}/api/v1/Contact``: the SimpleContact archive."""
    return await _list(so, "contact", request)


async def list_persons(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    """``GET /{cust}/api/v1/Person``: the Person archive."""
    return await _list(so, "person", request)


async def get_contact(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    """``GET /{cust}/api/v1/Contact/{id}``: ContactEntity, Last-Modified, If-Modified-Since → 304."""
    return await _get_entity(so, "contact", request)


async def get_person(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    """``GET /{cust}/api/v1/Person/{id}``: PersonEntity, Last-Modified, If-Modified-Since → 304."""
    return await _get_entity(so, "person", request)


async def _list(so: SuperOfficeEmulator, kind: SOKind, request: web.Request) -> web.Response:
    try:
        q = parse_query(so.state, kind, request.query)
    except ArchiveQueryError as exc:
        raise SOError(400, "ArgumentException", str(exc)) from None
    rows = render_rows(q, run_query(so.state, q))
    host = request.url.host
    port = request.url.port
    metadata = f"{request.scheme}://{host}:{port}/{request.match_info['cust']}/api/v1/Archive//$metadata"
    return web.json_response({"odata.metadata": metadata, "odata.nextLink": None, "value": rows})


async def get_archive(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    provider = request.match_info["provider"].casefold()
    if provider == "dynamic":
        return await _dynamic(so, request)
    if provider in ("simplecontact", "contact"):
        return await _list(so, "contact", request)
    if provider in ("person", "simpleperson"):
        return await _list(so, "person", request)
    raise SOError(
        400, "ArgumentException", f"Archive provider {request.match_info['provider']!r} is not emulated"
    )


async def _dynamic(so: SuperOfficeEmulator, request: web.Request) -> web.Response:
    """``Archive/dynamic``: dot-syntax queries over BinaryObject / BinaryObjectLink (so_dynamic)."""
    if so.dynamic_provider_status:
        status = so.dynamic_provider_status
        raise SOError(
            status,
            "SoAccessDeniedException" if status == 403 else "SoException",
            "Access to the Dynamic archive provider is denied"
            if status == 403
            else f"The Dynamic archive provider failed (HTTP {status})",
        )
    if so.dynamic_fail_after is not None and so._dynamic_served >= so.dynamic_fail_after:
        raise SOError(500, "SoException", "An unexpected error occurred on the server")
    try:
        query = archive_query.parse_query(so._dynamic_tables, request.query)
        page = archive_query.run(query)
    except archive_query.DynamicQueryError as exc:
        raise SOError(400, "SoArchiveException", str(exc)) from None
    for _, row in page:  # sizes need the bytes: make lazy pictures off the event loop
        blob = row if isinstance(row, SOImage) else so.state.blobs.get(getattr(row, "blob_id", -1))
        if blob is not None and not blob.resolved:
            await asyncio.to_thread(blob.content)
    rows = archive_query.render(query, page, so_date, numeric_pk=so.dynamic_numeric_primary_key)
    so._dynamic_served += 1
    metadata = f"{so.origin(request)}/{request.match_info['cust']}/api/v1/Archive/$metadata"
    return web.json_response({"odata.metadata": metadata, "odata.nextLink": None, "value": rows})


# -- entities ---------------------------------------------------------------------------------


async def _get_entity(so: SuperOfficeEmulator, kind: SOKind, request: web.Request) -> web.Response:
    entity = so.entity(kind, request)
    headers = {"Last-Modified": http_date(entity.updated)}
    ims = request.headers.get("If-Modified-Since")
    if ims:
        try:
            since = email.utils.parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            since = None
        if since is not None and entity.updated <= utc(since):
            return web.Response(status=304, headers=headers)
    body = _contact_json(so, entity) if isinstance(entity, SOContact) else _person_json(so, entity)
    return web.json_response(body, headers=headers)


def _emails(address: str) -> list[dict[str, Any]]:
    if not address:
        return []
    return [{"Value": address, "StrippedValue": address.strip().lower(), "Description": "", "Rank": 1}]


def _contact_json(so: SuperOfficeEmulator, c: SOContact) -> dict[str, Any]:
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
        "Emails": _emails(c.email),
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


def _person_json(so: SuperOfficeEmulator, p: SOPerson) -> dict[str, Any]:
    contact = so.state.contacts.get(p.contact_id)
    return {
        "PersonId": p.person_id,
        "Firstname": p.first_name,
        "MiddleName": "",
        "Lastname": p.last_name,
        "FullName": p.full_name,
        "PersonNumber": p.person_number,
        "Title": p.title,
        "Emails": _emails(p.email),
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
