"""Wiring: config → sessions, auth, API clients, ledger, normalizer pool, engine.

The CLI's one-shot run, ``syncd check`` and the daemon all build their collaborators here, so that
there is exactly one place that decides how a config becomes running objects. Tests build the same
objects against the sandbox.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import aiohttp

from syncd import superoffice
from syncd.auth import (
    DEFAULT_TIMEOUT,
    BasicAuth,
    BearerAuth,
    ClientCredentialsAuth,
    SOTicketAuth,
    SuperOfficeSystemUserAuth,
)
from syncd.businesscentral import BusinessCentralClient, CompanyDirectory
from syncd.config import (
    ApiLimits,
    BCBasicAuth,
    BCBearerAuth,
    BCClientCredentials,
    BusinessCentralConfig,
    Config,
    SOBasicAuth,
    SOBearerAuth,
    SOTicketAuthConfig,
    SuperOfficeConfig,
)
from syncd.credentials import Auth
from syncd.decodebudget import DecodeBudget, budgeted
from syncd.engine import Engine
from syncd.http import ApiClient, HttpObserver, new_session
from syncd.ledger import Ledger
from syncd.run import Reporter, executor_normalizer
from syncd.superoffice import SuperOfficeClient

# What a 403 from each API tells the user to fix (ApiClient's ``permission_hint``).
SO_PERMISSION_HINT = "the SuperOffice user lacks rights for this data"
BC_PERMISSION_HINT = (
    "the Entra app needs a permission set in Business Central (Microsoft Entra applications page) that "
    "allows reading and modifying these records"
)


def superoffice_auth(
    cfg: SuperOfficeConfig,
    clock: Callable[[], float] = time.time,
    *,
    attempts: int = 3,
    timeout: float = DEFAULT_TIMEOUT,
) -> Auth:
    """The SuperOffice auth for ``cfg``. ``attempts``/``timeout`` bound each request to the login service
    (``syncd check`` uses one attempt so that an unreachable host is reported at once)."""
    a = cfg.auth
    if isinstance(a, SOBasicAuth):
        return BasicAuth(username=a.username, password=a.password)
    if isinstance(a, SOTicketAuthConfig):
        return SOTicketAuth(ticket=a.ticket, app_token=a.app_token)
    if isinstance(a, SOBearerAuth):
        return BearerAuth(token=a.token, app_token=a.app_token)
    login_url = a.login_url or superoffice.login_url(cfg.base_url)
    return SuperOfficeSystemUserAuth(
        login_url=login_url,
        context_identifier=a.context_identifier or cfg.context_identifier,
        application_token=a.application_token,
        system_user_token=a.system_user_token,
        private_key_pem=a.private_key,
        jwt_public_key_pem=a.jwt_public_key,
        ticket_lifetime=a.ticket_lifetime,
        clock=clock,
        attempts=attempts,
        timeout=timeout,
    )


def businesscentral_auth(
    cfg: BusinessCentralConfig,
    clock: Callable[[], float] = time.time,
    *,
    attempts: int = 3,
    timeout: float = DEFAULT_TIMEOUT,
) -> Auth:
    """The Business Central auth for ``cfg``; ``attempts``/``timeout`` as for :func:`superoffice_auth`."""
    a = cfg.auth
    if isinstance(a, BCClientCredentials):
        return ClientCredentialsAuth(
            tenant_id=a.tenant_id,
            client_id=a.client_id,
            client_secret=a.client_secret,
            certificate_pem=a.certificate,
            private_key_pem=a.private_key,
            scope=a.scope,
            token_url=a.token_url,
            clock=clock,
            attempts=attempts,
            timeout=timeout,
        )
    if isinstance(a, BCBasicAuth):
        return BasicAuth(username=a.username, password=a.password)
    assert isinstance(a, BCBearerAuth)
    return BearerAuth(token=a.token, app_token=None)


@dataclass
class Runtime:
    config: Config
    so_api: ApiClient
    bc_api: ApiClient
    source: SuperOfficeClient
    target: BusinessCentralClient  # the first mapping's company (businesscentral.company when set)
    ledger: Ledger | None
    engine: Engine
    targets: dict[str, BusinessCentralClient] = field(default_factory=dict)  # by mapping name

    def target_of(self, mapping: str) -> BusinessCentralClient:
        return self.targets.get(mapping, self.target)


def superoffice_api(
    cfg: SuperOfficeConfig,
    session: aiohttp.ClientSession,
    auth: Auth,
    limits: ApiLimits,
    observer: HttpObserver | None = None,
) -> ApiClient:
    """The HTTP client for SuperOffice's REST API: credentials go to ``base_url``'s origin only."""
    return ApiClient(
        api="superoffice",
        session=session,
        auth=auth,
        limits=limits,
        observer=observer,
        base_url=cfg.base_url,
        permission_hint=SO_PERMISSION_HINT,
    )


def businesscentral_api(
    cfg: BusinessCentralConfig,
    session: aiohttp.ClientSession,
    auth: Auth,
    limits: ApiLimits,
    observer: HttpObserver | None = None,
) -> ApiClient:
    """The HTTP client for Business Central's API (one per tenant: one token, one rate limit)."""
    return ApiClient(
        api="businesscentral",
        session=session,
        auth=auth,
        limits=limits,
        burst=limits.burst,
        observer=observer,
        base_url=cfg.base_url,
        permission_hint=BC_PERMISSION_HINT,
    )


