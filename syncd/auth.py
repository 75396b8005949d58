"""Authentication for the SuperOffice and Business Central clients.

The API clients get an :class:`Auth` and never see how the credential is made:

    headers = await auth.headers(session)          # obtains or refreshes the credential as needed
    response = await session.get(url, headers=headers)
    if response.status == 401 and await auth.invalidate(headers):
        headers = await auth.headers(session)      # retry once with a fresh credential
        ...

Implementations:

* :class:`BasicAuth`: SuperOffice onsite, Business Central on-prem (user + web service access key).
* :class:`SOTicketAuth`, :class:`BearerAuth`: static SuperOffice credentials (``SOTicket 7T:…``,
  ``Bearer 8A:…``), optionally with ``SO-AppToken``.
* :class:`SuperOfficeSystemUserAuth`: SuperOffice Online server-to-server: signs the system user token with
  the application's RSA key, exchanges it at ``PartnerSystemUser/Authenticate`` for a ticket and caches it.
* :class:`ClientCredentialsAuth`: Entra ID (Azure AD) OAuth2 client credentials for Business Central
  Online, with a client secret or a certificate; caches the access token and refreshes it before expiry.

The token-fetching implementations are single-flight (concurrent callers share one request), refresh
ahead of expiry by a margin (300 s or 10 % of the lifetime, whichever is smaller), keep using a still-valid
credential when a refresh fails on the network, and after a 401 renew at most once: a credential that was
itself fetched because of a 401 and is refused again is not renewed again (that is a permission problem,
not an expiry, and renewing on every request would hammer the token endpoint).

Every secret is a :class:`~syncd.secrets.Secret`; credentials obtained at run time are wrapped in
ephemeral Secrets so log redaction knows them. Errors are :class:`~syncd.errors.AuthError` (with a hint
naming the config key to fix) or :class:`~syncd.errors.UnreachableError` (network, 5xx, timeouts).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from syncd.config import ApiLimits
from syncd.errors import ApiError, AuthError, ConfigError, SyncdError, UnreachableError
from syncd.http import RETRY_STATUSES, ApiClient, origin_of
from syncd.secrets import Secret

__all__ = [
    "BC_SCOPE",
    "SO_LOGIN_URL",
    "SO_TICKET_CLAIM",
    "BasicAuth",
    "BearerAuth",
    "ClientCredentialsAuth",
    "Clock",
    "SOTicketAuth",
    "SuperOfficeSystemUserAuth",
]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"
SO_LOGIN_URL = "https://online.superoffice.com/login"
SO_TICKET_CLAIM = "http://schemes.superoffice.net/identity/ticket"
SO_WEBAPI_URL_CLAIM = "http://schemes.superoffice.net/identity/webapi_url"
SO_TICKET_LIFETIME = 6 * 3600.0  # documented sliding expiration of a system user ticket

DEFAULT_TIMEOUT = 30.0
DEFAULT_REFRESH_MARGIN = 300.0
MIN_LIFETIME = 1.0  # a credential reported as already expired is still tried once
FORCED_RENEWAL_WINDOW = 60.0  # a credential fetched after a 401 and refused within this long: no renewal
# Every answer that is not retried goes back to the auth, which reads the identity provider's error in it.
FINAL_STATUSES = tuple(status for status in range(200, 600) if status not in RETRY_STATUSES)
# Token requests are single-flight and rare: the token client's window only stops a runaway loop.
TOKEN_REQUESTS_PER_SECOND = 1000.0


def _short(value: str, keep: int = 8) -> str:
    return value if len(value) <= keep else value[:keep] + "…"


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and hmac.compare_digest(a.encode(), b.encode())


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lname = name.lower()
    for k, v in headers.items():
        if k.lower() == lname:
            return v
    return None


def _strip_scheme(value: str, scheme: str) -> str:
    prefix = scheme + " "
    return value[len(prefix) :].strip() if value[: len(prefix)].lower() == prefix.lower() else value.strip()


# -- static credentials ------------------------------------------------------------------------------------


class BasicAuth:
    """HTTP Basic: SuperOffice onsite (user + password) or BC on-prem (user + web service access key)."""

    def __init__(self, *, username: str, password: Secret) -> None:
        if not username:
            raise ConfigError("auth.username is empty", hint="set the user name for Basic authentication")
        if ":" in username:
            raise ConfigError("auth.username must not contain ':' (Basic authentication cannot carry it)")
        self._username = username
        token = base64.b64encode(f"{username}:{password.reveal()}".encode()).decode("ascii")
        self._header = Secret("Basic " + token)
        Secret(token)  # the bare base64 form is redacted from logs too

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        return {"Authorization": self._header.reveal()}

    async def invalidate(self, sent_headers: Mapping[str, str]) -> bool:
        return False  # the same password will be refused again

    def describe(self) -> str:
        return f"basic auth as user {self._username!r}"

    def __repr__(self) -> str:
        return f"<BasicAuth {self.describe()}>"


class _StaticAuth:
    """A fixed ``Authorization: <scheme> <value>`` credential, plus ``SO-AppToken`` when given.

    Nothing to renew: after a 401 there is no point sending it again."""

    _scheme = ""
    _what = ""

    def __init__(self, value: Secret, app_token: Secret | None) -> None:
        raw = _strip_scheme(value.reveal(), self._scheme)
        if not raw:
            raise ConfigError(f"auth.{self._what} is empty")
        self._header = Secret(f"{self._scheme} {raw}")
        self._app_token = app_token

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        h = {"Authorization": self._header.reveal()}
        if self._app_token is not None:
            h["SO-AppToken"] = self._app_token.reveal()
        return h

    async def invalidate(self, sent_headers: Mapping[str, str]) -> bool:
        return False  # a configured credential cannot be renewed here

    def describe(self) -> str:
        return f"static {self._scheme} {self._what}" + (
            " with SO-AppToken" if self._app_token is not None else ""
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class SOTicketAuth(_StaticAuth):
    """A fixed SuperOffice ticket (``Authorization: SOTicket 7T:…``), plus ``SO-AppToken`` when given."""

    _scheme, _what = "SOTicket", "ticket"

    def __init__(self, *, ticket: Secret, app_token: Secret | None = None) -> None:
        super().__init__(ticket, app_token)


class BearerAuth(_StaticAuth):
    """A fixed bearer token (SuperOffice Online ``8A:…`` tokens, or any pre-issued token)."""

    _scheme, _what = "Bearer", "token"

    def __init__(self, *, token: Secret, app_token: Secret | None = None) -> None:
        super().__init__(token, app_token)


# -- cached, refreshed credentials ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Credential:
    """One fetched credential and its timing."""

    authorization: Secret  # the full Authorization header value
    obtained_at: float
    refresh_at: float  # renew from this instant on (before expiry by a margin)
    expires_at: float
    forced: bool  # fetched because a 401 invalidated the previous credential


@dataclass(frozen=True, slots=True)
class _Fetched:
    authorization: Secret
    lifetime: float  # seconds from now


def _refresh_margin(lifetime: float, margin: float) -> float:
    return min(margin, 0.1 * lifetime)


class _CachedCredentialAuth:
    """Caching, single-flight refresh and 401 invalidation shared by the token-fetching auths."""

    def __init__(
        self,
        *,
        clock: Clock,
        timeout: float,
        refresh_margin: float,
        attempts: int,
        retry_backoff: float,
        sleep: Sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._retry_backoff = retry_backoff
        self._sleep = sleep
        # What bounds each token request: the same rules as every API request (syncd.http).
        self._limits = ApiLimits(
            requests_per_second=TOKEN_REQUESTS_PER_SECOND,
            concurrency=1,
            timeout=timeout,
            connect_timeout=timeout,  # as before: one bound for the whole request
            max_retries=attempts - 1,
        )
        self._client: ApiClient | None = None
        self._credential: _Credential | None = None
        self._inflight: asyncio.Task[_Credential] | None = None
        self._force_next = False
        self.fetch_count = 0  # how many credentials this object has fetched (for `syncd check` and tests)

    # subclasses
    async def _fetch(self, session: aiohttp.ClientSession) -> _Fetched:
        raise NotImplementedError

    def _extra_headers(self) -> dict[str, str]:
        return {}

    def describe(self) -> str:
        raise NotImplementedError

    # Auth protocol
    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        credential = await self._current(session)
        h = {"Authorization": credential.authorization.reveal()}
        h.update(self._extra_headers())
        return h

    async def invalidate(self, sent_headers: Mapping[str, str]) -> bool:
        current = self._credential
        if current is None:
            return True  # already dropped by a concurrent 401; the next headers() fetches a new one
        if not _same(_header(sent_headers, "Authorization"), current.authorization.reveal()):
            return True  # an older credential was sent; the current one is different
        now = self._clock()
        if current.forced and now - current.obtained_at < FORCED_RENEWAL_WINDOW and now < current.refresh_at:
            log.warning(
                "%s: a credential fetched after a 401 was refused again; not renewing (check permissions)",
                self.describe(),
            )
            return False
        self._credential = None
        self._force_next = True
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    # machinery
    async def _current(self, session: aiohttp.ClientSession) -> _Credential:
        credential = self._credential
        if credential is not None and self._clock() < credential.refresh_at:
            return credential
        task = self._inflight
        if task is None:
            task = asyncio.get_running_loop().create_task(self._refresh(session))
            task.add_done_callback(_consume_exception)
            self._inflight = task
        # shield: one caller being cancelled must not cancel the refresh the others wait for
        return await asyncio.shield(task)

    async def _refresh(self, session: aiohttp.ClientSession) -> _Credential:
        try:
            forced = self._force_next
            try:
                fetched = await self._fetch(session)
            except UnreachableError as exc:
                old = self._credential
                now = self._clock()
                if old is not None and now < old.expires_at:
                    retry_at = min(old.expires_at, now + 30.0)
                    log.warning(
                        "%s: renewing the credential failed (%s); the current one stays valid for %d s",
                        self.describe(),
                        exc.message,
                        int(old.expires_at - now),
                    )
                    self._credential = _Credential(
                        old.authorization, old.obtained_at, retry_at, old.expires_at, old.forced
                    )
                    return self._credential
                raise
            now = self._clock()
            lifetime = max(fetched.lifetime, MIN_LIFETIME)
            credential = _Credential(
                authorization=fetched.authorization,
                obtained_at=now,
                refresh_at=now + lifetime - _refresh_margin(lifetime, self._refresh_margin),
                expires_at=now + lifetime,
                forced=forced,
            )
            self._credential = credential
            self._force_next = False
            self.fetch_count += 1
            return credential
        finally:
            self._inflight = None

    async def _post(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        api: str,
        what: str,
        body: bytes,
        content_type: str,
    ) -> tuple[int, Any]:
        """POST a token or ticket request through the shared client layer (:class:`syncd.http.ApiClient`):
        its retries, backoff, Retry-After gate, timeouts, reply bounds and error wording. The auth decides
        what to send; the client sends it, to ``url``'s origin only and without credentials of its own.

        Returns (status, parsed JSON or None) for every answer that is not retried; the auth reads the
        identity provider's error from it. Raises UnreachableError when every attempt failed on the
        network or with a retryable status, AuthError for a reply syncd refuses (too large, undecodable).
        """
        client = self._client
        if client is None or client.session is not session or client.origin != origin_of(url):
            client = ApiClient(
                api=api,
                session=session,
                auth=NO_AUTH,
                limits=self._limits,
                clock=self._clock,
                wall_clock=self._clock,
                sleep=self._sleep,
                base_url=url,
                retry_backoff=self._retry_backoff,
            )
            self._client = client
        host = urlsplit(url).netloc or url
        try:
            resp = await client.request(
                "POST",
                url,
                headers={"Accept": "application/json", "Content-Type": content_type},
                data=body,
                allow=FINAL_STATUSES,
                what=what,
            )
        except UnreachableError as exc:
            raise UnreachableError(
                exc.message,
                hint=f"check network access to {host} (proxy, firewall, DNS) and the token/login URL",
            ) from None
        except ApiError as exc:
            raise AuthError(
                exc.message, hint="check the token/login URL: it must be the identity provider's"
            ) from None
        try:
            answer = resp.json()
        except ValueError:
            answer = None
        return resp.status, answer


class _NoAuth:
    """The credential of a token request itself: none (the request body carries the secret)."""

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        return {}

    async def invalidate(self, sent_headers: Mapping[str, str]) -> bool:
        return False

    def describe(self) -> str:
        return "no credential"


NO_AUTH = _NoAuth()


def _consume_exception(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


_HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,16384}")


def _header_safe(value: str, what: str) -> None:
    """A credential obtained at run time goes into a header: printable ASCII without spaces only (a CR/LF
    would inject headers, and aiohttp refuses it with a ValueError)."""
    if not _HEADER_SAFE.fullmatch(value):
        raise AuthError(
            f"{what} contains characters no credential has (control characters, spaces or non-ASCII)",
            hint="the token/login URL must be the identity provider's",
        )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- Entra ID client credentials (Business Central Online) --------------------------------------------------


class ClientCredentialsAuth(_CachedCredentialAuth):
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
        self._signer: _AssertionSigner | None = None
        if certificate_pem is not None or private_key_pem is not None:
            if client_secret is not None:
                raise ConfigError(
                    "businesscentral.auth: give either client_secret or a certificate, not both"
                )
            if certificate_pem is None or private_key_pem is None:
                raise ConfigError(
                    "businesscentral.auth: a certificate credential needs both certificate and private_key"
                )
            self._signer = _AssertionSigner(certificate_pem, private_key_pem)
        elif client_secret is None:
            raise ConfigError(
                "businesscentral.auth: client_secret is missing",
                hint="set client_secret (or certificate + private_key) for the Entra app registration",
            )

    def describe(self) -> str:
        how = f"certificate {self._signer.thumbprint_hex[:8]}…" if self._signer else "secret"
        return f"client_credentials ({how}) for client {_short(self.client_id)} at tenant {self.tenant_id}"

    async def _fetch(self, session: aiohttp.ClientSession) -> _Fetched:
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
            lifetime = _number(body.get("expires_in"), default=3600.0)
            if not 0 <= lifetime <= 86_400:  # a hostile expires_in must not keep a credential forever
                lifetime = 3600.0
            Secret(body["access_token"], ephemeral=True)  # the bare token is masked in logs too
            _header_safe(body["access_token"], "Entra ID's access token")
            return _Fetched(Secret("Bearer " + body["access_token"], ephemeral=True), lifetime)
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


def _number(value: Any, *, default: float) -> float:
    """A number from a reply; anything that is not a finite number is ``default``."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return number if math.isfinite(number) else default


