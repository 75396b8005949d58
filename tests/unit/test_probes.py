"""The clients' probe verbs and URL helpers against the sandbox emulators: what ``syncd check`` and the
daemon's readiness both ask of SuperOffice and Business Central (reachable, signed in, allowed to read,
the company exists), and the vendor URLs defined once in each client module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from syncd import businesscentral, superoffice
from syncd.auth import BasicAuth, BearerAuth
from syncd.businesscentral import BusinessCentralClient, CompanyDirectory
from syncd.config import ApiLimits
from syncd.errors import AuthError, ConfigError
from syncd.http import ApiClient, new_session
from syncd.sandbox.superoffice import SANDBOX_SO_PASSWORD, SANDBOX_SO_USER
from syncd.secrets import Secret
from syncd.superoffice import SuperOfficeClient
from tests.support.bc_fixtures import (
    CLIENT_ID,
    CLIENT_SECRET,
    COMPANY,
    NOPERM_CLIENT_ID,
    NOPERM_SECRET,
    RunningBC,
    running_bc,
)
from tests.support.so_fixtures import RunningSO

LIMITS = ApiLimits(requests_per_second=1000, concurrency=4, max_retries=0)


async def _so_api(so: RunningSO, password: str) -> AsyncIterator[ApiClient]:
    async with new_session() as session:
        yield ApiClient(
            api="superoffice",
            session=session,
            auth=BasicAuth(username=SANDBOX_SO_USER, password=Secret(password)),
            limits=LIMITS,
            base_url=so.api,
        )


@pytest.fixture
async def bc() -> AsyncIterator[RunningBC]:
    async with running_bc() as running:
        yield running


async def _bc_api(bc: RunningBC, client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> ApiClient:
    token = await bc.token(client_id, secret)
    return ApiClient(
        api="businesscentral",
        session=bc.anon,
        auth=BearerAuth(token=Secret(token)),
        limits=LIMITS,
        base_url=bc.api(),
    )


# -- SuperOffice ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["contact", "person"])
async def test_superoffice_probe_reads_one_row_of_each_kind(so: RunningSO, kind: Any) -> None:
    async for api in _so_api(so, SANDBOX_SO_PASSWORD):
        await SuperOfficeClient(api, so.api, max_image_bytes=10**6).probe(kind)


async def test_superoffice_probe_raises_on_a_wrong_password(so: RunningSO) -> None:
    async for api in _so_api(so, "wrong"):
        with pytest.raises(AuthError):
            await SuperOfficeClient(api, so.api, max_image_bytes=10**6).probe("contact")


async def test_superoffice_probe_read_hands_allowed_statuses_back(so: RunningSO) -> None:
    async for api in _so_api(so, "wrong"):
        resp = await superoffice.probe_read(api, so.api, "person", allow=(401,), what="read persons")
        assert resp.status == 401


def test_superoffice_urls_are_built_in_one_place() -> None:
    base = "https://sod2.superoffice.com/Cust1/api/v1"
    assert superoffice.entity_url(base, "contact") == f"{base}/Contact"
    assert superoffice.entity_url(base, "person") == f"{base}/Person"
    assert superoffice.login_url(base) == "https://sod.superoffice.com/login"
    assert superoffice.login_url("http://127.0.0.1:8101/Cust1/api/v1") == "http://127.0.0.1:8101/Login"
    assert superoffice.tenant_state_url(base, "Cust1") == "https://sod.superoffice.com/api/state/Cust1"
    assert superoffice.tenant_state_url("http://127.0.0.1:8101/Cust1/api/v1", "Cust1") is None


# -- Business Central ----------------------------------------------------------------------------------


async def test_bc_probe_resolves_the_company(bc: RunningBC) -> None:
    api = await _bc_api(bc)
    client = BusinessCentralClient(api, bc.api(), COMPANY)
    assert await client.probe() == COMPANY


async def test_bc_probe_raises_for_an_unknown_company(bc: RunningBC) -> None:
    api = await _bc_api(bc)
    with pytest.raises(ConfigError, match="not found"):
        await BusinessCentralClient(api, bc.api(), "No Such Company Ltd").probe()


async def test_bc_directory_probe_keeps_the_company_list(bc: RunningBC) -> None:
    api = await _bc_api(bc)
    directory = CompanyDirectory(api, bc.api())
    resp = await directory.probe(allow=(401, 403))
    assert resp.status == 200

    async def no_second_request(*args: object, **kwargs: object) -> None:
        raise AssertionError("GET /companies twice")

    api.request = no_second_request  # type: ignore[method-assign,assignment]
    company_id, _ = await directory.resolve(COMPANY)
    assert company_id == COMPANY


async def test_bc_probe_read_shows_a_missing_permission(bc: RunningBC) -> None:
    api = await _bc_api(bc, NOPERM_CLIENT_ID, NOPERM_SECRET)
    resp = await businesscentral.probe_read(
        api, bc.api(), COMPANY, "customers", allow=(401, 403), what="read customers"
    )
    assert resp.status in (401, 403)
    ok = await businesscentral.probe_read(await _bc_api(bc), bc.api(), COMPANY, "customers", what="read")
    assert ok.status == 200 and isinstance(ok.json()["value"], list)


def test_bc_urls_are_built_in_one_place() -> None:
    base = "https://api.businesscentral.dynamics.com/v2.0/T1/production/api/v2.0"
    assert businesscentral.companies_url(base) == f"{base}/companies"
    assert businesscentral.entity_url(base, "c1", "items") == f"{base}/companies(c1)/items"
    assert businesscentral.entity_url(base, "c1", "items", "i9") == f"{base}/companies(c1)/items(i9)"
    assert businesscentral.location(base) == ("T1", "production")


def test_the_clients_are_a_source_and_a_target() -> None:
    from syncd.storage import Source, Target

    api: Any = object()
    assert isinstance(SuperOfficeClient(api, "https://so.example/Cust1/api/v1", max_image_bytes=1), Source)
    assert isinstance(BusinessCentralClient(api, "https://bc.example/api/v2.0", "CRONUS"), Target)
    assert not isinstance(BusinessCentralClient(api, "https://bc.example/api/v2.0", "CRONUS"), Source)
