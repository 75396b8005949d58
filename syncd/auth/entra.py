"""Entra ID (Azure AD) OAuth2 client credentials for Business Central Online, and its error table.

:class:`ClientCredentialsAuth` sends ``Authorization: Bearer <access_token>``; the token comes from the
tenant's token endpoint with a client secret or a certificate (a signed ``client_assertion``). Entra's
``AADSTS`` error codes become an :class:`~syncd.errors.AuthError` whose hint names the setting to fix.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp

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
from syncd.auth.keys import AssertionSigner
from syncd.errors import AuthError, ConfigError, SyncdError
from syncd.secrets import Secret

BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"


def _short(value: str, keep: int = 8) -> str:
    return value if len(value) <= keep else value[:keep] + "…"


class ClientCredentialsAuth(CachedCredentialAuth):
    """OAuth2 client credentials against Entra ID; ``Authorization: Bearer <access_token>``.

    Give either *client_secret* or a certificate (*certificate_pem*, the public certificate uploaded to the
    app registration, plus *private_key_pem*); with a certificate a signed ``client_assertion`` (RS256,
    ``x5t`` thumbprint) is sent instead of a secret.
    """

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: Secret | None = None,
        certificate_pem: str | None = None,
        private_key_pem: Secret | None = None,
        scope: str = BC_SCOPE,
        token_url: str | None = None,
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
        if not tenant_id:
            raise ConfigError("businesscentral.auth.tenant_id is empty", hint="set the Directory (tenant) ID")
        if not client_id:
            raise ConfigError(
                "businesscentral.auth.client_id is empty", hint="set the Application (client) ID"
            )
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.scope = scope
        self.token_url = token_url or f"https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token"
        self._client_secret = client_secret
        self._signer: AssertionSigner | None = None
        if certificate_pem is not None or private_key_pem is not None:
            if client_secret is not None:
                raise ConfigError(
                    "businesscentral.auth: give either client_secret or a certificate, not both"
                )
            if certificate_pem is None or private_key_pem is None:
                raise ConfigError(
                    "businesscentral.auth: a certificate credential needs both certificate and private_key"
                )
            self._signer = AssertionSigner(certificate_pem, private_key_pem)
        elif client_secret is None:
            raise ConfigError(
                "businesscentral.auth: client_secret is missing",
                hint="set client_secret (or certificate + private_key) for the Entra app registration",
            )

    def describe(self) -> str:
        how = f"certificate {self._signer.thumbprint_hex[:8]}…" if self._signer else "secret"
        return f"client_credentials ({how}) for client {_short(self.client_id)} at tenant {self.tenant_id}"

    async def _fetch(self, session: aiohttp.ClientSession) -> Fetched:
        form = {"grant_type": "client_credentials", "client_id": self.client_id, "scope": self.scope}
        if self._signer is not None:
            form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            form["client_assertion"] = self._signer.assertion(
                client_id=self.client_id, audience=self.token_url, now=self._clock()
            ).reveal()
        else:
            assert self._client_secret is not None
            form["client_secret"] = self._client_secret.reveal()
        status, body = await self._post(
            session,
            self.token_url,
            api="Entra ID",
            what=f"Entra ID token for tenant {self.tenant_id}",
            body=urlencode(form).encode("ascii"),
            content_type="application/x-www-form-urlencoded",
        )
        if status == 200 and isinstance(body, dict) and isinstance(body.get("access_token"), str):
            token_type = str(body.get("token_type") or "Bearer")
            if token_type.lower() != "bearer":
                raise AuthError(f"Entra ID returned a {token_type!r} token, syncd expects a Bearer token")
            lifetime = reply_number(body.get("expires_in"), default=3600.0)
            if not 0 <= lifetime <= 86_400:  # a hostile expires_in must not keep a credential forever
                lifetime = 3600.0
            Secret(body["access_token"], ephemeral=True)  # the bare token is masked in logs too
            header_safe(body["access_token"], "Entra ID's access token")
            return Fetched(Secret("Bearer " + body["access_token"], ephemeral=True), lifetime)
        raise self._error(status, body)

    def _error(self, status: int, body: Any) -> SyncdError:
        err = body if isinstance(body, dict) else {}
        code = str(err.get("error") or "")
        description = str(err.get("error_description") or "")
        listed = err.get("error_codes")
        codes = {
            int(c)
            for c in (listed if isinstance(listed, list) else [])
            if isinstance(c, int | str) and str(c).isdigit() and len(str(c)) < 12
        }
        codes |= {int(c) for c in re.findall(r"AADSTS(\d+)", description)}
        first_line = description.splitlines()[0].strip() if description else ""
        cid, tenant = self.client_id, self.tenant_id
        where = f"client {_short(cid)} at tenant {tenant}"

        def fail(message: str, hint: str) -> AuthError:
            return AuthError(f"Entra ID refused the token request for {where}: {message}", hint=hint)

        if codes & {7000215}:
            return fail(
                "invalid client secret (AADSTS7000215)",
                "client_secret is wrong or expired (create a new secret in Entra ID → App registrations → "
                "Certificates & secrets; copy its Value, not its Secret ID)",
            )
        if codes & {7000222}:
            return fail(
                "the client secret has expired (AADSTS7000222)",
                "client_secret has expired: create a new secret in Entra ID → App registrations → "
                "Certificates & secrets and update the config",
            )
        if codes & {700016}:
            return fail(
                "unknown client (AADSTS700016)",
                f"client_id {cid} not found in tenant {tenant}: check the Application (client) ID on the app "
                "registration's Overview page and that the app is registered in, or consented to by, this "
                "tenant",
            )
        if codes & {90002, 900023, 90013}:
            url_tenant = next((p for p in urlsplit(self.token_url).path.split("/") if p), "")
            if url_tenant and url_tenant.lower() != tenant.lower():
                return AuthError(
                    f"Entra ID does not know tenant {url_tenant!r} named in token_url "
                    f"(AADSTS{min(codes & {90002, 900023, 90013})})",
                    hint=f"businesscentral.auth.token_url must name the same tenant as tenant_id ({tenant}): "
                    f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token, or leave token_url out",
                )
            return fail(
                f"tenant not found (AADSTS{min(codes & {90002, 900023, 90013})})",
                f"tenant_id {tenant} does not exist: use the Directory (tenant) ID GUID or a verified domain "
                "such as contoso.onmicrosoft.com",
            )
        if code == "invalid_scope" or codes & {70011, 1002012}:
            return fail(
                f"invalid scope {self.scope!r}",
                f"invalid_scope: for Business Central the scope is {BC_SCOPE}",
            )
        if codes & {500011}:
            return fail(
                "the Business Central API is not known in this tenant (AADSTS500011)",
                f"check scope ({BC_SCOPE}) and that tenant {tenant} has Business Central and has granted "
                "admin consent to the app",
            )
        if codes & {65001, 650057, 500014}:
            return fail(
                "missing consent or permission",
                "grant admin consent: App registrations → API permissions → Dynamics 365 Business Central → "
                "Application permission API.ReadWrite.All → Grant admin consent",
            )
        if codes & {700027, 700024, 7000274, 700021, 7000277}:
            return fail(
                f"the certificate assertion was rejected ({first_line or code})",
                "upload the certificate (public part) under App registrations → Certificates & secrets, "
                "check that private_key belongs to it, and that this host's clock is right",
            )
        if codes & {7000112}:
            return fail("the application is disabled (AADSTS7000112)", "enable the app registration")
        if status == 404:
            return AuthError(
                f"token endpoint {self.token_url} answered 404",
                hint="check token_url (default https://login.microsoftonline.com/<tenant_id>/oauth2/v2.0/token)",
            )
        detail = first_line or code or (f"HTTP {status}" if body is not None else f"HTTP {status}, no JSON")
        return fail(detail, "check tenant_id, client_id and client_secret of businesscentral.auth")
