"""Mapping locks: one syncd per mapping and ledger, across processes, released when the holder dies."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import signal
import sys
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.errors import ExitCode, LockedError
from syncd.locks import LockHolder, MappingLock, is_locked, lock_path, read_holder

HOLDER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from syncd.locks import MappingLock

    async def main():
        lock = MappingLock(sys.argv[1], sys.argv[2], command="syncd run")
        await lock.acquire()
        print("locked", flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


async def start_holder(tmp_path: Path, ledger: Path, mapping: str) -> asyncio.subprocess.Process:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER_SCRIPT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(ledger), mapping, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
    assert line.strip() == b"locked"
    return proc


async def kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await proc.wait()


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite"


async def test_second_run_of_the_same_mapping_is_refused_naming_the_holder(ledger: Path):
    async with MappingLock(ledger, "customers", command="syncd daemon"):
        with pytest.raises(LockedError) as info:
            async with MappingLock(ledger, "customers", command="syncd run"):
                pytest.fail("two holders of one mapping")
    message = str(info.value)
    assert re.search(
        rf"mapping 'customers' is being synced by pid {os.getpid()} \(syncd daemon, since \d\d:\d\d:\d\d\)",
        message,
    ), message
    assert "wait for it or stop it" in message
    assert info.value.exit_code is ExitCode.LOCKED


async def test_other_mappings_are_not_blocked(ledger: Path):
    async with MappingLock(ledger, "customers"), MappingLock(ledger, "vendors") as second:
        assert second.held


async def test_lock_is_free_again_after_release(ledger: Path):
    async with MappingLock(ledger, "customers"):
        pass
    async with MappingLock(ledger, "customers") as again:
        assert again.held


async def test_lock_file_names_holder_only_while_held(ledger: Path):
    lock = MappingLock(ledger, "customers", command="syncd run")
    await lock.acquire()
    info = json.loads(lock_path(ledger, "customers").read_text())
    assert info["pid"] == os.getpid()
    assert info["command"] == "syncd run"
    assert {"hostname", "since"} <= info.keys()
    await lock.release()
    assert lock_path(ledger, "customers").read_text() == ""
    assert lock_path(ledger, "customers").exists()  # never unlinked: no two-inode race


async def test_lock_held_by_another_process_is_refused_and_freed_when_it_is_killed(
    tmp_path: Path, ledger: Path
):
    proc = await start_holder(tmp_path, ledger, "customers")
    try:
        with pytest.raises(LockedError, match=rf"pid {proc.pid} \(syncd run, since \d\d:\d\d:\d\d\)"):
            await MappingLock(ledger, "customers").acquire()
        assert await asyncio.to_thread(is_locked, ledger, "customers")
        holder = await asyncio.to_thread(read_holder, ledger, "customers")
        assert holder is not None and holder.pid == proc.pid
    finally:
        await kill(proc)
    # SIGKILL: no cleanup ran, the file still names the dead holder, yet the lock is free.
    assert json.loads(lock_path(ledger, "customers").read_text())["pid"] == proc.pid
    assert not await asyncio.to_thread(is_locked, ledger, "customers")
    assert await asyncio.to_thread(read_holder, ledger, "customers") is None
    async with MappingLock(ledger, "customers") as lock:
        assert lock.held


async def test_a_short_probe_does_not_make_a_real_run_fail(ledger: Path):
    # is_locked()/read_holder() hold the lock for an instant without holder info; acquire retries.
    path = lock_path(ledger, "customers")
    path.parent.mkdir()
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    timer = threading.Timer(0.03, lambda: os.close(fd))
    timer.start()
    try:
        async with MappingLock(ledger, "customers") as lock:
            assert lock.held
    finally:
        timer.join()


async def test_holder_that_never_says_who_it_is_is_reported_as_another_process(ledger: Path):
    path = lock_path(ledger, "customers")
    path.parent.mkdir()
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(LockedError, match="being synced by another syncd process"):
            await MappingLock(ledger, "customers").acquire()
    finally:
        os.close(fd)


@pytest.mark.parametrize("name", ["../escape", "a/b", "kunden ü", ".."])
async def test_any_mapping_name_becomes_one_file_in_the_lock_directory(ledger: Path, name: str):
    async with MappingLock(ledger, name):
        path = lock_path(ledger, name)
        assert path.parent == ledger.parent / "ledger.sqlite.locks"
        assert path.exists()
        assert await asyncio.to_thread(is_locked, ledger, name)


async def test_unwritable_lock_directory_is_a_clear_error(tmp_path: Path):
    with pytest.raises(LockedError, match="cannot create the lock file"):
        await MappingLock(tmp_path / "missing-dir" / "ledger.sqlite", "customers").acquire()


def test_empty_mapping_name_is_rejected(ledger: Path):
    with pytest.raises(ValueError, match="must not be empty"):
        MappingLock(ledger, "")


def test_holder_description_adds_date_and_host_when_they_differ():
    since = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    text = LockHolder(99, "other-host", "syncd daemon", since).describe()
    local = since.astimezone()
    assert text == f"pid 99 on other-host (syncd daemon, since {local:%Y-%m-%d %H:%M:%S})"
    assert LockHolder.from_json(LockHolder(99, "h", "c", since).to_json()) == LockHolder(99, "h", "c", since)
    assert LockHolder.from_json("") is None
    assert LockHolder.from_json('{"pid": "x"}') is None
