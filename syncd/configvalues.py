"""The value types a configuration file writes as text: durations, sizes and secret references.

``90``, ``"90s"``, ``"10m"``, ``"1.5h"`` are durations in seconds; ``1000000``, ``"1MB"``, ``"20 MiB"`` are
sizes in bytes; a secret is ``${ENV_VAR}``, ``file:/path``, ``credential:NAME`` or (warned about) a literal,
resolved while validating into a :class:`syncd.secrets.Secret`. :mod:`syncd.config` builds its models from
these.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationInfo

from syncd.errors import ConfigError
from syncd.secrets import Secret, resolve_secret

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def _parse_duration(value: Any) -> Any:
    """``90``, ``"90s"``, ``"10m"``, ``"1.5h"`` → seconds (float)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        raise ValueError(f"not a duration: {value!r} (write e.g. 30s, 10m, 1h)")
    return value


def _parse_size(value: Any) -> Any:
    """``1000000``, ``"1MB"``, ``"20 MiB"`` → bytes (int)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
        raise ValueError(f"not a size: {value!r} (write e.g. 500KB, 20MB)")
    return value


def _resolve(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        # An unquoted 0123 would silently become 123: make the user quote it.
        raise ValueError('must be a string; put the value in quotes ("...")')
    ctx = info.context or {}
    try:
        return resolve_secret(
            value,
            config_path=ctx.get("config_path"),
            env=ctx.get("env", os.environ),
            key=info.field_name or "secret",
        )
    except ConfigError as exc:
        raise ValueError(str(exc)) from None  # so the error names the key path and line


Duration = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0)]
Size = Annotated[int, BeforeValidator(_parse_size), Field(ge=0)]
SecretValue = Annotated[Secret, BeforeValidator(_resolve)]
