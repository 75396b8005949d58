"""Helpers for the Business Central emulator tests: a small hand-made tenant served on a free port.

Tests talk raw HTTP (aiohttp.ClientSession), never through syncd's own clients, so they check what the
emulator puts on the wire.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image

from syncd.sandbox.businesscentral import BCState, BusinessCentralEmulator

TENANT = "sandbox-tenant"
ENVIRONMENT = "production"
CLIENT_ID = "00000000-0000-0000-0000-00000000c11e"
CLIENT_SECRET = "sandbox-bc-secret"
NOPERM_CLIENT_ID = "00000000-0000-0000-0000-0000000000a2"
NOPERM_SECRET = "no-permission-secret"
OTHER_CLIENT_ID = "00000000-0000-0000-0000-0000000000b3"
OTHER_SECRET = "other-secret"
ONPREM_USER = "ADMIN"
ONPREM_KEY = "k5o9Zq0mX2c3v4b5n6m7a8s9d0f1g2h3j4k5l6z7x8c="  # 44-character web service access key
SCOPE = "https://api.businesscentral.dynamics.com/.default"

COMPANY = "52e03390-bde4-ea11-bbf2-00155df3a615"
OTHER_COMPANY = "7a1c0d2e-3f40-4b5c-8d6e-7f8091a2b3c4"
CUST1 = "53049aad-bde4-ea11-bbf2-00155df3a615"  # C00001, JPEG 40×30
CUST2 = "63049aad-bde4-ea11-bbf2-00155df3a615"  # C00002, no picture
CUST3 = "73049aad-bde4-ea11-bbf2-00155df3a615"  # C00003
CUST4 = "83049aad-bde4-ea11-bbf2-00155df3a615"  # C00004
CUST5 = "93049aad-bde4-ea11-bbf2-00155df3a615"  # C00005
VEND1 = "a3049aad-bde4-ea11-bbf2-00155df3a615"
EMP1 = "b3049aad-bde4-ea11-bbf2-00155df3a615"  # E001 Ada Lovelace, PNG picture
EMP2 = "c3049aad-bde4-ea11-bbf2-00155df3a615"
ITEM1 = "d3049aad-bde4-ea11-bbf2-00155df3a615"  # 1000, GIF picture
ITEM2 = "e3049aad-bde4-ea11-bbf2-00155df3a615"
OTHER_CUST = "f3049aad-bde4-ea11-bbf2-00155df3a615"  # in OTHER_COMPANY


def dt(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def jpeg(size: tuple[int, int] = (40, 30), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png_alpha(size: tuple[int, int] = (20, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", size, (0, 128, 255, 100)).save(buf, format="PNG")
    return buf.getvalue()


def gif(size: tuple[int, int] = (16, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("P", size, 3).save(buf, format="GIF")
    return buf.getvalue()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def decode_etag(etag: str) -> str:
    """The text inside a BC weak etag: ``W/"<base64>"`` → ``'<n>;<value>1;00;'``."""
    assert etag.startswith('W/"') and etag.endswith('"'), etag
    return base64.b64decode(etag[3:-1]).decode()


def build_state() -> BCState:
    """CRONUS: five customers, a vendor, two employees, two items; a second company with one customer."""
    s = BCState(seed=7)
    s.add_company("CRONUS", COMPANY)
    s.add_company("Other Co", OTHER_COMPANY)
    customers = [
        (CUST1, "C00001", "Acme AS", "post@acme.example", jpeg()),
        (CUST2, "C00002", "Beta Bygg", "beta@bygg.example", None),
        (CUST3, "C00003", "Gamma Data", "", None),
        (CUST4, "C00004", "Delta Drift", "delta@drift.example", None),
        (CUST5, "C00005", "Epsilon", "", None),
    ]
    for i, (rid, number, name, email, picture) in enumerate(customers):
        s.add_record(
            COMPANY,
            "customers",
            number=number,
            display_name=name,
            picture=picture,
            record_id=rid,
            email=email,
            lastModifiedDateTime=dt(f"2024-03-0{i + 1}T10:00:00.{i}50"),
        )
    s.add_record(
        COMPANY,
        "vendors",
        number="V00010",
        display_name="Fabrikam",
        record_id=VEND1,
        email="ap@fabrikam.example",
        lastModifiedDateTime=dt("2024-02-01T00:00:00"),
    )
    s.add_record(
        COMPANY,
        "employees",
        number="E001",
        display_name="Ada Lovelace",
        picture=png_alpha(),
        record_id=EMP1,
        givenName="Ada",
        surname="Lovelace",
        personalEmail="ada@home.example",
        lastModifiedDateTime=dt("2024-02-02T00:00:00"),
    )
    s.add_record(
        COMPANY,
        "employees",
        number="E002",
        display_name="Bob Builder",
        record_id=EMP2,
        givenName="Bob",
        surname="Builder",
        lastModifiedDateTime=dt("2024-02-03T00:00:00"),
    )
    s.add_record(
        COMPANY,
        "items",
        number="1000",
        display_name="Bicycle",
        picture=gif(),
        record_id=ITEM1,
        lastModifiedDateTime=dt("2024-02-04T00:00:00"),
    )
    s.add_record(
        COMPANY,
        "items",
        number="1001",
        display_name="Touring Bicycle",
        record_id=ITEM2,
        type="Service",
        blocked=True,
        lastModifiedDateTime=dt("2024-02-05T00:00:00"),
    )
    s.add_record(
        OTHER_COMPANY,
        "customers",
        number="C00001",
        display_name="Other Acme",
        record_id=OTHER_CUST,
        lastModifiedDateTime=dt("2024-01-01T00:00:00"),
    )
    return s


@dataclass
class RunningBC:
    emulator: BusinessCentralEmulator
    state: BCState
    origin: str  # http://127.0.0.1:PORT
    http: aiohttp.ClientSession  # carries a Bearer token of CLIENT_ID (unless started without)
    anon: aiohttp.ClientSession  # no credentials

    def api(self, version: str = "v2.0") -> str:
        return f"{self.origin}/v2.0/{TENANT}/{ENVIRONMENT}/api/{version}"

    def company(self, version: str = "v2.0", company: str = COMPANY) -> str:
        return f"{self.api(version)}/companies({company})"

    @property
    def token_url(self) -> str:
        return f"{self.origin}/{TENANT}/oauth2/v2.0/token"

    async def token(self, client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> str:
        resp = await self.anon.post(
            self.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
                "scope": SCOPE,
            },
        )
        body = await resp.json()
        assert resp.status == 200, body
        token: str = body["access_token"]
        return token

    async def get(self, url: str, **kwargs: Any) -> tuple[aiohttp.ClientResponse, Any]:
        """GET with the default token; returns the response and its JSON body (None if not JSON)."""
        resp = await self.http.get(url, **kwargs)
        raw = await resp.read()
        body = await resp.json() if raw and resp.content_type == "application/json" else None
        return resp, body

    async def admin(self, method: str, path: str, **kwargs: Any) -> tuple[aiohttp.ClientResponse, Any]:
        resp = await self.anon.request(method, f"{self.origin}/_sandbox/{path}", **kwargs)
        raw = await resp.read()
        body = await resp.json() if raw and resp.content_type == "application/json" else None
        return resp, body


async def start_app(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on 127.0.0.1 and a free port; returns the runner and the origin URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@asynccontextmanager
async def running_bc(
    state: BCState | None = None, *, authenticated: bool = True, **options: Any
) -> AsyncIterator[RunningBC]:
    """Start an emulator over ``build_state()`` (or ``state``); ``options`` go to its constructor."""
    options.setdefault(
        "clients",
        {CLIENT_ID: CLIENT_SECRET, NOPERM_CLIENT_ID: NOPERM_SECRET, OTHER_CLIENT_ID: OTHER_SECRET},
    )
    options.setdefault("basic_users", {ONPREM_USER: ONPREM_KEY})
    options.setdefault("clients_without_permissions", [NOPERM_CLIENT_ID])
    st = state if state is not None else build_state()
    emulator = BusinessCentralEmulator(st, **options)
    runner, origin = await start_app(emulator.make_app())
    anon = aiohttp.ClientSession()
    http = aiohttp.ClientSession()
    running = RunningBC(emulator, st, origin, http, anon)
    try:
        if authenticated:
            token = await running.token()
            await http.close()
            running.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"})
        yield running
    finally:
        await running.http.close()
        await anon.close()
        await runner.cleanup()
