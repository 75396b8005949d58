"""Fixtures for the sandbox emulator tests: a small hand-made SuperOffice tenant served on a free port
(``make_so``, ``so``; registered for every test by ``tests/conftest.py``).

Tests talk raw HTTP (aiohttp.ClientSession) so they check what the emulator puts on the wire, not what
syncd's own clients make of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from syncd.sandbox.superoffice import SANDBOX_SO_PASSWORD, SANDBOX_SO_USER, SOState, SuperOfficeEmulator
from tests.support.bc_fixtures import basic, dt, gif, jpeg, png_alpha, start_app

TENANT = "Cust00001"
BROKEN_HTML = b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>"


jpeg_bytes = jpeg  # the picture helpers are shared with the Business Central tests (bc_fixtures)


def png_alpha_bytes(size: tuple[int, int] = (20, 20)) -> bytes:
    return png_alpha(size)


def gif_bytes(size: tuple[int, int] = (16, 16)) -> bytes:
    return gif(size)


def build_state() -> SOState:
    """Five contacts and four persons with fixed dates; pictures on some of them.

    contact 1 JPEG 40×30, 2 none, 3 PNG with alpha, 4 an HTML page stored as image/jpeg, 5 none.
    person 1 JPEG 40×30 (lazy), 2 none, 3 none (retired), 4 none (no personNumber).
    """
    s = SOState(clock=lambda: dt("2024-05-01T00:00:00").timestamp())
    s.add_contact(
        name="Acme AS",
        code="C00001",
        number="10001",
        orgnr="NO911111111",
        email="post@acme.example",
        category="Kunde",
        country="Norway",
        registeredDate=dt("2024-01-10T08:00:00"),
        updatedDate=dt("2024-03-01T12:00:00"),
    )
    s.add_contact(
        name="Beta Bygg",
        code="C00002",
        number="10002",
        category="Leverandør",
        country="Sweden",
        registeredDate=dt("2024-02-01T08:00:00"),
        updatedDate=dt("2024-03-05T09:30:00"),
    )
    s.add_contact(
        name="Gamma Data",
        code="C00003",
        number="10003",
        department="Oslo",
        country="Norway",
        registeredDate=dt("2024-02-15T08:00:00"),
        updatedDate=dt("2024-03-05T10:00:00"),
        activeErpLinks=True,
    )
    s.add_contact(
        name="Delta Drift",
        code="c00004",
        number="10004",
        registeredDate=dt("2024-03-01T08:00:00"),
        updatedDate=dt("2024-04-01T00:00:00"),
    )
    s.add_contact(
        name="epsilon",
        code="",
        number="10005",
        registeredDate=dt("2024-03-10T08:00:00"),
        updatedDate=dt("2024-03-10T08:00:00"),
    )
    s.add_person(
        contact_id=1,
        first_name="Ada",
        last_name="Lovelace",
        person_number="P0001",
        email="ada@acme.example",
        personRegisteredDate=dt("2024-01-11T08:00:00"),
        personUpdatedDate=dt("2024-03-02T08:00:00"),
    )
    s.add_person(
        contact_id=1,
        first_name="Bob",
        last_name="Builder",
        person_number="P0002",
        personRegisteredDate=dt("2024-01-12T08:00:00"),
        personUpdatedDate=dt("2024-03-03T08:00:00"),
    )
    s.add_person(
        contact_id=3,
        first_name="Cy",
        last_name="Young",
        person_number="P0003",
        retired=True,
        personRegisteredDate=dt("2024-01-13T08:00:00"),
        personUpdatedDate=dt("2024-03-04T08:00:00"),
    )
    s.add_person(
        contact_id=2,
        first_name="Di",
        last_name="Prince",
        personRegisteredDate=dt("2024-01-14T08:00:00"),
        personUpdatedDate=dt("2024-03-05T08:00:00"),
    )
    s.set_image("contact", 1, jpeg_bytes(), when=dt("2024-02-01T10:00:00"))
    s.set_image("contact", 3, png_alpha_bytes(), when=dt("2024-02-02T10:00:00"))
    s.set_image("contact", 4, BROKEN_HTML, "image/jpeg", when=dt("2024-02-03T10:00:00"))
    s.set_image(
        "person",
        1,
        lambda: jpeg_bytes(colour=(10, 200, 10)),
        "image/jpeg",
        label="person1",
        when=dt("2024-02-04T10:00:00"),
    )
    return s


@dataclass
class RunningSO:
    emulator: SuperOfficeEmulator
    state: SOState
    origin: str  # http://127.0.0.1:PORT
    api: str  # origin + /Cust00001/api/v1
    http: aiohttp.ClientSession  # authenticated with the sandbox Basic user
    anon: aiohttp.ClientSession  # no credentials

    async def admin(self, method: str, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        resp = await self.anon.request(method, f"{self.origin}/_sandbox/{path}", **kwargs)
        await resp.read()
        return resp


SOFactory = Callable[..., Awaitable[RunningSO]]


@pytest.fixture
async def make_so() -> AsyncIterator[SOFactory]:
    """Start an emulator over ``build_state()`` (or ``state=``) with the given constructor options."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def factory(state: SOState | None = None, **options: Any) -> RunningSO:
        st = state if state is not None else build_state()
        emulator = SuperOfficeEmulator(st, **options)
        emulator.clock = lambda: dt("2024-05-01T00:00:00").timestamp()
        runner, origin = await start_app(emulator.make_app())
        http = aiohttp.ClientSession(headers={"Authorization": basic(SANDBOX_SO_USER, SANDBOX_SO_PASSWORD)})
        anon = aiohttp.ClientSession()

        async def cleanup() -> None:
            await http.close()
            await anon.close()
            await runner.cleanup()

        cleanups.append(cleanup)
        return RunningSO(emulator, st, origin, f"{origin}/{TENANT}/api/v1", http, anon)

    yield factory
    for c in reversed(cleanups):
        await c()


@pytest.fixture
async def so(make_so: SOFactory) -> RunningSO:
    return await make_so()
