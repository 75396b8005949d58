"""A hostile (or merely different) SuperOffice in front of the sandbox: a reverse proxy on loopback that
passes every request through, except the routes its knobs rewrite. The sandbox keeps the data; the proxy
only changes what the client sees, as a proxy or an older installation would."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import TracebackType

import aiohttp
from aiohttp import web

IMAGE_INFO = re.compile(r"/(?:contact|person)/\d+/imageinfo$", re.IGNORECASE)
IMAGE = re.compile(r"/(?:contact|person)/\d+/image$", re.IGNORECASE)
LISTING = re.compile(r"/api/v1/(?:contact|person)$", re.IGNORECASE)
HOP_BY_HOP = {"host", "connection", "content-length", "transfer-encoding", "accept-encoding"}


@dataclass
class Knobs:
    image_info_missing: bool = False  # …/ImageInfo answers 404 (no such route), as on an old installation
    blank_image_status: int | None = None  # a 404 from …/Image is answered with this status (e.g. 204)
    # GETs of ``error_on`` ("image": …/Image, "list": the contact/person listing) answer 400 with this
    # text as SuperOffice's ErrorMessage; "{auth}" in it echoes the request's Authorization header
    error_text: str | None = None
    error_on: str = "image"
    seen: list[str] = field(default_factory=list)


class SuperOfficeProxy:
    def __init__(self, upstream: str, knobs: Knobs | None = None) -> None:
        self.upstream = upstream.rstrip("/")  # http://127.0.0.1:PORT (the sandbox SO origin)
        self.knobs = knobs or Knobs()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SuperOfficeProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        k = self.knobs
        path = request.path
        k.seen.append(f"{request.method} {path}")
        if request.method == "GET" and IMAGE_INFO.search(path) and k.image_info_missing:
            return web.json_response({"Error": True, "ErrorMessage": "Not found"}, status=404)
        route = IMAGE if k.error_on == "image" else LISTING
        if request.method == "GET" and route.search(path) and k.error_text is not None:
            text = k.error_text.replace("{auth}", request.headers.get("Authorization", ""))
            body = {"Error": True, "ErrorType": "ArgumentException", "ErrorMessage": text}
            return web.json_response(body, status=400)
        assert self._session is not None
        headers = {h: v for h, v in request.headers.items() if h.lower() not in HOP_BY_HOP}
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.path_qs,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as resp:
            body = await resp.read()
            if (
                request.method == "GET"
                and IMAGE.search(path)
                and resp.status == 404
                and k.blank_image_status is not None
            ):
                return web.Response(status=k.blank_image_status)
            out = {h: v for h, v in resp.headers.items() if h.lower() not in HOP_BY_HOP}
            return web.Response(status=resp.status, body=body, headers=out)
