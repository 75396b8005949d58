"""``syncd check`` on the SuperOffice side: tenant state, system user sign-in, read rights per kind and
the change detection the runs will use."""

from __future__ import annotations

import re

import aiohttp

from syncd.auth import BasicAuth, SOTicketAuth, SuperOfficeSystemUserAuth
from syncd.check.findings import (
    Failed,
    Finding,
    detail_of,
    fail,
    host_of,
    quick_limits,
    status_text,
    unreachable,
)
from syncd.config import ApiLimits, Config
from syncd.credentials import Auth
from syncd.errors import ApiError, AuthError, ExitCode, UnreachableError
from syncd.http import (
    DEFAULT_REPLY_BYTES,
    ApiClient,
    BadEncoding,
    ReplyTooLarge,
    Response,
    network_problem,
    new_session,
    read_body,
)
from syncd.runtime import superoffice_api, superoffice_auth
from syncd.superoffice import LINK_ID, OWNER_TABLE, PICTURE_LINK_TYPE, probe_read, tenant_state_url

__all__ = ["check_superoffice"]

_SO_PLURAL = {"contact": "contacts", "person": "persons"}

# -- SuperOffice -------------------------------------------------------------------------------------


async def check_superoffice(config: Config, out: list[Finding]) -> None:
    cfg = config.superoffice
    limits = quick_limits(cfg.limits)
    tenant = cfg.context_identifier
    online_tenant = bool(re.fullmatch(r"cust\d+", tenant, re.IGNORECASE))
    async with new_session(connect_timeout=limits.connect_timeout) as session:
        auth = superoffice_auth(cfg, attempts=1, timeout=limits.timeout)
        api = superoffice_api(cfg, session, auth, limits)
        state_url = tenant_state_url(cfg.base_url, tenant, cfg.state_url)
        if online_tenant and state_url is not None:
            await _so_tenant_state(session, state_url, cfg.base_url, tenant, limits, out)
        if isinstance(auth, SuperOfficeSystemUserAuth):
            await _so_system_user(session, auth, out)
        kinds = list(dict.fromkeys(m.source for m in config.mappings))
        for i, kind in enumerate(kinds):
            await _so_read(api, cfg.base_url, kind, tenant, out, first=i == 0)
        if kinds:
            await _so_change_detection(api, cfg.base_url, cfg.change_detection, kinds[0], out)


