"""Secrets: a value type that never shows itself, and resolving secret references from the config.

A config value for a password, client secret, token or key can be written as

    ${BC_CLIENT_SECRET}              an environment variable
    file:/etc/syncd/bc-secret        a file's content (one trailing newline stripped); a relative path is
                                     relative to the config file's directory
    credential:bc-secret             a systemd credential: $CREDENTIALS_DIRECTORY/bc-secret, set up with
                                     LoadCredential=bc-secret:/path or SetCredentialEncrypted= in the unit
    anything else                    the literal secret (then the config file should be mode 0600)

``resolve_secret`` turns such a value into a :class:`Secret`. Every ``Secret`` ever built registers its
value (and its URL- and JSON-escaped forms) in a process-wide registry that the log redaction in
:mod:`syncd.logs` reads through :func:`known_secret_values`, so a secret that slips into a log line, an
exception message or a traceback is masked there too.

For pydantic models, annotate a field as ``Secret``: it resolves references itself and takes the
config file's path from the validation context (``Model.model_validate(data, context={"config_path": p})``,
optionally ``"env"``). It serializes as ``"**********"``.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import stat
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from syncd.errors import ConfigError

MASK = "**********"

#: Values shorter than this are not registered for redaction: masking every "abc" in every log line would
#: make logs unreadable and tell an attacker the secret is three characters long anyway.
MIN_REDACTED_LENGTH = 4

#: Runtime credentials (access tokens, tickets) come and go; the registry keeps only the newest ones.
MAX_EPHEMERAL_VALUES = 64

_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9_.@:-]+$")

_lock = threading.Lock()
_pinned: set[str] = set()
_ephemeral: OrderedDict[str, None] = OrderedDict()
_snapshot: frozenset[str] | None = None
_literal_keys: dict[Path, set[str]] = {}


class Secret:
    """A secret string. ``str()``, ``repr()``, f-strings and pickling never show (or carry) the value.

    Use :meth:`reveal` at the last moment, where the value goes on the wire. ``ephemeral=True`` is for
    short-lived runtime credentials (access tokens, tickets): they are still redacted from logs, but the
    registry forgets old ones so a long-running daemon does not accumulate them forever.
    """

    __slots__ = ("__value",)

    def __init__(self, value: str, *, ephemeral: bool = False) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        self.__value = value
        _register(value, ephemeral=ephemeral)

    def reveal(self) -> str:
        """The secret value itself. Call only where it is sent or used, never to log or display it."""
        return self.__value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self.__value.encode(), other.__value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self.__value))

    def __bool__(self) -> bool:
        return bool(self.__value)

    # Never serialized: pickling would carry the value into whatever stores or logs the pickle.
    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")

    # Immutable, so copies are the object itself (pydantic and dataclasses deep-copy defaults).
    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """A pydantic field typed ``Secret`` takes a Secret or a str (resolved by :func:`resolve_secret`)."""
        return core_schema.with_info_plain_validator_function(
            _pydantic_validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda _s: MASK, when_used="always"
            ),
            json_schema_input_schema=core_schema.str_schema(),
        )


def _pydantic_validate(value: Any, info: core_schema.ValidationInfo) -> Secret:
    if isinstance(value, Secret):
        return value
    key = info.field_name or "secret"
    if not isinstance(value, str):
        # Raised as ConfigError rather than ValueError on purpose: pydantic would print the input (the
        # secret itself) in its ValidationError. YAML turns an unquoted 12345678 into an int.
        raise ConfigError(
            f"{key} must be a string, not {type(value).__name__}",
            hint="quote the value in the YAML file",
        )
    context = info.context if isinstance(info.context, Mapping) else {}
    config_path = context.get("config_path")
    env = context.get("env", os.environ)
    return resolve_secret(
        value, config_path=Path(config_path) if config_path is not None else None, env=env, key=key
    )


def _variants(value: str) -> set[str]:
    """The forms a value takes in logged text: as is, URL-encoded (form bodies), JSON-escaped."""
    forms = {value, urllib.parse.quote_plus(value, safe=""), urllib.parse.quote(value, safe="")}
    forms.add(json.dumps(value)[1:-1])
    return {f for f in forms if len(f) >= MIN_REDACTED_LENGTH}


def _register(value: str, *, ephemeral: bool) -> None:
    global _snapshot
    forms = _variants(value)
    if not forms:
        return
    with _lock:
        if ephemeral:
            for f in forms:
                if f in _pinned:
                    continue
                _ephemeral.pop(f, None)
                _ephemeral[f] = None
            while len(_ephemeral) > MAX_EPHEMERAL_VALUES * 4:
                _ephemeral.popitem(last=False)
        else:
            for f in forms:
                _ephemeral.pop(f, None)
            _pinned.update(forms)
        _snapshot = None


def known_secret_values() -> frozenset[str]:
    """Every secret value (and its escaped forms) this process has seen; what log redaction masks.

    The same frozenset object is returned until a new secret is registered, so callers may cache work
    derived from it keyed on identity.
    """
    global _snapshot
    with _lock:
        if _snapshot is None:
            _snapshot = frozenset(_pinned | _ephemeral.keys())
        return _snapshot


def is_secret_reference(value: str) -> bool:
    """True when *value* refers to a secret (``${VAR}``, ``file:``, ``credential:``) instead of being one."""
    return bool(_ENV_REF.match(value)) or value.startswith(("file:", "credential:"))


def resolve_secret(
    value: str,
    *,
    config_path: Path | None,
    env: Mapping[str, str] = os.environ,
    key: str = "secret",
) -> Secret:
    """Resolve a config value into a :class:`Secret`.

    *key* is the config key being resolved (for example ``"businesscentral.auth.client_secret"``); error
    messages name it together with the variable, path or credential that failed, never a secret value.
    *config_path* anchors relative ``file:`` paths and records literal secrets for
    :func:`check_literal_secret_permissions`. Raises :class:`~syncd.errors.ConfigError`.
    """
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, not {type(value).__name__}", hint="quote the value")
    m = _ENV_REF.match(value)
    if m:
        return _from_env(m.group(1), env, key)
    if value.startswith("file:"):
        return _from_file(value[len("file:") :], config_path, key)
    if value.startswith("credential:"):
        return _from_credential(value[len("credential:") :], env, key)
    if "${" in value:
        raise ConfigError(
            f"{key}: '${{…}}' is only understood as the whole value",
            hint="write the value as exactly ${VARIABLE} (no text around it), or put the whole secret in the "
            "variable",
        )
    if not value:
        raise ConfigError(
            f"{key} is empty", hint="set it, or point it at ${VAR}, file:PATH or credential:NAME"
        )
    if config_path is not None:
        with _lock:
            _literal_keys.setdefault(_canonical(config_path), set()).add(key)
    return Secret(value)


def _from_env(name: str, env: Mapping[str, str], key: str) -> Secret:
    if name not in env:
        raise ConfigError(
            f"{key}: environment variable {name} is not set",
            hint=f"export {name}=… before starting syncd, or set Environment=/EnvironmentFile= in the unit",
        )
    text = env[name]
    if not text:
        raise ConfigError(f"{key}: environment variable {name} is set but empty", hint=f"give {name} a value")
    return Secret(text)


def _from_file(raw_path: str, config_path: Path | None, key: str) -> Secret:
    if not raw_path:
        raise ConfigError(
            f"{key}: 'file:' needs a path", hint="write file:/absolute/path or file:relative/path"
        )
    path = Path(raw_path).expanduser()
    if not path.is_absolute() and config_path is not None:
        path = config_path.parent / path
    text = _read_secret_file(path, key, what="secret file")
    return Secret(text)


def _from_credential(name: str, env: Mapping[str, str], key: str) -> Secret:
    unit_hint = (
        f"add LoadCredential={name}:/path/to/file (or SetCredentialEncrypted={name}:…) to the [Service] "
        "section of the syncd unit; systemd then sets $CREDENTIALS_DIRECTORY"
    )
    if not _CREDENTIAL_NAME.match(name) or name in (".", ".."):
        raise ConfigError(f"{key}: '{name}' is not a valid credential name", hint=unit_hint)
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ConfigError(
            f"{key}: credential:{name} needs $CREDENTIALS_DIRECTORY, which is not set "
            "(syncd is not running under systemd with credentials)",
            hint=unit_hint,
        )
    path = Path(directory) / name
    if not path.exists():
        raise ConfigError(
            f"{key}: systemd credential {name} not found in {directory}",
            hint=unit_hint,
        )
    return Secret(_read_secret_file(path, key, what=f"systemd credential {name} at"))


def _read_secret_file(path: Path, key: str, *, what: str) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{key}: {what} {path} does not exist", hint="check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{key}: {what} {path} is a directory", hint="point at a file") from None
    except PermissionError:
        raise ConfigError(
            f"{key}: {what} {path} is not readable by this user",
            hint="make it readable by the user syncd runs as (and by no one else: chmod 0400)",
        ) from None
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {what} {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {what} {path} is not UTF-8 text") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise ConfigError(f"{key}: {what} {path} is empty", hint="write the secret into the file")
    return text


def _canonical(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def literal_secret_keys(config_path: Path) -> frozenset[str]:
    """Config keys that :func:`resolve_secret` resolved as literal secrets from *config_path*."""
    with _lock:
        return frozenset(_literal_keys.get(_canonical(config_path), ()))


def check_literal_secret_permissions(
    config_path: Path, literal_keys: Iterable[str] | None = None
) -> str | None:
    """A warning text when *config_path* holds a literal secret and group or others may read it, else None.

    *literal_keys* are the config keys holding literal secrets; by default the ones :func:`resolve_secret`
    recorded for this file (so: resolve the config first, then call this).
    """
    keys = sorted(set(literal_keys) if literal_keys is not None else literal_secret_keys(config_path))
    if not keys:
        return None
    try:
        mode = stat.S_IMODE(config_path.stat().st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    who = " and ".join(w for w, bits in (("group", 0o070), ("others", 0o007)) if mode & bits)
    return (
        f"{config_path} holds {'a literal secret' if len(keys) == 1 else 'literal secrets'} "
        f"({', '.join(keys)}) and is accessible to {who} (mode {mode:04o}); run `chmod 600 {config_path}` "
        "or move the secret to ${ENV_VAR}, file:/path or credential:NAME"
    )
