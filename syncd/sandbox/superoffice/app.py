"""SuperOffice emulator, the aiohttp application: the route table, then the code that builds it.

One tenant (default ``Cust00001``); every path matches case-insensitively, so ``Contact/7/Imageinfo`` and
``contact/7/ImageInfo`` are the same route, as on the real service. Each API route runs the pipeline of
:meth:`SuperOfficeEmulator.endpoint` (tenant, maintenance state, authentication unless public,
throttling) and then its handler; ``ADMIN_ROUTES`` are the emulator's own control surface.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from syncd.sandbox.common import ADMIN_PREFIX
from syncd.sandbox.superoffice import admin, entities, images, login

if TYPE_CHECKING:
    from syncd.sandbox.superoffice.emulator import ApiHandler, SuperOfficeEmulator


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: ApiHandler
    public: bool = False  # True: no authentication
    tenant_scoped: bool = True  # {cust} must be this tenant, and the tenant must be running


API = "/{cust}/api/v1"
# fmt: off
ROUTES: tuple[Route, ...] = (
    Route("GET",    "/{cust}/api",                        login.get_api_version, public=True),
    Route("GET",    f"{API}/Contact",                     entities.list_contacts),
    Route("GET",    f"{API}/Contact/{{id}}",              entities.get_contact),
    Route("GET",    f"{API}/Contact/{{id}}/Image",        images.get_contact_image),
    Route("PUT",    f"{API}/Contact/{{id}}/Image",        images.put_contact_image),
    Route("POST",   f"{API}/Contact/{{id}}/Image",        images.post_contact_image),
    Route("DELETE", f"{API}/Contact/{{id}}/Image",        images.delete_contact_image),
    Route("GET",    f"{API}/Contact/{{id}}/ImageInfo",    images.get_contact_image_info),
    Route("PUT",    f"{API}/Contact/{{id}}/ImageInfo",    images.put_contact_image_info),
    Route("GET",    f"{API}/Person",                      entities.list_persons),
    Route("GET",    f"{API}/Person/{{id}}",               entities.get_person),
    Route("GET",    f"{API}/Person/{{id}}/Image",         images.get_person_image),
    Route("PUT",    f"{API}/Person/{{id}}/Image",         images.put_person_image),
    Route("POST",   f"{API}/Person/{{id}}/Image",         images.post_person_image),
    Route("DELETE", f"{API}/Person/{{id}}/Image",         images.delete_person_image),
    Route("GET",    f"{API}/Person/{{id}}/ImageInfo",     images.get_person_image_info),
    Route("PUT",    f"{API}/Person/{{id}}/ImageInfo",     images.put_person_image_info),
    Route("GET",    f"{API}/Archive/{{provider}}",        entities.get_archive),
    Route("POST",   "/{login:Login}/api/PartnerSystemUser/Authenticate",
                                                          login.authenticate_partner_system_user,
                                                          public=True, tenant_scoped=False),
    Route("GET",    "/{api:api}/state/{cust}",            login.get_tenant_state,
                                                          public=True, tenant_scoped=False),
)
#: The emulator's own routes (see ``admin.py`` and the common ones in ``common.py``).
ADMIN_ROUTES: tuple[tuple[str, str, admin.AdminHandler], ...] = (
    ("GET",    ADMIN_PREFIX + "so/snapshot",         admin.get_snapshot),
    ("GET",    ADMIN_PREFIX + "so/options",          admin.get_options),
    ("PUT",    ADMIN_PREFIX + "so/options",          admin.put_options),
    ("GET",    ADMIN_PREFIX + "so/tenant",           admin.get_tenant),
    ("PUT",    ADMIN_PREFIX + "so/tenant",           admin.put_tenant),
    ("POST",   ADMIN_PREFIX + "so/tickets",          admin.mint_tickets),
    ("DELETE", ADMIN_PREFIX + "so/tickets",          admin.revoke_tickets),
    ("POST",   ADMIN_PREFIX + "so/{kind}",           admin.create_entity),
    ("PATCH",  ADMIN_PREFIX + "so/{kind}/{id}",      admin.edit_entity),
    ("PUT",    ADMIN_PREFIX + "so/{kind}/{id}/image", admin.set_image),
    ("DELETE", ADMIN_PREFIX + "so/{kind}/{id}/image", admin.clear_image),
)
# fmt: on


class CaseInsensitiveResource(web.DynamicResource):
    """A route whose literal path parts match in any letter case, as SuperOffice's (IIS) routes do.

    Every such route starts with a variable segment, so aiohttp's per-prefix index files it under "/"
    and the case-insensitive pattern decides."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._pattern = re.compile(self._pattern.pattern, re.IGNORECASE)


def build_app(so: SuperOfficeEmulator) -> web.Application:
    """The aiohttp application: the API routes (one resource each), then the common and SO admin routes."""
    app = web.Application(middlewares=[so.middleware], client_max_size=256 * 2**20)
    for route in ROUTES:
        resource = CaseInsensitiveResource(route.path)
        app.router.register_resource(resource)
        resource.add_route(
            route.method, so.endpoint(route.handler, public=route.public, tenant_scoped=route.tenant_scoped)
        )
    so.add_admin_routes(app)
    for method, path, handler in ADMIN_ROUTES:
        if method == "GET":
            app.router.add_get(path, functools.partial(handler, so))  # and HEAD
        else:
            app.router.add_route(method, path, functools.partial(handler, so))
    return app