class _AssertionSigner:
    """Builds Entra ``client_assertion`` JWTs from a certificate and its private key."""

    def __init__(self, certificate_pem: str, private_key_pem: Secret) -> None:
        try:
            cert = x509.load_pem_x509_certificate(certificate_pem.encode())
        except ValueError:
            raise ConfigError(
                "businesscentral.auth.certificate is not a PEM X.509 certificate",
                hint="give the public certificate uploaded to the app registration (BEGIN CERTIFICATE)",
            ) from None
        self._key = _load_rsa_private_key(private_key_pem, key="businesscentral.auth.private_key")
        cert_key = cert.public_key()
        if not isinstance(cert_key, rsa.RSAPublicKey) or cert_key.public_numbers() != (
            self._key.public_key().public_numbers()
        ):
            raise ConfigError(
                "businesscentral.auth.private_key does not belong to businesscentral.auth.certificate",
                hint="use the private key the certificate was created with",
            )
        thumbprint = cert.fingerprint(hashes.SHA1())  # noqa: S303 - x5t is defined as the SHA-1 thumbprint
        self.thumbprint_hex = thumbprint.hex().upper()
        self._x5t = _b64url(thumbprint)

    def assertion(self, *, client_id: str, audience: str, now: float) -> Secret:
        header = {"alg": "RS256", "typ": "JWT", "x5t": self._x5t}
        claims = {
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": str(uuid.uuid4()),
            "nbf": int(now),
            "iat": int(now),
            "exp": int(now) + 600,
        }
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self._key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return Secret(signing_input + "." + _b64url(signature), ephemeral=True)


