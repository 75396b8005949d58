"""Authentication against the sandbox emulators: caching, refresh, 401 handling, failure hints.

Business Central: the sandbox's :class:`~syncd.sandbox.businesscentral.BusinessCentralEmulator` with its
Entra ID token endpoint (``POST /{tenant}/oauth2/v2.0/token``); "API calls" list its companies with the
bearer token. SuperOffice: the sandbox's :class:`~syncd.sandbox.superoffice.SuperOfficeEmulator`
(system-user exchange, ticket checks) with its documented key pair. Auth and emulators share one fake
clock, so hours pass in microseconds. Everything runs in-process on free ports.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from syncd.auth import (
    BC_SCOPE,
    BasicAuth,
    BearerAuth,
    ClientCredentialsAuth,
    SOTicketAuth,
    SuperOfficeSystemUserAuth,
)
from syncd.credentials import Auth
from syncd.errors import AuthError, ConfigError, ExitCode, UnreachableError
from syncd.sandbox.businesscentral import BCState, BusinessCentralEmulator
from syncd.sandbox.common import Faults
from syncd.sandbox.entra import TokenProblem
from syncd.sandbox.superoffice import (
    SANDBOX_APP_PRIVATE_KEY_PEM,
    SANDBOX_APP_PUBLIC_KEY_PEM,
    SANDBOX_SO_APP_TOKEN,
    SANDBOX_SO_JWT_PUBLIC_KEY_PEM,
    SANDBOX_SO_SYSTEM_USER_TOKEN,
    SANDBOX_SO_TENANT,
    SOState,
    SuperOfficeEmulator,
)
from syncd.secrets import Secret, known_secret_values

TENANT = "sandbox-tenant"
CLIENT_ID = "00000000-0000-0000-0000-00000000c11e"
CLIENT_SECRET = "sandbox-bc-secret"
T0 = 1_750_000_000.0


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class BCSite:
    """The sandbox Business Central emulator (API + Entra token endpoint) on a free port."""

    emulator: BusinessCentralEmulator
    server: TestServer
    session: aiohttp.ClientSession
    clock: FakeClock

    @property
    def token_url(self) -> str:
        return str(self.server.make_url(f"/{TENANT}/oauth2/v2.0/token"))

    @property
    def api_url(self) -> str:
        return str(self.server.make_url(f"/v2.0/{TENANT}/production/api/v2.0/companies"))

    def token_requests(self) -> int:
        return self.emulator.log.count(method="POST", route_contains="oauth2")

    def api_401s(self) -> int:
        return self.emulator.log.count(route_contains="companies", status=401)

    def faults(self, **knobs: Any) -> None:
        self.emulator.fault_state.set(Faults(**knobs))

    def auth(self, **kw: Any) -> ClientCredentialsAuth:
        kw.setdefault("client_secret", Secret(CLIENT_SECRET))
        kw.setdefault("retry_backoff", 0.0)
        return ClientCredentialsAuth(
            tenant_id=kw.pop("tenant_id", TENANT),
            client_id=kw.pop("client_id", CLIENT_ID),
            token_url=kw.pop("token_url") if "token_url" in kw else self.token_url,
            clock=self.clock,
            **kw,
        )


@asynccontextmanager
async def bc_site(**emulator_options: Any) -> AsyncIterator[BCSite]:
    clock = FakeClock()
    state = BCState()
    state.add_company("CRONUS")
    emulator_options.setdefault("clients", {CLIENT_ID: CLIENT_SECRET})
    emulator = BusinessCentralEmulator(state, tenant=TENANT, **emulator_options)
    emulator.clock = clock
    server = TestServer(emulator.make_app(), port=0)
    await server.start_server()
    session = aiohttp.ClientSession()
    try:
        yield BCSite(emulator, server, session, clock)
    finally:
        await session.close()
        await server.close()


@pytest.fixture
async def bc() -> AsyncIterator[BCSite]:
    async with bc_site() as site:
        yield site


async def call_api(auth: Auth, session: aiohttp.ClientSession, url: str) -> int:
    """What an API client does: send with auth headers; on 401 invalidate and retry once if told to."""
    headers = await auth.headers(session)
    async with session.get(url, headers=headers) as resp:
        status = resp.status
    if status == 401 and await auth.invalidate(headers):
        headers = await auth.headers(session)
        async with session.get(url, headers=headers) as resp:
            status = resp.status
    return status


# -- Entra ID client credentials -------------------------------------------------------------------------


async def test_token_is_fetched_once_for_many_api_calls(bc: BCSite) -> None:
    auth = bc.auth()
    statuses = [await call_api(auth, bc.session, bc.api_url) for _ in range(50)]
    assert statuses == [200] * 50
    assert bc.token_requests() == 1
    assert auth.fetch_count == 1


async def test_token_is_refreshed_before_expiry_so_no_401_ever_happens(bc: BCSite) -> None:
    auth = bc.auth()
    hours = 5
    for _ in range(hours * 3600 // 30):  # a call every 30 s for five hours
        assert await call_api(auth, bc.session, bc.api_url) == 200
        bc.clock.advance(30)
    assert bc.api_401s() == 0
    # 3599 s tokens renewed 300 s early: a new token every 3299 s at most
    assert bc.token_requests() == math.ceil(hours * 3600 / 3300)


async def test_short_lived_tokens_are_renewed_at_ninety_percent_of_their_life() -> None:
    async with bc_site(token_lifetime=600) as site:
        auth = site.auth()
        await auth.headers(site.session)
        site.clock.advance(539)
        await auth.headers(site.session)
        assert site.token_requests() == 1
        site.clock.advance(1)
        await auth.headers(site.session)
        assert site.token_requests() == 2


async def test_very_short_lived_tokens_keep_working() -> None:
    async with bc_site(token_lifetime=5) as site:
        auth = site.auth()
        for _ in range(20):  # a call every 3 s: each token serves one or two calls
            assert await call_api(auth, site.session, site.api_url) == 200
            site.clock.advance(3)
        assert site.api_401s() == 0


async def test_401_after_revocation_refreshes_exactly_once(bc: BCSite) -> None:
    auth = bc.auth()
    assert await call_api(auth, bc.session, bc.api_url) == 200
    bc.emulator.entra.revoke_all()
    assert await call_api(auth, bc.session, bc.api_url) == 200  # the caller never sees the 401
    assert bc.api_401s() == 1
    assert bc.token_requests() == 2
    assert await call_api(auth, bc.session, bc.api_url) == 200
    assert bc.token_requests() == 2


async def test_concurrent_401s_share_one_refresh(bc: BCSite) -> None:
    auth = bc.auth()
    await call_api(auth, bc.session, bc.api_url)
    bc.emulator.entra.revoke_all()
    bc.faults(latency_ms=20)
    statuses = await asyncio.gather(*(call_api(auth, bc.session, bc.api_url) for _ in range(20)))
    assert statuses == [200] * 20
    assert bc.api_401s() == 20
    assert bc.token_requests() == 2


async def test_a_late_401_for_an_already_replaced_token_keeps_the_new_one(bc: BCSite) -> None:
    auth = bc.auth()
    old = await auth.headers(bc.session)
    bc.emulator.entra.revoke_all()
    assert await auth.invalidate(old) is True
    new = await auth.headers(bc.session)
    assert new != old
    assert await auth.invalidate(old) is True  # a slow request that still carried the old token
    assert await auth.headers(bc.session) == new
    assert bc.token_requests() == 2


async def test_a_fresh_token_refused_again_is_not_renewed_on_every_call(
    bc: BCSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(token: str) -> Any:
        raise TokenProblem("unknown")

    # BC refuses every token, e.g. the app is not enabled on its "Microsoft Entra applications" page
    monkeypatch.setattr(bc.emulator.entra, "validate", refuse)
    auth = bc.auth()
    assert await call_api(auth, bc.session, bc.api_url) == 401
    assert bc.token_requests() == 2  # the original and one renewal after the first 401
    for _ in range(10):
        assert await call_api(auth, bc.session, bc.api_url) == 401
    assert bc.token_requests() == 2  # no token storm
    bc.clock.advance(120)  # a while later a 401 may be an expiry again: one more renewal is allowed
    assert await call_api(auth, bc.session, bc.api_url) == 401
    assert bc.token_requests() == 3


async def test_concurrent_first_callers_share_one_token_request(bc: BCSite) -> None:
    auth = bc.auth()
    bc.faults(latency_ms=50)
    headers = await asyncio.gather(*(auth.headers(bc.session) for _ in range(25)))
    assert bc.token_requests() == 1
    assert len({h["Authorization"] for h in headers}) == 1
    bc.clock.advance(3400)  # inside the refresh margin: every caller wants a new token at once
    headers = await asyncio.gather(*(auth.headers(bc.session) for _ in range(25)))
    assert bc.token_requests() == 2
    assert len({h["Authorization"] for h in headers}) == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_refresh(bc: BCSite) -> None:
    auth = bc.auth()
    bc.faults(latency_ms=50)
    first = asyncio.ensure_future(auth.headers(bc.session))
    second = asyncio.ensure_future(auth.headers(bc.session))
    await asyncio.sleep(0.01)
    first.cancel()
    assert (await second)["Authorization"].startswith("Bearer ")
    assert bc.token_requests() == 1


@pytest.mark.parametrize(
    ("change", "code", "hint_part"),
    [
        (
            {"client_secret": Secret("not-the-secret-xyz")},
            "AADSTS7000215",
            "client_secret is wrong or expired",
        ),
        (
            {"client_id": "11111111-2222-3333-4444-555555555555"},
            "AADSTS700016",
            "client_id 11111111-2222-3333-4444-555555555555 not found in tenant",
        ),
        ({"tenant_id": "other-tenant"}, "AADSTS90002", "tenant_id other-tenant does not exist"),
        ({"scope": "openid"}, "invalid scope", "for Business Central the scope is " + BC_SCOPE),
        ({"scope": "https://graph.microsoft.com/.default"}, "AADSTS500011", "has Business Central"),
    ],
)
async def test_entra_failures_become_auth_errors_with_specific_hints(
    bc: BCSite, change: dict[str, Any], code: str, hint_part: str
) -> None:
    tenant = change.get("tenant_id", TENANT)
    auth = bc.auth(token_url=str(bc.server.make_url(f"/{tenant}/oauth2/v2.0/token")), **change)
    with pytest.raises(AuthError) as e:
        await auth.headers(bc.session)
    assert code in e.value.message
    assert e.value.hint is not None and hint_part in e.value.hint
    assert e.value.exit_code == ExitCode.AUTH
    assert CLIENT_SECRET not in str(e.value) and "not-the-secret-xyz" not in str(e.value)


async def test_unreachable_token_endpoint_is_unreachable_error_not_auth_error(bc: BCSite) -> None:
    port = bc.server.port
    await bc.server.close()  # nothing listens there any more
    auth = bc.auth(token_url=f"http://127.0.0.1:{port}/{TENANT}/oauth2/v2.0/token", attempts=2)
    with pytest.raises(UnreachableError) as e:
        await auth.headers(bc.session)
    assert f"127.0.0.1:{port}" in str(e.value)
    assert e.value.exit_code == ExitCode.RETRYABLE


async def test_token_endpoint_timeout_is_unreachable_error(bc: BCSite) -> None:
    bc.faults(latency_ms=500)
    auth = bc.auth(timeout=0.05, attempts=1)
    with pytest.raises(UnreachableError, match="no answer within"):
        await auth.headers(bc.session)


async def test_token_endpoint_5xx_is_retried_with_backoff(bc: BCSite) -> None:
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)
        bc.clock.advance(s)  # the shared client's Retry-After gate waits on the auth's clock
        if len(sleeps) == 2:
            bc.faults()  # the outage ends after the second failure

    bc.faults(rate_5xx=1.0, only_routes=["oauth2"])
    auth = bc.auth(attempts=3, retry_backoff=0.5, sleep=sleep)
    assert (await auth.headers(bc.session))["Authorization"].startswith("Bearer ")
    assert bc.token_requests() == 3
    # the API client's backoff: full jitter, attempt n waits within [0.1, 0.5 * 2^n] s
    assert len(sleeps) == 2 and 0.1 <= sleeps[0] <= 0.5 and 0.1 <= sleeps[1] <= 1.0


async def test_renewal_failing_on_the_network_keeps_the_still_valid_token(bc: BCSite) -> None:
    auth = bc.auth(attempts=1)
    assert await call_api(auth, bc.session, bc.api_url) == 200
    bc.faults(rate_5xx=1.0, only_routes=["oauth2"])
    bc.clock.advance(3400)  # renewal due, token valid for 199 s more
    assert await call_api(auth, bc.session, bc.api_url) == 200
    requests_during_outage = bc.token_requests()
    bc.clock.advance(10)  # renewal is retried at most every 30 s, not on every call
    assert await call_api(auth, bc.session, bc.api_url) == 200
    assert bc.token_requests() == requests_during_outage
    bc.clock.advance(200)  # now expired: the outage surfaces
    with pytest.raises(UnreachableError):
        await auth.headers(bc.session)
    bc.faults()
    assert await call_api(auth, bc.session, bc.api_url) == 200
    assert bc.api_401s() == 0


def _self_signed(key: rsa.RSAPrivateKey, name: str = "syncd-test") -> str:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _pem(key: rsa.RSAPrivateKey) -> Secret:
    return Secret(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
    )


@pytest.fixture(scope="module")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


async def test_certificate_credential_gets_a_token(rsa_keys: list[rsa.RSAPrivateKey]) -> None:
    key = rsa_keys[0]
    cert = _self_signed(key)
    cert_client = "22222222-0000-0000-0000-0000000000ce"
    async with bc_site(client_certificates={cert_client: cert.encode()}) as site:
        auth = site.auth(
            client_id=cert_client, client_secret=None, certificate_pem=cert, private_key_pem=_pem(key)
        )
        assert await call_api(auth, site.session, site.api_url) == 200
        assert "certificate" in auth.describe()
        # a certificate the app registration does not know
        other = _self_signed(rsa_keys[1], "other")
        wrong = site.auth(
            client_id=cert_client,
            client_secret=None,
            certificate_pem=other,
            private_key_pem=_pem(rsa_keys[1]),
        )
        with pytest.raises(AuthError) as e:
            await wrong.headers(site.session)
        assert e.value.hint is not None and "upload the certificate" in e.value.hint


def test_certificate_and_key_must_match(rsa_keys: list[rsa.RSAPrivateKey]) -> None:
    with pytest.raises(ConfigError, match="does not belong"):
        ClientCredentialsAuth(
            tenant_id=TENANT,
            client_id=CLIENT_ID,
            certificate_pem=_self_signed(rsa_keys[0]),
            private_key_pem=_pem(rsa_keys[1]),
        )


def test_client_credentials_needs_exactly_one_credential(rsa_keys: list[rsa.RSAPrivateKey]) -> None:
    with pytest.raises(ConfigError, match="client_secret is missing"):
        ClientCredentialsAuth(tenant_id=TENANT, client_id=CLIENT_ID)
    with pytest.raises(ConfigError, match="not both"):
        ClientCredentialsAuth(
            tenant_id=TENANT,
            client_id=CLIENT_ID,
            client_secret=Secret(CLIENT_SECRET),
            certificate_pem=_self_signed(rsa_keys[0]),
            private_key_pem=_pem(rsa_keys[0]),
        )


def test_describe_names_client_and_tenant_but_no_secret() -> None:
    auth = ClientCredentialsAuth(tenant_id=TENANT, client_id=CLIENT_ID, client_secret=Secret(CLIENT_SECRET))
    text = auth.describe()
    assert text == f"client_credentials (secret) for client 00000000… at tenant {TENANT}"
    assert CLIENT_SECRET not in text and CLIENT_SECRET not in repr(auth)
    assert auth.token_url == f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"


async def test_access_tokens_are_known_to_log_redaction(bc: BCSite) -> None:
    from syncd.logs import redact_text

    headers = await bc.auth().headers(bc.session)
    token = headers["Authorization"].removeprefix("Bearer ")
    assert token in known_secret_values()  # masked even where it is not JWT-shaped or labelled
    assert token not in redact_text(f"debug: token {token[-20:]}… was {token}")


# -- static credentials --------------------------------------------------------------------------------


async def test_basic_auth_sends_base64_user_and_password_and_never_retries() -> None:
    auth = BasicAuth(username="syncd", password=Secret("sandbox-so-password"))
    async with aiohttp.ClientSession() as session:
        headers = await auth.headers(session)
    assert headers == {"Authorization": "Basic " + base64.b64encode(b"syncd:sandbox-so-password").decode()}
    assert await auth.invalidate(headers) is False
    assert auth.describe() == "basic auth as user 'syncd'"
    assert "sandbox-so-password" not in repr(auth)


def test_basic_auth_rejects_colon_in_username() -> None:
    with pytest.raises(ConfigError, match="':'"):
        BasicAuth(username="a:b", password=Secret("x"))


async def test_soticket_and_bearer_send_app_token_and_never_retry() -> None:
    ticket = SOTicketAuth(ticket=Secret("7T:MAA3ticket=="), app_token=Secret("app-token-123"))
    bearer = BearerAuth(token=Secret("Bearer 8A:Cust1.AGYA"), app_token=None)
    async with aiohttp.ClientSession() as session:
        th = await ticket.headers(session)
        bh = await bearer.headers(session)
    assert th == {"Authorization": "SOTicket 7T:MAA3ticket==", "SO-AppToken": "app-token-123"}
    assert bh == {"Authorization": "Bearer 8A:Cust1.AGYA"}  # a pasted "Bearer " prefix is not doubled
    assert await ticket.invalidate(th) is False and await bearer.invalidate(bh) is False
    assert "7T:" not in ticket.describe() and "8A:" not in bearer.describe()


def test_all_implementations_satisfy_the_protocol() -> None:
    assert isinstance(BasicAuth(username="u", password=Secret("p")), Auth)
    assert isinstance(SOTicketAuth(ticket=Secret("7T:x")), Auth)
    assert isinstance(BearerAuth(token=Secret("t")), Auth)
    assert isinstance(
        ClientCredentialsAuth(tenant_id=TENANT, client_id=CLIENT_ID, client_secret=Secret("s")), Auth
    )


# -- SuperOffice system user (against the sandbox SuperOffice emulator) ---------------------------------

CUST = SANDBOX_SO_TENANT


@dataclass
class SOSite:
    emulator: SuperOfficeEmulator
    server: TestServer
    session: aiohttp.ClientSession
    clock: FakeClock

    @property
    def login_url(self) -> str:
        return str(self.server.make_url("/Login"))

    @property
    def api_url(self) -> str:
        return str(self.server.make_url(f"/{CUST}/api/v1/Contact/1"))

    def exchanges(self) -> int:
        return self.emulator.log.count(method="POST", route_contains="PartnerSystemUser")

    def refused(self) -> int:
        return self.emulator.log.count(status=401)

    def auth(self, **kw: Any) -> SuperOfficeSystemUserAuth:
        kw.setdefault("context_identifier", CUST)
        kw.setdefault("application_token", Secret(SANDBOX_SO_APP_TOKEN))
        kw.setdefault("system_user_token", Secret(SANDBOX_SO_SYSTEM_USER_TOKEN))
        kw.setdefault("private_key_pem", Secret(SANDBOX_APP_PRIVATE_KEY_PEM.decode()))
        kw.setdefault("retry_backoff", 0.0)
        kw.setdefault("clock", self.clock)
        return SuperOfficeSystemUserAuth(login_url=self.login_url, **kw)


@pytest.fixture
async def so() -> AsyncIterator[SOSite]:
    clock = FakeClock()
    state = SOState()
    state.add_contact(name="Acme", code="C00001")
    emulator = SuperOfficeEmulator(state, ticket_lifetime=3600)
    emulator.clock = clock
    server = TestServer(emulator.make_app(), port=0)
    await server.start_server()
    site = SOSite(emulator, server, aiohttp.ClientSession(), clock)
    try:
        yield site
    finally:
        await site.session.close()
        await server.close()


async def test_system_user_exchange_with_the_sandbox_key_pair_authenticates(so: SOSite) -> None:
    auth = so.auth(ticket_lifetime=3600)
    headers = await auth.headers(so.session)
    assert headers["Authorization"].startswith("SOTicket 7T:")
    assert headers["SO-AppToken"] == SANDBOX_SO_APP_TOKEN
    statuses = [await call_api(auth, so.session, so.api_url) for _ in range(30)]
    assert statuses == [200] * 30
    assert so.exchanges() == 1  # the ticket is cached


def test_signed_system_token_is_token_utc_minute_and_rsa_sha256_signature(so: SOSite) -> None:
    auth = so.auth()
    token, stamp, signature = auth.signed_system_token().reveal().rsplit(".", 2)
    assert token == SANDBOX_SO_SYSTEM_USER_TOKEN
    assert stamp == dt.datetime.fromtimestamp(so.clock(), dt.UTC).strftime("%Y%m%d%H%M")
    public = serialization.load_pem_public_key(SANDBOX_APP_PUBLIC_KEY_PEM)
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(
        base64.b64decode(signature), f"{token}.{stamp}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )


async def test_idle_ticket_is_renewed_before_it_expires_so_no_401(so: SOSite) -> None:
    auth = so.auth(ticket_lifetime=3600)
    for _ in range(6):  # a call every 55 minutes: each time the ticket is within 5 minutes of expiring
        assert await call_api(auth, so.session, so.api_url) == 200
        so.clock.advance(55 * 60)
    assert so.refused() == 0
    assert so.exchanges() == 6


async def test_default_ticket_lifetime_is_six_hours_not_the_jwt_exp(so: SOSite) -> None:
    so.emulator.ticket_lifetime = 6 * 3600
    auth = so.auth()
    await call_api(auth, so.session, so.api_url)
    so.clock.advance(5 * 3600)  # long past the JWT's exp (minutes), well inside the ticket's 6 h
    assert await call_api(auth, so.session, so.api_url) == 200
    assert so.exchanges() == 1
    so.clock.advance(3600 - 299)
    await call_api(auth, so.session, so.api_url)
    assert so.exchanges() == 2


async def test_revoked_ticket_is_renewed_exactly_once_after_401(so: SOSite) -> None:
    auth = so.auth()
    assert await call_api(auth, so.session, so.api_url) == 200
    so.emulator.revoke_all()
    results = await asyncio.gather(*(call_api(auth, so.session, so.api_url) for _ in range(8)))
    assert results == [200] * 8
    assert so.exchanges() == 2
    assert so.refused() == 8


async def test_jwt_signature_is_verified_with_the_sandbox_public_key(so: SOSite) -> None:
    good = so.auth(jwt_public_key_pem=SANDBOX_SO_JWT_PUBLIC_KEY_PEM.decode())
    assert await call_api(good, so.session, so.api_url) == 200
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    other_pem = other_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bad = so.auth(jwt_public_key_pem=other_pem.decode())
    with pytest.raises(AuthError, match="does not verify"):
        await bad.headers(so.session)


@pytest.mark.parametrize(
    ("change", "message", "hint"),
    [
        ("wrong_key", "signature is not valid", "superoffice.auth.private_key"),
        ("app_token", "Invalid application token", "superoffice.auth.application_token"),
        ("system_user_token", "Unknown system user token", "superoffice.auth.system_user_token"),
        ("context", "context identifier", "superoffice.auth.context_identifier"),
        ("clock", "timestamp", "clock"),
    ],
)
async def test_system_user_failures_are_auth_errors_naming_the_key_to_fix(
    so: SOSite, rsa_keys: list[rsa.RSAPrivateKey], change: str, message: str, hint: str
) -> None:
    kw: dict[str, Any] = {
        "wrong_key": {"private_key_pem": _pem(rsa_keys[0])},
        "app_token": {"application_token": Secret("not-the-app-token")},
        "system_user_token": {"system_user_token": Secret("OtherApp-x1y2z3")},
        "context": {"context_identifier": "Cust99999"},
        "clock": {"clock": FakeClock(T0 + 3600)},  # this host's clock is an hour fast
    }[change]
    auth = so.auth(**kw)
    with pytest.raises(AuthError) as e:
        await auth.headers(so.session)
    assert message in e.value.message
    assert e.value.hint is not None and hint in e.value.hint
    assert e.value.exit_code == ExitCode.AUTH
    for secret in (SANDBOX_SO_APP_TOKEN, "not-the-app-token", SANDBOX_SO_SYSTEM_USER_TOKEN):
        assert secret not in str(e.value)
    assert so.refused() == 0


async def test_private_key_in_rsakeyvalue_xml_form_works(so: SOSite) -> None:
    key = serialization.load_pem_private_key(SANDBOX_APP_PRIVATE_KEY_PEM, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    n = key.private_numbers()

    def b64(i: int) -> str:
        return base64.b64encode(i.to_bytes((i.bit_length() + 7) // 8, "big")).decode()

    parts = {
        "Modulus": n.public_numbers.n,
        "Exponent": n.public_numbers.e,
        "P": n.p,
        "Q": n.q,
        "DP": n.dmp1,
        "DQ": n.dmq1,
        "InverseQ": n.iqmp,
        "D": n.d,
    }
    xml = "<RSAKeyValue>" + "".join(f"<{k}>{b64(v)}</{k}>" for k, v in parts.items()) + "</RSAKeyValue>"
    auth = so.auth(private_key_pem=Secret(xml))
    assert await call_api(auth, so.session, so.api_url) == 200


def test_unusable_private_key_is_a_config_error_that_does_not_echo_it() -> None:
    garbage = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ConfigError) as e:
        SuperOfficeSystemUserAuth(
            context_identifier=CUST,
            application_token=Secret(SANDBOX_SO_APP_TOKEN),
            system_user_token=Secret(SANDBOX_SO_SYSTEM_USER_TOKEN),
            private_key_pem=Secret(garbage),
        )
    assert "superoffice.auth.private_key" in str(e.value)
    assert "bm90IGEga2V5" not in str(e.value)


async def test_unreachable_login_service_is_unreachable_error(so: SOSite) -> None:
    url = so.login_url
    await so.server.close()
    auth = SuperOfficeSystemUserAuth(
        login_url=url,
        context_identifier=CUST,
        application_token=Secret(SANDBOX_SO_APP_TOKEN),
        system_user_token=Secret(SANDBOX_SO_SYSTEM_USER_TOKEN),
        private_key_pem=Secret(SANDBOX_APP_PRIVATE_KEY_PEM.decode()),
        attempts=1,
    )
    with pytest.raises(UnreachableError):
        await auth.headers(so.session)


def test_system_user_describe_is_secret_free() -> None:
    auth = SuperOfficeSystemUserAuth(
        context_identifier=CUST,
        application_token=Secret(SANDBOX_SO_APP_TOKEN),
        system_user_token=Secret(SANDBOX_SO_SYSTEM_USER_TOKEN),
        private_key_pem=Secret(SANDBOX_APP_PRIVATE_KEY_PEM.decode()),
    )
    assert auth.describe() == f"SuperOffice system user for {CUST} via https://online.superoffice.com/login"
    assert SANDBOX_SO_APP_TOKEN not in repr(auth) and SANDBOX_SO_SYSTEM_USER_TOKEN not in repr(auth)
    assert auth.authenticate_url == "https://online.superoffice.com/login/api/PartnerSystemUser/Authenticate"