async def _so_tenant_state(
    session: aiohttp.ClientSession,
    url: str,
    base_url: str,
    tenant: str,
    limits: ApiLimits,
    out: list[Finding],
) -> None:
    """``GET /api/state/{tenant}`` (no auth): tells maintenance and a deleted tenant apart from the rest.
    A state service that does not answer usefully (a 404 included: the service may be missing, or not
    know a tenant that exists) proves nothing; the authenticated listing decides."""
    same_host = host_of(url) == host_of(base_url)
    try:
        async with session.get(
            url,
            headers={"Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=limits.timeout, sock_connect=limits.connect_timeout),
            allow_redirects=False,
        ) as resp:
            status = resp.status
            body = await read_body(resp, DEFAULT_REPLY_BYTES, truncate=True)
    except (BadEncoding, ReplyTooLarge):
        return
    except (aiohttp.ClientError, TimeoutError) as exc:
        if same_host:
            raise fail(
                f"{host_of(base_url)} unreachable ({network_problem(exc, limits.timeout)})",
                "check superoffice.base_url (host name, port, http/https) and that this machine can reach "
                "it (proxy, firewall, DNS)",
                ExitCode.RETRYABLE,
            ) from None
        return
    if status != 200:
        return
    try:
        state = Response(status, {}, body, url).json()
    except ValueError:
        return
    if not isinstance(state, dict):
        return
    fields = {str(k).lower(): v for k, v in state.items()}
    name = str(fields.get("state") or "")
    running = fields.get("isrunning")
    if running is False:
        deleted = name.lower() == "deleted"
        raise fail(
            f"tenant {tenant} is {name or 'not running'}: its API is not available",
            "the tenant was deleted: check the CustNNNNN part of superoffice.base_url"
            if deleted
            else "SuperOffice maintenance (upgrades, Saturday 20:00 to Sunday 06:00, patches Thursday 22:00 "
            "to Friday 06:00) or a suspended tenant; run again later or ask the tenant's administrator",
            ExitCode.CONFIG if deleted else ExitCode.RETRYABLE,
        )
    if running is True:
        out.append(Finding(True, f"tenant {tenant} is {name or 'running'}"))


def _tenant_not_found(tenant: str, why: str) -> Failed:
    return fail(
        f"SuperOffice tenant {tenant!r} not found ({why})",
        "check the CustNNNNN part of superoffice.base_url (https://online.superoffice.com/CustNNNNN/api/v1); "
        "it is in the address bar after signing in to SuperOffice",
        ExitCode.CONFIG,
    )


async def _so_system_user(
    session: aiohttp.ClientSession, auth: SuperOfficeSystemUserAuth, out: list[Finding]
) -> None:
    what = "system user sign-in"
    try:
        await auth.headers(session)
    except UnreachableError as exc:
        raise unreachable(
            what,
            exc,
            f"check superoffice.auth.login_url ({auth.login_url}) and that this machine can reach it",
        ) from None
    except AuthError as exc:
        raise fail(f"{what} refused: {exc.message}", exc.hint, ExitCode.AUTH) from None
    out.append(
        Finding(
            True,
            f"system user signed in (ticket for {auth.context_identifier} from {host_of(auth.login_url)})",
        )
    )


async def _so_read(
    api: ApiClient,
    base_url: str,
    kind: str,
    tenant: str,
    out: list[Finding],
    *,
    first: bool,
) -> None:
    plural = _SO_PLURAL[kind]
    what = f"read {plural}"
    try:
        resp = await probe_read(api, base_url, kind, allow=(401, 403, 404), what=what)
    except UnreachableError as exc:
        raise unreachable(
            what,
            exc,
            "check superoffice.base_url (host name, port, http/https) and that this machine can reach it",
        ) from None
    except ApiError as exc:
        raise fail(f"{plural}: {exc.message.removeprefix(what + ': ')}", exc.hint, exc.exit_code) from None
    if resp.status == 401:
        raise _so_unauthorized(api.auth, status_text(resp))
    if resp.status == 403:
        raise fail(
            f"{plural}: no rights to read {plural} ({status_text(resp)})",
            "the SuperOffice user syncd signs in as needs read rights on companies and persons "
            "(role and data rights in SuperOffice Admin)",
            ExitCode.AUTH,
        )
    if resp.status == 404:
        code, message = detail_of(resp)
        if (code or "").lower() == "sotenantnotfoundexception" or "tenant" in message.lower():
            raise _tenant_not_found(tenant, message or f"HTTP 404 from {host_of(base_url)}")
        raise fail(
            f"{plural}: {api.api} answered {status_text(resp)}",
            "superoffice.base_url must end in /api/v1: https://online.superoffice.com/CustNNNNN/api/v1 "
            "(online) or https://server/SuperOffice/api/v1 (onsite)",
            ExitCode.CONFIG,
        )
    via = f" (signed in with {api.auth.describe()})" if first else ""
    out.append(Finding(True, f"{plural}: read one page{via}"))


async def _so_change_detection(
    api: ApiClient, base_url: str, mode: str, kind: str, out: list[Finding]
) -> None:
    """One line: which change detection runs will use (syncd.fingerprints), and why."""
    if mode == "per_record":
        out.append(Finding(True, "change detection: per_record (ImageInfo for each record; as configured)"))
        return
    what = "ask the Dynamic archive provider"
    try:
        resp = await api.request(
            "GET",
            f"{base_url}/archive/dynamic",
            params={
                "$select": LINK_ID,
                "$filter": f"BinaryObjectLink.ownerTable eq {OWNER_TABLE[kind]} and "
                f"BinaryObjectLink.linkType eq {PICTURE_LINK_TYPE[kind]}",
                "$top": "1",
            },
            allow=(400, 403, 404),
            what=what,
        )
    except UnreachableError as exc:
        raise unreachable(what, exc, "SuperOffice answered the listing; try again in a moment") from None
    except ApiError as exc:
        status, detail = exc.status, exc.message.removeprefix(what + ": ")
    else:
        status, detail = resp.status, status_text(resp)
    if status == 200:
        out.append(
            Finding(
                True,
                "change detection: bulk (the Dynamic archive provider answers: every picture's fingerprint "
                "in one request per 1,000 pictures; checked against ImageInfo on a sample)",
            )
        )
        return
    if mode == "auto":
        out.append(
            Finding(
                True,
                f"change detection: per_record (the Dynamic archive provider is not available: {detail}; "
                "runs fall back to ImageInfo for each record)",
            )
        )
        return
    raise fail(
        f"change detection: bulk is configured, but the Dynamic archive provider is not available ({detail})",
        "allow the app's user the Dynamic archive provider (BinaryObjectLink), or set "
        "superoffice.change_detection to auto or per_record",
        ExitCode.AUTH if status == 403 else ExitCode.CONFIG,
    )


def _so_unauthorized(auth: Auth, status: str) -> Failed:
    if isinstance(auth, BasicAuth):
        return fail(
            f"SuperOffice refused {auth.describe()} ({status})",
            "check superoffice.auth.username and password (the SuperOffice user's own password; onsite "
            "only: SuperOffice Online does not accept Basic, use type: system_user there)",
            ExitCode.AUTH,
        )
    if isinstance(auth, SuperOfficeSystemUserAuth):
        return fail(
            f"SuperOffice refused the system user's ticket ({status})",
            "superoffice.auth.application_token must belong to the app the ticket was issued for, and "
            "context_identifier must be the tenant in superoffice.base_url",
            ExitCode.AUTH,
        )
    kind = "ticket" if isinstance(auth, SOTicketAuth) else "token"
    return fail(
        f"SuperOffice refused the configured {kind} ({status})",
        f"the {kind} has expired or belongs to another tenant: get a new one, or use type: system_user "
        "(syncd then renews the ticket itself)",
        ExitCode.AUTH,
    )