# -- SuperOffice Online system user ----------------------------------------------------------------------


class SuperOfficeSystemUserAuth(_CachedCredentialAuth):
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
        self._key = _load_rsa_private_key(private_key_pem, key="superoffice.auth.private_key")
        self._token_type = token_type
        self._ticket_lifetime = ticket_lifetime
        self._jwt_key = _load_public_key(jwt_public_key_pem) if jwt_public_key_pem is not None else None
        self.webapi_url: str | None = None  # the tenant's REST root from the last JWT (tenant hosts move)

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

    async def _fetch(self, session: aiohttp.ClientSession) -> _Fetched:
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

    def _ticket_from(self, token: str) -> _Fetched:
        now = self._clock()
        if not _looks_like_jwt(token):
            # ReturnTokenType other than JWT: the token is the ticket itself
            Secret(token, ephemeral=True)
            _header_safe(token, "SuperOffice's ticket")
            return _Fetched(Secret("SOTicket " + token, ephemeral=True), self._ticket_lifetime)
        Secret(token, ephemeral=True)
        claims = self._jwt_claims(token, now)
        ticket = claims.get(SO_TICKET_CLAIM)
        if not isinstance(ticket, str) or not ticket:
            raise AuthError(
                "SuperOffice's system user answer carries no ticket claim",
                hint="the application may not have server-to-server (system user) access enabled",
            )
        webapi = claims.get(SO_WEBAPI_URL_CLAIM)
        self.webapi_url = webapi if isinstance(webapi, str) else None
        Secret(ticket, ephemeral=True)
        _header_safe(ticket, "SuperOffice's ticket")
        return _Fetched(Secret("SOTicket " + ticket, ephemeral=True), self._ticket_lifetime)

    def _jwt_claims(self, token: str, now: float) -> dict[str, Any]:
        try:
            header_b64, payload_b64, signature_b64 = token.split(".")
            header = json.loads(_b64url_decode(header_b64))
            claims = json.loads(_b64url_decode(payload_b64))
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
                    _b64url_decode(signature_b64),
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
            if exp is not None and _number(exp, default=0.0) + leeway < now:
                raise AuthError(
                    "the SuperOffice JWT has already expired", hint="check this host's clock (NTP)"
                )
            if nbf is not None and _number(nbf, default=0.0) - leeway > now:
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


