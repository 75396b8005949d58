"""HTTP plumbing shared by both API clients: session, timeouts, rate limit, retries, Retry-After.

Rules (the resilience contract):
- 408, 429, 500, 502, 503, 504 and connection errors are retried with exponential backoff and full
  jitter, at most ``limits.max_retries`` times per request.
- A ``Retry-After`` (seconds or HTTP-date) closes a gate for the whole API: no request to that API
  leaves before the instant it names, whichever worker sends it. Without one, a 429 closes the gate
  for the backoff delay (the limit is per principal, not per request).
- 400, 403, 404, 409, 412 are never retried here; 401 makes the auth drop its credential and the
  request is sent once more with a fresh one.
- Credentials go only to the configured origin: a client built with ``base_url`` refuses any URL whose
  scheme, host or port differ (a next link or media link from a reply naming another host) and sends
  nothing there (:class:`~syncd.errors.ForeignOriginError`).
- Every reply is bounded: its body is read (and gunzipped/inflated by us, never by aiohttp) up to
  ``max_bytes`` — by default ``limits.max_reply_bytes`` (1 MB: metadata and errors); listings pass
  ``limits.max_page_bytes`` and picture downloads their own cap. The count is AFTER decompression, so a
  40 KB gzip bomb cannot become 40 MB in memory. Error bodies are cut at 64 KB instead of failing.
- Listings go through :class:`PageGuard`: the URLs followed are remembered (a next link that repeats
  one is an error), the pages are counted (``limits.max_pages``), and a page that repeats an earlier
  one (a server ignoring ``$skip``) is an error: every listing ends.
- A sliding-window limiter (:mod:`syncd.ratelimit`: at most ``burst`` requests in any
  ``burst / requests_per_second`` seconds, the shape of Business Central's own limit) and a semaphore
  (``concurrency``) shared by all workers keep us below the API's limits instead of bouncing off them.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import random
import socket
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import aiohttp

from syncd import __version__
from syncd.config import ApiLimits
from syncd.credentials import Auth
from syncd.errors import (
    ApiError,
    AuthError,
    ForeignOriginError,
    MalformedReplyError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    UnreachableError,
)
from syncd.ratelimit import SlidingWindowLimiter

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
USER_AGENT = f"syncd/{__version__} (+picture mirror SuperOffice→Business Central)"
ERROR_BODY_BYTES = 65_536  # an error reply is read this far (enough for any error text), then cut
DEFAULT_REPLY_BYTES = 1_000_000  # the cap when neither the caller nor the limits name one
FOREIGN_ORIGIN_HINT = (
    "syncd sends credentials and pictures only to the origin (scheme, host, port) of the configured "
    "base_url. Business Central on-premises behind a TLS proxy returns links such as "
    "http://internal:7048/… when the server instance's public URL (PublicODataBaseUrl / "
    "PublicWebBaseUrl) is not set to the proxy's address: set it there, or use the origin the links "
    "name as base_url if that is the address to use"
)

Sleep = Callable[[float], Awaitable[None]]


class HttpObserver(Protocol):
    """Receives what the metrics want to count. Every method must be cheap and never raise."""

    def on_response(self, api: str, method: str, status: int) -> None: ...
    def on_retry(self, api: str, reason: str) -> None: ...
    def on_wait(self, api: str, seconds: float) -> None: ...


class _NullObserver:
    def on_response(self, api: str, method: str, status: int) -> None:
        pass

    def on_retry(self, api: str, reason: str) -> None:
        pass

    def on_wait(self, api: str, seconds: float) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    def json(self) -> Any:
        """The body as JSON (None when empty). Raises :class:`MalformedReplyError` (also a ValueError)
        for a body that is not JSON or nests deeper than any API reply does."""
        return parse_json(self.body, self.url) if self.body else None

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()


def parse_json(body: bytes, where: str = "") -> Any:
    """JSON from an API reply. Raises :class:`MalformedReplyError` (also a ValueError) for a body that is
    not JSON or nests deeper than the parser allows (``[[[[…``: a RecursionError otherwise)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        what = f"reply from {urlsplit(where).netloc}" if where else "reply"
        why = "nested too deeply" if isinstance(exc, RecursionError) else "not valid JSON"
        raise MalformedReplyError(f"{what}: {why}", status=200) from None


def origin_of(url: str) -> str:
    """``scheme://host:port`` of ``url`` (lower case, default port filled in): what credentials belong to."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or {"https": 443, "http": 80}.get(scheme)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def new_session(*, connect_timeout: float = 15.0, limit: int = 100) -> aiohttp.ClientSession:
    """One session per API per process: connection pooling, keep-alive, our User-Agent.

    aiohttp does not decompress: :func:`read_body` does, bounded (see the module docstring)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300, enable_cleanup_closed=True),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
        raise_for_status=False,
        auto_decompress=False,
        trace_configs=[_gate_trace()],
    )


class ReplyTooLarge(Exception):
    """A body past its cap (counted after decompression)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {limit} bytes")
        self.limit = limit


class BadEncoding(Exception):
    """A Content-Encoding we did not ask for, or compressed data that does not decompress."""


async def read_body(resp: aiohttp.ClientResponse, limit: int, *, truncate: bool = False) -> bytes:
    """The body of ``resp``, decompressed (gzip, deflate), at most ``limit`` bytes AFTER decompression.

    Past the cap: :class:`ReplyTooLarge`, or with ``truncate`` the first ``limit`` bytes. Memory stays
    within about ``limit`` plus one network chunk whatever the compression ratio: zlib is asked for at
    most the bytes still allowed on every call."""
    encoding = resp.headers.get("Content-Encoding", "").strip().lower()
    inflater: Any = None
    if encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflater = zlib.decompressobj(zlib.MAX_WBITS)  # zlib-wrapped; raw deflate tried on failure below
    elif encoding not in ("", "identity"):
        raise BadEncoding(f"Content-Encoding {encoding[:40]!r} (syncd asks for gzip or deflate only)")
    if inflater is None and (resp.content_length or 0) > limit and not truncate:
        raise ReplyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    wire = 0
    first = True

    def add(data: bytes) -> bool:
        """Keep ``data``; False once the cap is reached (then stop reading)."""
        nonlocal size
        room = limit - size
        if len(data) > room:
            if not truncate:
                raise ReplyTooLarge(limit)
            chunks.append(data[:room])
            size = limit
            return False
        chunks.append(data)
        size += len(data)
        return True

    async for chunk in resp.content.iter_any():  # as received: no re-slicing into 64 KB copies
        wire += len(chunk)
        if inflater is None:
            if not add(chunk):
                break
            continue
        if wire > max(limit, 1024) * 4 and size == 0:
            raise BadEncoding("compressed data that yields nothing")
        try:
            if first and encoding == "deflate" and chunk[:1] and (chunk[0] & 0x0F) != 8:
                inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as some servers send
            first = False
            data = inflater.decompress(chunk, limit - size + 1)
            going = add(data)
            while going and inflater.unconsumed_tail:
                data = inflater.decompress(inflater.unconsumed_tail, limit - size + 1)
                if not data:
                    break
                going = add(data)
        except zlib.error as exc:
            raise BadEncoding(f"{encoding} data that does not decompress ({exc})") from None
        if not going:
            break
    return b"".join(chunks)


def _gate_trace() -> aiohttp.TraceConfig:
    """Checks the Retry-After gate once more when a request has its connection, right before it is written.

    ``ApiClient.request`` waits for the gate before queueing, but opening a connection takes a while; a
    Retry-After that another worker read meanwhile must hold this request too. The request passes its
    gate check as ``trace_request_ctx``.
    """

    async def wait(session: aiohttp.ClientSession, ctx: Any, params: object) -> None:
        check = getattr(ctx, "trace_request_ctx", None)
        if callable(check):
            await check()

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(wait)
    trace.on_connection_reuseconn.append(wait)
    return trace


def parse_retry_after(value: str | None, *, now_wall: float) -> float | None:
    """Seconds to wait according to a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now_wall)


def error_detail(body: bytes) -> tuple[str | None, str]:
    """(code, message) from a BC ``{"error":{"code","message"}}`` or SO ``{"ErrorMessage"}`` body."""
    try:
        data = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        text = body[:200].decode("utf-8", "replace").strip()
        return None, " ".join(text.split())
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return _text(err.get("code")) or None, _text(err.get("message")).strip()
        if "ErrorMessage" in data:
            return _text(data.get("ErrorType")) or None, _text(data.get("ErrorMessage"))
        if isinstance(err, str):  # OAuth style
            return err[:200], _text(data.get("error_description")).split("\r\n")[0]
    if isinstance(data, str | int | float):
        return None, str(data)[:200]
    return None, body[:200].decode("utf-8", "replace")


def _text(value: Any, limit: int = 2000) -> str:
    """A server's text field as text: a string or number as is, anything else (a dict, a list) as the
    start of its JSON — never the cause of an exception."""
    if value is None:
        return ""
    if isinstance(value, str | int | float):
        return str(value)[:limit]
    try:
        return json.dumps(value)[:limit]
    except (ValueError, TypeError, RecursionError):
        return type(value).__name__


def network_problem(exc: BaseException, timeout: float | None = None) -> str:
    """A short human reason for a failed connection or request: ``connection refused``, ``host name not
    found (DNS)``, ``TLS: …``, ``no answer within 20 s``."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return f"no answer within {timeout:g} s" if timeout else "timed out"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "host name not found (DNS)"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate not accepted: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS handshake failed: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(os_error, socket.gaierror):
            return "host name not found (DNS)"
        return f"cannot connect: {os_error.strerror or os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer broke off"
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")


class ApiClient:
    """Sends requests to one API with its auth, limits and retry policy."""

    def __init__(
        self,
        *,
        api: str,
        session: aiohttp.ClientSession,
        auth: Auth,
        limits: ApiLimits,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        observer: HttpObserver | None = None,
        rng: random.Random | None = None,
        base_url: str | None = None,
        permission_hint: str | None = None,
        retry_backoff: float = 0.5,
    ) -> None:
        self.api = api
        # What a 403 tells the user to fix; the builder of the client knows its vendor's words for it.
        self.permission_hint = permission_hint or f"the {api} credentials lack rights for this data"
        self.retry_backoff = retry_backoff  # the backoff's base: attempt n waits up to base * 2^n s
        # The origin the credentials belong to; None (tests of the plumbing only): no check.
        self.origin = origin_of(base_url) if base_url else None
        self.session = session
        self.auth = auth
        self.limits = limits
        self._clock = clock
        self._wall = wall_clock
        self._sleep = sleep
        self._observer: HttpObserver = observer or _NullObserver()
        self._rng = rng or random.Random()
        self._limiter = SlidingWindowLimiter.for_rate(
            limits.requests_per_second, burst, clock=clock, sleep=sleep
        )
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._gate_until = 0.0  # monotonic instant before which nothing may be sent
        self.requests_sent = 0

    # -- the gate -------------------------------------------------------------------------------
    def _close_gate(self, seconds: float) -> None:
        # A small margin so that a server comparing with its own clock never sees us early.
        self._gate_until = max(self._gate_until, self._clock() + seconds + 0.05)

    async def _wait_gate(self) -> None:
        while True:
            delay = self._gate_until - self._clock()
            if delay <= 0:
                return
            self._observer.on_wait(self.api, delay)
            await self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        # Full jitter (AWS architecture blog): uniform in [0.1, min(cap, base * 2^attempt)].
        ceiling = min(30.0, self.retry_backoff * 2**attempt)
        return self._rng.uniform(min(0.1, ceiling), ceiling)

    # -- requests -------------------------------------------------------------------------------
    def check_origin(self, url: str, what: str) -> None:
        """Refuse a URL outside the configured origin before anything (credentials, bytes) is sent."""
        if self.origin is None:
            return
        theirs = origin_of(url)
        if theirs != self.origin:
            raise ForeignOriginError(
                f"{what}: {self.api} pointed to {theirs}, which is not the configured origin "
                f"{self.origin}; nothing was sent there",
                status=0,
                hint=FOREIGN_ORIGIN_HINT,
            )

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        ok: tuple[int, ...] = (200,),
        allow: tuple[int, ...] = (),
        max_bytes: int | None = None,
        what: str = "",
    ) -> Response:
        """Send with retries. Returns a response whose status is in ``ok`` or ``allow``;
        raises a :mod:`syncd.errors` exception for anything else."""
        attempt = 0
        auth_retried = False
        what = what or f"{method} {url.split('?')[0]}"
        self.check_origin(url, what)
        if max_bytes is None:
            max_bytes = self.limits.max_reply_bytes
        accepted = (*ok, *allow)
        while True:
            await self._wait_gate()
            async with self._slots:
                # The window slot is taken only once we may send (a concurrency slot held), so the
                # instant it records is when the request leaves, not when it started queueing.
                waited = await self._limiter.acquire()
                if waited > 0.001:
                    self._observer.on_wait(self.api, waited)
                await self._wait_gate()  # a Retry-After may have arrived while we queued
                auth_headers = await self.auth.headers(self.session)
                sent = {**(headers or {}), **auth_headers}
                try:
                    resp = await self._send(method, url, params, sent, data, max_bytes, accepted)
                except ReplyTooLarge as exc:
                    raise ApiError(
                        f"{what}: response larger than {exc.limit} bytes (after decompression)",
                        status=200,
                        hint=f"{self.api} limits.max_page_bytes bounds listing pages, "
                        "limits.max_reply_bytes every other reply",
                    ) from None
                except BadEncoding as exc:
                    raise MalformedReplyError(f"{what}: {exc}", status=200) from None
                except (aiohttp.ClientError, TimeoutError) as exc:
                    reason = type(exc).__name__
                    self._observer.on_response(self.api, method, 0)
                    if attempt >= self.limits.max_retries:
                        host = urlsplit(url).netloc or url
                        tries = f"{attempt + 1} attempt" + ("s" if attempt else "")
                        raise UnreachableError(
                            f"{what}: {host} unreachable ({network_problem(exc, self.limits.timeout)}; "
                            f"{tries})",
                            hint="check the base_url, DNS and network; syncd retries on the next run",
                        ) from None
                    self._observer.on_retry(self.api, reason)
                    delay = self._backoff(attempt)
                    attempt += 1
                    await self._sleep(delay)
                    continue
            self._observer.on_response(self.api, method, resp.status)
            if resp.status in ok or resp.status in allow:
                return resp
            if resp.status == 401 and not auth_retried and await self.auth.invalidate(sent):
                auth_retried = True
                continue
            if resp.status in RETRY_STATUSES:
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), now_wall=self._wall())
                if retry_after is not None and retry_after > self.limits.max_retry_wait:
                    raise UnreachableError(
                        f"{what}: {self.api} asks us to wait {retry_after:.0f}s (HTTP {resp.status}), "
                        f"longer than limits.max_retry_wait ({self.limits.max_retry_wait:.0f}s)",
                        hint="the API is throttling or in maintenance; the next run will continue",
                    )
                if attempt >= self.limits.max_retries:
                    code, msg = error_detail(resp.body)
                    detail = msg or code or ""
                    raise UnreachableError(
                        f"{what}: HTTP {resp.status} after {attempt + 1} attempts: {detail}".strip(),
                        hint="the API is throttling or failing; the next run will continue",
                    )
                delay = retry_after if retry_after is not None else self._backoff(attempt)
                self._observer.on_retry(self.api, str(resp.status))
                attempt += 1
                if retry_after is not None or resp.status == 429:
                    self._close_gate(delay)  # everyone waits, not just this request
                else:
                    await self._sleep(delay)
                continue
            raise self._error(resp, what)

    async def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
        data: bytes | None,
        max_bytes: int,
        accepted: tuple[int, ...],
    ) -> Response:
        timeout = aiohttp.ClientTimeout(total=self.limits.timeout, sock_connect=self.limits.connect_timeout)
        self.requests_sent += 1
        async with self.session.request(
            method,
            url,
            params=params,
            headers=headers,
            data=data,
            timeout=timeout,
            allow_redirects=False,
            trace_request_ctx=self._wait_gate,  # see _gate_trace
        ) as resp:
            if resp.status in accepted:
                body = await read_body(resp, max_bytes)
            else:  # an error: its text is enough, the rest is not read
                body = await read_body(resp, min(max_bytes, ERROR_BODY_BYTES), truncate=True)
            return Response(resp.status, dict(resp.headers), body, str(resp.url))

    def _error(self, resp: Response, what: str) -> ApiError | AuthError:
        code, msg = error_detail(resp.body)
        text = f"{what}: HTTP {resp.status}" + (f" {code}" if code else "") + (f": {msg}" if msg else "")
        if resp.status == 401:
            return AuthError(text, hint=f"the {self.api} credentials were rejected; run `syncd check`")
        if resp.status == 403:
            return PermissionDeniedError(
                text,
                status=403,
                code=code,
                hint=self.permission_hint,
            )
        if resp.status == 404:
            return NotFoundError(text, status=404, code=code)
        if resp.status in (409, 412):
            return PreconditionFailedError(text, status=resp.status, code=code)
        return ApiError(text, status=resp.status, code=code)


DEFAULT_MAX_PAGES = 10_000


class PageGuard:
    """Bounds one listing so that it always ends, whatever the server answers.

    ``follow(url, params)`` before each page: a page address (URL with its query) asked for before is
    a loop (a next link repeating itself, or pointing back) and an error, as is a page past
    ``max_pages``. ``rows(keys)`` after each page: a non-empty page with exactly the rows of an earlier
    page means the server ignores the paging (``$skip``, ``$skiptoken``) and would serve it forever.
    Memory: one address and one 16-byte digest per page.
    """

    def __init__(self, what: str, *, api: str, max_pages: int = DEFAULT_MAX_PAGES) -> None:
        self.what = what
        self.api = api
        self.max_pages = max_pages
        self.pages = 0
        self._addresses: set[str] = set()
        self._digests: set[bytes] = set()
        self._empty = 0

    def follow(self, url: str, params: Mapping[str, str] | None = None) -> None:
        address = _page_address(url, params)
        if address in self._addresses:
            raise ApiError(
                f"{self.what}: {self.api} sent a next link to a page already read "
                f"(page {self.pages + 1}: {address[:200]}); the listing would never end",
                status=200,
                hint="the server's paging is broken; nothing was changed",
            )
        if self.pages >= self.max_pages:
            raise ApiError(
                f"{self.what}: more than {self.max_pages} pages; stopped",
                status=200,
                hint=f"{self.api} limits.max_pages bounds a listing: raise it if there really are this "
                "many pages (or raise page_size)",
            )
        self._addresses.add(address)
        self.pages += 1

    MAX_EMPTY_PAGES = 50  # consecutive empty pages that still name a next page: a server going nowhere

    def rows(self, keys: list[str]) -> None:
        if not keys:
            self._empty += 1
            if self._empty > self.MAX_EMPTY_PAGES:
                raise ApiError(
                    f"{self.what}: {self._empty} empty pages in a row, each naming a next page; "
                    f"{self.api}'s paging goes nowhere and the listing would never end",
                    status=200,
                    hint="the server's paging is broken; nothing was changed",
                )
            return
        self._empty = 0
        digest = hashlib.blake2b("\x00".join(keys).encode(), digest_size=16).digest()
        if digest in self._digests:
            raise ApiError(
                f"{self.what}: page {self.pages} repeats the rows of an earlier page ({len(keys)} rows); "
                f"{self.api} ignores the paging and the listing would never end",
                status=200,
                hint="the server (or a proxy in front of it) drops $skip/$skiptoken; nothing was changed",
            )
        self._digests.add(digest)


def _page_address(url: str, params: Mapping[str, str] | None) -> str:
    """A page's address as sent, normalized: origin, path, and the query options sorted and unquoted
    (the first page's ``params`` and a next link naming the same page compare equal)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list((params or {}).items())
    return f"{origin_of(url)}{unquote(parts.path)}?" + "&".join(f"{k}={v}" for k, v in sorted(query))
