"""The cached, refreshed credential shared by the token-fetching auths (Entra ID, SuperOffice system user).

:class:`CachedCredentialAuth` is single-flight (concurrent callers share one request), refreshes ahead of
expiry by a margin (300 s or 10 % of the lifetime, whichever is smaller), keeps using a still-valid
credential when a refresh fails on the network, and after a 401 renews at most once: a credential that
was itself fetched because of a 401 and is refused again is not renewed again (that is a permission
problem, not an expiry, and renewing on every request would hammer the token endpoint).

Its token and ticket requests leave through :class:`syncd.http.ApiClient` like every other request (the
httpx ``Auth.auth_flow`` idea: the auth decides what to send, the client sends it): one set of retries,
backoff, Retry-After, timeouts, reply bounds and error wording.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from syncd.auth.static import NO_AUTH
from syncd.config import ApiLimits
from syncd.errors import ApiError, AuthError, UnreachableError
from syncd.http import RETRY_STATUSES, ApiClient, origin_of
from syncd.secrets import Secret

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

DEFAULT_TIMEOUT = 30.0
DEFAULT_REFRESH_MARGIN = 300.0
MIN_LIFETIME = 1.0  # a credential reported as already expired is still tried once
FORCED_RENEWAL_WINDOW = 60.0  # a credential fetched after a 401 and refused within this long: no renewal
# Every answer that is not retried goes back to the auth, which reads the identity provider's error in it.
FINAL_STATUSES = tuple(status for status in range(200, 600) if status not in RETRY_STATUSES)
# Token requests are single-flight and rare: the token client's window only stops a runaway loop.
TOKEN_REQUESTS_PER_SECOND = 1000.0


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and hmac.compare_digest(a.encode(), b.encode())


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lname = name.lower()
    for k, v in headers.items():
        if k.lower() == lname:
            return v
    return None


@dataclass(frozen=True, slots=True)
class Credential:
    """One fetched credential and its timing."""

    authorization: Secret  # the full Authorization header value
    obtained_at: float
    refresh_at: float  # renew from this instant on (before expiry by a margin)
    expires_at: float
    forced: bool  # fetched because a 401 invalidated the previous credential


@dataclass(frozen=True, slots=True)
class Fetched:
    authorization: Secret
    lifetime: float  # seconds from now


def _refresh_margin(lifetime: float, margin: float) -> float:
    return min(margin, 0.1 * lifetime)


class CachedCredentialAuth:
    """Caching, single-flight refresh and 401 invalidation shared by the token-fetching auths."""

    def __init__(
        self,
        *,
        clock: Clock,
        timeout: float,
        refresh_margin: float,
        attempts: int,
        retry_backoff: float,
        sleep: Sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._retry_backoff = retry_backoff
        self._sleep = sleep
        # What bounds each token request: the same rules as every API request (syncd.http).
        self._limits = ApiLimits(
            requests_per_second=TOKEN_REQUESTS_PER_SECOND,
            concurrency=1,
            timeout=timeout,
            connect_timeout=timeout,  # as before: one bound for the whole request
            max_retries=attempts - 1,
        )
        self._client: ApiClient | None = None
        self._credential: Credential | None = None
        self._inflight: asyncio.Task[Credential] | None = None
        self._force_next = False
        self.fetch_count = 0  # how many credentials this object has fetched (for `syncd check` and tests)

    # subclasses
    async def _fetch(self, session: aiohttp.ClientSession) -> Fetched:
        raise NotImplementedError

    def _extra_headers(self) -> dict[str, str]:
        return {}

    def describe(self) -> str:
        raise NotImplementedError

    # Auth protocol
    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        credential = await self._current(session)
        h = {"Authorization": credential.authorization.reveal()}
        h.update(self._extra_headers())
        return h

    async def invalidate(self, sent_headers: Mapping[str, str]) -> bool:
        current = self._credential
        if current is None:
            return True  # already dropped by a concurrent 401; the next headers() fetches a new one
        if not _same(_header(sent_headers, "Authorization"), current.authorization.reveal()):
            return True  # an older credential was sent; the current one is different
        now = self._clock()
        if current.forced and now - current.obtained_at < FORCED_RENEWAL_WINDOW and now < current.refresh_at:
            log.warning(
                "%s: a credential fetched after a 401 was refused again; not renewing (check permissions)",
                self.describe(),
            )
            return False
        self._credential = None
        self._force_next = True
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    # machinery
    async def _current(self, session: aiohttp.ClientSession) -> Credential:
        credential = self._credential
        if credential is not None and self._clock() < credential.refresh_at:
            return credential
        task = self._inflight
        if task is None:
            task = asyncio.get_running_loop().create_task(self._refresh(session))
            task.add_done_callback(_consume_exception)
            self._inflight = task
        # shield: one caller being cancelled must not cancel the refresh the others wait for
        return await asyncio.shield(task)

    async def _refresh(self, session: aiohttp.ClientSession) -> Credential:
        try:
            forced = self._force_next
            try:
                fetched = await self._fetch(session)
            except UnreachableError as exc:
                old = self._credential
                now = self._clock()
                if old is not None and now < old.expires_at:
                    retry_at = min(old.expires_at, now + 30.0)
                    log.warning(
                        "%s: renewing the credential failed (%s); the current one stays valid for %d s",
                        self.describe(),
                        exc.message,
                        int(old.expires_at - now),
                    )
                    self._credential = Credential(
                        old.authorization, old.obtained_at, retry_at, old.expires_at, old.forced
                    )
                    return self._credential
                raise
            now = self._clock()
            lifetime = max(fetched.lifetime, MIN_LIFETIME)
            credential = Credential(
                authorization=fetched.authorization,
                obtained_at=now,
                refresh_at=now + lifetime - _refresh_margin(lifetime, self._refresh_margin),
                expires_at=now + lifetime,
                forced=forced,
            )
            self._credential = credential
            self._force_next = False
            self.fetch_count += 1
            return credential
        finally:
            self._inflight = None

    async def _post(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        api: str,
        what: str,
        body: bytes,
        content_type: str,
    ) -> tuple[int, Any]:
        """POST a token or ticket request through the shared client layer (:class:`syncd.http.ApiClient`):
        its retries, backoff, Retry-After gate, timeouts, reply bounds and error wording. The auth decides
        what to send; the client sends it, to ``url``'s origin only and without credentials of its own.

        Returns (status, parsed JSON or None) for every answer that is not retried; the auth reads the
        identity provider's error from it. Raises UnreachableError when every attempt failed on the
        network or with a retryable status, AuthError for a reply syncd refuses (too large, undecodable).
        """
        client = self._client
        if client is None or client.session is not session or client.origin != origin_of(url):
            client = ApiClient(
                api=api,
                session=session,
                auth=NO_AUTH,
                limits=self._limits,
                # The auth's clock for the Retry-After gate too: tests share one fake clock with the
                # emulators (a token endpoint's waits are seconds; the API clients use monotonic time).
                clock=self._clock,
                wall_clock=self._clock,
                sleep=self._sleep,
                base_url=url,
                retry_backoff=self._retry_backoff,
            )
            self._client = client
        host = urlsplit(url).netloc or url
        try:
            resp = await client.request(
                "POST",
                url,
                headers={"Accept": "application/json", "Content-Type": content_type},
                data=body,
                allow=FINAL_STATUSES,
                what=what,
            )
        except UnreachableError as exc:
            raise UnreachableError(
                exc.message,
                hint=f"check network access to {host} (proxy, firewall, DNS) and the token/login URL",
            ) from None
        except ApiError as exc:
            raise AuthError(
                exc.message, hint="check the token/login URL: it must be the identity provider's"
            ) from None
        try:
            answer = resp.json()
        except ValueError:
            answer = None
        return resp.status, answer


def _consume_exception(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


_HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,16384}")


def header_safe(value: str, what: str) -> None:
    """A credential obtained at run time goes into a header: printable ASCII without spaces only (a CR/LF
    would inject headers, and aiohttp refuses it with a ValueError)."""
    if not _HEADER_SAFE.fullmatch(value):
        raise AuthError(
            f"{what} contains characters no credential has (control characters, spaces or non-ASCII)",
            hint="the token/login URL must be the identity provider's",
        )


def reply_number(value: Any, *, default: float) -> float:
    """A number from a reply; anything that is not a finite number is ``default``."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return number if math.isfinite(number) else default
