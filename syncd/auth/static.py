"""Fixed credentials: HTTP Basic, a SuperOffice ticket, a bearer token — and none at all (token requests).

Nothing to renew: after a 401 there is no point sending the same credential again, so ``invalidate``
answers False.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

import aiohttp

from syncd.errors import ConfigError
from syncd.secrets import Secret


def _strip_scheme(value: str, scheme: str) -> str:
    prefix = scheme + " "
    return value[len(prefix) :].strip() if value[: len(prefix)].lower() == prefix.lower() else value.strip()


class BasicAuth:
    """HTTP Basic: SuperOffice onsite (user + password) or BC on-prem (user + web service access key)."""

    def __init__(self, *, username: str, password: Secret) -> None:
        if not username:
            raise ConfigError("auth.username is empty", hint="set the user name for Basic authentication")
        if ":" in username:
            raise ConfigError("auth.username must not contain ':' (Basic authentication cannot carry it)")
        self._username = username
        token = base64.b64encode(f"{username}:{password.reveal()}".encode()).decode("ascii")
        self._header = Secret("Basic " + token)
        Secret(token)  # the bare base64 form is redacted from logs too

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        return {"Authorization": self._header.reveal()}

    async def invalidate(self, sent_headers: Mapping[str, str]) -> bool:
        return False  # the same password will be refused again

    def describe(self) -> str:
        return f"basic auth as user {self._username!r}"

    def __repr__(self) -> str:
        return f"<BasicAuth {self.describe()}>"


class _StaticAuth:
    """A fixed ``Authorization: <scheme> <value>`` credential, plus ``SO-AppToken`` when given.

    Nothing to renew: after a 401 there is no point sending it again."""

    _scheme = ""
    _what = ""

    def __init__(self, value: Secret, app_token: Secret | None) -> None:
        raw = _strip_scheme(value.reveal(), self._scheme)
        if not raw:
            raise ConfigError(f"auth.{self._what} is empty")
        self._header = Secret(f"{self._scheme} {raw}")
        self._app_token = app_token

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        h = {"Authorization": self._header.reveal()}
        if self._app_token is not None:
            h["SO-AppToken"] = self._app_token.reveal()
        return h

    async def invalidate(self, sent_headers: Mapping[str, str]) -> bool:
        return False  # a configured credential cannot be renewed here

    def describe(self) -> str:
        return f"static {self._scheme} {self._what}" + (
            " with SO-AppToken" if self._app_token is not None else ""
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class SOTicketAuth(_StaticAuth):
    """A fixed SuperOffice ticket (``Authorization: SOTicket 7T:…``), plus ``SO-AppToken`` when given."""

    _scheme, _what = "SOTicket", "ticket"

    def __init__(self, *, ticket: Secret, app_token: Secret | None = None) -> None:
        super().__init__(ticket, app_token)


class BearerAuth(_StaticAuth):
    """A fixed bearer token (SuperOffice Online ``8A:…`` tokens, or any pre-issued token)."""

    _scheme, _what = "Bearer", "token"

    def __init__(self, *, token: Secret, app_token: Secret | None = None) -> None:
        super().__init__(token, app_token)


class NoAuth:
    """The credential of a token request itself: none (the request body carries the secret)."""

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        return {}

    async def invalidate(self, sent_headers: Mapping[str, str]) -> bool:
        return False

    def describe(self) -> str:
        return "no credential"


NO_AUTH = NoAuth()
