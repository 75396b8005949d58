"""SuperOffice emulator, credentials: the documented sandbox ones, RSA keys, JWTs, signed system user
tokens.

The sandbox values are fixed and printed by ``syncd sandbox``; they are never real secrets. The key PEMs
are made on first use (``SANDBOX_*_PEM`` are computed on first access, PEP 562).
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# -- documented sandbox credentials (printed by `syncd sandbox`; never real secrets) --------------
SANDBOX_SO_TENANT = "Cust00001"
SANDBOX_SO_USER = "syncd"
SANDBOX_SO_PASSWORD = "sandbox-so-password"  # noqa: S105 - fixed, documented sandbox credential
SANDBOX_SO_APP_TOKEN = "sandbox-so-app-token"  # noqa: S105 - the app's client secret / SO-AppToken
SANDBOX_SO_SYSTEM_USER_TOKEN = "syncd-sandbox-SystemUserToken"  # noqa: S105 - "NAME_OF_APP-<random>"
SANDBOX_SO_BEARER_TOKEN = "8A:Cust00001.sandbox-bearer-token"  # noqa: S105 - never expires


def _new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # "BEGIN RSA PRIVATE KEY", as SO's tooling emits
        serialization.NoEncryption(),
    )


def _public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@functools.cache
def _sandbox_keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    """(the partner app's key, the login service's JWT signing key), made once per process on first use
    (RSA key generation takes 50-500 ms, so importing this module does not pay for it)."""
    return _new_rsa_key(), _new_rsa_key()


def sandbox_app_private_key_pem() -> bytes:
    """The partner app's RSA private key: signs the system user token (syncd's system_user auth)."""
    return _private_pem(_sandbox_keys()[0])


def sandbox_app_public_key_pem() -> bytes:
    """Its public half, registered with the emulator for the sandbox application token."""
    return _public_pem(_sandbox_keys()[0])


def sandbox_jwt_public_key_pem() -> bytes:
    """Public key of the emulated SuperOffice login service; verifies the RS256 JWTs it issues."""
    return _public_pem(_sandbox_keys()[1])


# The same PEMs as module constants, computed on first access (PEP 562). In-process tests read them; a
# separate process gets them from the files `syncd sandbox --write-config` writes next to the config.
SANDBOX_APP_PRIVATE_KEY_PEM: bytes
SANDBOX_APP_PUBLIC_KEY_PEM: bytes
SANDBOX_SO_JWT_PUBLIC_KEY_PEM: bytes
_LAZY_CONSTANTS: dict[str, Callable[[], bytes]] = {
    "SANDBOX_APP_PRIVATE_KEY_PEM": sandbox_app_private_key_pem,
    "SANDBOX_APP_PUBLIC_KEY_PEM": sandbox_app_public_key_pem,
    "SANDBOX_SO_JWT_PUBLIC_KEY_PEM": sandbox_jwt_public_key_pem,
}


def __getattr__(name: str) -> bytes:
    make = _LAZY_CONSTANTS.get(name)
    if make is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return make()


CLAIM_TICKET = "http://schemes.superoffice.net/identity/ticket"
CLAIM_WEBAPI_URL = "http://schemes.superoffice.net/identity/webapi_url"
CLAIM_NETSERVER_URL = "http://schemes.superoffice.net/identity/netserver_url"
CLAIM_CTX = "http://schemes.superoffice.net/identity/ctx"

SIGNED_TOKEN_MAX_AGE = 300.0  # seconds a signed system user token's timestamp may lag behind "now"
SIGNED_TOKEN_MAX_AHEAD = 60.0  # ... or run ahead of it (clock skew)
JWT_LIFETIME = 300  # the JWT is meant to be validated immediately (SO error ID4148 "NotOnOrAfter")
MAX_IMAGE_SIDE = 10_000  # w/h beyond this are refused (keeps the emulator from allocating gigabytes)


# -- JWT (RS256, built with `cryptography`) ------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_jwt(claims: Mapping[str, Any], key: rsa.RSAPrivateKey | None = None) -> str:
    """An RS256 JWT over ``claims``, signed by ``key`` (default: the sandbox login service's key)."""
    header = {"alg": "RS256", "typ": "JWT", "kid": "superoffice-sandbox"}
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
    )
    signer = key if key is not None else _sandbox_keys()[1]
    signature = signer.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64url(signature)


def sign_system_user_token(
    system_user_token: str, private_key_pem: bytes, when: datetime | None = None
) -> str:
    """``{token}.{yyyyMMddHHmm}.{base64 RSA-SHA256 PKCS#1 v1.5 signature}`` as a partner app signs it."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the system user token must be signed with an RSA key")
    stamp = (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M")
    data = f"{system_user_token}.{stamp}"
    sig = key.sign(data.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return f"{data}.{base64.b64encode(sig).decode('ascii')}"
