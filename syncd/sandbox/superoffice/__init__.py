"""The SuperOffice Web API emulator, by concern (``emulator.py`` says what each module holds).

The names other code imports are re-exported here; ``syncd.sandbox.server.Sandbox`` runs the emulator.
"""

from typing import Any

from syncd.sandbox.mime import sniff_mime
from syncd.sandbox.superoffice import credentials as _credentials
from syncd.sandbox.superoffice.admin import SO_OPTIONS
from syncd.sandbox.superoffice.columns import (
    SO_KINDS,
    SOKind,
    display,
)
from syncd.sandbox.superoffice.credentials import (
    CLAIM_CTX,
    CLAIM_NETSERVER_URL,
    CLAIM_TICKET,
    CLAIM_WEBAPI_URL,
    SANDBOX_SO_APP_TOKEN,
    SANDBOX_SO_BEARER_TOKEN,
    SANDBOX_SO_PASSWORD,
    SANDBOX_SO_SYSTEM_USER_TOKEN,
    SANDBOX_SO_TENANT,
    SANDBOX_SO_USER,
    make_jwt,
    sandbox_app_private_key_pem,
    sandbox_app_public_key_pem,
    sandbox_jwt_public_key_pem,
    sign_system_user_token,
)
from syncd.sandbox.superoffice.dates import (
    parse_so_datetime,
    so_date,
    utc,
)
from syncd.sandbox.superoffice.emulator import SuperOfficeEmulator
from syncd.sandbox.superoffice.state import (
    SOContact,
    SOImage,
    SOLink,
    SOPerson,
    SOState,
)

# The sandbox key PEMs, made on first access (PEP 562), as in ``credentials.py``.
SANDBOX_APP_PRIVATE_KEY_PEM: bytes
SANDBOX_APP_PUBLIC_KEY_PEM: bytes
SANDBOX_SO_JWT_PUBLIC_KEY_PEM: bytes


def __getattr__(name: str) -> Any:
    return getattr(_credentials, name)


__all__ = [
    "CLAIM_CTX",
    "CLAIM_NETSERVER_URL",
    "CLAIM_TICKET",
    "CLAIM_WEBAPI_URL",
    "SANDBOX_APP_PRIVATE_KEY_PEM",
    "SANDBOX_APP_PUBLIC_KEY_PEM",
    "SANDBOX_SO_APP_TOKEN",
    "SANDBOX_SO_BEARER_TOKEN",
    "SANDBOX_SO_JWT_PUBLIC_KEY_PEM",
    "SANDBOX_SO_PASSWORD",
    "SANDBOX_SO_SYSTEM_USER_TOKEN",
    "SANDBOX_SO_TENANT",
    "SANDBOX_SO_USER",
    "SO_KINDS",
    "SO_OPTIONS",
    "SOContact",
    "SOImage",
    "SOKind",
    "SOLink",
    "SOPerson",
    "SOState",
    "SuperOfficeEmulator",
    "display",
    "make_jwt",
    "parse_so_datetime",
    "sandbox_app_private_key_pem",
    "sandbox_app_public_key_pem",
    "sandbox_jwt_public_key_pem",
    "sign_system_user_token",
    "sniff_mime",
    "so_date",
    "utc",
]
