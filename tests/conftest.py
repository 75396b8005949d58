"""Shared fixtures: an in-process sandbox and syncd config files pointing at it.

``sandbox``        both emulators (``syncd.sandbox.server.Sandbox``) on free ports, small dataset
                   (40 contacts, 40 persons); for other sizes or options use ``make_sandbox``.
``make_sandbox``   ``await make_sandbox(contacts=..., persons=..., **options)``: started now, stopped at
                   the end of the test.
``write_config``   ``write_config(sb, name="syncd.yaml", **overrides)``: the sandbox's config with
                   ``overrides`` merged in (nested dicts merge, other values replace), ledger in
                   ``tmp_path``, mode 0600; returns the path.
``config_file``    ``write_config(sandbox)`` with fast API limits (tests should not wait on the real
                   tenants' 10-20 requests/s).
``FAST_LIMITS``    those limits, to merge into your own overrides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.sandbox.server import Sandbox
from tests.support.config import FAST_LIMITS, WriteConfig, merge

# Fixtures defined next to their helpers, available to every test.
pytest_plugins = ["tests.support.daemon", "tests.support.so_fixtures"]


@pytest.fixture
async def make_sandbox() -> AsyncIterator[Callable[..., Awaitable[Sandbox]]]:
    started: list[Sandbox] = []

    async def make(**options: Any) -> Sandbox:
        options.setdefault("contacts", 40)
        options.setdefault("persons", 40)
        sb = Sandbox(**options)
        await sb.start()
        started.append(sb)
        return sb

    yield make
    for sb in started:
        await sb.stop()


@pytest.fixture
async def sandbox(make_sandbox: Callable[..., Awaitable[Sandbox]]) -> Sandbox:
    return await make_sandbox()


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    def write(sb: Sandbox, name: str = "syncd.yaml", **overrides: Any) -> Path:
        cfg = merge(sb.config(ledger=str(tmp_path / "ledger.sqlite")), overrides)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        path.chmod(0o600)
        return path

    return write


@pytest.fixture
def config_file(sandbox: Sandbox, write_config: WriteConfig) -> Path:
    return write_config(sandbox, **FAST_LIMITS)
