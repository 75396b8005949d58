"""Run the SuperOffice and Business Central emulators together over one seeded dataset.

``Sandbox`` starts both in-process (tests, ``syncd demo``); ``serve``/``main`` are ``syncd sandbox``:
they print the base URLs and ready-to-use credentials, optionally write a syncd config for them, and
run until SIGINT/SIGTERM.

The credentials are fixed and public (they only open the sandbox):
    SuperOffice       Basic ``syncd`` / ``sandbox-so-password``; Bearer ``8A:Cust00001.sandbox-bearer-token``;
                      system user: application token ``sandbox-so-app-token``, system user token
                      ``syncd-sandbox-SystemUserToken``, the app's RSA key (a file next to the config)
    Business Central  client ``00000000-0000-0000-0000-00000000c11e`` / ``sandbox-bc-secret``, tenant
                      ``sandbox-tenant``, environment ``production``, company ``CRONUS``
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import signal
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import yaml
from aiohttp import web

from syncd.sandbox.businesscentral import BusinessCentralEmulator
from syncd.sandbox.common import Faults
from syncd.sandbox.data import COMPANY_NAME, SECOND_COMPANY_NAME, Dataset, build_dataset
from syncd.sandbox.superoffice import (
    SANDBOX_SO_APP_TOKEN,
    SANDBOX_SO_BEARER_TOKEN,
    SANDBOX_SO_PASSWORD,
    SANDBOX_SO_SYSTEM_USER_TOKEN,
    SANDBOX_SO_USER,
    SuperOfficeEmulator,
    sandbox_app_private_key_pem,
    sandbox_jwt_public_key_pem,
)

SANDBOX_BC_TENANT = "sandbox-tenant"
SANDBOX_BC_ENVIRONMENT = "production"
SANDBOX_BC_CLIENT_ID = "00000000-0000-0000-0000-00000000c11e"
SANDBOX_BC_CLIENT_SECRET = "sandbox-bc-secret"  # noqa: S105 - fixed, documented sandbox credential

#: Files `syncd sandbox --write-config PATH` writes next to PATH.
SO_APP_KEY_FILE = "sandbox-so-app-key.pem"  # the app's private key, for `auth: {type: system_user}`
SO_LOGIN_PUBLIC_KEY_FILE = "sandbox-so-login-public.pem"  # verifies the JWTs of the system-user exchange

DEFAULT_SO_PORT = 8101
DEFAULT_BC_PORT = 8102

_EXCLUDED_OPTIONS = {"self", "state", "faults"}


def _parameters(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - _EXCLUDED_OPTIONS  # type: ignore[misc]


def split_emulator_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route ``Sandbox(**options)`` to the emulator whose constructor takes them.

    A name both take (``tenant``) must be prefixed ``so_`` or ``bc_``; unknown names raise TypeError."""
    so_params, bc_params = _parameters(SuperOfficeEmulator), _parameters(BusinessCentralEmulator)
    so_opts: dict[str, Any] = {}
    bc_opts: dict[str, Any] = {}
    for name, value in options.items():
        if name.startswith("so_") and name[3:] in so_params:
            so_opts[name[3:]] = value
        elif name.startswith("bc_") and name[3:] in bc_params:
            bc_opts[name[3:]] = value
        elif name in so_params and name in bc_params:
            raise TypeError(f"option {name!r} fits both emulators; write so_{name} or bc_{name}")
        elif name in so_params:
            so_opts[name] = value
        elif name in bc_params:
            bc_opts[name] = value
        else:
            raise TypeError(f"unknown sandbox option {name!r}")
    return so_opts, bc_opts


