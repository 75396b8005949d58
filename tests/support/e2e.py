"""Helpers for end-to-end tests: run the real `syncd` CLI as a subprocess against an in-process sandbox.

The subprocess is started with asyncio so the test's event loop keeps serving the sandbox meanwhile.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from syncd.sandbox.server import Sandbox

# The sandbox's SuperOffice side has no rate limit; real tenants get 10/s. Tests need not wait.
FAST_LIMITS: dict[str, Any] = {
    "superoffice": {"limits": {"requests_per_second": 1000, "concurrency": 16}},
    "businesscentral": {"limits": {"requests_per_second": 1000, "concurrency": 5}},
}


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def write_config(sb: Sandbox, tmp_path: Path, name: str = "syncd.yaml", **overrides: Any) -> Path:
    """The sandbox's config with ``overrides`` merged in (nested dicts merge, other values replace)."""
    cfg = sb.config(ledger=str(tmp_path / "ledger.sqlite"))
    _merge(cfg, copy.deepcopy(FAST_LIMITS))  # a copy: overrides merged below must not change FAST_LIMITS
    _merge(cfg, copy.deepcopy(overrides))
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    path.chmod(0o600)
    return path


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


async def syncd(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncd",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())
