"""Opening the ledger file: created private (mode 0600), connected read-write or read-only, and the
object :meth:`syncd.ledger.Ledger.open` returns (awaitable, or an ``async with`` that closes).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import aiosqlite

from syncd.errors import ConfigError


class Closable(Protocol):
    async def close(self) -> None: ...


T = TypeVar("T", bound=Closable)


async def connect(path: str, *, readonly: bool, busy: float) -> aiosqlite.Connection:
    """A connection to the ledger at ``path`` (``":memory:"`` for tests); the file is created private when
    missing, unless ``readonly``, where a missing file is a :class:`ConfigError`."""
    memory = path == ":memory:"
    if readonly and memory:
        raise ValueError("an in-memory ledger cannot be opened read-only")
    try:
        if readonly:
            if not await asyncio.to_thread(os.path.exists, path):
                raise ConfigError(
                    f"the ledger {path} does not exist yet",
                    hint="run `syncd run --once` first, or check `ledger:` in the config",
                )
            uri = await asyncio.to_thread(lambda: Path(path).resolve().as_uri() + "?mode=ro")
            db = await aiosqlite.connect(uri, uri=True, isolation_level=None, timeout=busy)
        else:
            if not memory:
                await asyncio.to_thread(create_private, path)
            db = await aiosqlite.connect(path, isolation_level=None, timeout=busy)
    except sqlite3.Error as exc:
        raise ConfigError(
            f"cannot open the ledger {path}: {exc}",
            hint="check `ledger:` in the config and that its directory is writable by the syncd user",
        ) from exc
    db.row_factory = sqlite3.Row
    return db


class Opening(Generic[T]):
    """What :meth:`Ledger.open` returns: ``await`` it, or use it with ``async with`` (closes on exit)."""

    def __init__(self, coro_factory: Callable[[], Awaitable[T]]) -> None:
        self._factory = coro_factory
        self._ledger: T | None = None

    def __await__(self) -> Generator[Any, None, T]:
        ledger: T = yield from self._factory().__await__()
        return ledger

    async def __aenter__(self) -> T:
        self._ledger = await self._factory()
        return self._ledger

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ledger is not None:
            await self._ledger.close()


def create_private(path: str) -> None:
    """Create the ledger file mode 0600 if missing (SQLite would use 0644); the directory must exist."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(
            f"cannot create the ledger {path}: {exc.strerror}",
            hint="check `ledger:` in the config; its directory must exist and be writable by the syncd user",
        ) from exc
    os.close(fd)
