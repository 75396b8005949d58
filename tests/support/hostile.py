"""A hostile or broken server on loopback, for the tests of issue #13 (what syncd trusts from the network).

``Hostile`` is an aiohttp server on 127.0.0.1 that records every request it receives (method, path with
query, headers, body) in ``seen``. It answers in one of two ways:

* ``Hostile(handler=...)``: ``await handler(seen, n)`` answers request number ``n`` (0-based) — a server
  written for the test (a bomb, an endless listing, a token endpoint that answers garbage).
* ``Hostile(upstream=url, tamper=...)``: a reverse proxy in front of a sandbox API. Requests go upstream
  unchanged; the upstream's origin in replies is rewritten to the proxy's own (as a well-configured
  proxy does, so the sandbox's absolute next links stay on the proxy). ``tamper(seen, reply)`` may then
  change the reply (a ``Reply``: status, headers, body; JSON via ``reply.json``/``reply.set_json``) or
  return a whole ``web.StreamResponse`` instead; ``alter_request(seen)`` may change the path and query
  sent upstream (e.g. drop ``$skip``, as a broken proxy would); ``delay(seen)`` holds a request that
  many seconds first (a stalled server).

A second ``Hostile()`` without handler is a *recorder*: it answers ``{"value": []}`` to anything and
``seen`` shows whether syncd sent it a request (and with which credentials).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

HOP_BY_HOP = {
    "host",
    "content-length",
    "transfer-encoding",
    "content-encoding",
    "connection",
    "keep-alive",
    "accept-encoding",
}


@dataclass
class Seen:
    """One request as the hostile server received it."""

    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes

    @property
    def authorization(self) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == "authorization"), None)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def set_json(self, value: Any) -> None:
        self.body = json.dumps(value).encode()
        self.headers["Content-Type"] = "application/json; charset=utf-8"


Handler = Callable[[Seen, int], Awaitable[web.StreamResponse]]
Tamper = Callable[[Seen, Reply], "Reply | web.StreamResponse | None"]


async def _recorder(seen: Seen, n: int) -> web.StreamResponse:
    return web.json_response({"value": []})


@dataclass
class Hostile:
    handler: Handler | None = None
    upstream: str | None = None
    tamper: Tamper | None = None
    alter_request: Callable[[Seen], str] | None = None
    delay: Callable[[Seen], float] | None = None  # seconds to hold a request before answering (a stall)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _client: aiohttp.ClientSession | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Hostile:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)  # stalled handlers too
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        if self.upstream is not None:
            self._client = aiohttp.ClientSession(auto_decompress=True)
        return self

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Hostile:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def requests(self, method: str | None = None, containing: str = "") -> list[Seen]:
        return [s for s in self.seen if (method is None or s.method == method) and containing in s.path_qs]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(request.method, request.path_qs, dict(request.headers), await request.read())
        n = len(self.seen)
        self.seen.append(seen)
        if self.delay is not None and (seconds := self.delay(seen)) > 0:
            await asyncio.sleep(seconds)
        if self.upstream is None:
            return await (self.handler or _recorder)(seen, n)
        assert self._client is not None
        path_qs = self.alter_request(seen) if self.alter_request else seen.path_qs
        headers = {k: v for k, v in seen.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._client.request(
            seen.method, self.upstream + path_qs, headers=headers, data=seen.body, allow_redirects=False
        ) as resp:
            body = await resp.read()
            reply_headers = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
            reply = Reply(
                resp.status, reply_headers, body.replace(self.upstream.encode(), self.origin.encode())
            )
        if self.tamper is not None:
            changed = self.tamper(seen, reply)
            if isinstance(changed, web.StreamResponse):
                return changed
            reply = changed or reply
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)


def origin(url: str) -> str:
    """``http://127.0.0.1:PORT`` of a sandbox URL."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"
