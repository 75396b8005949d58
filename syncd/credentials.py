"""The ``Auth`` protocol: what an API client (:class:`syncd.http.ApiClient`) needs from authentication.

Both sides import it from here: :mod:`syncd.http` sends requests with an ``Auth``, the :mod:`syncd.auth`
package implements it (and sends its own token requests through :mod:`syncd.http`), so neither imports
the other's protocol and there is no import cycle.

    headers = await auth.headers(session)          # obtains or refreshes the credential as needed
    response = await session.get(url, headers=headers)
    if response.status == 401 and await auth.invalidate(headers):
        headers = await auth.headers(session)      # retry once with a fresh credential
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import aiohttp

__all__ = ["Auth"]


@runtime_checkable
class Auth(Protocol):
    """What an API client needs from authentication."""

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        """Headers to send with the next request; fetches or refreshes the credential when needed."""
        ...

    async def invalidate(self, sent_headers: Mapping[str, str]) -> bool:
        """After a 401: drop the cached credential if it is the one sent. True when one retry with fresh
        headers makes sense."""
        ...

    def describe(self) -> str:
        """A secret-free description for logs and ``syncd check``."""
        ...
