"""The Entra ID token endpoint served by the Business Central emulator: success and every failure."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.support.bc_fixtures import (
    CLIENT_ID,
    CLIENT_SECRET,
    COMPANY,
    SCOPE,
    TENANT,
    RunningBC,
    basic,
    running_bc,
)

CERT_CLIENT_ID = "00000000-0000-0000-0000-0000000000ce"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def cert_key() -> tuple[rsa.RSAPrivateKey, bytes]:
    """An RSA key and a self-signed certificate (PEM) for the certificate-credential client."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncd test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


def assertion(key: rsa.RSAPrivateKey, cert_pem: bytes, aud: str, **claims: Any) -> str:
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    header = {"alg": "RS256", "typ": "JWT", "x5t": b64url(hashlib.sha1(der).digest())}
    now = int(time.time())
    body = {
        "aud": aud,
        "iss": CERT_CLIENT_ID,
        "sub": CERT_CLIENT_ID,
        "jti": str(uuid.uuid4()),
        "nbf": now,
        "exp": now + 600,
        **claims,
    }
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(body).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


@pytest.fixture
async def bc(cert_key: tuple[rsa.RSAPrivateKey, bytes]) -> AsyncIterator[RunningBC]:
    async with running_bc(client_certificates={CERT_CLIENT_ID: cert_key[1]}, token_lifetime=1800) as running:
        yield running


def form(**overrides: str | None) -> dict[str, str]:
    data: dict[str, str | None] = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": SCOPE,
        **overrides,
    }
    return {k: v for k, v in data.items() if v is not None}


async def post(bc: RunningBC, data: dict[str, str], tenant: str = TENANT, **kwargs: Any) -> tuple[int, Any]:
    resp = await bc.anon.post(f"{bc.origin}/{tenant}/oauth2/v2.0/token", data=data, **kwargs)
    return resp.status, await resp.json()


def assert_entra_error(body: dict[str, Any], error: str, code: int) -> None:
    assert body["error"] == error
    assert body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert "Trace ID: " in body["error_description"] and "Correlation ID: " in body["error_description"]
    assert {"timestamp", "trace_id", "correlation_id", "error_uri"} <= set(body)
    assert CLIENT_SECRET not in json.dumps(body)


async def test_client_credentials_token_response_shape(bc: RunningBC) -> None:
    status, body = await post(bc, form())
    assert status == 200
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 1800 and body["ext_expires_in"] == 1800
    claims = json.loads(base64.urlsafe_b64decode(body["access_token"].split(".")[1] + "=="))
    assert claims["aud"] == "https://api.businesscentral.dynamics.com"
    assert claims["appid"] == CLIENT_ID and claims["tid"] == TENANT
    assert claims["exp"] - claims["iat"] == 1800


