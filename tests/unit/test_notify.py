"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.notify import Notifier, sd_notify, watchdog_loop


@pytest.fixture
def manager() -> Iterator[tuple[socket.socket, dict[str, str]]]:
    """A bound datagram socket like systemd's, and the environment a service would get for it.

    The directory is short on purpose: AF_UNIX paths are limited to 107 bytes.
    """
    with tempfile.TemporaryDirectory(prefix="sdn") as tmp:
        path = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(2)
        try:
            yield sock, {"NOTIFY_SOCKET": path}
        finally:
            sock.close()


def pending(sock: socket.socket) -> list[str]:
    """Every datagram already queued, without waiting."""
    out: list[str] = []
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(timeout)


def test_ready_sends_exactly_ready(manager: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = manager
    assert sd_notify("READY=1", env) is True
    assert sock.recv(4096) == b"READY=1"


def test_lifecycle_messages_are_exact(manager: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = manager
    n = Notifier(env)
    assert n.enabled
    assert n.ready() and n.stopping() and n.watchdog() and n.status("idle, 3 written")
    assert n.ready(status="reloaded") and n.stopping(status="draining 2 uploads")
    assert [sock.recv(4096).decode() for _ in range(6)] == [
        "READY=1",
        "STOPPING=1",
        "WATCHDOG=1",
        "STATUS=idle, 3 written",
        "READY=1\nSTATUS=reloaded",
        "STOPPING=1\nSTATUS=draining 2 uploads",
    ]


def test_reloading_carries_the_monotonic_timestamp_notify_reload_needs(
    manager: tuple[socket.socket, dict[str, str]],
) -> None:
    sock, env = manager
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier(env).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = sock.recv(4096).decode().split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_reloading_with_status_is_one_datagram(manager: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = manager
    assert Notifier(env).reloading(status="re-reading config")
    lines = sock.recv(4096).decode().split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert lines[2] == "STATUS=re-reading config"
    assert pending(sock) == []


def test_status_text_cannot_forge_other_assignments(manager: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = manager
    Notifier(env).status("record 42 failed\nREADY=1")
    assert sock.recv(4096) == b"STATUS=record 42 failed READY=1"


def test_abstract_namespace_socket_is_reached() -> None:
    name = f"syncd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"


def test_without_notify_socket_everything_is_a_quiet_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert sd_notify("READY=1", {}) is False
    assert n.ready() is False
    assert n.reloading() is False
    assert n.stopping() is False
    assert n.status("x") is False
    assert n.watchdog() is False
    assert n.watchdog_interval() is None


@pytest.mark.parametrize("value", ["", "relative/notify", "@", "vsock:2:1234"])
def test_unusable_notify_socket_values_are_ignored(value: str) -> None:
    assert sd_notify("READY=1", {"NOTIFY_SOCKET": value}) is False
    assert not Notifier({"NOTIFY_SOCKET": value}).enabled


def test_vanished_manager_socket_returns_false_instead_of_raising(tmp_path: Path) -> None:
    assert sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_full_manager_queue_drops_pings_instead_of_blocking(
    manager: tuple[socket.socket, dict[str, str]],
) -> None:
    # Nobody reads: a blocking socket would hang here once the receive queue is full.
    _, env = manager
    results = [sd_notify("WATCHDOG=1", env) for _ in range(5000)]
    assert results[0] is True
    assert False in results


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert Notifier({"WATCHDOG_USEC": "60000000"}).watchdog_interval() == 30.0


def test_watchdog_for_this_process_is_honoured() -> None:
    env = {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(env).watchdog_interval() == 10.0


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    # A child that inherited the parent's environment must not ping on the parent's behalf.
    env = {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(env).watchdog_interval() is None


@pytest.mark.parametrize("usec", ["0", "-5", "soon", ""])
def test_invalid_watchdog_usec_means_no_watchdog(usec: str) -> None:
    assert Notifier({"WATCHDOG_USEC": usec}).watchdog_interval() is None


async def test_watchdog_loop_pings_until_cancelled(manager: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = manager
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(watchdog_loop(Notifier(env), 0.01))
    pings = [await asyncio.wait_for(loop.sock_recv(sock, 4096), 2) for _ in range(3)]
    assert pings == [b"WATCHDOG=1"] * 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pending(sock)
    await asyncio.sleep(0.05)
    assert pending(sock) == []


async def test_watchdog_loop_goes_silent_while_the_event_loop_is_blocked(
    manager: tuple[socket.socket, dict[str, str]],
) -> None:
    sock, env = manager
    task = asyncio.create_task(watchdog_loop(Notifier(env), 0.01))
    await asyncio.sleep(0)
    assert sock.recv(4096) == b"WATCHDOG=1"
    time.sleep(0.1)  # blocking code on the loop: the very fault the watchdog must expose
    assert pending(sock) == []
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_watchdog_loop_rejects_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        await watchdog_loop(Notifier({}), 0)
