"""Config helpers shared by tests: fast API limits, a deep merge, and the ``write_config`` fixture's type."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from syncd.sandbox.server import Sandbox

FAST_LIMITS: dict[str, Any] = {
    "superoffice": {"limits": {"requests_per_second": 500, "concurrency": 8}},
    "businesscentral": {"limits": {"requests_per_second": 500, "concurrency": 5}},
}


def merge(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``extra`` into ``into`` (dicts merge, everything else replaces); returns ``into``."""
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v
    return into


class WriteConfig(Protocol):
    def __call__(self, sb: Sandbox, name: str = "syncd.yaml", **overrides: Any) -> Path: ...
