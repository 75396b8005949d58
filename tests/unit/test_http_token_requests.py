"""Token and ticket requests leave through the shared client layer (:class:`syncd.http.ApiClient`).

One code path for every request: a token request is retried on the same statuses as an API request
(408 included), honours Retry-After through the same gate, and fails with the same wording. A tiny
in-process token endpoint answers from a script; the auth's clock and sleep are fakes shared with it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from syncd.auth import ClientCredentialsAuth
from syncd.config import ApiLimits
from syncd.errors import UnreachableError
from syncd.http import ApiClient
from syncd.secrets import Secret

TENANT = "token-tenant"
TOKEN = {"token_type": "Bearer", "access_token": "eyJ0b2tlbi1mb3ItdGVzdHM", "expires_in": 3599}
GATE_MARGIN = 0.05  # ApiClient closes its gate this much longer than Retry-After asks


class Clock:
    def __init__(self) -> None:
        self.t = 1_750_000_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


Reply = tuple[int, dict[str, str], Any]


@asynccontextmanager
async def token_endpoint(replies: list[Reply]) -> AsyncIterator[tuple[str, list[int]]]:
    """A token endpoint answering ``replies`` in turn (the last one forever); yields (url, statuses sent)."""
    sent: list[int] = []

    async def token(request: web.Request) -> web.Response:
        await request.read()
        status, headers, body = replies[min(len(sent), len(replies) - 1)]
        sent.append(status)
        return web.Response(status=status, headers=headers, text=json.dumps(body))

    app = web.Application()
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token)
    server = TestServer(app, port=0)
    await server.start_server()
    try:
        yield str(server.make_url(f"/{TENANT}/oauth2/v2.0/token")), sent
    finally:
        await server.close()


def entra(url: str, clock: Clock, attempts: int = 3) -> ClientCredentialsAuth:
    return ClientCredentialsAuth(
        tenant_id=TENANT,
        client_id="client",
        client_secret=Secret("token-requests-secret"),
        token_url=url,
        clock=clock,
        sleep=clock.sleep,
        attempts=attempts,
    )


def spy_requests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every ApiClient.request call (its ``what``): the one code path all requests take."""
    calls: list[str] = []
    real: Callable[..., Awaitable[Any]] = ApiClient.request

    async def request(self: ApiClient, method: str, url: str, **kw: Any) -> Any:
        calls.append(kw.get("what", ""))
        return await real(self, method, url, **kw)

    monkeypatch.setattr(ApiClient, "request", request)
    return calls


@pytest.mark.parametrize("status", [503, 429])
async def test_a_token_request_waits_the_retry_after_in_the_shared_client(
    status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = spy_requests(monkeypatch)
    clock = Clock()
    replies: list[Reply] = [(status, {"Retry-After": "7"}, {"error": "busy"}), (200, {}, TOKEN)]
    async with token_endpoint(replies) as (url, sent), aiohttp.ClientSession() as session:
        headers = await entra(url, clock).headers(session)
    assert headers["Authorization"] == "Bearer " + TOKEN["access_token"]
    assert sent == [status, 200]
    assert calls == [f"Entra ID token for tenant {TENANT}"]  # one request through ApiClient, retried there
    assert clock.sleeps == [pytest.approx(7 + GATE_MARGIN)]  # the Retry-After, not a backoff


async def test_a_408_from_the_token_endpoint_is_retried_like_any_request() -> None:
    clock = Clock()
    replies: list[Reply] = [(408, {}, {"error": "timeout"}), (200, {}, TOKEN)]
    async with token_endpoint(replies) as (url, sent), aiohttp.ClientSession() as session:
        headers = await entra(url, clock).headers(session)
    assert headers["Authorization"].startswith("Bearer ")
    assert sent == [408, 200]
    assert len(clock.sleeps) == 1 and 0.1 <= clock.sleeps[0] <= 0.5  # the API client's backoff


async def test_a_failed_token_request_reads_like_a_failed_api_request() -> None:
    """The same failure through the auth and through a plain ApiClient: the same message."""
    what = f"Entra ID token for tenant {TENANT}"
    replies: list[Reply] = [(503, {}, {"error": {"code": "Unavailable", "message": "down for a while"}})]
    async with token_endpoint(replies) as (url, sent), aiohttp.ClientSession() as session:
        with pytest.raises(UnreachableError) as from_auth:
            await entra(url, Clock(), attempts=2).headers(session)
        clock = Clock()
        api = ApiClient(
            api="Entra ID",
            session=session,
            auth=_Anonymous(),
            limits=ApiLimits(requests_per_second=1000, concurrency=1, max_retries=1),
            clock=clock,
            sleep=clock.sleep,
            base_url=url,
        )
        with pytest.raises(UnreachableError) as from_api:
            await api.request("POST", url, what=what)
    assert sent == [503] * 4  # two attempts each
    assert from_auth.value.message == from_api.value.message
    assert from_auth.value.message == f"{what}: HTTP 503 after 2 attempts: down for a while"
    assert "token-requests-secret" not in str(from_auth.value) + str(from_auth.value.hint)


async def test_an_unreachable_token_endpoint_reads_like_an_unreachable_api() -> None:
    async with token_endpoint([(200, {}, TOKEN)]) as (url, _):
        pass  # closed again: nothing listens there any more
    host = url.split("/")[2]
    async with aiohttp.ClientSession() as session:
        with pytest.raises(UnreachableError) as e:
            await entra(url, Clock(), attempts=2).headers(session)
    assert (
        e.value.message
        == f"Entra ID token for tenant {TENANT}: {host} unreachable (connection refused; 2 attempts)"
    )
    assert e.value.hint is not None and host in e.value.hint


class _Anonymous:
    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        return {}

    async def invalidate(self, sent_headers: Any) -> bool:
        return False

    def describe(self) -> str:
        return "anonymous"
