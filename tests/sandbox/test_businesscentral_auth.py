"""Business Central emulator: bearer tokens on the API, expiry, revocation, permissions, on-prem Basic."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.bc_fixtures import (
    CLIENT_ID,
    COMPANY,
    CUST1,
    NOPERM_CLIENT_ID,
    NOPERM_SECRET,
    ONPREM_KEY,
    ONPREM_USER,
    RunningBC,
    basic,
    running_bc,
)

CHALLENGE_START = 'Bearer authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize"'


@pytest.fixture
async def bc() -> AsyncIterator[RunningBC]:
    async with running_bc() as running:
        yield running


async def test_missing_token_is_401_with_bearer_challenge(bc: RunningBC) -> None:
    resp = await bc.anon.get(f"{bc.company()}/customers")
    body = await resp.json()
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith(CHALLENGE_START)
    assert "error=" not in resp.headers["WWW-Authenticate"]  # RFC 6750: no error code without credentials
    assert body["error"]["code"] == "Authentication_InvalidCredentials"
    assert body["error"]["message"].startswith(
        "The server has rejected the client credentials.  CorrelationId:"
    )


async def test_unknown_token_is_401_invalid_token(bc: RunningBC) -> None:
    resp = await bc.anon.get(f"{bc.company()}/customers", headers={"Authorization": "Bearer eyJhbGciOi.x.y"})
    assert resp.status == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


async def test_basic_credentials_are_refused_online(bc: RunningBC) -> None:
    resp = await bc.anon.get(
        f"{bc.company()}/customers", headers={"Authorization": basic(ONPREM_USER, ONPREM_KEY)}
    )
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith(CHALLENGE_START)


async def test_expired_token_is_401_and_a_new_one_works() -> None:
    async with running_bc(token_lifetime=60) as bc:
        now = [1_700_000_000.0]
        bc.emulator.clock = lambda: now[0]
        token = await bc.token()
        headers = {"Authorization": f"Bearer {token}"}
        assert (await bc.anon.get(f"{bc.company()}/customers", headers=headers)).status == 200
        now[0] += 61
        resp = await bc.anon.get(f"{bc.company()}/customers", headers=headers)
        assert resp.status == 401
        assert "expired" in resp.headers["WWW-Authenticate"]
        assert (await resp.json())["error"]["code"] == "Authentication_InvalidCredentials"
        fresh = await bc.token()
        assert (
            await bc.anon.get(f"{bc.company()}/customers", headers={"Authorization": f"Bearer {fresh}"})
        ).status == 200


async def test_expires_in_follows_token_lifetime() -> None:
    async with running_bc(token_lifetime=120, authenticated=False) as bc:
        resp = await bc.anon.post(
            bc.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": "sandbox-bc-secret",
                "scope": "https://api.businesscentral.dynamics.com/.default",
            },
        )
        assert (await resp.json())["expires_in"] == 120


async def test_revocation_forces_a_refresh_mid_run(bc: RunningBC) -> None:
    assert (await bc.http.get(f"{bc.company()}/customers")).status == 200
    resp, body = await bc.admin("POST", "bc/revoke-tokens")
    assert resp.status == 200 and body["revoked"] >= 1
    assert (await bc.http.get(f"{bc.company()}/customers")).status == 401
    token = await bc.token()
    resp2 = await bc.anon.get(f"{bc.company()}/customers", headers={"Authorization": f"Bearer {token}"})
    assert resp2.status == 200


async def test_client_without_permission_sets_gets_403_on_data(bc: RunningBC) -> None:
    token = await bc.token(NOPERM_CLIENT_ID, NOPERM_SECRET)
    headers = {"Authorization": f"Bearer {token}"}
    resp = await bc.anon.get(f"{bc.company()}/customers({CUST1})/picture", headers=headers)
    body = await resp.json()
    assert resp.status == 403
    assert body["error"]["code"].startswith("Authorization_")
    assert "permissions" in body["error"]["message"]
    # listing companies works without permission sets, as in BC
    assert (await bc.anon.get(f"{bc.api()}/companies", headers=headers)).status == 200


async def test_no_permission_status_knob_gives_bcs_400() -> None:
    async with running_bc(no_permission_status=400) as bc:
        token = await bc.token(NOPERM_CLIENT_ID, NOPERM_SECRET)
        resp = await bc.anon.get(f"{bc.company()}/customers", headers={"Authorization": f"Bearer {token}"})
        body = await resp.json()
        assert resp.status == 400
        assert body["error"]["code"] == "Internal_ServerError"
        assert (
            "You do not have the following permissions on Page APIV2 - Customers" in body["error"]["message"]
        )


async def test_on_prem_basic_with_wrong_key_is_401(bc: RunningBC) -> None:
    url = f"{bc.origin}/BC/api/v2.0/companies({COMPANY})/customers"
    resp = await bc.anon.get(url, headers={"Authorization": basic(ONPREM_USER, "wrong")})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert (await resp.json())["error"]["code"] == "Authentication_InvalidCredentials"


async def test_on_prem_unknown_instance_is_404(bc: RunningBC) -> None:
    url = f"{bc.origin}/NAV/api/v2.0/companies"
    resp = await bc.anon.get(url, headers={"Authorization": basic(ONPREM_USER, ONPREM_KEY)})
    assert resp.status == 404


async def test_request_log_records_the_principal(bc: RunningBC) -> None:
    await bc.http.get(f"{bc.company()}/customers")
    await bc.anon.get(
        f"{bc.origin}/BC/api/v2.0/companies({COMPANY})/customers",
        headers={"Authorization": basic(ONPREM_USER, ONPREM_KEY)},
    )
    _, entries = await bc.admin("GET", "requests")
    api = [e for e in entries if "/api/" in e["route"]]
    assert [e["principal"] for e in api[-2:]] == [CLIENT_ID, ONPREM_USER]
    assert api[-1]["route"].startswith("/{instance}/api/{version}/companies")
