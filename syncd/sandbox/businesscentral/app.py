"""Business Central emulator, the aiohttp application: the route table, then the code that builds it.

Every API path is an API root (``PREFIXES``; ``{v}`` is ``v2.0``, ``v1.0`` or ``beta``, keys are unquoted
GUIDs) followed by one of ``ROUTES``; a company is given in the path (``companies({c})/...``) or as a query
option (``{set}...?company={c}``), so every record route exists in both scopes. A ``*`` route answers
every other verb of that resource (BC's 405). Entity sets: customers, vendors, employees, items.

Each API route runs the pipeline of :meth:`BusinessCentralEmulator.endpoint` (root, authentication,
permissions, limits) and then its handler; ``ADMIN_ROUTES`` are the emulator's own control surface.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from syncd.sandbox.businesscentral import admin, pictures, records

if TYPE_CHECKING:
    from syncd.sandbox.businesscentral.emulator import ApiHandler, BusinessCentralEmulator


@dataclass(frozen=True, slots=True)
class Route:
    method: str  # "*": every verb without a route of its own on this path
    path: str  # after the API root; "{scope}" is "/companies({company_id})" or "" (?company=)
    handler: ApiHandler
    permission: bool = True  # False: also served to clients without permission sets (companies)


_CID = "{company_id:[^/()]*}"
_SET = "{entity_set:[A-Za-z][A-Za-z0-9]*}"
_RID = "{record_id:[^/()]*}"
_PID = "{picture_id:[^/()]*}"
_STREAM = "{stream:[A-Za-z][A-Za-z0-9]*}"
_V = r"{version:v2\.0|v1\.0|beta}"

# fmt: off
#: API roots: (kind, path). "online" takes a Bearer token; "onprem" Basic (user + web service access key)
#: or Bearer. The token endpoint, /{tenant}/oauth2/v2.0/token, is served by ``entra.py`` (§5).
PREFIXES: tuple[tuple[str, str], ...] = (
    ("online", "/v2.0/{tenant}/{environment}/api/" + _V),  # §1
    ("online", "/v2.0/{environment}/api/" + _V),  # tenant taken from the token
    ("online", r"/v1.0/{tenant}/api/{version:v1\.0|beta}"),  # the old online form (environment "production")
    ("onprem", "/{instance}/api/" + _V),
)
RECORD = f"{{scope}}/{_SET}({_RID})"
ROUTES: tuple[Route, ...] = (
    Route("GET",    "/companies",                          records.list_companies, permission=False),
    Route("*",      "/companies",                          records.companies_not_allowed, permission=False),
    Route("GET",    f"/companies({_CID})",                 records.get_company, permission=False),
    Route("*",      f"/companies({_CID})",                 records.company_not_allowed, permission=False),
    Route("GET",    f"{{scope}}/{_SET}",                   records.list_records),  # list_customers, ...
    Route("*",      f"{{scope}}/{_SET}",                   records.records_not_allowed),
    Route("GET",    RECORD,                                records.get_record),  # get_customer, ...
    Route("*",      RECORD,                                records.record_not_allowed),
    Route("GET",    f"{RECORD}/picture",                   pictures.get_picture),
    Route("DELETE", f"{RECORD}/picture",                   pictures.delete_picture),
    Route("PATCH",  f"{RECORD}/picture",                   pictures.patch_picture),
    Route("*",      f"{RECORD}/picture",                   pictures.picture_not_allowed),
    Route("GET",    f"{RECORD}/picture({_PID})",           pictures.get_picture),
    Route("DELETE", f"{RECORD}/picture({_PID})",           pictures.delete_picture),
    Route("PATCH",  f"{RECORD}/picture({_PID})",           pictures.patch_picture),
    Route("*",      f"{RECORD}/picture({_PID})",           pictures.picture_not_allowed),
    Route("GET",    f"{RECORD}/picture/{_STREAM}",         pictures.get_picture_content),  # pictureContent
    Route("PATCH",  f"{RECORD}/picture/{_STREAM}",         pictures.patch_picture_content),
    Route("*",      f"{RECORD}/picture/{_STREAM}",         pictures.picture_content_not_allowed),
    Route("GET",    f"{RECORD}/picture({_PID})/{_STREAM}", pictures.get_picture_content),  # v1.0/beta content
    Route("PATCH",  f"{RECORD}/picture({_PID})/{_STREAM}", pictures.patch_picture_content),
    Route("*",      f"{RECORD}/picture({_PID})/{_STREAM}", pictures.picture_content_not_allowed),
    Route("*",      "/{tail:.*}",                          records.unknown_segment),  # after everything else
)
#: The emulator's own routes (see ``admin.py`` and the common ones in ``common.py``).
ADMIN_ROUTES: tuple[tuple[str, str, admin.AdminHandler], ...] = (
    ("GET",    "/_sandbox/bc/snapshot",                                      admin.get_snapshot),
    ("PUT",    "/_sandbox/bc/companies/{company_id}/{entity_set}/{record_id}/picture", admin.set_picture),
    ("DELETE", "/_sandbox/bc/companies/{company_id}/{entity_set}/{record_id}/picture", admin.clear_picture),
    ("POST",   "/_sandbox/bc/revoke-tokens",                                 admin.revoke_tokens),
    ("GET",    "/_sandbox/bc/limits",                                        admin.get_limits),
    ("PUT",    "/_sandbox/bc/limits",                                        admin.put_limits),
)
# fmt: on
_SCOPES = (f"/companies({_CID})", "")  # companies({c})/... first, then ...?company={c}


def build_app(bc: BusinessCentralEmulator) -> web.Application:
    """The aiohttp application: common admin routes, BC admin routes, the token endpoint, the API."""
    app = web.Application(middlewares=[bc.middleware], client_max_size=bc.max_body_bytes)
    bc.add_admin_routes(app)
    for method, path, handler in ADMIN_ROUTES:
        if method == "GET":
            app.router.add_get(path, functools.partial(handler, bc))  # and HEAD
        else:
            app.router.add_route(method, path, functools.partial(handler, bc))
    bc.entra.add_routes(app)
    for kind, prefix in PREFIXES:
        for path, route in _expand_scopes():
            endpoint = bc.endpoint(kind, route.handler, needs_permission=route.permission)
            app.router.add_route(route.method, prefix + path, endpoint)
    return app


def _expand_scopes() -> list[tuple[str, Route]]:
    """``ROUTES`` with ``{scope}`` spelled out: unscoped routes, then each scope's routes, the tail last."""
    plain = [(r.path, r) for r in ROUTES if "{scope}" not in r.path and "{tail" not in r.path]
    scoped = [(r.path.replace("{scope}", s), r) for s in _SCOPES for r in ROUTES if "{scope}" in r.path]
    tail = [(r.path, r) for r in ROUTES if "{tail" in r.path]
    return plain + scoped + tail


__all__ = ["ADMIN_ROUTES", "PREFIXES", "ROUTES", "Route", "build_app"]
