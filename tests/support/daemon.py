"""Daemon test helpers: a fake systemd notify socket, the daemon as a subprocess or as a task in the
test's loop, and polling for a condition (never a fixed sleep). The fixtures (``systemd``, ``spawn``,
``in_process``) are registered for every test by ``tests/conftest.py``."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from syncd.config import load_config
from syncd.daemon import Daemon
from syncd.notify import Notifier
from syncd.sandbox.common import Faults
from syncd.sandbox.server import Sandbox
from tests.support.config import FAST_LIMITS, merge

PATCH_ROUTE = "/picture/{stream}"
CUSTOMERS_ONLY = {
    "mappings": [
        {
            "name": "customers",
            "source": "contact",
            "target": "customers",
            "match": {"source": "code", "target": "number"},
        }
    ]
}


async def slow_writes_after_listing(sb: Sandbox, latency_ms: float) -> None:
    """Once the run has listed Business Central, delay every further BC request (the PATCHes).

    The sandbox applies ``latency_ms`` to every route whatever ``only_routes`` says, so the fault is
    switched on after the startup probe and the listing instead.
    """
    await eventually(
        lambda: any(e.method == "GET" and e.route.endswith("/{entity_set}") for e in sb.bc.log.entries),
        30,
        "the Business Central listing",
    )
    sb.bc.fault_state.set(Faults(latency_ms=latency_ms))


def arrivals(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Route templates of BC requests as they ARRIVE (the request log only has finished ones): the
    sandbox draws its fault for every request on arrival, before any latency, so we listen there."""
    seen: list[str] = []
    draw = sb.bc.fault_state.draw

    def spy(route: str) -> str | None:
        seen.append(route)
        return draw(route)

    monkeypatch.setattr(sb.bc.fault_state, "draw", spy)
    return seen


def overrides(**extra: Any) -> dict[str, Any]:
    """Fast API limits, an HTTP endpoint on a free port, plus ``extra`` (deep-merged)."""
    return merge(merge(copy.deepcopy(FAST_LIMITS), {"server": {"port": 0}}), extra)


async def eventually(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# -- a fake systemd and a daemon subprocess ---------------------------------------------------------


class FakeSystemd:
    """A bound AF_UNIX datagram socket like systemd's notify socket; records (arrival, message)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._receive())

    async def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 65536)
            self.messages.append((time.time(), data.decode()))

    def index(self, assignment: str, after: int = 0) -> int | None:
        """Index of the first message at or after ``after`` containing the line ``assignment``."""
        for i, (_, msg) in enumerate(self.messages[after:], start=after):
            if assignment in msg.split("\n"):
                return i
        return None

    async def wait_for(self, assignment: str, after: int = 0, timeout: float = 30.0) -> int:
        await eventually(lambda: self.index(assignment, after) is not None, timeout, f"{assignment!r}")
        found = self.index(assignment, after)
        assert found is not None
        return found

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.sock.close()


@pytest.fixture
async def systemd() -> AsyncIterator[FakeSystemd]:
    with tempfile.TemporaryDirectory(prefix="sdn") as tmp:  # short: AF_UNIX paths are <= 107 bytes
        fake = FakeSystemd(os.path.join(tmp, "notify"))
        fake.start()
        yield fake
        await fake.close()


class DaemonProcess:
    """``python -m syncd run -c FILE --log-json`` with its JSON log lines parsed as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.logs: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, config: Path, env: dict[str, str] | None = None) -> DaemonProcess:
        full_env = {
            k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "syncd",
            "run",
            "-c",
            str(config),
            "--log-json",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**full_env, **(env or {})},
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").strip()
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"event": line}
            entry["_at"] = time.time()
            self.logs.append(entry)

    def find(self, event: str, after: int = 0, **fields: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.logs[after:]
            if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        ]

    async def wait_log(
        self, event: str, after: int = 0, timeout: float = 30.0, **fields: Any
    ) -> dict[str, Any]:
        await eventually(
            lambda: bool(self.find(event, after, **fields)) or self.proc.returncode is not None,
            timeout,
            f"log {event!r} {fields}",
        )
        found = self.find(event, after, **fields)
        assert found, f"daemon exited ({self.proc.returncode}) before logging {event!r}: {self.tail()}"
        return found[0]

    async def port(self) -> int:
        return int((await self.wait_log("http endpoint listening"))["port"])

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 30.0) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(self._reader, 5)
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()

    def tail(self, n: int = 15) -> str:
        return "\n".join(
            str(e.get("event")) + " " + str({k: v for k, v in e.items() if k != "event"})
            for e in self.logs[-n:]
        )


@pytest.fixture
async def spawn() -> AsyncIterator[Callable[..., Awaitable[DaemonProcess]]]:
    started: list[DaemonProcess] = []

    async def start(config: Path, env: dict[str, str] | None = None) -> DaemonProcess:
        d = await DaemonProcess.start(config, env)
        started.append(d)
        return d

    yield start
    for d in started:
        await d.kill()


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, await resp.text()


# -- startup: READY only after a real authentication ------------------------------------------------


# -- in-process daemon ----------------------------------------------------------------------------


class InProcess:
    """The daemon as a task in the test's loop (no signals, no notify socket)."""

    def __init__(self, config_path: Path, notifier: Notifier | None = None) -> None:
        self.daemon = Daemon(
            load_config(config_path),
            config_path=config_path,
            notifier=notifier or Notifier({}),
            install_signals=False,
        )
        self.task = asyncio.create_task(self.daemon.run())

    async def ready(self) -> None:
        await eventually(lambda: self.daemon.state == "ready" or self.task.done(), 20, "ready")
        if self.task.done():
            raise AssertionError(f"daemon exited with {self.task.result()}")

    async def stop(self, timeout: float = 30) -> int:
        self.daemon.request_stop()
        return await asyncio.wait_for(self.task, timeout)


@pytest.fixture
async def in_process() -> AsyncIterator[Callable[..., InProcess]]:
    made: list[InProcess] = []

    def make(config_path: Path, notifier: Notifier | None = None) -> InProcess:
        d = InProcess(config_path, notifier)
        made.append(d)
        return d

    yield make
    for d in made:
        if not d.task.done():
            await d.stop()
