"""`syncd check` through the real CLI against the sandbox: each way a config can be wrong gives its own
✗ line, a hint indented below it, the documented exit code, no traceback and no secret.

Exit codes: 0 ok, 1 configuration (SuperOffice tenant, BC environment or company not found), 3 unreachable
or not available now, 5 credentials or permissions.
"""

from __future__ import annotations

import asyncio
import copy
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from syncd.businesscentral import location as bc_location
from syncd.sandbox.server import SANDBOX_BC_CLIENT_ID, SANDBOX_BC_CLIENT_SECRET, Sandbox
from syncd.sandbox.superoffice import (
    SANDBOX_SO_APP_TOKEN,
    SANDBOX_SO_PASSWORD,
    SANDBOX_SO_SYSTEM_USER_TOKEN,
)
from syncd.superoffice import tenant_state_url as so_state_url
from tests.support.config import FAST_LIMITS, merge
from tests.support.e2e import Result, syncd

# Each scenario is one `syncd check` subprocess; they all run at once in one module-scoped fixture.
pytestmark = pytest.mark.slow
in_module_loop = pytest.mark.asyncio(loop_scope="module")  # the loop that serves the module's sandboxes

NO_PERMISSION_CLIENT = "11111111-2222-3333-4444-555555555555"
NO_PERMISSION_SECRET = "no-permission-set-secret"
WRONG_SECRET = "not-the-sandbox-bc-secret"
WRONG_PASSWORD = "not-the-so-password"
WRONG_APP_TOKEN = "not-the-app-token"
SECRETS = (
    SANDBOX_BC_CLIENT_SECRET,
    SANDBOX_SO_PASSWORD,
    SANDBOX_SO_APP_TOKEN,
    SANDBOX_SO_SYSTEM_USER_TOKEN,
    NO_PERMISSION_SECRET,
    WRONG_SECRET,
    WRONG_PASSWORD,
    WRONG_APP_TOKEN,
    "PRIVATE KEY",
)

# -- every scenario runs at once (one subprocess each), each test then reads its own result ---------------


@dataclass
class Env:
    """What the scenarios point their configs at."""

    sandbox: Sandbox
    maintenance: Sandbox  # a second sandbox whose SuperOffice tenant is in OfflineMaintenance
    other_environment: Sandbox  # a BC environment that has never heard of the app (same tenant name)
    expired_token_url: str
    disabled_token_url: str
    closed_port: int
    private_key_of_another_app: str


Scenario = Callable[[Env], dict[str, Any]]  # → config overrides (plus "so_auth")

SCENARIOS: dict[str, Scenario] = {
    "ok": lambda e: {},
    "ok_system_user": lambda e: {"so_auth": "system_user"},
    "unreachable": lambda e: {
        "superoffice": {"base_url": f"http://127.0.0.1:{e.closed_port}/Cust00001/api/v1"},
        "businesscentral": {
            "base_url": f"http://127.0.0.1:{e.closed_port}/v2.0/sandbox-tenant/production/api/v2.0",
            "auth": {"token_url": f"http://127.0.0.1:{e.closed_port}/sandbox-tenant/oauth2/v2.0/token"},
        },
    },
    "maintenance": lambda e: {"superoffice": {"base_url": e.maintenance.so_url}},
    "tenant_in_token_url": lambda e: {
        "businesscentral": {
            "auth": {"token_url": e.sandbox.token_url.replace("/sandbox-tenant/", "/contoso-typo/")}
        }
    },
    "tenant_in_base_url": lambda e: {
        "businesscentral": {"base_url": e.sandbox.bc_url.replace("/sandbox-tenant/", "/contoso-typo/")}
    },
    "bad_secret": lambda e: {"businesscentral": {"auth": {"client_secret": WRONG_SECRET}}},
    "no_permission_set": lambda e: {
        "businesscentral": {
            "auth": {"client_id": NO_PERMISSION_CLIENT, "client_secret": NO_PERMISSION_SECRET}
        }
    },
    "company": lambda e: {"businesscentral": {"company": "CRONUS International"}},
    "environment": lambda e: {
        "businesscentral": {"base_url": e.sandbox.bc_url.replace("/production/", "/prod/")}
    },
    "expired_secret": lambda e: {"businesscentral": {"auth": {"token_url": e.expired_token_url}}},
    "disabled_app": lambda e: {"businesscentral": {"auth": {"token_url": e.disabled_token_url}}},
    "not_enabled_in_bc": lambda e: {"businesscentral": {"base_url": e.other_environment.bc_url}},
    "so_tenant": lambda e: {"superoffice": {"base_url": e.sandbox.so_url.replace("Cust00001", "Cust99999")}},
    "so_basic_password": lambda e: {"superoffice": {"auth": {"password": WRONG_PASSWORD}}},
    "so_system_user_key": lambda e: {
        "so_auth": "system_user",
        "superoffice": {"auth": {"private_key": e.private_key_of_another_app}},
    },
    "so_system_user_app_token": lambda e: {
        "so_auth": "system_user",
        "superoffice": {"auth": {"application_token": WRONG_APP_TOKEN}},
    },
}


