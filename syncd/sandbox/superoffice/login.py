"""SuperOffice emulator, handlers for discovery and login: one per documented endpoint (no auth).

``GET /{cust}/api`` (:func:`get_api_version`), ``GET /api/state/{cust}`` (:func:`get_tenant_state`) and
``POST /Login/api/PartnerSystemUser/Authenticate`` (:func:`authenticate_partner_system_user`: a signed
system user token → a JWT carrying a 7T ticket).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from syncd.sandbox.superoffice.credentials import (
    CLAIM_CTX,
    CLAIM_NETSERVER_URL,
    CLAIM_TICKET,
    CLAIM_WEBAPI_URL,
    JWT_LIFETIME,
    SIGNED_TOKEN_MAX_AGE,
    SIGNED_TOKEN_MAX_AHEAD,
    make_jwt,
)
from syncd.sandbox.superoffice.errors import SOError

if TYPE_CHECKING:
    from syncd.sandbox.superoffice.emulator import Ctx, SuperOfficeEmulator

RUNNING_STATES = frozenset({"Running", "OnlineMaintenance"})  # IsRunning is true only for these


async def get_api_version(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    base = f"{so.origin(request)}/{request.match_info['cust']}/api"
    return web.json_response({"v1": f"{base}/v1", "Version": "v1", "NetServerVersion": "10.3.8.0-sandbox"})


async def get_tenant_state(so: SuperOfficeEmulator, request: web.Request, ctx: Ctx) -> web.Response:
    cust = request.match_info["cust"]
    if cust.casefold() != so.tenant.casefold():
        raise SOError(404, "SoTenantNotFoundException", f"Tenant {cust!r} not found")
    endpoint = so.tenant_endpoint or f"{so.origin(request)}/{so.tenant}"
    valid = datetime.fromtimestamp(so.clock() + 3600, UTC)
    return web.json_response(
        {
            "ContextIdentifier": so.tenant,
            "Endpoint": endpoint,
            "State": so.tenant_state,
            "IsRunning": so.tenant_state in RUNNING_STATES,
            "ValidUntil": valid.strftime("%Y-%m-%dT%H:%M:%S.") + f"{valid.microsecond // 10000:02d}Z",
            "Api": f"{endpoint}/api",
        }
    )


async def authenticate_partner_system_user(
    so: SuperOfficeEmulator, request: web.Request, ctx: Ctx
) -> web.Response:
    """The system-user exchange. Failures answer HTTP 200 with ``IsSuccessful: false``: the
    documented client (derKosi SystemUserClient) reads the flag and message from a 200 body, so that
    is taken as the service's behaviour (inferred); only an unreadable request body gets 400."""

    def fail(message: str, status: int = 200) -> web.Response:
        return web.json_response(
            {"IsSuccessful": False, "Token": None, "ErrorMessage": message}, status=status
        )

    try:
        body = json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        return fail("The request body is not valid JSON", 400)
    if not isinstance(body, dict):
        return fail("The request body must be a JSON object", 400)
    signed = body.get("SignedSystemToken")
    app_token = body.get("ApplicationToken")
    context = body.get("ContextIdentifier")
    token_type = body.get("ReturnTokenType") or "JWT"
    if not isinstance(app_token, str) or app_token not in so.app_tokens:
        return fail("Invalid application token")
    if not isinstance(context, str) or context.casefold() != so.tenant.casefold():
        return fail(f"Unknown or inaccessible context identifier {context!r}")
    if not isinstance(token_type, str) or token_type.casefold() != "jwt":
        return fail("Unsupported ReturnTokenType; use JWT")
    if not isinstance(signed, str) or signed.count(".") < 2:
        return fail("SignedSystemToken is malformed")
    token, stamp, signature = signed.rsplit(".", 2)
    try:
        signed_at = datetime.strptime(stamp, "%Y%m%d%H%M").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return fail("SignedSystemToken timestamp is malformed (want UTC yyyyMMddHHmm)")
    age = so.clock() - signed_at
    if age > SIGNED_TOKEN_MAX_AGE or age < -SIGNED_TOKEN_MAX_AHEAD:
        return fail("SignedSystemToken has expired or its timestamp is not current")
    try:
        public_key = serialization.load_pem_public_key(so.app_tokens[app_token])
        if not isinstance(public_key, rsa.RSAPublicKey):
            return fail("The application's public key is not an RSA key")
        public_key.verify(
            base64.b64decode(signature, validate=True),
            f"{token}.{stamp}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        return fail("SignedSystemToken signature is not valid")
    if not hmac.compare_digest(token.encode(), so.system_user_token.encode()):
        return fail("Unknown system user token")
    ticket = so.issue_ticket("system-user", app_token)
    now = int(so.clock())
    origin = so.origin(request)
    claims = {
        "iss": "https://sod.superoffice.com",
        "sub": "system-user",
        "iat": now,
        "nbf": now,
        "exp": now + JWT_LIFETIME,
        CLAIM_TICKET: ticket,
        CLAIM_WEBAPI_URL: f"{origin}/{so.tenant}/api/",
        CLAIM_NETSERVER_URL: f"{origin}/{so.tenant}/Remote/Services88/",
        CLAIM_CTX: so.tenant,
        "http://schemes.superoffice.net/identity/associateid": "1",
        "http://schemes.superoffice.net/identity/upn": "SYSTEM",
        "http://schemes.superoffice.net/identity/is_administrator": "False",
    }
    return web.json_response({"IsSuccessful": True, "Token": make_jwt(claims), "ErrorMessage": None})
