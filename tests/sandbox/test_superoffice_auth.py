"""Authentication: Basic, SOTicket + SO-AppToken, Bearer 8A, ticket expiry, and the system-user exchange."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from syncd.sandbox.superoffice import (
    CLAIM_TICKET,
    CLAIM_WEBAPI_URL,
    SANDBOX_APP_PRIVATE_KEY_PEM,
    SANDBOX_SO_APP_TOKEN,
    SANDBOX_SO_BEARER_TOKEN,
    SANDBOX_SO_JWT_PUBLIC_KEY_PEM,
    SANDBOX_SO_SYSTEM_USER_TOKEN,
    sign_system_user_token,
)
from tests.support.so_fixtures import RunningSO, SOFactory, basic, dt

NOW = dt("2024-05-01T00:00:00")
LOGIN = "/Login/api/PartnerSystemUser/Authenticate"


def b64url_json(part: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


def verify_jwt(token: str) -> dict[str, Any]:
    header, payload, signature = token.split(".")
    assert b64url_json(header)["alg"] == "RS256"
    key = serialization.load_pem_public_key(SANDBOX_SO_JWT_PUBLIC_KEY_PEM)
    assert isinstance(key, rsa.RSAPublicKey)
    sig = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    key.verify(sig, f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return b64url_json(payload)


def exchange_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "SignedSystemToken": sign_system_user_token(
            SANDBOX_SO_SYSTEM_USER_TOKEN, SANDBOX_APP_PRIVATE_KEY_PEM, NOW
        ),
        "ApplicationToken": SANDBOX_SO_APP_TOKEN,
        "ContextIdentifier": "Cust00001",
        "ReturnTokenType": "JWT",
    }
    body.update(overrides)
    return body


async def status_with(so: RunningSO, headers: dict[str, str]) -> int:
    async with so.anon.get(f"{so.api}/Contact/1", headers=headers) as r:
        await r.read()
        return r.status


async def test_missing_credentials_get_401_with_basic_challenge_and_error_json(so: RunningSO) -> None:
    async with so.anon.get(f"{so.api}/Contact") as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == 'Basic realm="SuperOffice Username or Ticket"'
        body = await r.json()
    assert body["Error"] is True and body["ErrorType"] and body["ErrorMessage"]
    assert body["ErrorSource"] == "SuperOffice.Services.Implementation"


@pytest.mark.parametrize(
    "authorization",
    [
        basic("syncd", "wrong"),
        basic("nobody", "sandbox-so-password"),
        "Basic !!!",
        "Negotiate abc",
        "Bearer 8A:Cust00001.unknown",
        "Bearer not-an-8a-token",
    ],
)
async def test_wrong_credentials_get_401(so: RunningSO, authorization: str) -> None:
    async with so.anon.get(f"{so.api}/Contact", headers={"Authorization": authorization}) as r:
        assert r.status == 401
        assert "WWW-Authenticate" in r.headers


async def test_basic_auth_is_accepted_and_recorded_as_principal(so: RunningSO) -> None:
    assert await status_with(so, {"Authorization": basic("syncd", "sandbox-so-password")}) == 200
    entries = await (await so.anon.get(f"{so.origin}/_sandbox/requests")).json()
    assert entries[-1]["principal"] == "syncd"
    assert entries[-1]["route"] == "/{cust}/api/v1/Contact/{id}"


async def test_soticket_needs_the_app_token_header(so: RunningSO) -> None:
    ticket = so.emulator.issue_ticket()
    assert (
        await status_with(so, {"Authorization": f"SOTicket {ticket}", "SO-AppToken": SANDBOX_SO_APP_TOKEN})
        == 200
    )
    assert await status_with(so, {"Authorization": f"SOTicket {ticket}"}) == 401
    assert await status_with(so, {"Authorization": f"SOTicket {ticket}", "SO-AppToken": "other-app"}) == 401
    assert (
        await status_with(so, {"Authorization": "SOTicket 7T:forged", "SO-AppToken": SANDBOX_SO_APP_TOKEN})
        == 401
    )


async def test_bearer_tokens_fixed_and_minted_are_accepted(so: RunningSO) -> None:
    assert await status_with(so, {"Authorization": f"Bearer {SANDBOX_SO_BEARER_TOKEN}"}) == 200
    minted = await (await so.anon.post(f"{so.origin}/_sandbox/so/tickets", json={"principal": "me"})).json()
    assert minted["bearer"].startswith("8A:Cust00001.")
    assert await status_with(so, {"Authorization": f"Bearer {minted['bearer']}"}) == 200
    headers = {"Authorization": f"SOTicket {minted['ticket']}", "SO-AppToken": SANDBOX_SO_APP_TOKEN}
    assert await status_with(so, headers) == 200
    entries = await (await so.anon.get(f"{so.origin}/_sandbox/requests")).json()
    assert entries[-1]["principal"] == "me"


async def test_revoking_tickets_makes_the_next_call_401(so: RunningSO) -> None:
    ticket = so.emulator.issue_ticket()
    headers = {"Authorization": f"SOTicket {ticket}", "SO-AppToken": SANDBOX_SO_APP_TOKEN}
    assert await status_with(so, headers) == 200
    await so.admin("DELETE", "so/tickets")
    assert await status_with(so, headers) == 401


async def test_tickets_expire_with_a_sliding_window(make_so: SOFactory) -> None:
    so = await make_so(ticket_lifetime=10.0)
    t = [1_000.0]
    so.emulator.clock = lambda: t[0]
    ticket = so.emulator.issue_ticket()
    headers = {"Authorization": f"SOTicket {ticket}", "SO-AppToken": SANDBOX_SO_APP_TOKEN}
    for now in (1_008.0, 1_016.0, 1_024.0):  # each use slides the window
        t[0] = now
        assert await status_with(so, headers) == 200
    t[0] = 1_034.5
    assert await status_with(so, headers) == 401
    t[0] = 1_035.0
    assert await status_with(so, headers) == 401  # stays expired


async def test_minted_bearer_tokens_expire_without_sliding(make_so: SOFactory) -> None:
    so = await make_so(bearer_lifetime=10.0)
    t = [1_000.0]
    so.emulator.clock = lambda: t[0]
    token = so.emulator.issue_bearer_token()
    t[0] = 1_009.0
    assert await status_with(so, {"Authorization": f"Bearer {token}"}) == 200
    t[0] = 1_010.5
    assert await status_with(so, {"Authorization": f"Bearer {token}"}) == 401


async def test_system_user_exchange_returns_a_signed_jwt_with_a_working_ticket(so: RunningSO) -> None:
    async with so.anon.post(so.origin + LOGIN, json=exchange_body()) as r:
        assert r.status == 200
        body = await r.json()
    assert body["IsSuccessful"] is True and body["ErrorMessage"] is None
    claims = verify_jwt(body["Token"])
    assert claims["nbf"] <= NOW.timestamp() < claims["exp"]
    ticket = claims[CLAIM_TICKET]
    assert ticket.startswith("7T:")
    webapi = claims[CLAIM_WEBAPI_URL]
    assert webapi == f"{so.origin}/Cust00001/api/"
    headers = {"Authorization": f"SOTicket {ticket}", "SO-AppToken": SANDBOX_SO_APP_TOKEN}
    async with so.anon.get(webapi + "v1/Contact", params={"$top": "1"}, headers=headers) as r:
        assert r.status == 200
    entries = await (await so.anon.get(f"{so.origin}/_sandbox/requests")).json()
    assert entries[-1]["principal"] == "system-user"


async def test_system_user_exchange_accepts_a_token_signed_a_few_minutes_ago(so: RunningSO) -> None:
    signed = sign_system_user_token(
        SANDBOX_SO_SYSTEM_USER_TOKEN, SANDBOX_APP_PRIVATE_KEY_PEM, NOW - timedelta(minutes=3)
    )
    async with so.anon.post(so.origin + LOGIN, json=exchange_body(SignedSystemToken=signed)) as r:
        assert (await r.json())["IsSuccessful"] is True


def _other_key_signature() -> str:
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return sign_system_user_token(SANDBOX_SO_SYSTEM_USER_TOKEN, pem, NOW)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"ApplicationToken": "not-our-app"}, "application token"),
        ({"ContextIdentifier": "Cust99999"}, "context identifier"),
        ({"ReturnTokenType": "SAML"}, "ReturnTokenType"),
        ({"SignedSystemToken": "garbage"}, "malformed"),
        ({"SignedSystemToken": f"{SANDBOX_SO_SYSTEM_USER_TOKEN}.2024-05-01.abc"}, "timestamp"),
        (
            {
                "SignedSystemToken": sign_system_user_token(
                    SANDBOX_SO_SYSTEM_USER_TOKEN, SANDBOX_APP_PRIVATE_KEY_PEM, NOW - timedelta(minutes=10)
                )
            },
            "expired",
        ),
        (
            {
                "SignedSystemToken": sign_system_user_token(
                    SANDBOX_SO_SYSTEM_USER_TOKEN, SANDBOX_APP_PRIVATE_KEY_PEM, NOW + timedelta(minutes=10)
                )
            },
            "not current",
        ),
        (
            {
                "SignedSystemToken": sign_system_user_token(
                    "someone-else-token", SANDBOX_APP_PRIVATE_KEY_PEM, NOW
                )
            },
            "system user token",
        ),
        ({"SignedSystemToken": "SENTINEL"}, "signature"),
    ],
)
async def test_system_user_exchange_failures_answer_is_successful_false(
    so: RunningSO, overrides: dict[str, Any], needle: str
) -> None:
    if overrides.get("SignedSystemToken") == "SENTINEL":
        overrides = {"SignedSystemToken": _other_key_signature()}
    async with so.anon.post(so.origin + LOGIN, json=exchange_body(**overrides)) as r:
        assert r.status == 200
        body = await r.json()
    assert body["IsSuccessful"] is False
    assert body["Token"] is None
    assert needle.casefold() in body["ErrorMessage"].casefold()


async def test_system_user_exchange_with_unreadable_body_is_400(so: RunningSO) -> None:
    async with so.anon.post(
        so.origin + LOGIN, data=b"{not json", headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400
        assert (await r.json())["IsSuccessful"] is False


async def test_login_path_is_case_insensitive(so: RunningSO) -> None:
    async with so.anon.post(so.origin + LOGIN.lower(), json=exchange_body()) as r:
        assert (await r.json())["IsSuccessful"] is True


async def test_tenant_state_needs_no_auth_and_reports_the_endpoint(so: RunningSO) -> None:
    async with so.anon.get(f"{so.origin}/api/state/Cust00001") as r:
        assert r.status == 200
        body = await r.json()
    assert body["ContextIdentifier"] == "Cust00001"
    assert body["Endpoint"] == f"{so.origin}/Cust00001"
    assert body["Api"] == f"{so.origin}/Cust00001/api"
    assert (body["State"], body["IsRunning"]) == ("Running", True)
    valid_until = datetime.fromisoformat(body["ValidUntil"].replace("Z", "+00:00"))
    assert valid_until > NOW.astimezone(UTC)
    async with so.anon.get(f"{so.origin}/api/state/Cust99999") as r:
        assert r.status == 404


async def test_offline_maintenance_turns_the_api_into_a_503_html_page(so: RunningSO) -> None:
    await so.admin(
        "PUT", "so/tenant", json={"state": "OfflineMaintenance", "endpoint": "https://sod3.example/Cust00001"}
    )
    body = await (await so.anon.get(f"{so.origin}/api/state/Cust00001")).json()
    assert (body["State"], body["IsRunning"], body["Endpoint"]) == (
        "OfflineMaintenance",
        False,
        "https://sod3.example/Cust00001",
    )
    async with so.http.get(f"{so.api}/Contact") as r:
        assert r.status == 503
        assert r.content_type == "text/html"
    await so.admin("POST", "reset?data=true")
    async with so.http.get(f"{so.api}/Contact") as r:
        assert r.status == 200
