"""``syncd check``: is this config usable? Authenticate and read one page on each side, say what is wrong.

Output, one line per check and the hint indented below a failure::

    SuperOffice  https://online.superoffice.com/Cust12345/api/v1
      ✓ tenant Cust12345 is Running
      ✓ system user signed in (ticket for Cust12345 from online.superoffice.com)
      ✓ contacts: read one page
    Business Central  https://api.businesscentral.dynamics.com/v2.0/TENANT/production/api/v2.0
      ✓ Entra ID issued a token (client 1b2c3d4e… at tenant TENANT)
      ✗ customers: no permission to read customers (HTTP 403 Authorization_InsufficientPermissions: …)
          hint: in Business Central open "Microsoft Entra applications", select client …
    Ledger
      ✓ /var/lib/syncd/ledger.sqlite: writable

    ✗ check failed (exit 5: credentials or permissions)

Each side stops at its first failure (later checks could only fail for the same reason); the two sides
are checked at the same time. Nothing is retried and every request has a short timeout, so a refused
connection answers at once and a silent host within seconds. The exit code is the most serious problem
found: 1 configuration (SuperOffice tenant, BC environment or company not found, ledger not writable),
5 credentials or permissions, 3 unreachable or not available now. Every printed line goes through the log
redaction, so no secret can appear even if an API echoed one.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from rich.console import Console

from syncd.auth import (
    Auth,
    BasicAuth,
    BearerAuth,
    ClientCredentialsAuth,
    SOTicketAuth,
    SuperOfficeSystemUserAuth,
)
from syncd.businesscentral import CompanyDirectory, location
from syncd.businesscentral import probe_read as bc_probe_read
from syncd.config import ApiLimits, Config
from syncd.errors import ApiError, AuthError, ConfigError, ExitCode, SyncdError, UnreachableError
from syncd.http import (
    DEFAULT_REPLY_BYTES,
    ApiClient,
    BadEncoding,
    ReplyTooLarge,
    Response,
    error_detail,
    network_problem,
    new_session,
    read_body,
)
from syncd.jobs import SEVERITY
from syncd.runtime import businesscentral_auth, superoffice_auth
from syncd.servertext import for_terminal
from syncd.superoffice import LINK_ID, OWNER_TABLE, PICTURE_LINK_TYPE, tenant_state_url
from syncd.superoffice import probe_read as so_probe_read

__all__ = ["CHECK_CONNECT_TIMEOUT", "CHECK_TIMEOUT", "Finding", "Section", "check_config", "run_check"]

CHECK_TIMEOUT = 15.0  # seconds per request at most (the config may allow longer for real runs)
CHECK_CONNECT_TIMEOUT = 10.0

_SO_PLURAL = {"contact": "contacts", "person": "persons"}
_EXIT_MEANING = {
    ExitCode.CONFIG: "configuration",
    ExitCode.AUTH: "credentials or permissions",
    ExitCode.RETRYABLE: "unreachable or not available now; try again later",
}
_PERMISSION_WORDS = ("permission", "not authorized", "unauthorized to", "forbidden")


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report: a check that passed, or one that failed with a hint and an exit code."""

    ok: bool
    text: str
    hint: str | None = None
    code: ExitCode = ExitCode.OK


@dataclass(slots=True)
class Section:
    """The findings for one side (SuperOffice, Business Central, ledger), in the order they were made."""

    title: str
    findings: list[Finding]

    @property
    def code(self) -> ExitCode:
        return _worst(f.code for f in self.findings)