async def entra_refusing(status: int, code: int, error: str, description: str) -> web.AppRunner:
    """A token endpoint that answers every request with one fixed Entra error (the sandbox's Entra emulator
    has no expired secrets or disabled app registrations)."""

    async def token(request: web.Request) -> web.Response:
        body = {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: 0 Correlation ID: 0",
            "error_codes": [code],
        }
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def token_url(runner: web.AppRunner) -> str:
    return f"http://127.0.0.1:{runner.addresses[0][1]}/sandbox-tenant/oauth2/v2.0/token"


def closed_port() -> int:
    """A local port nobody listens on: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def another_private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def results(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Result]]:
    """``syncd check`` for every scenario, run concurrently against one set of servers."""
    clients = {SANDBOX_BC_CLIENT_ID: SANDBOX_BC_CLIENT_SECRET, NO_PERMISSION_CLIENT: NO_PERMISSION_SECRET}
    async with AsyncExitStack() as stack:
        sandbox = await stack.enter_async_context(
            Sandbox(
                contacts=8,
                persons=8,
                bc_clients=clients,
                bc_clients_without_permissions=[NO_PERMISSION_CLIENT],
            )
        )
        maintenance = await stack.enter_async_context(Sandbox(contacts=1, persons=1))
        maintenance.so.tenant_state = "OfflineMaintenance"
        other = await stack.enter_async_context(Sandbox(contacts=1, persons=1))
        expired = await entra_refusing(
            401, 7000222, "invalid_client", "The provided client secret keys for app '…' are expired."
        )
        stack.push_async_callback(expired.cleanup)
        disabled = await entra_refusing(
            400, 7000112, "unauthorized_client", "Application '…'(syncd) is disabled."
        )
        stack.push_async_callback(disabled.cleanup)
        env = Env(
            sandbox,
            maintenance,
            other,
            token_url(expired),
            token_url(disabled),
            closed_port(),
            another_private_key(),
        )

        async def run(name: str, scenario: Scenario) -> Result:
            tmp = tmp_path_factory.mktemp(name)
            overrides = scenario(env)
            so_auth = overrides.pop("so_auth", "basic")
            cfg = sandbox.config(ledger=str(tmp / "ledger.sqlite"), so_auth=so_auth)
            merge(cfg, copy.deepcopy(FAST_LIMITS))
            merge(cfg, overrides)
            # The emulator stands in for SuperOffice's own host: name its tenant status service (syncd
            # probes it by itself only on *.superoffice.com, see test_check_hostile.py).
            so_origin = urlsplit(cfg["superoffice"]["base_url"])
            cfg["superoffice"].setdefault("state_url", f"{so_origin.scheme}://{so_origin.netloc}/api/state")
            path = tmp / "syncd.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            path.chmod(0o600)
            return await syncd("check", "-c", str(path), timeout=90)

        found = await asyncio.gather(*(run(name, scenario) for name, scenario in SCENARIOS.items()))
        yield dict(zip(SCENARIOS, found, strict=True))


def assert_clean(result: Result) -> None:
    out = result.stdout + result.stderr
    assert "Traceback" not in out and "internal error" not in out, out
    for secret in SECRETS:
        assert secret not in out, f"secret {secret!r} printed"


def assert_fails(result: Result, code: int, text: str, hint: str) -> None:
    """Exit ``code``; a ✗ line containing ``text``; the hint (containing ``hint``) indented below it."""
    assert_clean(result)
    assert result.code == code, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    failed = [i for i, line in enumerate(lines) if line.startswith("  ✗ ") and text in line]
    assert failed, f"no ✗ line with {text!r} in:\n{result.stdout}"
    below = lines[failed[0] + 1]
    assert below.startswith("      hint: ") and hint in below, (
        f"hint {hint!r} not under the ✗ line:\n{result.stdout}"
    )
    assert lines[-1].startswith(f"✗ check failed (exit {code}: "), lines[-1]


def passed(result: Result, text: str) -> bool:
    return any(line.startswith("  ✓ ") and text in line for line in result.stdout.splitlines())


# -- passing ----------------------------------------------------------------------------------------


@in_module_loop
async def test_check_passes_with_one_line_per_check(results: dict[str, Result]) -> None:
    result = results["ok"]
    assert_clean(result)
    assert result.code == 0, result.stdout + result.stderr
    for text in (
        "tenant Cust00001 is Running",
        "contacts: read one page (signed in with basic auth as user 'syncd')",
        "persons: read one page",
        "Entra ID issued a token",
        "environment production: 2 companies (CRONUS, CRONUS DE)",
        "company 'CRONUS'",
        "customers: read one page with pictures",
        "employees: read one page with pictures",
        "ledger.sqlite: will be created",
    ):
        assert passed(result, text), f"{text!r} missing:\n{result.stdout}"
    assert "✗" not in result.stdout
    assert result.stdout.splitlines()[-1] == "✓ all checks passed"


@in_module_loop
async def test_check_passes_with_superoffice_system_user(results: dict[str, Result]) -> None:
    result = results["ok_system_user"]
    assert_clean(result)
    assert result.code == 0, result.stdout + result.stderr
    assert passed(result, "system user signed in (ticket for Cust00001")
    assert passed(result, "contacts: read one page (signed in with SuperOffice system user for Cust00001")


# -- unreachable or unavailable: exit 3 ----------------------------------------------------------------


@in_module_loop
async def test_unreachable_hosts_are_reported_per_side_as_exit_3(results: dict[str, Result]) -> None:
    result = results["unreachable"]
    assert_fails(result, 3, "unreachable (connection refused)", "superoffice.base_url")
    assert_fails(result, 3, "token endpoint 127.0.0.1:", "businesscentral.auth.token_url")
    assert result.stdout.count("unreachable (connection refused)") == 2


@in_module_loop
async def test_superoffice_tenant_in_maintenance_is_exit_3(results: dict[str, Result]) -> None:
    assert_fails(results["maintenance"], 3, "tenant Cust00001 is OfflineMaintenance", "maintenance")


# -- Business Central ---------------------------------------------------------------------------------


@in_module_loop
async def test_wrong_tenant_in_token_url(results: dict[str, Result]) -> None:
    assert_fails(
        results["tenant_in_token_url"],
        5,
        "Entra ID does not know tenant 'contoso-typo' named in token_url (AADSTS90002)",
        "tenant_id",
    )


@in_module_loop
async def test_wrong_tenant_in_base_url(results: dict[str, Result]) -> None:
    result = results["tenant_in_base_url"]
    assert passed(result, "Entra ID issued a token")
    assert_fails(
        result,
        5,
        "it is for tenant sandbox-tenant, but businesscentral.base_url names tenant contoso-typo",
        "same tenant",
    )


@in_module_loop
async def test_bad_client_secret(results: dict[str, Result]) -> None:
    assert_fails(results["bad_secret"], 5, "invalid client secret (AADSTS7000215)", "client_secret")


@in_module_loop
async def test_missing_bc_permission_set_is_403_exit_5(results: dict[str, Result]) -> None:
    result = results["no_permission_set"]
    assert passed(result, "company 'CRONUS'")  # a client without permission sets may list companies
    assert_fails(
        result,
        5,
        "customers: no permission to read customers (HTTP 403 Authorization_InsufficientPermissions",
        "Microsoft Entra applications",
    )
    assert "  ✗ employees: no permission to read employees" in result.stdout


@in_module_loop
async def test_wrong_company_name_lists_the_companies(results: dict[str, Result]) -> None:
    assert_fails(results["company"], 1, "'CRONUS International' not found", "companies available: 'CRONUS'")


@in_module_loop
async def test_wrong_environment_name(results: dict[str, Result]) -> None:
    assert_fails(results["environment"], 1, "environment 'prod' not found", "admin center")


@in_module_loop
async def test_expired_client_secret(results: dict[str, Result]) -> None:
    assert_fails(
        results["expired_secret"], 5, "the client secret has expired (AADSTS7000222)", "create a new secret"
    )


@in_module_loop
async def test_disabled_app_registration(results: dict[str, Result]) -> None:
    assert_fails(
        results["disabled_app"],
        5,
        "the application is disabled (AADSTS7000112)",
        "enable the app registration",
    )


@in_module_loop
async def test_app_not_enabled_in_business_central(results: dict[str, Result]) -> None:
    # Entra issues the token (the app registration is fine), the BC environment refuses it with 401.
    result = results["not_enabled_in_bc"]
    assert passed(result, "Entra ID issued a token")
    assert_fails(result, 5, "Business Central refused the token Entra ID issued", "State = Enabled")


# -- SuperOffice ----------------------------------------------------------------------------------------


@in_module_loop
async def test_superoffice_tenant_not_found(results: dict[str, Result]) -> None:
    assert_fails(
        results["so_tenant"],
        1,
        "SuperOffice tenant 'Cust99999' not found",
        "CustNNNNN part of superoffice.base_url",
    )


@in_module_loop
async def test_superoffice_onsite_basic_wrong_password(results: dict[str, Result]) -> None:
    assert_fails(
        results["so_basic_password"],
        5,
        "SuperOffice refused basic auth as user 'syncd' (HTTP 401",
        "password",
    )


@in_module_loop
async def test_superoffice_system_user_wrong_private_key(results: dict[str, Result]) -> None:
    assert_fails(
        results["so_system_user_key"],
        5,
        "system user sign-in refused: SuperOffice refused the system user sign-in for Cust00001: "
        "SignedSystemToken signature is not valid",
        "superoffice.auth.private_key",
    )


@in_module_loop
async def test_superoffice_system_user_wrong_application_token(results: dict[str, Result]) -> None:
    assert_fails(
        results["so_system_user_app_token"],
        5,
        "Invalid application token",
        "superoffice.auth.application_token",
    )


# -- helpers ----------------------------------------------------------------------------------------------


def test_bc_location_reads_tenant_and_environment() -> None:
    assert bc_location("https://api.businesscentral.dynamics.com/v2.0/T1/production/api/v2.0") == (
        "T1",
        "production",
    )
    assert bc_location("https://api.businesscentral.dynamics.com/v2.0/sandbox/api/v2.0") == (None, "sandbox")
    assert bc_location("https://bc.example.com:7048/BC/api/v2.0") == (None, None)


def test_so_state_lives_on_the_environment_main_host() -> None:
    assert (
        so_state_url("https://online3.superoffice.com/Cust1/api/v1", "Cust1")
        == "https://online.superoffice.com/api/state/Cust1"
    )
    assert (
        so_state_url("https://sod2.superoffice.com/Cust1/api/v1", "Cust1")
        == "https://sod.superoffice.com/api/state/Cust1"
    )
    assert (
        so_state_url("https://qaonline.superoffice.com/Cust1/api/v1", "Cust1")
        == "https://qaonline.superoffice.com/api/state/Cust1"
    )


def test_so_state_is_not_probed_on_hosts_that_are_not_superoffice_s() -> None:
    """A reverse proxy, an onsite server or an emulator has no /api/state unless configured."""
    assert so_state_url("http://127.0.0.1:8101/Cust1/api/v1", "Cust1") is None
    assert so_state_url("https://crm.example.com/Cust1/api/v1", "Cust1") is None
    assert so_state_url("https://online.superoffice.com.evil.example/Cust1/api/v1", "Cust1") is None
    assert so_state_url("https://evil-online.superoffice.com/Cust1/api/v1", "Cust1") is None
    assert (
        so_state_url("http://127.0.0.1:8101/Cust1/api/v1", "Cust1", "http://127.0.0.1:8101/api/state")
        == "http://127.0.0.1:8101/api/state/Cust1"
    )