@asynccontextmanager
async def open_runtime(
    config: Config,
    *,
    read_only_ledger: bool = False,
    reporter: Reporter | None = None,
    observer: HttpObserver | None = None,
    stop: asyncio.Event | None = None,
    clock: Callable[[], float] = time.time,
    open_ledger: bool = True,
) -> AsyncIterator[Runtime]:
    """Everything a run needs, closed again in reverse order on exit."""
    async with AsyncExitStack() as stack:
        so_session = await stack.enter_async_context(
            new_session(connect_timeout=config.superoffice.limits.connect_timeout)
        )
        bc_session = await stack.enter_async_context(
            new_session(connect_timeout=config.businesscentral.limits.connect_timeout)
        )
        so_api = superoffice_api(
            config.superoffice,
            so_session,
            superoffice_auth(config.superoffice, clock),
            config.superoffice.limits,
            observer,
        )
        bc_api = businesscentral_api(
            config.businesscentral,
            bc_session,
            businesscentral_auth(config.businesscentral, clock),
            config.businesscentral.limits,
            observer,
        )
        source = SuperOfficeClient(
            so_api,
            config.superoffice.base_url,
            page_size=config.superoffice.page_size,
            max_image_bytes=config.superoffice.max_image_bytes,
        )
        # One client per company, all on the one bc_api (one token, one rate limit for the tenant) and
        # one company directory (one GET /companies for all of them).
        directory = CompanyDirectory(bc_api, config.businesscentral.base_url)
        clients: dict[str, BusinessCentralClient] = {}
        default = config.businesscentral.company or config.company_of(config.mappings[0])
        for company in [default, *config.companies]:
            key = company.strip().casefold()
            if key not in clients:
                clients[key] = BusinessCentralClient(
                    bc_api,
                    config.businesscentral.base_url,
                    company,
                    page_size=config.businesscentral.page_size,
                    directory=directory,
                )
        target = clients[default.strip().casefold()]
        targets = {m.name: clients[config.company_of(m).strip().casefold()] for m in config.mappings}
        ledger: Ledger | None = None
        if open_ledger:
            if read_only_ledger:
                ledger = await Ledger.open(config.ledger, readonly=True) if config.ledger.exists() else None
            else:
                ledger = await Ledger.open(config.ledger)
            if ledger is not None:
                stack.push_async_callback(ledger.close)
        workers = config.limits.cpu_workers or os.cpu_count() or 1
        executor = stack.enter_context(
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="normalize")
        )
        # every decode of this runtime within picture.max_decode_memory, whatever the concurrency
        budget = DecodeBudget(config.picture.max_decode_memory)
        engine = Engine(
            config=config,
            source=source,
            target=target,
            targets=targets,
            ledger=ledger,
            normalizer=budgeted(executor_normalizer(executor), budget),
            reporter=reporter,
            stop=stop,
        )
        yield Runtime(config, so_api, bc_api, source, target, ledger, engine, targets)