def _url_host(host: str) -> str:
    """The host to put in URLs for a listening address (wildcards become loopback)."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - mapping a wildcard bind to a connectable address
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class Sandbox:
    """Both emulators over one ``build_dataset(seed, contacts, persons)``, served on ``host``.

    Ports 0 pick free ones. ``emulator_options`` go to the emulator whose constructor takes them (see
    ``split_emulator_options``). Use as ``async with Sandbox(...) as sb:`` or ``start()``/``stop()``.
    """

    def __init__(
        self,
        *,
        seed: int = 1,
        contacts: int = 120,
        persons: int = 120,
        host: str = "127.0.0.1",
        so_port: int = 0,
        bc_port: int = 0,
        faults_so: Faults | None = None,
        faults_bc: Faults | None = None,
        token_lifetime: float = 3599.0,
        **emulator_options: Any,
    ) -> None:
        so_opts, bc_opts = split_emulator_options(emulator_options)
        self.host = host
        self.seed, self.contacts, self.persons = seed, contacts, persons
        self._ports = (so_port, bc_port)
        self.dataset: Dataset = build_dataset(seed, contacts, persons)
        so_opts.setdefault("users", {SANDBOX_SO_USER: SANDBOX_SO_PASSWORD})
        self.so = SuperOfficeEmulator(self.dataset.so, faults=faults_so, **so_opts)
        bc_opts.setdefault("tenant", SANDBOX_BC_TENANT)
        bc_opts.setdefault("environment", SANDBOX_BC_ENVIRONMENT)
        bc_opts.setdefault("clients", {SANDBOX_BC_CLIENT_ID: SANDBOX_BC_CLIENT_SECRET})
        self.bc = BusinessCentralEmulator(
            self.dataset.bc, token_lifetime=token_lifetime, faults=faults_bc, **bc_opts
        )
        self._runners: list[web.AppRunner] = []
        self.so_port = 0
        self.bc_port = 0

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on both ports; raises OSError (and listens on neither) when a port is taken."""
        try:
            self.so_port = await self._serve(self.so.make_app(), self._ports[0])
            self.bc_port = await self._serve(self.bc.make_app(), self._ports[1])
        except BaseException:
            await self.stop()
            raise

    async def _serve(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.host, port)
        await site.start()
        bound = runner.addresses[0]
        return int(bound[1])

    async def stop(self) -> None:
        while self._runners:
            await self._runners.pop().cleanup()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- addresses -----------------------------------------------------------------------------------------
    @property
    def so_origin(self) -> str:
        return f"http://{_url_host(self.host)}:{self.so_port}"

    @property
    def bc_origin(self) -> str:
        return f"http://{_url_host(self.host)}:{self.bc_port}"

    @property
    def so_url(self) -> str:
        """The SuperOffice REST base: ``http://127.0.0.1:PORT/Cust00001/api/v1``."""
        return f"{self.so_origin}/{self.so.tenant}/api/v1"

    @property
    def so_login_url(self) -> str:
        """Base of the system-user exchange (``{so_login_url}/api/PartnerSystemUser/Authenticate``)."""
        return f"{self.so_origin}/Login"

    @property
    def bc_url(self) -> str:
        """The Business Central API base: ``http://127.0.0.1:PORT/v2.0/sandbox-tenant/production/api/v2.0``."""
        return f"{self.bc_origin}/v2.0/{self.bc.tenant}/{self.bc.environment}/api/v2.0"

    @property
    def token_url(self) -> str:
        """The Entra token endpoint: ``http://127.0.0.1:PORT/sandbox-tenant/oauth2/v2.0/token``."""
        return f"{self.bc_origin}/{self.bc.tenant}/oauth2/v2.0/token"

    # -- config -------------------------------------------------------------------------------
    def so_auth(
        self, kind: Literal["basic", "system_user", "bearer"] = "basic", private_key: str | None = None
    ) -> dict[str, Any]:
        """The ``superoffice.auth`` block for ``kind``; ``private_key`` (system_user) is a secret reference
        such as ``file:sandbox-so-app-key.pem``, else the PEM itself is embedded."""
        if kind == "basic":
            return {"type": "basic", "username": SANDBOX_SO_USER, "password": SANDBOX_SO_PASSWORD}
        if kind == "bearer":
            return {"type": "bearer", "token": SANDBOX_SO_BEARER_TOKEN}
        return {
            "type": "system_user",
            "application_token": SANDBOX_SO_APP_TOKEN,
            "system_user_token": SANDBOX_SO_SYSTEM_USER_TOKEN,
            "private_key": private_key or sandbox_app_private_key_pem().decode("ascii"),
            "context_identifier": self.so.tenant,
            "login_url": self.so_login_url,
            "jwt_public_key": sandbox_jwt_public_key_pem().decode("ascii"),
        }

    def config(
        self,
        ledger: str = "./syncd-ledger.sqlite",
        *,
        so_auth: Literal["basic", "system_user", "bearer"] = "basic",
        private_key: str | None = None,
    ) -> dict[str, Any]:
        """A syncd config (a dict) for this sandbox, with the real ports (docs/sandbox-interface.md)."""
        return {
            "superoffice": {"base_url": self.so_url, "auth": self.so_auth(so_auth, private_key)},
            "businesscentral": {
                "base_url": self.bc_url,
                "company": COMPANY_NAME,
                "auth": {
                    "type": "client_credentials",
                    "tenant_id": self.bc.tenant,
                    "client_id": SANDBOX_BC_CLIENT_ID,
                    "client_secret": SANDBOX_BC_CLIENT_SECRET,
                    "token_url": self.token_url,
                },
            },
            "ledger": ledger,
            "picture": {"max_width": 500, "max_height": 500, "format": "JPEG"},
            "mappings": [
                {
                    "name": "customers",
                    "source": "contact",
                    "target": "customers",
                    "match": {"source": "code", "target": "number"},
                },
                {
                    "name": "staff",
                    "source": "person",
                    "target": "employees",
                    "match": {"source": "personNumber", "target": "number"},
                },
            ],
        }

    def write_config(self, path: Path, ledger: str = "./syncd-ledger.sqlite") -> list[Path]:
        """Write the config (mode 0600) and, next to it, the SuperOffice app key and login public key.

        Blocking file I/O: call it off the event loop. Returns the files written."""
        path.parent.mkdir(parents=True, exist_ok=True)
        key_path = path.parent / SO_APP_KEY_FILE
        login_path = path.parent / SO_LOGIN_PUBLIC_KEY_FILE
        _write_private(key_path, sandbox_app_private_key_pem())
        login_path.write_bytes(sandbox_jwt_public_key_pem())
        su_auth = self.so_auth("system_user", "file:" + SO_APP_KEY_FILE)
        del su_auth["jwt_public_key"]  # a multi-line PEM does not fit a one-line comment
        header = (
            "# syncd config for the running `syncd sandbox` (fixed, public sandbox credentials).\n"
            "# For SuperOffice system-user auth instead of Basic, use:\n"
            f"#   auth: {_flow(su_auth)}\n"
            f"# (optionally add jwt_public_key: the PEM in {SO_LOGIN_PUBLIC_KEY_FILE}, to verify the JWT)\n"
        )
        body = yaml.safe_dump(self.config(ledger), sort_keys=False, allow_unicode=True)
        _write_private(path, (header + body).encode())
        return [path, key_path, login_path]

    def banner(self, written: list[Path] | None = None) -> str:
        """What `syncd sandbox` prints: URLs and credentials, ready to paste."""
        key = (
            str(written[1])
            if written
            else f"(run with --write-config PATH to get it as {SO_APP_KEY_FILE} next to the config)"
        )
        lines = [
            f"syncd sandbox: seed {self.seed}, {self.contacts} contacts, {self.persons} persons",
            "",
            f"SuperOffice        {self.so_url}",
            f"  Basic            {SANDBOX_SO_USER} / {SANDBOX_SO_PASSWORD}",
            f"  Bearer           {SANDBOX_SO_BEARER_TOKEN}",
            f"  system user      POST {self.so_login_url}/api/PartnerSystemUser/Authenticate",
            f"    application token  {SANDBOX_SO_APP_TOKEN}   (send as SO-AppToken with SOTicket)",
            f"    system user token  {SANDBOX_SO_SYSTEM_USER_TOKEN}",
            f"    private key file   {key}",
            f"    JWT signing key    {written[2] if written else '(written with --write-config)'}",
            f"  tenant state     {self.so_origin}/api/state/{self.so.tenant}",
            f"Business Central   {self.bc_url}",
            f"  token endpoint   {self.token_url}",
            f"  client id        {SANDBOX_BC_CLIENT_ID}",
            f"  client secret    {SANDBOX_BC_CLIENT_SECRET}",
            f"  tenant/env       {self.bc.tenant} / {self.bc.environment}, companies {COMPANY_NAME} "
            f"(id {self.dataset.company_id}) and {SECOND_COMPANY_NAME} (id {self.dataset.second_company_id})",
            f"Admin              {self.so_origin}/_sandbox/   {self.bc_origin}/_sandbox/",
        ]
        if written:
            lines += ["", f"config written to {written[0]}   run: syncd run --once -c {written[0]}"]
        lines += ["", "Ready. Ctrl-C or SIGTERM stops."]
        return "\n".join(lines)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    path.chmod(0o600)


