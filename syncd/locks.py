"""Mapping-level mutual exclusion between syncd processes that share one ledger.

A ``syncd run --once`` started by hand and a daemon using the same ledger must never sync the same
mapping at the same time: both would download, both would PATCH, and the later ledger write would
describe a BC etag the other one already replaced.

How: one file per mapping, ``<ledger>.locks/<mapping>.lock``, locked with ``flock(LOCK_EX | LOCK_NB)``.
A mapping writes to one Business Central company, and the config never lets two mappings share one
company's entity (:mod:`syncd.targets`), so a mapping lock is also the lock on those records; the holder
info names the company.

- The kernel releases a flock when the holding process dies (even by SIGKILL), so there are no stale
  locks to clean up and no pid liveness guessing.
- The lock file is never deleted. Deleting it would let two processes lock two different inodes of the
  "same" path (the classic unlink race); an idle lock file is a few bytes.
- While held, the file contains JSON about the holder (pid, hostname, command, since) so the process
  that loses can say who has it. It is emptied on release. Holder info is advisory: the flock is the lock.
- flock is per open file description, so two ``MappingLock`` objects for one mapping exclude each other
  even inside one process.
- flock works on local filesystems. On NFS it is emulated with POSIX locks (Linux ≥ 2.6.12) and is only
  as reliable as the NFS lock manager: keep the ledger on a local disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from syncd.errors import LockedError

_EMPTY_HOLDER_RETRIES = 10
_EMPTY_HOLDER_PAUSE = 0.01  # seconds; runs in a worker thread

__all__ = ["LockHolder", "MappingLock", "is_locked", "lock_dir", "lock_path", "read_holder"]


def lock_dir(ledger_path: str | os.PathLike[str]) -> Path:
    """The directory holding the per-mapping lock files of one ledger: ``<ledger>.locks``."""
    return Path(os.fspath(ledger_path) + ".locks")


def lock_path(ledger_path: str | os.PathLike[str], mapping: str) -> Path:
    """The lock file of one mapping. Names are percent-encoded, so any mapping name is one safe file name."""
    if not mapping:
        raise ValueError("mapping name must not be empty")
    return lock_dir(ledger_path) / (quote(mapping, safe="") + ".lock")


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds a mapping lock, as written into the lock file by the holder."""

    pid: int
    hostname: str
    command: str
    since: datetime  # aware
    company: str | None = None  # the Business Central company the holder syncs the mapping into

    def describe(self) -> str:
        """``pid 1234 (syncd run, company CRONUS, since 10:02:11)``; date and host are added when they
        differ from ours."""
        local = self.since.astimezone()
        when = local.strftime("%H:%M:%S")
        if local.date() != datetime.now().astimezone().date():
            when = local.strftime("%Y-%m-%d %H:%M:%S")
        where = "" if self.hostname == socket.gethostname() else f" on {self.hostname}"
        company = f", company {self.company}" if self.company else ""
        return f"pid {self.pid}{where} ({self.command}{company}, since {when})"

    def to_json(self) -> str:
        data: dict[str, object] = {"pid": self.pid, "hostname": self.hostname, "command": self.command}
        if self.company:
            data["company"] = self.company
        return json.dumps({**data, "since": self.since.isoformat()})

    @classmethod
    def from_json(cls, text: str) -> LockHolder | None:
        """Parse lock file content; ``None`` when empty or not ours (e.g. the holder has not written yet)."""
        try:
            data = json.loads(text)
            since = datetime.fromisoformat(str(data["since"]))
            if since.tzinfo is None:
                since = since.replace(tzinfo=UTC)
            company = data.get("company")
            return cls(
                int(data["pid"]),
                str(data["hostname"]),
                str(data["command"]),
                since,
                str(company) if company else None,
            )
        except (ValueError, KeyError, TypeError):
            return None


def _default_command() -> str:
    """``syncd run`` style: program name and subcommand only. Never the whole argv (it may hold anything)."""
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "syncd"
    if prog in {"__main__.py", "-c", ""}:
        prog = "syncd"
    sub = next((a for a in sys.argv[1:2] if a and not a.startswith("-")), "")
    return f"{prog} {sub}".strip()


