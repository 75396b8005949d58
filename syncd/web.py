"""The daemon's HTTP endpoint: liveness, readiness, Prometheus metrics and a status page.

Routes (``server.host:server.port``, default ``127.0.0.1:9464``):

``GET /healthz``               200 while the event loop turns (liveness).
``GET /readyz``                200 when the config is loaded, the last authentication worked and the
                               ledger is writable; otherwise 503. Both answer JSON with every check.
``GET /metrics``               Prometheus text format (:mod:`syncd.metrics`).
``GET /``                      the status page: server-rendered HTML with inline CSS, no JavaScript, no
                               external assets. Last run per mapping, counts, failures with their
                               error, unmatched and ambiguous records, and the most recent changes as
                               thumbnails side by side (SuperOffice picture → what was written).
``GET /status.json``           the same data as JSON: ``syncd status --json`` plus recent changes.
``GET /thumb/{id}/{side}``     a recent change's thumbnail, ``side`` = ``source`` or ``output``.

The page's data and HTML come from :mod:`syncd.statuspage`; the page and ``syncd status`` read the ledger
through the same :func:`syncd.status.status_data`, so they agree. Everything shown is escaped
(:func:`html.escape`) and a strict Content-Security-Policy forbids scripts. No config values but mapping
definitions, URLs' hosts and the ledger path are shown; secrets never live in the ledger.

Exposure. The page shows CRM ids and people's photos. Every route answers only to the host names it
serves (``server.host``, localhost, 127.0.0.1, [::1], ``server.allowed_hosts``, or the address the
connection came in on); any other ``Host:`` gets 421, so a DNS-rebinding page in a local browser cannot
read it. With ``server.token`` set, ``/``, ``/status.json`` and ``/thumb/…`` also want that token
(``Authorization: Bearer``, or HTTP Basic with the token as password, which browsers prompt for);
``/healthz``, ``/readyz`` and ``/metrics`` stay open to probes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiohttp import web
from multidict import CIMultiDict

from syncd.config import Config
from syncd.imaging import sniff_format
from syncd.ledger import Ledger, RecentChange
from syncd.metrics import CONTENT_TYPE
from syncd.secrets import Secret
from syncd.statuspage import (
    RECENT_SHOWN,
    Check,
    StatusSource,
    gather_page,
    page_json,
    render_status_page,
    thumbnail,
)

__all__ = ["WebServer", "ledger_writable", "make_app"]

log = structlog.get_logger("syncd.web")

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def _image_type(data: bytes) -> str:
    fmt = sniff_format(data)
    return f"image/{fmt.lower()}" if fmt else "application/octet-stream"


# -- the aiohttp application ----------------------------------------------------------------------

SOURCE_KEY: web.AppKey[StatusSource] = web.AppKey("source")


class ThumbCache:
    """The thumbnails the last page render read from the ledger, so that the browser's image requests
    that follow do not each read the recent changes again. Bounded; a miss falls back to the ledger."""

    def __init__(self, size: int = 4 * RECENT_SHOWN) -> None:
        self.size = size
        self._items: OrderedDict[int, RecentChange] = OrderedDict()

    def put(self, changes: Sequence[RecentChange]) -> None:
        for c in changes:
            self._items[c.id] = c
            self._items.move_to_end(c.id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def get(self, change_id: int) -> RecentChange | None:
        return self._items.get(change_id)


THUMBS_KEY: web.AppKey[ThumbCache] = web.AppKey("thumbs")


LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _host_name(header: str) -> str:
    """The host part of a ``Host:`` header, lower-cased, without port or trailing dot (IPv6 keeps its
    brackets)."""
    host = header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    return host.rsplit(":", 1)[0].rstrip(".") if ":" in host else host.rstrip(".")


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def allowed_host(request: web.Request, config: Config | None) -> bool:
    """Whether the request names a host this endpoint serves: ``server.host``, localhost, 127.0.0.1,
    [::1], ``server.allowed_hosts``, or the address the connection came in on (an address in ``Host:``
    cannot come from DNS rebinding, which always names the attacker's domain). No ``Host:`` at all is
    not a browser."""
    header = request.headers.get("Host")
    if header is None:
        return True
    host = _host_name(header)
    names = set(LOCAL_HOSTS)
    if config is not None:
        names.add(_bracketed(config.server.host.strip().lower()))
        names.update(config.server.allowed_hosts)
    if host in names:
        return True
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and sockname:
        local = str(sockname[0]).split("%", 1)[0].lower()
        if local.startswith("::ffff:"):
            local = local[len("::ffff:") :]
        return host in (local, _bracketed(local))
    return False


def authorized(request: web.Request, token: Secret | None) -> bool:
    """``Authorization: Bearer TOKEN``, or HTTP Basic with TOKEN as the password (any user name; what a
    browser sends after the prompt, also for the thumbnails)."""
    if token is None:
        return True
    expected = token.reveal().encode()
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.encode(), expected)
    if scheme.lower() == "basic":
        try:
            _, _, password = base64.b64decode(value, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(password, expected)
    return False


@web.middleware
async def _guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The Host allow-list for every route, and ``server.token`` for the routes that show data."""
    config = request.app[SOURCE_KEY].config
    if not allowed_host(request, config):
        log.warning("refused a request for another host name", host=request.headers.get("Host", "")[:200])
        return web.Response(
            status=421,
            text="this endpoint does not serve that host name; add it to server.allowed_hosts\n",
        )
    token = config.server.token if config is not None else None
    if token is not None and request.path not in OPEN_PATHS and not authorized(request, token):
        return web.Response(
            status=401,
            text="a token is needed (server.token): Authorization: Bearer TOKEN\n",
            headers=_CHALLENGE,
        )
    return await handler(request)


_CHALLENGE = CIMultiDict(
    [("WWW-Authenticate", 'Basic realm="syncd status", charset="UTF-8"'), ("WWW-Authenticate", "Bearer")]
)


@web.middleware
async def _headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def _readyz(request: web.Request) -> web.Response:
    readiness = await request.app[SOURCE_KEY].readiness()
    return web.json_response(readiness.as_json(), status=200 if readiness.ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    source = request.app[SOURCE_KEY]
    metrics = source.metrics
    if metrics is None:
        raise web.HTTPNotFound(text="no metrics in this process\n")
    readiness = await source.readiness()  # what /readyz would answer now, as syncd_ready{,_check}
    metrics.set_readiness(readiness.ready, {name: c.ok for name, c in readiness.checks.items()})
    body = metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _page(request: web.Request) -> web.Response:
    data = await gather_page(request.app[SOURCE_KEY])
    request.app[THUMBS_KEY].put(data.recent)
    return web.Response(text=render_status_page(data), content_type="text/html", charset="utf-8")


async def _status_json(request: web.Request) -> web.Response:
    data = await gather_page(request.app[SOURCE_KEY])
    return web.json_response(page_json(data), dumps=_dumps)


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, default=str)


async def _thumbnail(request: web.Request) -> web.Response:
    side = request.match_info["side"]
    change_id = int(request.match_info["id"])
    change = request.app[THUMBS_KEY].get(change_id)
    ledger = request.app[SOURCE_KEY].ledger
    if change is None and ledger is not None:
        # The table keeps a few dozen rows per mapping (ledger.KEEP_RECENT): a scan is cheap enough.
        changes = await ledger.recent_changes(limit=100_000)
        request.app[THUMBS_KEY].put(changes[:RECENT_SHOWN])
        change = next((c for c in changes if c.id == change_id), None)
    data = thumbnail(change, side) if change is not None else None
    if not data:
        raise web.HTTPNotFound(text="no such thumbnail (it may have been pruned)\n")
    return web.Response(
        body=data, headers={"Content-Type": _image_type(data), "Cache-Control": "private, max-age=300"}
    )


def make_app(source: StatusSource) -> web.Application:
    """The aiohttp application serving every route above for ``source``."""
    app = web.Application(middlewares=[_headers, _guard])
    app[SOURCE_KEY] = source
    app[THUMBS_KEY] = ThumbCache()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/", _page)
    app.router.add_get("/status.json", _status_json)
    app.router.add_get(r"/thumb/{id:\d{1,18}}/{side:source|output}", _thumbnail)
    return app


class WebServer:
    """The endpoint bound to a host and port (port 0: a free one; see :attr:`port`)."""

    def __init__(self, source: StatusSource) -> None:
        self._runner = web.AppRunner(
            make_app(source), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        self._site: web.TCPSite | None = None
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port``; returns the bound port. Raises :class:`OSError` when it cannot."""
        if self._runner.server is None:
            await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        old, self._site = self._site, site
        addresses = self._runner.addresses  # one per listening socket, the newest site's last
        self.host, self.port = host, int(addresses[-1][1]) if addresses else port
        if old is not None:
            await old.stop()
        log.info(
            "http endpoint listening", host=host, port=self.port, url=f"http://{_url_host(host)}:{self.port}/"
        )
        return self.port

    async def stop(self) -> None:
        await self._runner.cleanup()
        self._site = None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def ledger_writable(ledger: Ledger | None) -> Check:
    """Whether the ledger file and its directory (for the WAL) are writable by this process."""
    if ledger is None:
        return Check(False, "ledger not open")
    path = str(ledger.path)
    if path == ":memory:":
        return Check(True, "in memory")

    def probe() -> bool:
        directory = os.path.dirname(os.path.abspath(path)) or "."
        return os.access(path, os.W_OK) and os.access(directory, os.W_OK)

    if not await asyncio.to_thread(probe):
        return Check(False, f"{path} is not writable")
    return Check(True, path)
