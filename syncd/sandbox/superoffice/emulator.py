"""A faithful local emulator of the SuperOffice CRM Web API (REST ``/api/v1``), for tests and demos.

The package, by concern:

    app.py            the route table (the documented endpoints) and the aiohttp application built from it
    emulator.py       :class:`SuperOfficeEmulator`: configuration, credentials, the request pipeline (tenant,
                      maintenance state, authentication, throttling), fault replies, quirk knobs
    login.py          handlers: version discovery, tenant status, partner system-user login
    entities.py       handlers: Contact/Person archives, Archive/{provider}, Contact/{id}, Person/{id}
    images.py         handlers: {Contact|Person}/{id}/Image and …/ImageInfo
    admin.py          handlers: ``/_sandbox/so/...``
    odata.py          the Contact/Person archives' query options
    archive_query.py  the Dynamic archive provider (dot syntax over BinaryObject/BinaryObjectLink)
    rendering.py      scaled/converted pictures and placeholders for GET …/Image
    limits.py         throttling (``request_limit``)
    errors.py         SuperOffice's error replies
    credentials.py    sandbox credentials, RSA keys, JWTs, signed system user tokens
    state.py          the data model (:class:`SOState`); columns.py its archive columns; dates.py

What it serves (one tenant, default ``Cust00001``; every path matches case-insensitively, so
``Contact/7/Imageinfo`` and ``contact/7/ImageInfo`` are the same route, as on the real service):

    GET    /{cust}/api                                 version discovery (no auth)
    GET    /{cust}/api/v1/Contact                      SimpleContact archive (OData-ish query options)
    GET    /{cust}/api/v1/Person                       Person archive
    GET    /{cust}/api/v1/Archive/{provider}           SimpleContact | Contact | Person | SimplePerson, and
                                                       dynamic: dot syntax over BinaryObject and
                                                       BinaryObjectLink (archive_query.py)
    GET    /{cust}/api/v1/{Contact|Person}/{id}        entity JSON, Last-Modified, If-Modified-Since → 304
    GET    /{cust}/api/v1/{Contact|Person}/{id}/Image  as stored, or scaled/converted (w, h, type), ifBlank
    PUT    /{cust}/api/v1/{Contact|Person}/{id}/Image  raw image/* or multipart body → 200 blob id
    POST   /{cust}/api/v1/{Contact|Person}/{id}/Image  same as PUT
    DELETE /{cust}/api/v1/{Contact|Person}/{id}/Image  → 204
    GET    /{cust}/api/v1/{Contact|Person}/{id}/ImageInfo   BlobEntity, or 200 with an empty body
    PUT    /{cust}/api/v1/{Contact|Person}/{id}/ImageInfo   update Description / ExtraInfo
    POST   /Login/api/PartnerSystemUser/Authenticate   system-user token → JWT carrying a 7T ticket
    GET    /api/state/{cust}                           tenant status (no auth)

Auth: ``Basic`` (onsite style, ``users``), ``SOTicket 7T:…`` together with a known ``SO-AppToken`` header,
``Bearer 8A:…`` (tokens minted by the emulator). Anything else: 401 with
``WWW-Authenticate: Basic realm="SuperOffice Username or Ticket"`` and the SuperOffice error JSON.

Where the vendor documentation is silent the emulator picks the most plausible behaviour and says so in
a comment marked *inferred* (see /work/shared/reference/superoffice-api.md, which uses the same word).

Pictures live in the BinaryObject / BinaryObjectLink tables (``SOState.blobs``/``links``) that PUT/POST/
DELETE …/Image maintain: a replaced picture gets a new BinaryObject row and its link moves to it
(``image_replace_in_place`` updates the row instead: same blob id, ``updated``/``updatedCount`` move);
an entity shows the blob of its lowest-ranked picture link. ``request_limit=(COUNT, SECONDS)`` (``syncd
sandbox --so-rate-limit``) answers 429 with Retry-After beyond COUNT requests per principal in any
SECONDS.

Sandbox-only control routes (no auth, never logged, never faulted), besides the common ones:

    GET    /_sandbox/so/snapshot                       every contact/person/picture (JSON)
    POST   /_sandbox/so/{contact|person}               create (JSON body of archive columns) → row
    PATCH  /_sandbox/so/{contact|person}/{id}          edit archive columns; bumps the updated date
                                                       unless the body sets it or ``?touch=false``
    PUT    /_sandbox/so/{contact|person}/{id}/image    set the picture ("edited by hand"), raw body
    DELETE /_sandbox/so/{contact|person}/{id}/image    clear the picture
    GET    /_sandbox/so/options, PUT same              emulator quirk knobs (``admin.SO_OPTIONS``)
    GET    /_sandbox/so/tenant, PUT same               ``{"state": ..., "endpoint": ...}`` for /api/state
    POST   /_sandbox/so/tickets                        mint a ticket and a bearer token
    DELETE /_sandbox/so/tickets                        revoke every ticket and minted bearer token
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from syncd.sandbox.common import PRINCIPAL, Emulator, Faults, retry_after_value
from syncd.sandbox.superoffice.app import build_app
from syncd.sandbox.superoffice.archive_query import dynamic_tables
from syncd.sandbox.superoffice.columns import SOKind
from syncd.sandbox.superoffice.credentials import (
    SANDBOX_SO_APP_TOKEN,
    SANDBOX_SO_BEARER_TOKEN,
    SANDBOX_SO_PASSWORD,
    SANDBOX_SO_SYSTEM_USER_TOKEN,
    SANDBOX_SO_TENANT,
    SANDBOX_SO_USER,
    sandbox_app_public_key_pem,
)
from syncd.sandbox.superoffice.errors import SOError, maintenance_page, so_error
from syncd.sandbox.superoffice.limits import RequestWindow
from syncd.sandbox.superoffice.login import RUNNING_STATES
from syncd.sandbox.superoffice.state import SOEntity, SOState

_WWW_AUTHENTICATE = 'Basic realm="SuperOffice Username or Ticket"'


@dataclass
class _Grant:
    principal: str
    expires: float
    app_token: str | None = None  # tickets are bound to the app that obtained them
    sliding: bool = True


@dataclass(slots=True)
class Ctx:
    """What the pipeline established for one API request."""

    principal: str | None  # None on the public routes


#: An API handler: ``(emulator, request, ctx)``; errors are raised as :class:`SOError`.
ApiHandler = Callable[["SuperOfficeEmulator", web.Request, Ctx], Awaitable[web.StreamResponse]]


class SuperOfficeEmulator(Emulator):
    """The SuperOffice Web API for one tenant, backed by an ``SOState``.

    Knobs: ``ticket_lifetime`` (sliding, seconds), ``image_updates_touch_updated_date`` (picture writes
    also move the entity's updated date), ``json_image_on_json_accept`` (GET Image answers a JSON base64
    string when the client accepts only JSON, like the agent endpoints and the doc samples).
    """

    api_name = "superoffice"

    def __init__(
        self,
        state: SOState,
        *,
        tenant: str = SANDBOX_SO_TENANT,
        users: dict[str, str] | None = None,
        app_tokens: dict[str, bytes] | None = None,
        system_user_token: str = SANDBOX_SO_SYSTEM_USER_TOKEN,
        ticket_lifetime: float = 6 * 3600,
        bearer_tokens: dict[str, str] | None = None,
        bearer_lifetime: float = 3600.0,
        image_updates_touch_updated_date: bool = False,
        json_image_on_json_accept: bool = False,
        image_replace_in_place: bool = False,
        request_limit: tuple[int, float] | None = None,
        faults: Faults | None = None,
    ) -> None:
        super().__init__(faults)
        self.state = state
        state.image_replace_in_place = image_replace_in_place
        #: Throttling as ``--so-rate-limit COUNT/SECONDS``: at most COUNT requests per principal in any
        #: SECONDS, then 429 with Retry-After (inferred: SuperOffice documents no limit, only that it
        #: "may throttle"; a third-party SDK says 10 calls per second).
        self.request_limit = request_limit
        self._window = RequestWindow()
        #: Dynamic archive provider knobs: answer every query with this error status (0: normally), e.g.
        #: 403 as a tenant that does not allow it; fail with 500 after this many answered queries
        #: (an interrupted pass; None: never); PrimaryKey as a number instead of the documented string.
        self.dynamic_provider_status = 0
        self.dynamic_fail_after: int | None = None
        self.dynamic_numeric_primary_key = False
        self._dynamic_served = 0
        self._dynamic_tables = dynamic_tables(state)
        state.clock = lambda: self.clock()
        if not state.has_checkpoint:
            state.checkpoint()
        self.tenant = tenant
        self.users = {SANDBOX_SO_USER: SANDBOX_SO_PASSWORD} if users is None else dict(users)
        self.app_tokens = (
            {SANDBOX_SO_APP_TOKEN: sandbox_app_public_key_pem()} if app_tokens is None else dict(app_tokens)
        )
        self.system_user_token = system_user_token
        self.ticket_lifetime = float(ticket_lifetime)
        self.bearer_lifetime = bearer_lifetime
        self.image_updates_touch_updated_date = image_updates_touch_updated_date
        self.json_image_on_json_accept = json_image_on_json_accept
        self.tenant_state = "Running"
        self.tenant_endpoint: str | None = None  # None: this server's own origin
        self._fixed_bearer = (
            {SANDBOX_SO_BEARER_TOKEN: "bearer:sandbox"}
            if bearer_tokens is None
            else {t: f"bearer:{p}" for t, p in bearer_tokens.items()}
        )
        self._grants: dict[str, _Grant] = {}  # "7T:…" tickets and minted "8A:…" tokens
        self._basic_cache: dict[str, str] = {}  # Authorization header → principal (users are fixed)

    def principal_of(self, request: web.Request) -> str | None:
        return request.get(PRINCIPAL)

    @property
    def image_replace_in_place(self) -> bool:
        return self.state.image_replace_in_place

    @image_replace_in_place.setter
    def image_replace_in_place(self, value: bool) -> None:
        self.state.image_replace_in_place = value

    # -- credentials ------------------------------------------------------------------------------
    def issue_ticket(self, principal: str = "system-user", app_token: str | None = None) -> str:
        """A new ``7T:`` ticket (use with ``Authorization: SOTicket`` and ``SO-AppToken``)."""
        ticket = "7T:" + base64.b64encode(secrets.token_bytes(36)).decode("ascii")
        app = app_token if app_token is not None else next(iter(self.app_tokens), None)
        self._grants[ticket] = _Grant(principal, self.clock() + self.ticket_lifetime, app, sliding=True)
        return ticket

    def issue_bearer_token(self, principal: str = "bearer") -> str:
        """A new ``8A:`` access token valid for ``bearer_lifetime`` seconds (not sliding)."""
        token = f"8A:{self.tenant}." + base64.b64encode(secrets.token_bytes(36)).decode("ascii")
        self._grants[token] = _Grant(
            f"bearer:{principal}", self.clock() + self.bearer_lifetime, sliding=False
        )
        return token

    def revoke_all(self) -> None:
        """Invalidate every ticket and minted bearer token (the next call with one gets 401)."""
        self._grants.clear()

    def _authenticate(self, request: web.Request) -> str | None:
        """The principal the request authenticates as, or None."""
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        scheme = scheme.casefold()
        credential = credential.strip()
        if scheme == "basic":
            cached = self._basic_cache.get(header)
            if cached is not None:
                return cached
            try:
                user, _, password = base64.b64decode(credential, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            expected = self.users.get(user)
            if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
                return None
            if len(self._basic_cache) < 1024:
                self._basic_cache[header] = user
            return user
        if scheme == "soticket":
            app_token = request.headers.get("SO-AppToken")
            if not credential.startswith("7T:") or app_token is None or app_token not in self.app_tokens:
                return None  # a ticket without a known SO-AppToken is refused (inferred)
            grant = self._grant(credential)
            if grant is None or (grant.app_token is not None and grant.app_token != app_token):
                return None
            return grant.principal
        if scheme == "bearer" and credential.startswith("8A:"):
            fixed = self._fixed_bearer.get(credential)
            if fixed is not None:
                return fixed
            grant = self._grant(credential)
            return None if grant is None else grant.principal
        return None

    def _grant(self, token: str) -> _Grant | None:
        grant = self._grants.get(token)
        if grant is None:
            return None
        now = self.clock()
        if now >= grant.expires:
            del self._grants[token]
            return None
        if grant.sliding:
            grant.expires = now + self.ticket_lifetime
        return grant

    # -- app --------------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        """The aiohttp application: the route table of ``app.py``, the admin routes."""
        return build_app(self)

    def endpoint(
        self, handler: ApiHandler, *, public: bool = False, tenant_scoped: bool = True
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The request pipeline around one API handler: tenant check, maintenance state, authentication
        and throttling, then the handler; an :class:`SOError` raised anywhere becomes its reply."""

        async def endpoint(request: web.Request) -> web.StreamResponse:
            try:
                if tenant_scoped:
                    cust = request.match_info.get("cust", "")
                    if cust.casefold() != self.tenant.casefold():
                        # Inferred: the online load balancer's answer for an unknown tenant is undocumented.
                        raise SOError(404, "SoTenantNotFoundException", f"Tenant {cust!r} not found")
                    if self.tenant_state not in RUNNING_STATES:
                        return maintenance_page()
                principal = None
                if not public:
                    principal = self._authenticate(request)
                    if principal is None:
                        raise SOError(
                            401,
                            "UnauthorizedAccessException",
                            "Authentication failed: missing, invalid or expired credentials",
                            **{"WWW-Authenticate": _WWW_AUTHENTICATE},
                        )
                    request[PRINCIPAL] = principal
                    self._count_rate(principal)
                return await handler(self, request, Ctx(principal))
            except SOError as err:
                return err.response()

        return endpoint

    def _count_rate(self, principal: str) -> None:
        if self.request_limit is None:
            return
        count, window = self.request_limit
        wait = self._window.hit(principal, self.clock(), count, window)
        if wait is not None:
            raise SOError(
                429,
                "TooManyRequestsException",
                f"Too many requests: at most {count} per {window:g} seconds",
                **{"Retry-After": str(max(1, math.ceil(wait)))},
            )

    def fault_response(self, kind: str, request: web.Request) -> web.Response:
        """Injected faults in SuperOffice's shapes: 429 with Retry-After as the knobs ask; for 5xx one
        of 503 + Retry-After (SO error JSON), 500 (SO error JSON) or the HTML maintenance page (503)."""
        faults = self.fault_state.faults
        retry_after, _ = retry_after_value(faults, self.clock())
        extra = {"Retry-After": retry_after} if retry_after is not None else {}
        if kind == "429":
            # Inferred: no throttling response is documented; SuperOffice reserves the right to throttle.
            return so_error(429, "TooManyRequestsException", "Too many requests; slow down", **extra)
        variant = self.fault_state.rng.choice(("503", "500", "maintenance"))
        if variant == "503":
            return so_error(
                503, "ServiceUnavailableException", "The service is temporarily unavailable", **extra
            )
        if variant == "500":
            return so_error(500, "SoException", "An unexpected error occurred on the server")
        return maintenance_page()

    def reset_data(self) -> None:
        self.state.restore()
        self._dynamic_tables = dynamic_tables(self.state)
        self.tenant_state = "Running"
        self.tenant_endpoint = None

    # -- helpers ----------------------------------------------------------------------------------
    def origin(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def entity(self, kind: SOKind, request: web.Request, *, status: int = 404) -> SOEntity:
        """The entity the path's ``{id}`` names; else 404 (or ``status``) in SuperOffice's shape."""
        raw = request.match_info["id"]
        label = "Contact" if kind == "contact" else "Person"
        try:
            entity_id = int(raw)
        except ValueError:
            entity_id = None
        entity = self.state.entity(kind, entity_id) if entity_id is not None else None
        if entity is None:
            error_type = "SoNotFoundException" if status == 404 else "ArgumentException"
            raise SOError(status, error_type, f"{label} id {raw} not found")
        return entity