def _flow(value: dict[str, Any]) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()


async def _serve(
    host: str,
    so_port: int,
    bc_port: int,
    seed: int,
    contacts: int,
    persons: int,
    write_config: str | None,
    **options: Any,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sandbox = Sandbox(
        seed=seed, contacts=contacts, persons=persons, host=host, so_port=so_port, bc_port=bc_port, **options
    )
    try:
        await sandbox.start()
    except OSError as exc:
        print(f"syncd sandbox: cannot listen on {host}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        written = None
        if write_config:
            written = await asyncio.to_thread(sandbox.write_config, Path(write_config))
        print(sandbox.banner(written), flush=True)
        await stop.wait()
    finally:
        await sandbox.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print("syncd sandbox: stopped", flush=True)
    return 0


def serve(
    host: str,
    so_port: int,
    bc_port: int,
    seed: int,
    contacts: int,
    persons: int,
    write_config: str | None,
    **options: Any,
) -> int:
    """The body of ``syncd sandbox``: run both emulators in the foreground until SIGINT/SIGTERM (exit 0).

    Prints the base URLs and credentials; ``write_config`` also writes a ready syncd config there (with
    the real ports) plus the SuperOffice key files next to it. Returns 1 when a port cannot be bound."""
    return asyncio.run(_serve(host, so_port, bc_port, seed, contacts, persons, write_config, **options))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="syncd sandbox",
        description="Run the local SuperOffice and Business Central emulators over seeded data.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--so-port", type=int, default=DEFAULT_SO_PORT, help="SuperOffice port (0 = any free)")
    p.add_argument(
        "--bc-port", type=int, default=DEFAULT_BC_PORT, help="Business Central port (0 = any free)"
    )
    p.add_argument("--seed", type=int, default=1, help="dataset seed (same seed, same data)")
    p.add_argument("--contacts", type=int, default=120, help="number of SuperOffice contacts")
    p.add_argument("--persons", type=int, default=120, help="number of SuperOffice persons")
    p.add_argument("--write-config", metavar="PATH", help="write a syncd config for this sandbox to PATH")
    p.add_argument(
        "--faults",
        metavar="JSON",
        help='fault knobs for both APIs, e.g. \'{"rate_5xx": 0.1, "rate_429": 0.05}\' (see '
        "syncd/sandbox/common.py Faults; change them while running with PUT /_sandbox/faults)",
    )
    p.add_argument(
        "--bc-rate-limit",
        metavar="COUNT/SECONDS",
        help="Business Central's sliding-window request limit per principal, e.g. 6000/300 (BC online)",
    )
    p.add_argument(
        "--so-rate-limit",
        metavar="COUNT/SECONDS",
        help="SuperOffice request limit per principal (429 + Retry-After beyond it), e.g. 10/1",
    )
    p.add_argument(
        "--image-updates-touch-updated-date",
        action="store_true",
        help="saving a SuperOffice picture also moves the record's updatedDate (off: as the real product)",
    )
    return p


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """Emulator options from the command line; ValueError with a message on bad input."""
    options: dict[str, Any] = {}
    if args.faults:
        try:
            knobs = json.loads(args.faults)
            options["faults_so"] = Faults(**knobs)
            options["faults_bc"] = Faults(**knobs)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"--faults: {exc}") from None
    if args.bc_rate_limit:
        options["rate_limit"] = _rate(args.bc_rate_limit, "--bc-rate-limit", "6000/300")
    if args.so_rate_limit:
        options["request_limit"] = _rate(args.so_rate_limit, "--so-rate-limit", "10/1")
    if args.image_updates_touch_updated_date:
        options["image_updates_touch_updated_date"] = True
    return options


def _rate(text: str, flag: str, example: str) -> tuple[int, float]:
    count, _, seconds = text.partition("/")
    try:
        limit = (int(count), float(seconds))
    except ValueError:
        raise ValueError(f"{flag} takes COUNT/SECONDS, e.g. {example}") from None
    if limit[0] < 1 or limit[1] <= 0:
        raise ValueError(f"{flag}: COUNT must be at least 1 and SECONDS more than 0, e.g. {example}")
    return limit


def main(argv: list[str] | None = None) -> int:
    """``syncd sandbox [--host H] [--so-port N] [--bc-port N] [--seed N] [--contacts N] [--persons N]
    [--write-config PATH]``; usage errors exit 1 (syncd's exit-code contract)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code in (0, None) else 1
    if args.contacts < 0 or args.persons < 0 or (args.persons and not args.contacts):
        print("syncd sandbox: --contacts/--persons must be >= 0, and persons need contacts", file=sys.stderr)
        return 1
    try:
        options = _options(args)
    except ValueError as exc:
        print(f"syncd sandbox: {exc}", file=sys.stderr)
        return 1
    return serve(
        args.host,
        args.so_port,
        args.bc_port,
        args.seed,
        args.contacts,
        args.persons,
        args.write_config,
        **options,
    )
