"""What a final error answer becomes in :class:`syncd.http.ApiClient`: the 403 hint is the builder's.

The generic client carries no vendor's words: whoever builds it (``syncd.runtime``) passes the hint
that tells the user what to fix when the API refuses access.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from syncd.config import ApiLimits, parse_config
from syncd.errors import ExitCode, PermissionDeniedError
from syncd.http import ApiClient
from syncd.runtime import BC_PERMISSION_HINT, SO_PERMISSION_HINT, open_runtime


class Anonymous:
    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        return {}

    async def invalidate(self, sent_headers: Mapping[str, str]) -> bool:
        return False

    def describe(self) -> str:
        return "anonymous"


@pytest.mark.parametrize("hint", [BC_PERMISSION_HINT, SO_PERMISSION_HINT, None])
async def test_a_403_carries_the_permission_hint_its_builder_gave(hint: str | None) -> None:
    async def forbidden(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "Forbidden", "message": "no"}}, status=403)

    app = web.Application()
    app.router.add_get("/data", forbidden)
    server = TestServer(app, port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            api = ApiClient(
                api="someapi",
                session=session,
                auth=Anonymous(),
                limits=ApiLimits(requests_per_second=100, concurrency=1),
                base_url=str(server.make_url("/")),
                permission_hint=hint,
            )
            with pytest.raises(PermissionDeniedError) as e:
                await api.request("GET", str(server.make_url("/data")), what="read data")
    finally:
        await server.close()
    assert e.value.message == "read data: HTTP 403 Forbidden: no"
    assert e.value.exit_code == ExitCode.AUTH
    assert e.value.hint == (hint or "the someapi credentials lack rights for this data")


RUNTIME_CONFIG = """\
superoffice:
  base_url: http://127.0.0.1:8101/Cust00001/api/v1
  auth: {type: basic, username: syncd, password: pw}
businesscentral:
  base_url: http://127.0.0.1:8102/v2.0/t/production/api/v2.0
  company: CRONUS
  auth: {type: client_credentials, tenant_id: t, client_id: c, client_secret: s, token_url: http://x/t}
mappings:
  - {name: customers, source: contact, target: customers, match: {source: code, target: number}}
"""


async def test_the_runtime_gives_each_api_client_its_vendors_permission_hint() -> None:
    async with open_runtime(parse_config(RUNTIME_CONFIG), open_ledger=False) as rt:
        assert rt.bc_api.permission_hint == BC_PERMISSION_HINT
        assert rt.so_api.permission_hint == SO_PERMISSION_HINT
