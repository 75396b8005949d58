"""The SuperOffice Web API emulator (see ``emulator.py`` for what it serves)."""

from typing import Any

from syncd.sandbox.superoffice import emulator as _emulator
from syncd.sandbox.superoffice.emulator import (
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
    SO_KINDS,
    SO_OPTIONS,
    SOContact,
    SOImage,
    SOKind,
    SOLink,
    SOPerson,
    SOState,
    SuperOfficeEmulator,
    display,
    make_jwt,
    parse_so_datetime,
    sandbox_app_private_key_pem,
    sandbox_app_public_key_pem,
    sandbox_jwt_public_key_pem,
    sign_system_user_token,
    sniff_mime,
    so_date,
    utc,
)

# The sandbox key PEMs, made on first access (PEP 562), like the emulator module's own.
SANDBOX_APP_PRIVATE_KEY_PEM: bytes
SANDBOX_APP_PUBLIC_KEY_PEM: bytes
SANDBOX_SO_JWT_PUBLIC_KEY_PEM: bytes


def __getattr__(name: str) -> Any:
    return getattr(_emulator, name)


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
