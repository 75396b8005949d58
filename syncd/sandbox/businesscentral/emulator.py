"""A local Business Central API emulator: customers, vendors, employees, items and their pictures.

Built from the vendor documents summarised in ``reference/businesscentral-api.md`` (section numbers in
this package refer to it), not from what is convenient for syncd. The package, by concern:

    app.py        the route table (the documented endpoints) and the aiohttp application built from it
    emulator.py   :class:`BusinessCentralEmulator`: configuration, the request pipeline (API root,
                  authentication, permissions, limits), fault replies, resolving companies and records
    records.py    handlers: companies, customers/vendors/employees/items
    pictures.py   handlers: a record's picture and its media stream (upload: ``patch_picture_content``)
    admin.py      handlers: ``/_sandbox/bc/...``
    odata.py      ``$filter`` compiler, ``$select``/``$expand``/``$orderby``/paging
    errors.py     BC's error replies (:class:`ODataError`)
    limits.py     operational limits: rate window, concurrency gate, 408s
    state.py      the data model: schemas, records, pictures, etags, :class:`BCState`

Auth: Entra ID client credentials (``entra.py``) give Bearer tokens for the online routes; on-premises
routes take Basic (user + web service access key) or Bearer.

Choices the documents leave open (all marked "inferred" in the reference):
  * GET on the stream of an empty picture answers ``204 No Content``.
  * An upload whose bytes Pillow cannot identify is stored with width = height = 0 and a content type from
    the leading magic bytes, else ``application/octet-stream``.
  * ``Prefer: odata.maxpagesize`` above the maximum page size is capped (``oversize_page_preference="413"``
    turns it into the 413 of the limits table instead).
  * Deleting a picture that is already empty changes nothing (no etag bump), like a ``Modify`` with no
    changed field.
  * A client without permission sets may list companies (as observed in BC) but gets ``403``
    ``Authorization_InsufficientPermissions`` elsewhere (``no_permission_status=400`` gives the
    ``Internal_ServerError`` 400 that real tenants have been seen to send).
  * Only the documented verbs exist on a picture: PUT on the stream is 405 like POST; an ``If-Match`` that
    is not a well-formed etag (e.g. the JSON-escaped ``W/\"…\"``) is 400 ``BadRequest_InvalidToken``, a
    well-formed but outdated one is the stale-etag error.
  * v1.0/beta differ from v2.0 only where syncd meets them (the picture navigation and stream names);
    records carry the v2.0 property set in every dialect.
  * The request-rate limit is off unless asked for (``rate_limit=BC_RATE_LIMIT`` is BC's 6000 per 5 min);
    the concurrency cap of 5 per principal with a queue of 95 is on, as in BC.

Operational limits (§6, ``limits.py``) plus the shared fault knobs of ``common.py`` (5xx with
``retry-after`` on 502/503, 429, resets, slow bodies).

Admin API (no auth, never logged or faulted), besides the common ``/_sandbox/`` routes::

    GET    /_sandbox/bc/snapshot[?bytes=true]                      every company/record/picture (sha256)
    PUT    /_sandbox/bc/companies/{cid}/{set}/{id}/picture         raw body: set the picture "by hand in BC"
    DELETE /_sandbox/bc/companies/{cid}/{set}/{id}/picture         clear it by hand
    POST   /_sandbox/bc/revoke-tokens                              every issued token stops working
    GET    /_sandbox/bc/limits                                     limit knobs + per-principal gate stats
    PUT    /_sandbox/bc/limits                                     merge the given knobs; unknown keys → 400
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from syncd.sandbox.businesscentral.app import build_app
from syncd.sandbox.businesscentral.errors import (
    ODataError,
    _segment_not_found,
    error_response,
)
from syncd.sandbox.businesscentral.limits import BCLimits, ConcurrencyGate, SlidingWindow
from syncd.sandbox.businesscentral.odata import _key
from syncd.sandbox.businesscentral.state import (
    AUTHORIZATION_URI,
    BC_MAX_PAGE_SIZE,
    JSON_CONTENT_TYPE,
    MAX_BODY_BYTES,
    SCHEMAS,
    BCCompany,
    BCRecord,
    BCState,
    EntitySchema,
)
from syncd.sandbox.common import PRINCIPAL, Emulator, Faults, retry_after_value
from syncd.sandbox.entra import EntraEmulator, TokenProblem


@dataclass(slots=True)
class Ctx:
    """What the API root and authentication established for one API request."""

    version: str
    base: str  # absolute URL of the API root as the client addressed it
    principal: str


#: An API handler: ``(emulator, request, ctx)``; errors are raised as :class:`ODataError`.
ApiHandler = Callable[["BusinessCentralEmulator", web.Request, Ctx], Awaitable[web.StreamResponse]]

_COMPANY_NOT_FOUND = (
    "Cannot process the request because the default company cannot be found. You can specify a default "
    "company in the service configuration file, or specify one for each tenant, or you can add a query "
    'string in the form of "company=[name]". You can see the available companies by accessing the default '
    'OData web service, Company. For more information, see "OData Web Services" in Help'
)


class BusinessCentralEmulator(Emulator):
    """Serves a :class:`BCState` as Business Central's API (v2.0, v1.0, beta) plus the Entra token endpoint.

    Auth: ``clients`` (client id → secret) and ``client_certificates`` (client id → PEM certificate/public
    key for ``client_assertion``) may get tokens; ``basic_users`` (user → web service access key) may use
    the on-premises routes. ``clients_without_permissions`` authenticate but are refused data (403).
    The remaining keyword arguments are the :class:`BCLimits` knobs; ``instance`` names the on-prem server
    instance; ``beta_enabled=False`` retires the beta endpoint (404).
    """

    api_name = "businesscentral"

    def __init__(
        self,
        state: BCState,
        *,
        tenant: str = "sandbox-tenant",
        environment: str = "production",
        clients: dict[str, str] | None = None,
        basic_users: dict[str, str] | None = None,
        token_lifetime: float = 3599.0,
        faults: Faults | None = None,
        client_certificates: dict[str, bytes] | None = None,
        clients_without_permissions: Iterable[str] = (),
        instance: str = "BC",
        beta_enabled: bool = True,
        max_page_size: int = BC_MAX_PAGE_SIZE,
        oversize_page_preference: Literal["cap", "413"] = "cap",
        stale_etag_status: int = 409,
        no_permission_status: int = 403,
        rate_limit: tuple[int, float] | None = None,
        retry_after_on_429: bool = True,
        max_concurrent: int | None = 5,
        max_queue: int = 95,
        queue_timeout: float = 480.0,
        processing_ms: float = 0.0,
        rate_408: float = 0.0,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        super().__init__(faults)
        self.state = state
        self.tenant = tenant
        self.environment = environment
        self.instance = instance
        self.beta_enabled = beta_enabled
        self.basic_users: dict[str, str] = dict(basic_users or {})
        self.max_body_bytes = max_body_bytes
        self.entra = EntraEmulator(
            tenant=tenant,
            clients=clients,
            client_certificates=client_certificates,
            token_lifetime=token_lifetime,
            clock=lambda: self.clock(),
        )
        self.limits = BCLimits(
            rate_limit=rate_limit,
            retry_after_on_429=retry_after_on_429,
            max_concurrent=max_concurrent,
            max_queue=max_queue,
            queue_timeout=queue_timeout,
            processing_ms=processing_ms,
            rate_408=rate_408,
            max_page_size=max_page_size,
            oversize_page_preference=oversize_page_preference,
            stale_etag_status=stale_etag_status,
            no_permission_status=no_permission_status,
            clients_without_permissions=list(clients_without_permissions),
        )
        self.limits.validate()
        self.gate = ConcurrencyGate(lambda: self.limits)
        self.window = SlidingWindow()
        self._limit_rng = random.Random(0)
        self._saved: BCState | None = None

    def __repr__(self) -> str:
        return f"BusinessCentralEmulator(tenant={self.tenant!r}, environment={self.environment!r})"

    # -- wiring ------------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        """The aiohttp application: admin routes, the token endpoint and the API (``app.py``)."""
        self._saved = self.state.checkpoint()
        return build_app(self)

    def reset_data(self) -> None:
        if self._saved is not None:
            self.state.restore(self._saved)

    # -- request pipeline: prefix, auth, limits, handler --------------------------------------------
    def endpoint(
        self, kind: str, handler: ApiHandler, needs_permission: bool
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            try:
                ctx = self._open(request, kind)
                if needs_permission and ctx.principal in self.limits.clients_without_permissions:
                    raise self._no_permission(request)
                self._count_rate(ctx.principal)
                await self.gate.acquire(ctx.principal)
                try:
                    limits = self.limits
                    if limits.processing_ms > 0:
                        await asyncio.sleep(limits.processing_ms / 1000)
                    if limits.rate_408 > 0 and self._limit_rng.random() < limits.rate_408:
                        raise ODataError(
                            408, "Internal_RequestTimeout", "The operation timed out and was cancelled."
                        )
                    return await handler(self, request, ctx)
                finally:
                    self.gate.release(ctx.principal)
            except ODataError as err:
                return error_response(err.status, err.code, err.message, err.headers)

        return endpoint

    def _open(self, request: web.Request, kind: str) -> Ctx:
        info = request.match_info
        version = info["version"]
        if kind == "onprem":
            if info["instance"] != self.instance:
                raise ODataError(
                    404, "BadRequest_NotFound", f"The server instance '{info['instance']}' was not found."
                )
            principal = self._authenticate_onprem(request)
        else:
            principal, tenant = self._authenticate_bearer(request)
            url_tenant = info.get("tenant")
            if url_tenant is not None and url_tenant.lower() != tenant.lower():
                raise self._unauthorized("invalid_token", "The token is not valid for this tenant.")
            environment = info.get("environment", "production")
            if environment != self.environment:
                raise ODataError(
                    404, "BadRequest_NotFound", f"The environment '{environment}' does not exist."
                )
        request[PRINCIPAL] = principal
        if version == "beta" and not self.beta_enabled:
            raise _segment_not_found("beta")
        path = request.raw_path.split("?", 1)[0]
        marker = f"/api/{version}"
        base = path[: path.index(marker) + len(marker)]
        return Ctx(version=version, base=f"{request.scheme}://{request.host}{base}", principal=principal)

    def _authenticate_bearer(self, request: web.Request) -> tuple[str, str]:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if not header:
            raise self._unauthorized(None, None)
        if scheme.lower() != "bearer" or not credentials.strip():
            # Web service access keys (Basic) are not accepted online since 2022.
            raise self._unauthorized("invalid_token", "Only Bearer tokens are accepted.")
        try:
            issued = self.entra.validate(credentials.strip())
        except TokenProblem as problem:
            if problem.reason == "expired":
                raise self._unauthorized("invalid_token", "The access token has expired.") from None
            raise self._unauthorized("invalid_token", "The access token is invalid.") from None
        return issued.client_id, issued.tenant

    def _authenticate_onprem(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer":
            return self._authenticate_bearer(request)[0]
        challenge = {"WWW-Authenticate": 'Basic realm=""'}
        if scheme.lower() != "basic":
            raise ODataError(
                401,
                "Authentication_InvalidCredentials",
                "The server has rejected the client credentials.",
                challenge,
            )
        try:
            user, sep, key = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, sep, key = "", "", ""
        expected = self.basic_users.get(user)
        if not sep or expected is None or key != expected:
            raise ODataError(
                401,
                "Authentication_InvalidCredentials",
                "The server has rejected the client credentials.",
                challenge,
            )
        return user

    def _unauthorized(self, error: str | None, description: str | None) -> ODataError:
        challenge = f'Bearer authorization_uri="{AUTHORIZATION_URI}"'
        if error:
            challenge += f', error="{error}", error_description="{description}"'
        return ODataError(
            401,
            "Authentication_InvalidCredentials",
            "The server has rejected the client credentials.",
            {"WWW-Authenticate": challenge},
        )

    def _no_permission(self, request: web.Request) -> ODataError:
        segment = request.match_info.get("entity_set", "companies")
        page = {"customers": "Customers", "vendors": "Vendors", "employees": "Employees", "items": "Items"}
        message = (
            f"You do not have the following permissions on Page APIV2 - {page.get(segment, 'Companies')}: "
            "Execute.\r\n\r\nTo view details about your permissions, see the Effective Permissions page. To "
            "report a problem, refer to the following server session ID: '1'."
        )
        if self.limits.no_permission_status == 400:
            return ODataError(400, "Internal_ServerError", message)
        return ODataError(403, "Authorization_InsufficientPermissions", message)

    def _count_rate(self, principal: str) -> None:
        rate = self.limits.rate_limit
        if rate is None:
            return
        wait = self.window.hit(principal, self.clock(), rate[0], rate[1])
        if wait is None:
            return
        headers = {"Retry-After": str(max(1, math.ceil(wait)))} if self.limits.retry_after_on_429 else {}
        raise ODataError(
            429,
            "Application_TooManyRequests",
            f"Too many requests reached.  Actual ({rate[0] + 1}). Maximum ({rate[0]}) per {rate[1]:g} "
            "seconds.",
            headers,
        )

    # -- fault replies (common.Faults) -------------------------------------------------------------
    def fault_response(self, kind: str, request: web.Request) -> web.Response:
        faults = self.fault_state.faults
        if kind == "429":
            value, _ = retry_after_value(faults, self.clock())
            headers = {"Retry-After": value} if value is not None else {}
            return error_response(
                429,
                "Application_TooManyRequests",
                "Too many requests reached.  Actual (101). Maximum (100).",
                headers,
            )
        status = self.fault_state.rng.choice((500, 502, 503, 504))
        retry = {"retry-after": str(max(1, round(faults.retry_after_seconds)))}
        if status == 502:
            return error_response(
                502, "BadGateway", "The service is temporarily unavailable (bad gateway).", retry
            )
        if status == 503:
            return error_response(
                503,
                "Application_ServiceUnavailable",
                "The service is temporarily unavailable. Please retry.",
                retry,
            )
        if status == 504:
            return error_response(504, "GatewayTimeout", "The request exceeded the 10 minute execution time.")
        return error_response(500, "Internal_ServerError", "An unexpected error occurred on the server.")

    # -- resolution helpers --------------------------------------------------------------------------
    def resolve_company(self, request: web.Request) -> BCCompany:
        raw = request.match_info.get("company_id")
        if raw is None:
            raw = request.query.get("company")
            if not raw:
                raise ODataError(
                    400,
                    "Internal_CompanyNotFound",
                    _COMPANY_NOT_FOUND,
                )
            company = self.state.companies.get(raw.lower()) or self.state.company_by_name(raw)
        else:
            company = self.state.companies.get(_key(raw))
        if company is None:
            raise ODataError(404, "BadRequest_NotFound", f"The company '{raw}' does not exist.")
        return company

    def resolve_set(self, request: web.Request) -> EntitySchema:
        entity_set = request.match_info["entity_set"]
        schema = SCHEMAS.get(entity_set)
        if schema is None:
            raise _segment_not_found(entity_set)
        return schema

    def resolve_record(self, request: web.Request) -> tuple[BCCompany, EntitySchema, BCRecord]:
        schema = self.resolve_set(request)  # an unknown segment is a 404 before anything else
        rid = _key(request.match_info["record_id"])
        company = self.resolve_company(request)
        rec = company.by_id[schema.entity_set].get(rid)
        if rec is None:
            raise ODataError(
                404,
                "BadRequest_NotFound",
                f"The {schema.parent_type} does not exist. Identification fields and values: Id='{rid}'",
            )
        pid = request.match_info.get("picture_id")
        if pid is not None and _key(pid) != rec.id:
            raise ODataError(
                404,
                "BadRequest_NotFound",
                f"The picture does not exist. Identification fields and values: Id='{_key(pid)}'",
            )
        return company, schema, rec

    def odata_json(
        self, body: dict[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        return web.Response(
            status=status,
            body=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
            headers={"Content-Type": JSON_CONTENT_TYPE, "OData-Version": "4.0", **(headers or {})},
        )
