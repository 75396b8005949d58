"""``syncd check`` on the Business Central side: token, environment and companies, and the permission to
read each entity set the mappings write to."""

from __future__ import annotations

import aiohttp

from syncd.auth import BasicAuth, BearerAuth, ClientCredentialsAuth
from syncd.businesscentral import CompanyDirectory, location, probe_read
from syncd.check.findings import (
    Failed,
    Finding,
    detail_of,
    fail,
    host_of,
    is_permission_problem,
    quick_limits,
    reason_of,
    status_text,
    unreachable,
    www_authenticate_description,
)
from syncd.config import Config
from syncd.credentials import Auth
from syncd.errors import AuthError, ConfigError, ExitCode, UnreachableError
from syncd.http import ApiClient, Response, new_session
from syncd.runtime import businesscentral_api, businesscentral_auth

__all__ = ["check_businesscentral"]

# -- Business Central --------------------------------------------------------------------------------


async def check_businesscentral(config: Config, out: list[Finding]) -> None:
    cfg = config.businesscentral
    limits = quick_limits(cfg.limits)
    async with new_session(connect_timeout=limits.connect_timeout) as session:
        auth = businesscentral_auth(cfg, attempts=1, timeout=limits.timeout)
        api = businesscentral_api(cfg, session, auth, limits)
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
                raise unreachable(
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
            raise Failed(problems[-1])


async def _bc_token(session: aiohttp.ClientSession, auth: ClientCredentialsAuth, out: list[Finding]) -> None:
    try:
        await auth.headers(session)
    except UnreachableError as exc:
        raise fail(
            f"token endpoint {host_of(auth.token_url)} unreachable ({reason_of(exc.message)})",
            "check businesscentral.auth.token_url (default https://login.microsoftonline.com/<tenant_id>/oauth2/"
            "v2.0/token) and that this machine can reach it (proxy, firewall, DNS)",
            ExitCode.RETRYABLE,
        ) from None
    except AuthError as exc:
        raise fail(exc.message, exc.hint, ExitCode.AUTH) from None
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
        raise unreachable(
            f"Business Central {what}",
            exc,
            "check businesscentral.base_url (host, port, https) and that this machine can reach it",
        ) from None
    if resp.status == 401:
        raise _bc_unauthorized(api.auth, resp, url_tenant)
    if is_permission_problem(resp):
        raise _bc_no_permission(api.auth, "companies", resp)
    if resp.status == 404:
        _, message = detail_of(resp)
        if environment is not None and "environment" in message.lower():
            raise fail(
                f"environment {environment!r} not found ({message})",
                "the environment in businesscentral.base_url (…/v2.0/{tenant}/{environment}/api/v2.0) must "
                "be one of the tenant's environments as the Business Central admin center lists them "
                "(e.g. production, sandbox)",
                ExitCode.CONFIG,
            )
        raise fail(
            f"Business Central answered {status_text(resp)} for {host_of(base_url)}",
            "check businesscentral.base_url: https://api.businesscentral.dynamics.com/v2.0/{tenant}/"
            "{environment}/api/v2.0 online, https://host:7048/{instance}/api/v2.0 on-premises",
            ExitCode.CONFIG,
        )
    if resp.status == 400:
        raise fail(f"list companies: {status_text(resp)}", None, ExitCode.CONFIG)
    try:
        data = resp.json()
    except ValueError:
        data = None
    rows = data.get("value") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise fail(
            f"{host_of(base_url)} does not answer like Business Central (no company list)",
            "check businesscentral.base_url: it must be the API root ending in /api/v2.0",
            ExitCode.CONFIG,
        )
    names = [str(c.get("name")) for c in rows if isinstance(c, dict)]
    where = f"environment {environment}" if environment else host_of(base_url)
    shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
    out.append(Finding(True, f"{where}: {len(names)} compan{'y' if len(names) == 1 else 'ies'} ({shown})"))


def _bc_unauthorized(auth: Auth, resp: Response, url_tenant: str | None) -> Failed:
    said = www_authenticate_description(resp)
    status = f"HTTP {resp.status}: {said}" if said else status_text(resp)
    if isinstance(auth, ClientCredentialsAuth):
        if url_tenant is not None and url_tenant.lower() != auth.tenant_id.lower():
            return fail(
                f"Business Central refused the token: it is for tenant {auth.tenant_id}, "
                f"but businesscentral.base_url names tenant {url_tenant} ({status})",
                "use the same tenant in businesscentral.base_url (…/v2.0/{tenant}/{environment}/api/v2.0) "
                "and in businesscentral.auth.tenant_id",
                ExitCode.AUTH,
            )
        return fail(
            f"Business Central refused the token Entra ID issued ({status})",
            f'in Business Central open "Microsoft Entra applications": client {auth.client_id} must be '
            "listed there with State = Enabled (a missing or disabled app is refused); also check that the "
            "app registration has the Dynamics 365 Business Central application permission "
            "API.ReadWrite.All with admin consent",
            ExitCode.AUTH,
        )
    if isinstance(auth, BasicAuth):
        return fail(
            f"Business Central refused {auth.describe()} ({status})",
            "check businesscentral.auth.username and password: on-premises the password is the user's Web "
            "Service Access Key; Business Central online accepts no keys (use type: client_credentials)",
            ExitCode.AUTH,
        )
    assert isinstance(auth, BearerAuth)
    return fail(
        f"Business Central refused the configured bearer token ({status})",
        "the token has expired or is for another tenant: use type: client_credentials so that syncd gets "
        "and renews tokens itself",
        ExitCode.AUTH,
    )


def _bc_no_permission(auth: Auth, what: str, resp: Response) -> Failed:
    who = (
        f'in Business Central open "Microsoft Entra applications", select client {auth.client_id}'
        if isinstance(auth, ClientCredentialsAuth)
        else "in Business Central give the user"
    )
    return fail(
        f"{what}: no permission to read {what} ({status_text(resp)})",
        f"{who} and add a permission set that may read and modify customers, vendors, employees and items "
        "with their pictures (for example D365 BUS FULL ACCESS; SUPER cannot be given to apps)",
        ExitCode.AUTH,
    )


async def _bc_read(api: ApiClient, base_url: str, company_id: str, kind: str) -> Finding:
    what = f"read {kind}"
    try:
        resp = await probe_read(api, base_url, company_id, kind, allow=(400, 401, 403, 404), what=what)
    except UnreachableError as exc:
        return unreachable(what, exc, "run the check again; the API answered a moment ago").finding
    if resp.status == 200:
        return Finding(True, f"{kind}: read one page with pictures")
    if is_permission_problem(resp):
        return _bc_no_permission(api.auth, kind, resp).finding
    if resp.status == 401:
        return _bc_unauthorized(api.auth, resp, None).finding
    if resp.status == 404:
        return Finding(
            False,
            f"{kind}: {status_text(resp)}",
            "this API version may not offer it: use an /api/v2.0 base_url",
            ExitCode.CONFIG,
        )
    return Finding(False, f"{kind}: {status_text(resp)}", None, ExitCode.CONFIG)
