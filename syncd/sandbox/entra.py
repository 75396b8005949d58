"""The Microsoft Entra ID token endpoint, as a Business Central client meets it (client credentials).

Served on the Business Central emulator's port, like ``login.microsoftonline.com`` would be::

    POST /{tenant}/oauth2/v2.0/token          application/x-www-form-urlencoded
        grant_type=client_credentials
        scope=https://api.businesscentral.dynamics.com/.default
        client_id=…&client_secret=…           shared secret (or HTTP Basic client_id:secret), or
        client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
        client_assertion=<JWT signed RS256 with the app certificate's key>
    → 200 {"token_type":"Bearer","expires_in":N,"ext_expires_in":N,"access_token":"…"}

Failures use Entra's own error document::

    {"error":"invalid_client",
     "error_description":"AADSTS7000215: … Trace ID: … Correlation ID: … Timestamp: …",
     "error_codes":[7000215],"timestamp":"…","trace_id":"…","correlation_id":"…",
     "error_uri":"https://login.microsoftonline.com/error?code=7000215"}

with the status Entra uses: 401 for a bad client credential (``invalid_client``), 400 for everything else.
Access tokens are JWT-shaped (v1.0 claims as BC receives them: ``aud``, ``iss``, ``tid``, ``appid``,
``roles``, ``exp`` …) but signed with an emulator-local HMAC key; the emulator validates them by lookup,
which is what makes revocation (:meth:`EntraEmulator.revoke_all`) possible.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from syncd.sandbox.common import PRINCIPAL

BC_RESOURCE = "https://api.businesscentral.dynamics.com"
BC_DEFAULT_SCOPE = BC_RESOURCE + "/.default"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
LOGIN_HOST = "https://login.microsoftonline.com"
# Allowed clock skew when checking a client assertion's nbf/exp, as Entra allows a few minutes.
ASSERTION_SKEW = 300.0


@dataclass(slots=True, frozen=True)
class IssuedToken:
    """What the emulator remembers about an access token it handed out."""

    client_id: str
    tenant: str
    issued_at: float
    expires_at: float


class TokenProblem(Exception):
    """Why a presented bearer token is not acceptable: ``missing``, ``unknown`` or ``expired``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _EntraError(Exception):
    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.code = code
        self.description = description


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _load_public_key(pem: bytes) -> tuple[rsa.RSAPublicKey, bytes | None]:
    """An RSA public key from a PEM certificate or public key, plus the certificate's DER if it was one."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        key = serialization.load_pem_public_key(pem)
        der: bytes | None = None
    else:
        key = cert.public_key()
        der = cert.public_bytes(serialization.Encoding.DER)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("client certificate must carry an RSA key (Entra signs assertions with RS256/PS256)")
    return key, der


class EntraEmulator:
    """Issues and checks access tokens for one tenant's registered applications.

    ``clients`` maps client id → client secret; ``client_certificates`` maps client id → PEM certificate
    (or bare public key) used to verify ``client_assertion`` JWTs. A client may have either or both.
    ``clock`` returns epoch seconds and decides token expiry (the emulator passes its own clock).
    """

    def __init__(
        self,
        *,
        tenant: str,
        clients: Mapping[str, str] | None = None,
        client_certificates: Mapping[str, bytes] | None = None,
        token_lifetime: float = 3599.0,
        resource: str = BC_RESOURCE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tenant = tenant
        self.clients: dict[str, str] = dict(clients or {})
        self._certs: dict[str, tuple[rsa.RSAPublicKey, bytes | None]] = {
            cid: _load_public_key(pem) for cid, pem in (client_certificates or {}).items()
        }
        self.token_lifetime = token_lifetime
        self.resource = resource
        self.clock = clock
        self._signing_key = secrets.token_bytes(32)
        self._tokens: dict[str, IssuedToken] = {}
        self.issued_count = 0

    def __repr__(self) -> str:  # never show secrets
        return f"EntraEmulator(tenant={self.tenant!r}, clients={sorted(self.known_clients())!r})"

    def known_clients(self) -> set[str]:
        return set(self.clients) | set(self._certs)

    # -- tokens -------------------------------------------------------------------------------------
    def issue(self, client_id: str) -> tuple[str, IssuedToken]:
        """Mint an access token for ``client_id`` (no credential check: callers have done it)."""
        now = self.clock()
        info = IssuedToken(client_id, self.tenant, now, now + self.token_lifetime)
        header = {"typ": "JWT", "alg": "HS256", "kid": "syncd-sandbox"}
        claims: dict[str, Any] = {
            "aud": self.resource,
            "iss": f"https://sts.windows.net/{self.tenant}/",
            "iat": int(now),
            "nbf": int(now),
            "exp": int(info.expires_at),
            "appid": client_id,
            "appidacr": "1",
            "idtyp": "app",
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.tenant}/{client_id}")),
            "roles": ["API.ReadWrite.All"],
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.tenant}/{client_id}")),
            "tid": self.tenant,
            "uti": _b64url(secrets.token_bytes(16)),
            "ver": "1.0",
        }
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = hmac.new(self._signing_key, signing_input.encode(), hashlib.sha256).digest()
        token = signing_input + "." + _b64url(signature)
        self._prune(now)
        self._tokens[token] = info
        self.issued_count += 1
        return token, info

    def validate(self, token: str) -> IssuedToken:
        """The token's record if it is live; raises :class:`TokenProblem` otherwise."""
        info = self._tokens.get(token)
        if info is None:
            raise TokenProblem("unknown")
        if self.clock() >= info.expires_at:
            raise TokenProblem("expired")
        return info

    def revoke_all(self) -> int:
        """Forget every issued token (they then fail as unknown); returns how many were live."""
        n = len(self._tokens)
        self._tokens.clear()
        return n

    def _prune(self, now: float) -> None:
        if len(self._tokens) > 10_000:
            # Expired tokens still answer "expired" for a grace hour; older ones are forgotten.
            for tok in [t for t, i in self._tokens.items() if i.expires_at < now - 3600]:
                del self._tokens[tok]

    # -- HTTP -------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self.handle_token)

    async def handle_token(self, request: web.Request) -> web.Response:
        try:
            form = await request.post()
        except ValueError:
            form_items: dict[str, str] = {}
        else:
            form_items = {k: v for k, v in form.items() if isinstance(v, str)}
        try:
            client_id, token, info = self._grant(request, form_items)
        except _EntraError as err:
            return self._error(err)
        request[PRINCIPAL] = client_id
        expires_in = max(0, round(info.expires_at - info.issued_at))
        body = {
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": token,
        }
        return web.json_response(body, headers=_NO_CACHE)

    def _grant(self, request: web.Request, form: dict[str, str]) -> tuple[str, str, IssuedToken]:
        tenant = request.match_info["tenant"]
        if tenant.lower() != self.tenant.lower():
            raise _EntraError(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
                "signing into the correct cloud. Check with your subscription administrator, this may happen "
                "if there are no active subscriptions for the tenant.",
            )
        grant_type = form.get("grant_type")
        if not grant_type:
            raise _missing("grant_type")
        if grant_type != "client_credentials":
            raise _EntraError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant_type}'.",
            )
        basic_id, basic_secret = _basic_client_auth(request)
        client_id = form.get("client_id") or basic_id
        assertion = form.get("client_assertion")
        if not client_id and assertion:
            client_id = _assertion_subject(assertion)
        if not client_id:
            raise _missing("client_id")
        scope = form.get("scope")
        if not scope:
            raise _EntraError(
                400, "invalid_scope", 70011, "The provided request must include a 'scope' input parameter."
            )
        if client_id not in self.known_clients():
            raise _EntraError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{self.tenant}'. "
                + _NOT_INSTALLED
                + " You may have sent your authentication request to the wrong tenant.",
            )
        secret = form.get("client_secret") or basic_secret
        if assertion is not None:
            self._check_assertion(request, client_id, form)
        elif secret is not None:
            expected = self.clients.get(client_id)
            if expected is None or not hmac.compare_digest(secret.encode(), expected.encode()):
                raise _EntraError(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the "
                    "client secret value, not the client secret ID, for a secret added to app "
                    f"'{client_id}'.",
                )
        else:
            raise _EntraError(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or "
                "'client_secret'.",
            )
        self._check_scope(scope)
        token, info = self.issue(client_id)
        return client_id, token, info

    def _check_scope(self, scope: str) -> None:
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise _EntraError(
                400,
                "invalid_scope",
                70011,
                f"The provided value for the input parameter 'scope' is not valid. The scope {scope} is not "
                "valid.",
            )
        resource = scopes[0][: -len("/.default")]
        if resource.rstrip("/").lower() != self.resource.lower():
            raise _EntraError(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the tenant named {self.tenant}. "
                + _NOT_INSTALLED
                + " You might have sent your authentication request to the wrong tenant.",
            )

    def _check_assertion(self, request: web.Request, client_id: str, form: dict[str, str]) -> None:
        if form.get("client_assertion_type") != JWT_BEARER_ASSERTION:
            raise _EntraError(
                400,
                "invalid_request",
                50027,
                f"JWT token is invalid or malformed. client_assertion_type must be '{JWT_BEARER_ASSERTION}'.",
            )
        assertion = form.get("client_assertion", "")
        try:
            head_b64, body_b64, sig_b64 = assertion.split(".")
            header = json.loads(_b64url_decode(head_b64))
            claims = json.loads(_b64url_decode(body_b64))
            signature = _b64url_decode(sig_b64)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise _EntraError(400, "invalid_request", 50027, "JWT token is invalid or malformed.") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise _EntraError(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
        key_entry = self._certs.get(client_id)
        if key_entry is None:
            raise _EntraError(
                401,
                "invalid_client",
                700027,
                f"The certificate with identifier used to sign the client assertion is not registered on "
                f"application. [Reason - The key was not found., Thumbprint of key used by client: "
                f"'{header.get('x5t', '')}'].",
            )
        key, der = key_entry
        thumb = header.get("x5t")
        if der is not None and thumb is not None and thumb != _b64url(hashlib.sha1(der).digest()):  # noqa: S324
            raise _EntraError(
                401,
                "invalid_client",
                700027,
                "The certificate with identifier used to sign the client assertion is not registered on "
                "application. [Reason - The key was not found., Thumbprint of key used by client: "
                f"'{thumb}'].",
            )
        alg = header.get("alg")
        pad: padding.AsymmetricPadding
        if alg == "RS256":
            pad = padding.PKCS1v15()
        elif alg == "PS256":
            pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
        else:
            raise _EntraError(
                401,
                "invalid_client",
                700027,
                f"Client assertion contains an invalid signature algorithm {alg}.",
            )
        try:
            key.verify(signature, f"{head_b64}.{body_b64}".encode(), pad, hashes.SHA256())
        except InvalidSignature:
            raise _EntraError(
                401, "invalid_client", 700027, "Client assertion failed signature validation."
            ) from None
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            raise _EntraError(
                401,
                "invalid_client",
                700023,
                "Client assertion audience or issuer is invalid: 'iss' and 'sub' must be the client id.",
            )
        audiences = claims.get("aud")
        aud_list = audiences if isinstance(audiences, list) else [audiences]
        own_url = str(request.url.with_query(None))
        accepted = {
            own_url,
            f"{LOGIN_HOST}/{self.tenant}/oauth2/v2.0/token",
            f"{LOGIN_HOST}/{self.tenant}/v2.0",
        }
        if not any(isinstance(a, str) and a in accepted for a in aud_list):
            raise _EntraError(
                401,
                "invalid_client",
                700021,
                f"Client assertion audience claim does not match Realm issuer. Expected one of "
                f"{sorted(accepted)}.",
            )
        now = self.clock()
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if not isinstance(exp, int | float) or not isinstance(nbf, int | float):
            raise _EntraError(400, "invalid_request", 50027, "JWT token is invalid or malformed: no exp.")
        if now > exp + ASSERTION_SKEW or now < nbf - ASSERTION_SKEW:
            raise _EntraError(
                401,
                "invalid_client",
                700024,
                f"Client assertion is not within its valid time range. Current time: {_iso(now)}, "
                f"assertion valid from {_iso(float(nbf))}, expiry time of assertion {_iso(float(exp))}.",
            )

    def _error(self, err: _EntraError) -> web.Response:
        now = self.clock()
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        body = {
            "error": err.error,
            "error_description": f"AADSTS{err.code}: {err.description} Trace ID: {trace_id} "
            f"Correlation ID: {correlation_id} Timestamp: {stamp}",
            "error_codes": [err.code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{LOGIN_HOST}/error?code={err.code}",
        }
        return web.json_response(body, status=err.status, headers=_NO_CACHE)


_NOT_INSTALLED = (
    "This can happen if the application has not been installed by the administrator of the tenant or "
    "consented to by any user in the tenant."
)
_NO_CACHE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


def _missing(name: str) -> _EntraError:
    return _EntraError(
        400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'."
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%m/%d/%Y %H:%M:%S")


def _basic_client_auth(request: web.Request) -> tuple[str | None, str | None]:
    """client_secret_basic: ``Authorization: Basic base64(client_id:client_secret)``."""
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    cid, sep, secret = decoded.partition(":")
    return (cid or None), (secret if sep else None)


def _assertion_subject(assertion: str) -> str | None:
    try:
        claims = json.loads(_b64url_decode(assertion.split(".")[1]))
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) else None