async def test_issued_token_opens_the_api(bc: RunningBC) -> None:
    _, body = await post(bc, form())
    resp = await bc.anon.get(
        f"{bc.api()}/companies({COMPANY})/customers",
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert resp.status == 200


async def test_client_secret_basic_authentication(bc: RunningBC) -> None:
    status, body = await post(
        bc,
        {"grant_type": "client_credentials", "scope": SCOPE},
        headers={"Authorization": basic(CLIENT_ID, CLIENT_SECRET)},
    )
    assert status == 200, body


async def test_wrong_secret_is_401_invalid_client(bc: RunningBC) -> None:
    status, body = await post(bc, form(client_secret="not-it"))
    assert status == 401
    assert_entra_error(body, "invalid_client", 7000215)
    assert "Invalid client secret provided" in body["error_description"]


async def test_no_credential_at_all_is_401(bc: RunningBC) -> None:
    status, body = await post(bc, form(client_secret=None))
    assert status == 401
    assert_entra_error(body, "invalid_client", 7000218)


async def test_unknown_client_is_400_unauthorized_client(bc: RunningBC) -> None:
    status, body = await post(bc, form(client_id="99999999-0000-0000-0000-000000000000"))
    assert status == 400
    assert_entra_error(body, "unauthorized_client", 700016)
    assert "was not found in the directory" in body["error_description"]


async def test_unknown_tenant_is_400_tenant_not_found(bc: RunningBC) -> None:
    status, body = await post(bc, form(), tenant="other-tenant")
    assert status == 400
    assert_entra_error(body, "invalid_request", 90002)
    assert "Tenant 'other-tenant' not found" in body["error_description"]


@pytest.mark.parametrize(
    "scope", ["https://api.businesscentral.dynamics.com/API.ReadWrite.All", "user_impersonation"]
)
async def test_scope_without_default_suffix_is_invalid_scope(bc: RunningBC, scope: str) -> None:
    status, body = await post(bc, form(scope=scope))
    assert status == 400
    assert_entra_error(body, "invalid_scope", 70011)


async def test_missing_scope_is_invalid_scope(bc: RunningBC) -> None:
    status, body = await post(bc, form(scope=None))
    assert status == 400
    assert_entra_error(body, "invalid_scope", 70011)


async def test_default_scope_of_another_resource_is_invalid_resource(bc: RunningBC) -> None:
    status, body = await post(bc, form(scope="https://graph.microsoft.com/.default"))
    assert status == 400
    assert_entra_error(body, "invalid_resource", 500011)


async def test_other_grant_type_is_unsupported_grant_type(bc: RunningBC) -> None:
    status, body = await post(bc, form(grant_type="password"))
    assert status == 400
    assert_entra_error(body, "unsupported_grant_type", 70003)


async def test_missing_grant_type_is_invalid_request(bc: RunningBC) -> None:
    status, body = await post(bc, form(grant_type=None))
    assert status == 400
    assert_entra_error(body, "invalid_request", 900144)
    assert "'grant_type'" in body["error_description"]


async def test_json_body_instead_of_form_is_rejected(bc: RunningBC) -> None:
    resp = await bc.anon.post(f"{bc.origin}/{TENANT}/oauth2/v2.0/token", json=form())
    assert resp.status == 400
    assert_entra_error(await resp.json(), "invalid_request", 900144)


# -- certificate credential (client_assertion) -------------------------------------------------------------
def assertion_form(jwt: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": CERT_CLIENT_ID,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": jwt,
        "scope": SCOPE,
    }


async def test_signed_client_assertion_gets_a_token(
    bc: RunningBC, cert_key: tuple[rsa.RSAPrivateKey, bytes]
) -> None:
    jwt = assertion(*cert_key, aud=bc.token_url)
    status, body = await post(bc, assertion_form(jwt))
    assert status == 200, body
    assert body["token_type"] == "Bearer"


async def test_assertion_for_the_public_login_audience_is_accepted(
    bc: RunningBC, cert_key: tuple[rsa.RSAPrivateKey, bytes]
) -> None:
    jwt = assertion(*cert_key, aud=f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
    status, _ = await post(bc, assertion_form(jwt))
    assert status == 200


async def test_assertion_signed_with_another_key_fails_signature_validation(
    bc: RunningBC, cert_key: tuple[rsa.RSAPrivateKey, bytes]
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwt = assertion(other, cert_key[1], aud=bc.token_url)
    status, body = await post(bc, assertion_form(jwt))
    assert status == 401
    assert_entra_error(body, "invalid_client", 700027)


async def test_expired_assertion_is_rejected(
    bc: RunningBC, cert_key: tuple[rsa.RSAPrivateKey, bytes]
) -> None:
    past = int(time.time()) - 7200
    jwt = assertion(*cert_key, aud=bc.token_url, nbf=past - 600, exp=past)
    status, body = await post(bc, assertion_form(jwt))
    assert status == 401
    assert_entra_error(body, "invalid_client", 700024)


async def test_assertion_for_another_audience_is_rejected(
    bc: RunningBC, cert_key: tuple[rsa.RSAPrivateKey, bytes]
) -> None:
    jwt = assertion(*cert_key, aud="https://example.com/token")
    status, body = await post(bc, assertion_form(jwt))
    assert status == 401
    assert body["error"] == "invalid_client"


async def test_garbage_assertion_is_invalid_request(bc: RunningBC) -> None:
    status, body = await post(bc, assertion_form("not.a.jwt"))
    assert status == 400
    assert_entra_error(body, "invalid_request", 50027)


async def test_token_endpoint_requests_are_logged_with_the_client_as_principal(bc: RunningBC) -> None:
    await post(bc, form())
    _, entries = await bc.admin("GET", "requests")
    token_calls = [e for e in entries if e["route"] == "/{tenant}/oauth2/v2.0/token" and e["status"] == 200]
    assert token_calls and token_calls[-1]["principal"] == CLIENT_ID
