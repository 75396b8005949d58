"""RSA keys and JWTs: loading private keys (PEM or SuperOffice's ``<RSAKeyValue>`` XML) and public keys,
base64url, and the signed ``client_assertion`` of an Entra certificate credential.

Errors name the config key at fault and never echo the key material.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from syncd.errors import ConfigError
from syncd.secrets import Secret


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AssertionSigner:
    """Builds Entra ``client_assertion`` JWTs from a certificate and its private key."""

    def __init__(self, certificate_pem: str, private_key_pem: Secret) -> None:
        try:
            cert = x509.load_pem_x509_certificate(certificate_pem.encode())
        except ValueError:
            raise ConfigError(
                "businesscentral.auth.certificate is not a PEM X.509 certificate",
                hint="give the public certificate uploaded to the app registration (BEGIN CERTIFICATE)",
            ) from None
        self._key = load_rsa_private_key(private_key_pem, key="businesscentral.auth.private_key")
        cert_key = cert.public_key()
        if not isinstance(cert_key, rsa.RSAPublicKey) or cert_key.public_numbers() != (
            self._key.public_key().public_numbers()
        ):
            raise ConfigError(
                "businesscentral.auth.private_key does not belong to businesscentral.auth.certificate",
                hint="use the private key the certificate was created with",
            )
        thumbprint = cert.fingerprint(hashes.SHA1())  # noqa: S303 - x5t is defined as the SHA-1 thumbprint
        self.thumbprint_hex = thumbprint.hex().upper()
        self._x5t = b64url(thumbprint)

    def assertion(self, *, client_id: str, audience: str, now: float) -> Secret:
        header = {"alg": "RS256", "typ": "JWT", "x5t": self._x5t}
        claims = {
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": str(uuid.uuid4()),
            "nbf": int(now),
            "iat": int(now),
            "exp": int(now) + 600,
        }
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self._key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return Secret(signing_input + "." + b64url(signature), ephemeral=True)


_XML_FIELDS = ("Modulus", "Exponent", "P", "Q", "DP", "DQ", "InverseQ", "D")


def load_rsa_private_key(pem: Secret, *, key: str) -> rsa.RSAPrivateKey:
    text = pem.reveal().strip()
    if text.startswith("<RSAKeyValue"):
        loaded: Any = _rsa_from_xml(text, key=key)
    else:
        try:
            loaded = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            raise ConfigError(
                f"{key} is not an unencrypted RSA private key in PEM or <RSAKeyValue> XML form",
                hint="give the application's private key (-----BEGIN PRIVATE KEY----- or "
                "-----BEGIN RSA PRIVATE KEY-----); decrypt it first with `openssl rsa` if it has a password",
            ) from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ConfigError(f"{key} is not an RSA key", hint="SuperOffice and Entra assertions need RSA keys")
    return loaded


def _rsa_from_xml(text: str, *, key: str) -> rsa.RSAPrivateKey:
    values: dict[str, int] = {}
    for name in _XML_FIELDS:
        m = re.search(rf"<{name}>\s*([A-Za-z0-9+/=\s]+?)\s*</{name}>", text)
        if m is None:
            raise ConfigError(f"{key}: the <RSAKeyValue> XML lacks <{name}> (a private key needs all parts)")
        values[name] = int.from_bytes(base64.b64decode("".join(m.group(1).split())), "big")
    try:
        numbers = rsa.RSAPrivateNumbers(
            p=values["P"],
            q=values["Q"],
            d=values["D"],
            dmp1=values["DP"],
            dmq1=values["DQ"],
            iqmp=values["InverseQ"],
            public_numbers=rsa.RSAPublicNumbers(e=values["Exponent"], n=values["Modulus"]),
        )
        return numbers.private_key()
    except ValueError:
        raise ConfigError(f"{key}: the <RSAKeyValue> XML does not describe a valid RSA key") from None


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    data = pem.strip().encode()
    loaded: Any
    try:
        if b"BEGIN CERTIFICATE" in data:
            loaded = x509.load_pem_x509_certificate(data).public_key()
        else:
            loaded = serialization.load_pem_public_key(data)
    except ValueError:
        raise ConfigError(
            "superoffice.auth.jwt_public_key is not a PEM public key or certificate",
            hint="use SuperOffice's public certificate (SuperOfficeFederatedLogin.crt) in PEM form",
        ) from None
    if not isinstance(loaded, rsa.RSAPublicKey):
        raise ConfigError("superoffice.auth.jwt_public_key is not an RSA key")
    return loaded
