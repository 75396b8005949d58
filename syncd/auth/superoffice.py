"""SuperOffice Online server-to-server auth: the system user token, signed, exchanged for a ticket.

:class:`SuperOfficeSystemUserAuth` signs the system user token with the application's RSA key, exchanges
it at ``PartnerSystemUser/Authenticate`` for a ticket (inside a JWT, verified when SuperOffice's public
key is configured) and sends ``Authorization: SOTicket <ticket>`` plus ``SO-AppToken``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from syncd.auth.cache import (
    DEFAULT_REFRESH_MARGIN,
    DEFAULT_TIMEOUT,
    CachedCredentialAuth,
    Clock,
    Fetched,
    Sleep,
    header_safe,
    reply_number,
)
from syncd.auth.keys import b64url_decode, load_public_key, load_rsa_private_key
from syncd.errors import AuthError, ConfigError
from syncd.secrets import Secret

SO_LOGIN_URL = "https://online.superoffice.com/login"
SO_TICKET_CLAIM = "http://schemes.superoffice.net/identity/ticket"
SO_TICKET_LIFETIME = 6 * 3600.0  # documented sliding expiration of a system user ticket


class SuperOfficeSystemUserAuth(CachedCredentialAuth):
    """SuperOffice Online server-to-server auth: system user token → signed token → ticket.

    Sends ``Authorization: SOTicket <ticket>`` and ``SO-AppToken: <application_token>``. The ticket is
    renewed before *ticket_lifetime* (default: the documented 6 h sliding window) runs out, and once after
    a 401. The JWT's own ``exp`` is not the ticket's lifetime: it only bounds how long the JWT may be
    validated (minutes; SuperOffice error ID4148), so renewing on it would exchange every few minutes.
    *private_key_pem* is the application's RSA private key, PEM (PKCS#1 or PKCS#8) or the
    ``<RSAKeyValue>`` XML form SuperOffice hands out. With *jwt_public_key_pem* (SuperOffice's public key or
    certificate, PEM) the returned JWT's RS256 signature and validity period are verified.
    """

    def __init__(
        self,
        *,
        context_identifier: str,
        application_token: Secret,
        system_user_token: Secret,
        private_key_pem: Secret,
        login_url: str = SO_LOGIN_URL,
        token_type: Literal["JWT", "Ticket"] = "JWT",  # noqa: S107 - ReturnTokenType, not a password
        jwt_public_key_pem: str | None = None,
        ticket_lifetime: float = SO_TICKET_LIFETIME,
        clock: Clock = time.time,
        timeout: float = DEFAULT_TIMEOUT,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        attempts: int = 3,
        retry_backoff: float = 0.5,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(
            clock=clock,
            timeout=timeout,
            refresh_margin=refresh_margin,
            attempts=attempts,
            retry_backoff=retry_backoff,
            sleep=sleep,
        )
        if not context_identifier:
            raise ConfigError(
                "superoffice.auth.context_identifier is empty", hint="set the tenant id, e.g. Cust12345"
            )
        if not system_user_token.reveal():
            raise ConfigError("superoffice.auth.system_user_token is empty")
        self.context_identifier = context_identifier
        self.login_url = login_url.rstrip("/")
        self.authenticate_url = self.login_url + "/api/PartnerSystemUser/Authenticate"
        self._application_token = application_token
        self._system_user_token = system_user_token
        self._key = load_rsa_private_key(private_key_pem, key="superoffice.auth.private_key")
        self._token_type = token_type
        self._ticket_lifetime = ticket_lifetime
        self._jwt_key = load_public_key(jwt_public_key_pem) if jwt_public_key_pem is not None else None

    def describe(self) -> str:
        return f"SuperOffice system user for {self.context_identifier} via {self.login_url}"

    def _extra_headers(self) -> dict[str, str]:
        return {"SO-AppToken": self._application_token.reveal()}

    def signed_system_token(self) -> Secret:
        """``{SystemUserToken}.{UTC yyyyMMddHHmm}.{base64(RSA-SHA256 PKCS#1 v1.5 signature)}``."""
        stamp = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y%m%d%H%M")
        data = f"{self._system_user_token.reveal()}.{stamp}"
        signature = self._key.sign(data.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
        return Secret(f"{data}.{base64.b64encode(signature).decode('ascii')}", ephemeral=True)

    async def _fetch(self, session: aiohttp.ClientSession) -> Fetched:
        body = {
            "SignedSystemToken": self.signed_system_token().reveal(),
            "ApplicationToken": self._application_token.reveal(),
            "ContextIdentifier": self.context_identifier,
            "ReturnTokenType": self._token_type,
        }
        status, answer = await self._post(
            session,
            self.authenticate_url,
            api="SuperOffice login",
            what=f"SuperOffice system user ticket for {self.context_identifier}",
            body=json.dumps(body).encode(),
            content_type="application/json",
        )
        result = {str(k).lower(): v for k, v in answer.items()} if isinstance(answer, dict) else {}
        if result.get("issuccessful") is True and isinstance(result.get("token"), str) and result["token"]:
            return self._ticket_from(result["token"])
        error = str(result.get("errormessage") or "").strip()
        if not error:
            error = f"HTTP {status}" + ("" if answer is not None else " without a JSON answer")
            if status == 404:
                raise AuthError(
                    f"SuperOffice login endpoint {self.authenticate_url} answered 404",
                    hint="check superoffice.auth.login_url (https://online.superoffice.com/login, or the sod/"
                    "qaonline host for development and stage tenants)",
                )
        raise AuthError(
            f"SuperOffice refused the system user sign-in for {self.context_identifier}: {error}",
            hint=_so_hint(error),
        )

    def _ticket_from(self, token: str) -> Fetched:
        now = self._clock()
        if not _looks_like_jwt(token):
            # ReturnTokenType other than JWT: the token is the ticket itself
            Secret(token, ephemeral=True)
            header_safe(token, "SuperOffice's ticket")
            return Fetched(Secret("SOTicket " + token, ephemeral=True), self._ticket_lifetime)
        Secret(token, ephemeral=True)
        claims = self._jwt_claims(token, now)
        ticket = claims.get(SO_TICKET_CLAIM)
        if not isinstance(ticket, str) or not ticket:
            raise AuthError(
                "SuperOffice's system user answer carries no ticket claim",
                hint="the application may not have server-to-server (system user) access enabled",
            )
        Secret(ticket, ephemeral=True)
        header_safe(ticket, "SuperOffice's ticket")
        return Fetched(Secret("SOTicket " + ticket, ephemeral=True), self._ticket_lifetime)

    def _jwt_claims(self, token: str, now: float) -> dict[str, Any]:
        try:
            header_b64, payload_b64, signature_b64 = token.split(".")
            header = json.loads(b64url_decode(header_b64))
            claims = json.loads(b64url_decode(payload_b64))
        except (ValueError, binascii.Error, RecursionError):
            raise AuthError("SuperOffice returned a malformed JWT for the system user ticket") from None
        if not isinstance(claims, dict) or not isinstance(header, dict):
            raise AuthError("SuperOffice returned a malformed JWT for the system user ticket")
        if self._jwt_key is not None:
            if header.get("alg") != "RS256":
                raise AuthError(
                    f"SuperOffice JWT uses algorithm {header.get('alg')!r}, expected RS256",
                    hint="the answer did not come from SuperOffice, or jwt_public_key is not the right one",
                )
            try:
                self._jwt_key.verify(
                    b64url_decode(signature_b64),
                    f"{header_b64}.{payload_b64}".encode("ascii"),
                    padding.PKCS1v15(),
                    hashes.SHA256(),
                )
            except (InvalidSignature, ValueError, binascii.Error):
                raise AuthError(
                    "the SuperOffice JWT's signature does not verify against superoffice.auth.jwt_public_key",
                    hint="use SuperOffice's current public certificate for this environment",
                ) from None
            leeway = 300.0
            exp = claims.get("exp")
            nbf = claims.get("nbf")
            if exp is not None and reply_number(exp, default=0.0) + leeway < now:
                raise AuthError(
                    "the SuperOffice JWT has already expired", hint="check this host's clock (NTP)"
                )
            if nbf is not None and reply_number(nbf, default=0.0) - leeway > now:
                raise AuthError("the SuperOffice JWT is not valid yet", hint="check this host's clock (NTP)")
        return claims


def _looks_like_jwt(token: str) -> bool:
    return token.startswith("eyJ") and token.count(".") == 2


def _so_hint(error: str) -> str:
    """The config key most likely at fault for a PartnerSystemUser ``ErrorMessage``."""
    m = error.lower()
    if "signature" in m or "certificate" in m or "private key" in m:
        return (
            "superoffice.auth.private_key must be the RSA private key issued with this application "
            "(SuperOffice verifies the signature with its public half)"
        )
    if "expired" in m or "timestamp" in m or "not current" in m:
        return "the signed token carries a UTC timestamp: check this host's clock (NTP)"
    if "application" in m or "apptoken" in m or "app token" in m or "client secret" in m:
        return "superoffice.auth.application_token must be the application's client secret"
    if "system user token" in m or "systemusertoken" in m or "system token" in m:
        return (
            "superoffice.auth.system_user_token must be the system_token claim SuperOffice issued for this "
            "app and tenant when an administrator approved it"
        )
    if "context" in m or "tenant" in m or "customer" in m:
        return "superoffice.auth.context_identifier must be the tenant id (CustNNNNN) the app is installed in"
    return (
        "check superoffice.auth: application_token (client secret), system_user_token, private_key "
        "(the app's RSA key) and context_identifier (tenant)"
    )
