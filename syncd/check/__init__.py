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
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console

from syncd.check.businesscentral import check_businesscentral
from syncd.check.findings import CHECK_CONNECT_TIMEOUT, CHECK_TIMEOUT, Failed, Finding, Section, worst
from syncd.check.superoffice import check_superoffice
from syncd.config import Config
from syncd.errors import ConfigError, ExitCode, SyncdError
from syncd.servertext import for_terminal

__all__ = ["CHECK_CONNECT_TIMEOUT", "CHECK_TIMEOUT", "Finding", "Section", "check_config", "run_check"]

_EXIT_MEANING = {
    ExitCode.CONFIG: "configuration",
    ExitCode.AUTH: "credentials or permissions",
    ExitCode.RETRYABLE: "unreachable or not available now; try again later",
}

# -- entry points ------------------------------------------------------------------------------------


async def run_check(config: Config, console: Console) -> int:
    """``syncd check``: run every check, print the report, return the exit code."""
    sections = await check_config(config)
    code = worst(s.code for s in sections)
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
        _side(f"SuperOffice  {config.superoffice.base_url}", lambda out: check_superoffice(config, out)),
        _side(
            f"Business Central  {config.businesscentral.base_url}",
            lambda out: check_businesscentral(config, out),
        ),
    )
    return [so, bc, check_ledger(config)]


async def _side(title: str, body: Callable[[list[Finding]], Awaitable[None]]) -> Section:
    findings: list[Finding] = []
    try:
        await body(findings)
    except Failed as failed:
        findings.append(failed.finding)
    except ConfigError as exc:  # building the auth: an unreadable key, an empty user name...
        findings.append(Finding(False, exc.message, exc.hint, ExitCode.CONFIG))
    except SyncdError as exc:  # anything not diagnosed more precisely below
        findings.append(Finding(False, exc.message, exc.hint, exc.exit_code))
    return Section(title, findings)


# -- ledger ------------------------------------------------------------------------------------------


def check_ledger(config: Config) -> Section:
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
