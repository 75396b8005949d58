"""``syncd check``: is this config usable? Authenticate and read one page on each side.

Every failure names what is wrong and what to do: unreachable host, SuperOffice tenant not found, bad
credentials, a Business Central permission set missing (403), a wrong environment or company. The
exit code is the most serious problem found (5 for credentials, 3 for unreachable, 1 for config).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console

from syncd.config import Config
from syncd.errors import (
    ApiError,
    AuthError,
    ConfigError,
    ExitCode,
    NotFoundError,
    SyncdError,
    UnreachableError,
)
from syncd.jobs import SEVERITY
from syncd.runtime import open_runtime


def _fast(config: Config) -> Config:
    """The same config with few retries: a check should answer in seconds, not back off for minutes."""
    so = config.superoffice.model_copy(
        update={"limits": config.superoffice.limits.model_copy(update={"max_retries": 1, "timeout": 20.0})}
    )
    bc = config.businesscentral.model_copy(
        update={
            "limits": config.businesscentral.limits.model_copy(update={"max_retries": 1, "timeout": 20.0})
        }
    )
    return config.model_copy(update={"superoffice": so, "businesscentral": bc})


async def run_check(config: Config, console: Console) -> int:
    config = _fast(config)
    codes: list[ExitCode] = []

    def ok(text: str) -> None:
        console.print(f"[green]✓[/] {text}", highlight=False)

    def fail(text: str, exc: SyncdError, hint: str | None = None) -> None:
        codes.append(exc.exit_code)
        console.print(f"[red]✗[/] {text}: {exc.message}", highlight=False, markup=False)
        hint = hint or exc.hint
        if hint:
            console.print(f"    hint: {hint}", highlight=False, markup=False)

    so_host = urlsplit(config.superoffice.base_url).netloc
    bc_host = urlsplit(config.businesscentral.base_url).netloc
    async with open_runtime(config, open_ledger=False) as rt:
        # SuperOffice: one contact row proves host, tenant and credentials.
        try:
            await rt.so_api.request(
                "GET",
                f"{config.superoffice.base_url}/Contact",
                params={"$select": "contactId", "$top": "1"},
                what="SuperOffice: list contacts",
            )
            ok(
                f"SuperOffice {so_host} tenant {config.superoffice.context_identifier}: "
                f"authenticated as {rt.so_api.auth.describe()}"
            )
        except UnreachableError as exc:
            fail(
                f"SuperOffice {so_host} unreachable",
                exc,
                "check superoffice.base_url (host name, port, https) and that this machine can reach it",
            )
        except NotFoundError as exc:
            fail(
                f"SuperOffice tenant {config.superoffice.context_identifier!r} not found",
                exc,
                "check the CustNNNNN part of superoffice.base_url (Online: see the tenant's URL after login)",
            )
        except AuthError as exc:
            fail("SuperOffice rejected the credentials", exc)
        except ApiError as exc:
            fail("SuperOffice answered with an error", exc)

        # Business Central: token, companies, the configured company, one page per target entity.
        try:
            company_id = await rt.target.resolve_company()
            ok(
                f"Business Central {bc_host}: authenticated ({rt.bc_api.auth.describe()}), "
                f"company {config.businesscentral.company!r} = {company_id}"
            )
            for kind in dict.fromkeys(m.target for m in config.mappings):
                await rt.bc_api.request(
                    "GET",
                    f"{config.businesscentral.base_url}/companies({company_id})/{kind}",
                    params={"$top": "1", "$expand": "picture"},
                    what=f"Business Central: list {kind}",
                )
                ok(f"Business Central: can read {kind} with pictures")
        except UnreachableError as exc:
            fail(
                f"Business Central {bc_host} unreachable",
                exc,
                "check businesscentral.base_url and, for client_credentials, token_url / tenant_id",
            )
        except AuthError as exc:
            fail("Business Central authentication failed", exc)
        except NotFoundError as exc:
            fail(
                "Business Central: not found",
                exc,
                "check the tenant and environment in businesscentral.base_url "
                "(…/v2.0/{tenant}/{environment}/api/v2.0; environments are listed in the BC admin center)",
            )
        except ConfigError as exc:
            fail("Business Central company", exc)
        except ApiError as exc:
            fail("Business Central answered with an error", exc)

    ledger_dir = Path(config.ledger).parent
    if os.access(ledger_dir if ledger_dir.exists() else ledger_dir.parent, os.W_OK):
        ok(f"ledger {config.ledger}: writable")
    else:
        codes.append(ExitCode.CONFIG)
        console.print(
            f"[red]✗[/] ledger {config.ledger}: directory {ledger_dir} is not writable", highlight=False
        )
    code = next((c for c in SEVERITY if c in codes), ExitCode.OK)
    console.print(
        "[green]all checks passed[/]" if code == ExitCode.OK else f"[red]check failed (exit {int(code)})[/]"
    )
    return int(code)