# -- key loading ---------------------------------------------------------------------------------------

_XML_FIELDS = ("Modulus", "Exponent", "P", "Q", "DP", "DQ", "InverseQ", "D")


def _load_rsa_private_key(pem: Secret, *, key: str) -> rsa.RSAPrivateKey:
    text = pem.reveal().strip()
    if text.startswith("<RSAKeyValue"):
        loaded: Any = _rsa_from_xml(text, key=key)
    else:
        try:
            loaded = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            raise ConfigError(
                f"{key} is not an unencrypted RSA private key in PEM or <RSAKeyValue> XML form",
                hint="give the application's private key (-----BEGIN PRIVATE KEY----- or "
                "-----BEGIN RSA PRIVATE KEY-----); decrypt it first with `openssl rsa` if it has a password",
            ) from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ConfigError(f"{key} is not an RSA key", hint="SuperOffice and Entra assertions need RSA keys")
    return loaded


def _rsa_from_xml(text: str, *, key: str) -> rsa.RSAPrivateKey:
    values: dict[str, int] = {}
    for name in _XML_FIELDS:
        m = re.search(rf"<{name}>\s*([A-Za-z0-9+/=\s]+?)\s*</{name}>", text)
        if m is None:
            raise ConfigError(f"{key}: the <RSAKeyValue> XML lacks <{name}> (a private key needs all parts)")
        values[name] = int.from_bytes(base64.b64decode("".join(m.group(1).split())), "big")
    try:
        numbers = rsa.RSAPrivateNumbers(
            p=values["P"],
            q=values["Q"],
            d=values["D"],
            dmp1=values["DP"],
            dmq1=values["DQ"],
            iqmp=values["InverseQ"],
            public_numbers=rsa.RSAPublicNumbers(e=values["Exponent"], n=values["Modulus"]),
        )
        return numbers.private_key()
    except ValueError:
        raise ConfigError(f"{key}: the <RSAKeyValue> XML does not describe a valid RSA key") from None


def _load_public_key(pem: str) -> rsa.RSAPublicKey:
    data = pem.strip().encode()
    loaded: Any
    try:
        if b"BEGIN CERTIFICATE" in data:
            loaded = x509.load_pem_x509_certificate(data).public_key()
        else:
            loaded = serialization.load_pem_public_key(data)
    except ValueError:
        raise ConfigError(
            "superoffice.auth.jwt_public_key is not a PEM public key or certificate",
            hint="use SuperOffice's public certificate (SuperOfficeFederatedLogin.crt) in PEM form",
        ) from None
    if not isinstance(loaded, rsa.RSAPublicKey):
        raise ConfigError("superoffice.auth.jwt_public_key is not an RSA key")
    return loaded
