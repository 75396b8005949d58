"""Business Central emulator, handlers for companies and records: one per documented endpoint.

``GET companies`` (:func:`list_companies`), ``GET companies({c})`` (:func:`get_company`), ``GET {set}``
(:func:`list_records`: ``$filter``, ``$select``, ``$expand=picture``, ``$orderby``, ``$top``, ``$skip``,
``$count`` and server-driven paging with ``Preference-Applied`` and an absolute ``@odata.nextLink``) and
``GET {set}({id})`` (:func:`get_record`), where ``{set}`` is customers, vendors, employees or items.
Any other verb on these resources is the 405 BC answers (the ``*_not_allowed`` handlers), and a path
that names no resource gets :func:`unknown_segment`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from syncd.sandbox.businesscentral.errors import (
    ODataError,
    _method_not_allowed,
    _segment_not_found,
    _syntax_error,
)
from syncd.sandbox.businesscentral.odata import (
    QUERY_OPTIONS,
    FilterCompiler,
    _company_getter,
    _decode_skiptoken,
    _encode_skiptoken,
    _Expand,
    _nonneg_int,
    _pick,
    _resume_position,
    _sort_key_of,
    parse_expand,
    parse_maxpagesize,
    parse_orderby,
    parse_select,
    record_getter,
)
from syncd.sandbox.businesscentral.pictures import picture_json
from syncd.sandbox.businesscentral.state import (
    COMPANY_KINDS,
    ENTITY_SETS,
    BCCompany,
    BCRecord,
    EntitySchema,
    format_datetime,
)

if TYPE_CHECKING:
    from syncd.sandbox.businesscentral.emulator import BusinessCentralEmulator, Ctx

_QUERY_SAFE = "$'(),:/@!*;-._~"  # never '+' (it would come back as a space) nor '&', '='


# -- companies -------------------------------------------------------------------------------------
async def list_companies(bc: BusinessCentralEmulator, request: web.Request, ctx: Ctx) -> web.StreamResponse:
    companies = list(bc.state.companies.values())
    flt = request.query.get("$filter")
    if flt is not None:
        pred = FilterCompiler(flt, COMPANY_KINDS, _company_getter, "company").compile()
        companies = [c for c in companies if pred(c)]
    select = parse_select(request.query.get("$select"), COMPANY_KINDS, "company")
    rows = [_pick(c.as_json(), select) for c in companies]
    return bc.odata_json({"@odata.context": f"{ctx.base}/$metadata#companies", "value": rows})


async def companies_not_allowed(
    bc: BusinessCentralEmulator, request: web.Request, ctx: Ctx
) -> web.StreamResponse:
    raise _method_not_allowed(request.method, "companies", "EntitySet")


async def get_company(bc: BusinessCentralEmulator, request: web.Request, ctx: Ctx) -> web.StreamResponse:
    company = bc.resolve_company(request)
    select = parse_select(request.query.get("$select"), COMPANY_KINDS, "company")
    body = {
        "@odata.context": f"{ctx.base}/$metadata#companies/$entity",
        **_pick(company.as_json(), select),
    }
    return bc.odata_json(body)


async def company_not_allowed(
    bc: BusinessCentralEmulator, request: web.Request, ctx: Ctx
) -> web.StreamResponse:
    raise _method_not_allowed(request.method, "companies", "Entity")


async def unknown_segment(bc: BusinessCentralEmulator, request: web.Request, ctx: Ctx) -> web.StreamResponse:
    tail = request.match_info.get("tail", "")
    known = ("companies", *ENTITY_SETS, "picture", "pictureContent", "content")
    for segment in tail.split("/"):
        name = segment.split("(", 1)[0]
        if name not in known:
            raise _segment_not_found(name or tail)
    raise _syntax_error()


# -- records ---------------------------------------------------------------------------------------
async def list_records(bc: BusinessCentralEmulator, request: web.Request, ctx: Ctx) -> web.StreamResponse:
    """``GET {set}``: list_customers, list_vendors, list_employees and list_items in one."""
    schema = bc.resolve_set(request)
    company = bc.resolve_company(request)
    q = request.query
    kinds = schema.kinds
    for key in q:
        if key.startswith("$") and key not in QUERY_OPTIONS:
            raise ODataError(400, "BadRequest", f"The query parameter '{key}' is not supported.")
    select = parse_select(q.get("$select"), kinds, schema.type_name)
    expand = parse_expand(q.get("$expand"), ctx.version, schema.type_name)
    rows: list[BCRecord] = bc.state.records(company.id, schema.entity_set)
    getter = record_getter(schema)
    if "$filter" in q:
        pred = FilterCompiler(q["$filter"], kinds, getter, schema.type_name).compile()
        rows = [r for r in rows if pred(r)]
    orderby = parse_orderby(q.get("$orderby"), kinds, schema.type_name)
    for name, desc in reversed(orderby):  # stable sorts, last key first
        rows = sorted(rows, key=_sort_key_of(getter(name)), reverse=desc)
    total = len(rows)

    # Page size: the Prefer header, else what the skiptoken remembers, capped at the maximum.
    max_page = bc.limits.max_page_size
    preferred = parse_maxpagesize(request.headers.get("Prefer"))
    if preferred is not None and preferred > max_page and bc.limits.oversize_page_preference == "413":
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

    body: dict[str, Any] = {"@odata.context": _collection_context(ctx, company, schema, select)}
    if q.get("$count", "").lower() == "true":
        body["@odata.count"] = total
    body["value"] = [_row(ctx, company, schema, rec, select, expand) for rec in page]
    if end < len(rows) and (left is None or left > 0) and page:
        next_token = {"pos": end, "after": page[-1].id, "n": page_size, "top": left}
        body["@odata.nextLink"] = _next_link(request, _encode_skiptoken(next_token))
    headers = {"Preference-Applied": f"odata.maxpagesize={page_size}"} if preferred is not None else None
    return bc.odata_json(body, headers=headers)


async def records_not_allowed(
    bc: BusinessCentralEmulator, request: web.Request, ctx: Ctx
) -> web.StreamResponse:
    schema = bc.resolve_set(request)
    raise _method_not_allowed(request.method, schema.entity_set, "EntitySet")


async def get_record(bc: BusinessCentralEmulator, request: web.Request, ctx: Ctx) -> web.StreamResponse:
    """``GET {set}({id})``: get_customer, get_vendor, get_employee and get_item in one."""
    company, schema, rec = bc.resolve_record(request)
    select = parse_select(request.query.get("$select"), schema.kinds, schema.type_name)
    expand = parse_expand(request.query.get("$expand"), ctx.version, schema.type_name)
    body = {
        "@odata.context": f"{ctx.base}/$metadata#companies({company.id})/{schema.entity_set}/$entity",
        **_row(ctx, company, schema, rec, select, expand),
    }
    return bc.odata_json(body)


async def record_not_allowed(
    bc: BusinessCentralEmulator, request: web.Request, ctx: Ctx
) -> web.StreamResponse:
    schema = bc.resolve_set(request)
    raise _method_not_allowed(request.method, schema.entity_set, "Entity")


# -- rendering -------------------------------------------------------------------------------------
def _collection_context(ctx: Ctx, company: BCCompany, schema: EntitySchema, select: list[str] | None) -> str:
    context = f"{ctx.base}/$metadata#companies({company.id})/{schema.entity_set}"
    if select is not None:
        context += "(" + ",".join(select) + ")"
    return context


def _next_link(request: web.Request, token: str) -> str:
    path = request.raw_path.split("?", 1)[0]
    params = [(k, v) for k, v in request.query.items() if k != "$skiptoken"]
    params.append(("$skiptoken", token))
    query = "&".join(f"{quote(k, safe='$')}={quote(v, safe=_QUERY_SAFE)}" for k, v in params)
    return f"{request.scheme}://{request.host}{path}?{query}"


def _row(
    ctx: Ctx,
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
        picture = picture_json(ctx, company, schema, rec, expand.picture_select)
        row["picture"] = picture if ctx.version == "v2.0" else [picture]
    return row