def _read_holder_fd(fd: int) -> LockHolder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    return LockHolder.from_json(os.read(fd, 4096).decode("utf-8", "replace"))


def read_holder(ledger_path: str | os.PathLike[str], mapping: str) -> LockHolder | None:
    """Holder info of a mapping lock if somebody holds it now, else ``None``. Blocking; call via a thread.

    Probes the lock itself (a free lock with leftover content reports ``None``), so ``syncd status`` can
    say "customers: running in pid 1234" without trusting stale files.
    """
    path = lock_path(ledger_path, mapping)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder_fd(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def is_locked(ledger_path: str | os.PathLike[str], mapping: str) -> bool:
    """Whether some process holds the mapping lock right now. Blocking (call via a thread).

    Probes by taking and at once dropping the lock, so the answer is about a live process, never a file
    left behind. Used by the ledger to tell a crashed run (lock free) from a running one (lock held).
    """
    path = lock_path(ledger_path, mapping)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class MappingLock:
    """Exclusive, non-blocking lock on one mapping of one ledger; released when the process dies.

    ``async with MappingLock(config.ledger, "customers", command="syncd run"): ...`` raises
    :class:`syncd.errors.LockedError` (exit code 6) at once when another process syncs that mapping.
    """

    def __init__(
        self,
        ledger_path: str | os.PathLike[str],
        mapping: str,
        *,
        command: str | None = None,
        company: str | None = None,
    ) -> None:
        self._fd: int | None = None
        self.path = lock_path(ledger_path, mapping)
        self.mapping = mapping
        self.command = command or _default_command()
        self.company = company

    @property
    def held(self) -> bool:
        return self._fd is not None

    async def acquire(self) -> None:
        """Take the lock or raise :class:`LockedError` naming the holder. Never waits for the holder."""
        if self._fd is not None:
            raise RuntimeError(f"mapping lock {self.mapping!r} is already held by this object")
        self._fd = await asyncio.to_thread(self._acquire_blocking)

    async def release(self) -> None:
        """Empty the holder info and drop the lock. Safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is not None:
            await asyncio.to_thread(self._release_blocking, fd)

    def _acquire_blocking(self) -> int:
        try:
            self.path.parent.mkdir(exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise LockedError(
                f"cannot create the lock file {self.path} for mapping {self.mapping!r}: {exc.strerror}",
                hint="the directory next to the ledger must be writable by the syncd user",
            ) from exc
        try:
            holder = self._flock_or_holder(fd)
            if holder is not None:
                who = holder.describe() if isinstance(holder, LockHolder) else "another syncd process"
                raise LockedError(
                    f"mapping {self.mapping!r} is being synced by {who}",
                    hint="wait for it or stop it",
                )
            holder = LockHolder(
                os.getpid(), socket.gethostname(), self.command, datetime.now(UTC), self.company
            )
            data = holder.to_json().encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except BaseException:
            os.close(fd)  # closing drops the flock too
            raise
        return fd

    @staticmethod
    def _flock_or_holder(fd: int) -> LockHolder | bool | None:
        """Lock ``fd``; ``None`` on success, else who holds it (``True`` when the holder is unknown).

        A holder writes its info right after locking, and probes (``is_locked``, ``read_holder``) hold the
        lock for microseconds without writing any. So a held lock with no info is retried briefly before
        we report it, and a probe never makes a real run fail.
        """
        for attempt in range(_EMPTY_HOLDER_RETRIES + 1):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return None
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            holder = _read_holder_fd(fd)
            if holder is not None:
                return holder
            if attempt < _EMPTY_HOLDER_RETRIES:
                time.sleep(_EMPTY_HOLDER_PAUSE)
        return True

    @staticmethod
    def _release_blocking(fd: int) -> None:
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    async def __aenter__(self) -> MappingLock:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()

    def __del__(self) -> None:
        # A lock object dropped without release (a bug elsewhere) must not keep the mapping locked.
        fd = getattr(self, "_fd", None)
        if fd is not None:
            self._fd = None
            with contextlib.suppress(OSError):
                os.close(fd)

    def __repr__(self) -> str:
        return f"MappingLock({self.mapping!r}, held={self.held})"