class _Failed(Exception):
    """Ends one side's checks with a failing finding."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.text)
        self.finding = finding


def _fail(text: str, hint: str | None, code: ExitCode) -> _Failed:
    return _Failed(Finding(False, text, hint, code))


def _worst(codes: Any) -> ExitCode:
    found = set(codes)
    return next((c for c in SEVERITY if c in found), ExitCode.OK)


def _quick(limits: ApiLimits) -> ApiLimits:
    """No retries and short timeouts: a check answers in seconds instead of backing off for minutes."""
    return limits.model_copy(
        update={
            "max_retries": 0,
            "timeout": min(limits.timeout, CHECK_TIMEOUT),
            "connect_timeout": min(limits.connect_timeout, CHECK_CONNECT_TIMEOUT),
            "max_retry_wait": 0.0,
        }
    )


# -- entry points ------------------------------------------------------------------------------------


async def run_check(config: Config, console: Console) -> int:
    """``syncd check``: run every check, print the report, return the exit code."""
    sections = await check_config(config)
    code = _worst(s.code for s in sections)
    for section in sections:
        console.print(f"[bold]{for_terminal(section.title)}[/]", highlight=False, soft_wrap=True)
        last_hint = None
        for f in section.findings:
            mark = "[green]✓[/]" if f.ok else "[red]✗[/]"
            console.print(f"  {mark} {for_terminal(f.text)}", highlight=False, soft_wrap=True)
            if f.hint and f.hint != last_hint:  # the same advice twice in a row says nothing new
                console.print(f"      hint: {for_terminal(f.hint)}", highlight=False, soft_wrap=True)
            last_hint = f.hint
    console.print()
    if code == ExitCode.OK:
        console.print("[green]✓[/] all checks passed", highlight=False)
    else:
        meaning = _EXIT_MEANING.get(code, code.name.lower())
        console.print(f"[red]✗[/] check failed (exit {int(code)}: {meaning})", highlight=False)
    return int(code)


async def check_config(config: Config) -> list[Section]:
    """Check both APIs (concurrently) and the ledger; the findings in report order."""
    so, bc = await asyncio.gather(
        _side(f"SuperOffice  {config.superoffice.base_url}", lambda out: _check_superoffice(config, out)),
        _side(
            f"Business Central  {config.businesscentral.base_url}",
            lambda out: _check_businesscentral(config, out),
        ),
    )
    return [so, bc, _check_ledger(config)]


async def _side(title: str, body: Callable[[list[Finding]], Awaitable[None]]) -> Section:
    findings: list[Finding] = []
    try:
        await body(findings)
    except _Failed as failed:
        findings.append(failed.finding)
    except ConfigError as exc:  # building the auth: an unreadable key, an empty user name...
        findings.append(Finding(False, exc.message, exc.hint, ExitCode.CONFIG))
    except SyncdError as exc:  # anything not diagnosed more precisely below
        findings.append(Finding(False, exc.message, exc.hint, exc.exit_code))
    return Section(title, findings)


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _unreachable(what: str, exc: UnreachableError, hint: str) -> _Failed:
    text = re.sub(r"; \d+ attempts?\)", ")", exc.message.removeprefix(what + ": "))
    return _fail(f"{what}: {text}", hint, ExitCode.RETRYABLE)


def _reason(message: str) -> str:
    """``… (connection refused; 3 attempts)`` → ``connection refused``."""
    m = re.search(r"\(([^()]*)\)\s*$", message)
    return re.sub(r"; \d+ attempts?$", "", m.group(1)) if m else message


def _detail(resp: Response) -> tuple[str | None, str]:
    """(error code, first line of the message without BC's CorrelationId) of an error response."""
    code, message = error_detail(resp.body)
    first = message.strip().splitlines()[0] if message.strip() else ""
    first = re.sub(r"\s*CorrelationId:\s*[0-9a-fA-F-]+\.?\s*$", "", first).strip()
    return code, first


def _status_text(resp: Response) -> str:
    code, message = _detail(resp)
    return f"HTTP {resp.status}" + (f" {code}" if code else "") + (f": {message}" if message else "")


def _www_authenticate_description(resp: Response) -> str | None:
    header = resp.headers.get("WWW-Authenticate", "")
    m = re.search(r'error_description="([^"]*)"', header)
    return m.group(1) if m else None


def _is_permission_problem(resp: Response) -> bool:
    if resp.status == 403:
        return True
    _, message = _detail(resp)
    return resp.status == 400 and any(w in message.lower() for w in _PERMISSION_WORDS)


# -- SuperOffice -------------------------------------------------------------------------------------


async def _check_superoffice(config: Config, out: list[Finding]) -> None:
    cfg = config.superoffice
    limits = _quick(cfg.limits)
    tenant = cfg.context_identifier
    online_tenant = bool(re.fullmatch(r"cust\d+", tenant, re.IGNORECASE))
    async with new_session(connect_timeout=limits.connect_timeout) as session:
        auth = superoffice_auth(cfg, attempts=1, timeout=limits.timeout)
        api = ApiClient(api="superoffice", session=session, auth=auth, limits=limits, base_url=cfg.base_url)
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
    same_host = _host(url) == _host(base_url)
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
            raise _fail(
                f"{_host(base_url)} unreachable ({network_problem(exc, limits.timeout)})",
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
        raise _fail(
            f"tenant {tenant} is {name or 'not running'}: its API is not available",
            "the tenant was deleted: check the CustNNNNN part of superoffice.base_url"
            if deleted
            else "SuperOffice maintenance (upgrades, Saturday 20:00 to Sunday 06:00, patches Thursday 22:00 "
            "to Friday 06:00) or a suspended tenant; run again later or ask the tenant's administrator",
            ExitCode.CONFIG if deleted else ExitCode.RETRYABLE,
        )
    if running is True:
        out.append(Finding(True, f"tenant {tenant} is {name or 'running'}"))


def _tenant_not_found(tenant: str, why: str) -> _Failed:
    return _fail(
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
        raise _unreachable(
            what,
            exc,
            f"check superoffice.auth.login_url ({auth.login_url}) and that this machine can reach it",
        ) from None
    except AuthError as exc:
        raise _fail(f"{what} refused: {exc.message}", exc.hint, ExitCode.AUTH) from None
    out.append(
        Finding(
            True, f"system user signed in (ticket for {auth.context_identifier} from {_host(auth.login_url)})"
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
        resp = await so_probe_read(api, base_url, kind, allow=(401, 403, 404), what=what)
    except UnreachableError as exc:
        raise _unreachable(
            what,
            exc,
            "check superoffice.base_url (host name, port, http/https) and that this machine can reach it",
        ) from None
    except ApiError as exc:
        raise _fail(f"{plural}: {exc.message.removeprefix(what + ': ')}", exc.hint, exc.exit_code) from None
    if resp.status == 401:
        raise _so_unauthorized(api.auth, _status_text(resp))
    if resp.status == 403:
        raise _fail(
            f"{plural}: no rights to read {plural} ({_status_text(resp)})",
            "the SuperOffice user syncd signs in as needs read rights on companies and persons "
            "(role and data rights in SuperOffice Admin)",
            ExitCode.AUTH,
        )
    if resp.status == 404:
        code, message = _detail(resp)
        if (code or "").lower() == "sotenantnotfoundexception" or "tenant" in message.lower():
            raise _tenant_not_found(tenant, message or f"HTTP 404 from {_host(base_url)}")
        raise _fail(
            f"{plural}: {api.api} answered {_status_text(resp)}",
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
        raise _unreachable(what, exc, "SuperOffice answered the listing; try again in a moment") from None
    except ApiError as exc:
        status, detail = exc.status, exc.message.removeprefix(what + ": ")
    else:
        status, detail = resp.status, _status_text(resp)
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
    raise _fail(
        f"change detection: bulk is configured, but the Dynamic archive provider is not available ({detail})",
        "allow the app's user the Dynamic archive provider (BinaryObjectLink), or set "
        "superoffice.change_detection to auto or per_record",
        ExitCode.AUTH if status == 403 else ExitCode.CONFIG,
    )


def _so_unauthorized(auth: Auth, status: str) -> _Failed:
    if isinstance(auth, BasicAuth):
        return _fail(
            f"SuperOffice refused {auth.describe()} ({status})",
            "check superoffice.auth.username and password (the SuperOffice user's own password; onsite "
            "only: SuperOffice Online does not accept Basic, use type: system_user there)",
            ExitCode.AUTH,
        )
    if isinstance(auth, SuperOfficeSystemUserAuth):
        return _fail(
            f"SuperOffice refused the system user's ticket ({status})",
            "superoffice.auth.application_token must belong to the app the ticket was issued for, and "
            "context_identifier must be the tenant in superoffice.base_url",
            ExitCode.AUTH,
        )
    kind = "ticket" if isinstance(auth, SOTicketAuth) else "token"
    return _fail(
        f"SuperOffice refused the configured {kind} ({status})",
        f"the {kind} has expired or belongs to another tenant: get a new one, or use type: system_user "
        "(syncd then renews the ticket itself)",
        ExitCode.AUTH,
    )


# -- Business Central --------------------------------------------------------------------------------


async def _check_businesscentral(config: Config, out: list[Finding]) -> None:
    cfg = config.businesscentral
    limits = _quick(cfg.limits)
    async with new_session(connect_timeout=limits.connect_timeout) as session:
        auth = businesscentral_auth(cfg, attempts=1, timeout=limits.timeout)
        api = ApiClient(
            api="businesscentral",
            session=session,
            auth=auth,
            limits=limits,
            burst=limits.burst,
            base_url=cfg.base_url,
        )
        if isinstance(auth, ClientCredentialsAuth):
            await _bc_token(session, auth, out)
        # Every company the mappings write to (the one GET /companies the directory keeps), then the read
        # permission per company and entity. Two mappings that reach one company's entity are refused
        # like a run.
        directory = CompanyDirectory(api, cfg.base_url)
        await _bc_companies(directory, out)
        problems: list[Finding] = []
        resolved: dict[str, str] = {}  # company id → as configured
        owners: dict[tuple[str, str], str] = {}
        for company in config.companies:
            try:
                company_id, name = await directory.resolve(company)
            except ConfigError as exc:
                problems.append(Finding(False, exc.message, exc.hint, ExitCode.CONFIG))
                continue
            except UnreachableError as exc:
                raise _unreachable(
                    "list companies", exc, "run the check again; the API answered a moment ago"
                ) from None
            if company_id.lower() not in resolved:
                out.append(Finding(True, f"company {company!r} (id {company_id})"))
            resolved.setdefault(company_id.lower(), company)
            for m in config.mappings:
                if config.company_of(m) != company:
                    continue
                other = owners.setdefault((company_id.lower(), str(m.target)), m.name)
                if other != m.name:
                    problems.append(
                        Finding(
                            False,
                            f"mappings {other!r} and {m.name!r} both write to {m.target} of company "
                            f"{name!r} (id {company_id})",
                            "a record must have one owner: remove one mapping or point it at another company",
                            ExitCode.CONFIG,
                        )
                    )
            for kind in dict.fromkeys(m.target for m in config.mappings if config.company_of(m) == company):
                finding = await _bc_read(api, cfg.base_url, company_id, kind)
                finding = Finding(
                    finding.ok, f"{finding.text} (company {name!r})", finding.hint, finding.code
                )
                (out if finding.ok else problems).append(finding)
        if problems:  # every company and entity set is reported, the failures last
            out.extend(problems[:-1])
            raise _Failed(problems[-1])


async def _bc_token(session: aiohttp.ClientSession, auth: ClientCredentialsAuth, out: list[Finding]) -> None:
    try:
        await auth.headers(session)
    except UnreachableError as exc:
        raise _fail(
            f"token endpoint {_host(auth.token_url)} unreachable ({_reason(exc.message)})",
            "check businesscentral.auth.token_url (default https://login.microsoftonline.com/<tenant_id>/oauth2/"
            "v2.0/token) and that this machine can reach it (proxy, firewall, DNS)",
            ExitCode.RETRYABLE,
        ) from None
    except AuthError as exc:
        raise _fail(exc.message, exc.hint, ExitCode.AUTH) from None
    out.append(
        Finding(True, f"Entra ID issued a token (client {_short(auth.client_id)} at tenant {auth.tenant_id})")
    )


def _short(value: str, keep: int = 8) -> str:
    return value if len(value) <= keep else value[:keep] + "…"


async def _bc_companies(directory: CompanyDirectory, out: list[Finding]) -> None:
    what = "list companies"
    api, base_url = directory.api, directory.base_url
    url_tenant, environment = location(base_url)
    try:
        resp = await directory.probe(allow=(400, 401, 403, 404), what=what)
    except UnreachableError as exc:
        raise _unreachable(
            f"Business Central {what}",
            exc,
            "check businesscentral.base_url (host, port, https) and that this machine can reach it",
        ) from None
    if resp.status == 401:
        raise _bc_unauthorized(api.auth, resp, url_tenant)
    if _is_permission_problem(resp):
        raise _bc_no_permission(api.auth, "companies", resp)
    if resp.status == 404:
        _, message = _detail(resp)
        if environment is not None and "environment" in message.lower():
            raise _fail(
                f"environment {environment!r} not found ({message})",
                "the environment in businesscentral.base_url (…/v2.0/{tenant}/{environment}/api/v2.0) must "
                "be one of the tenant's environments as the Business Central admin center lists them "
                "(e.g. production, sandbox)",
                ExitCode.CONFIG,
            )
        raise _fail(
            f"Business Central answered {_status_text(resp)} for {_host(base_url)}",
            "check businesscentral.base_url: https://api.businesscentral.dynamics.com/v2.0/{tenant}/"
            "{environment}/api/v2.0 online, https://host:7048/{instance}/api/v2.0 on-premises",
            ExitCode.CONFIG,
        )
    if resp.status == 400:
        raise _fail(f"list companies: {_status_text(resp)}", None, ExitCode.CONFIG)
    try:
        data = resp.json()
    except ValueError:
        data = None
    rows = data.get("value") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise _fail(
            f"{_host(base_url)} does not answer like Business Central (no company list)",
            "check businesscentral.base_url: it must be the API root ending in /api/v2.0",
            ExitCode.CONFIG,
        )
    names = [str(c.get("name")) for c in rows if isinstance(c, dict)]
    where = f"environment {environment}" if environment else _host(base_url)
    shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
    out.append(Finding(True, f"{where}: {len(names)} compan{'y' if len(names) == 1 else 'ies'} ({shown})"))


def _bc_unauthorized(auth: Auth, resp: Response, url_tenant: str | None) -> _Failed:
    said = _www_authenticate_description(resp)
    status = f"HTTP {resp.status}: {said}" if said else _status_text(resp)
    if isinstance(auth, ClientCredentialsAuth):
        if url_tenant is not None and url_tenant.lower() != auth.tenant_id.lower():
            return _fail(
                f"Business Central refused the token: it is for tenant {auth.tenant_id}, "
                f"but businesscentral.base_url names tenant {url_tenant} ({status})",
                "use the same tenant in businesscentral.base_url (…/v2.0/{tenant}/{environment}/api/v2.0) "
                "and in businesscentral.auth.tenant_id",
                ExitCode.AUTH,
            )
        return _fail(
            f"Business Central refused the token Entra ID issued ({status})",
            f'in Business Central open "Microsoft Entra applications": client {auth.client_id} must be '
            "listed there with State = Enabled (a missing or disabled app is refused); also check that the "
            "app registration has the Dynamics 365 Business Central application permission "
            "API.ReadWrite.All with admin consent",
            ExitCode.AUTH,
        )
    if isinstance(auth, BasicAuth):
        return _fail(
            f"Business Central refused {auth.describe()} ({status})",
            "check businesscentral.auth.username and password: on-premises the password is the user's Web "
            "Service Access Key; Business Central online accepts no keys (use type: client_credentials)",
            ExitCode.AUTH,
        )
    assert isinstance(auth, BearerAuth)
    return _fail(
        f"Business Central refused the configured bearer token ({status})",
        "the token has expired or is for another tenant: use type: client_credentials so that syncd gets "
        "and renews tokens itself",
        ExitCode.AUTH,
    )


def _bc_no_permission(auth: Auth, what: str, resp: Response) -> _Failed:
    who = (
        f'in Business Central open "Microsoft Entra applications", select client {auth.client_id}'
        if isinstance(auth, ClientCredentialsAuth)
        else "in Business Central give the user"
    )
    return _fail(
        f"{what}: no permission to read {what} ({_status_text(resp)})",
        f"{who} and add a permission set that may read and modify customers, vendors, employees and items "
        "with their pictures (for example D365 BUS FULL ACCESS; SUPER cannot be given to apps)",
        ExitCode.AUTH,
    )


async def _bc_read(api: ApiClient, base_url: str, company_id: str, kind: str) -> Finding:
    what = f"read {kind}"
    try:
        resp = await bc_probe_read(api, base_url, company_id, kind, allow=(400, 401, 403, 404), what=what)
    except UnreachableError as exc:
        return _unreachable(what, exc, "run the check again; the API answered a moment ago").finding
    if resp.status == 200:
        return Finding(True, f"{kind}: read one page with pictures")
    if _is_permission_problem(resp):
        return _bc_no_permission(api.auth, kind, resp).finding
    if resp.status == 401:
        return _bc_unauthorized(api.auth, resp, None).finding
    if resp.status == 404:
        return Finding(
            False,
            f"{kind}: {_status_text(resp)}",
            "this API version may not offer it: use an /api/v2.0 base_url",
            ExitCode.CONFIG,
        )
    return Finding(False, f"{kind}: {_status_text(resp)}", None, ExitCode.CONFIG)


# -- ledger ------------------------------------------------------------------------------------------


def _check_ledger(config: Config) -> Section:
    path = Path(config.ledger)
    directory = path.parent
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if path.exists():
        ok = os.access(path, os.R_OK | os.W_OK) and os.access(directory, os.W_OK)
        text = f"{path}: writable" if ok else f"{path}: not writable by this user"
    else:
        ok = os.access(existing, os.W_OK)
        text = f"{path}: will be created" if ok else f"{path}: cannot be created ({existing} is not writable)"
    hint = (
        None
        if ok
        else "set ledger: to a path this user may write (its directory too: SQLite adds -wal files)"
    )
    return Section("Ledger", [Finding(ok, text, hint, ExitCode.OK if ok else ExitCode.CONFIG)])
