"""Talk to systemd's service manager over the sd_notify(3) protocol, without libsystemd.

The protocol is one datagram of newline-separated ``KEY=VALUE`` assignments sent to the
AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a file system path, or ``@name`` for the abstract
namespace). Outside systemd -- a terminal, a test, a container without it -- the variable is
unset and every call here is a cheap no-op that returns ``False``.

What the daemon sends, and when (``systemd/syncd.service`` is ``Type=notify``):

- ``READY=1`` once the config is loaded, the ledger is open and the health port listens, not
  before: until then ``systemctl start`` waits and units ordered after syncd do not start.
- ``RELOADING=1`` on SIGHUP, then ``READY=1`` when the new config is in effect.
- ``STOPPING=1`` as soon as a graceful shutdown begins.
- ``WATCHDOG=1`` every half ``WatchdogSec=`` from :func:`watchdog_loop`, a task on the event loop,
  so a loop stuck in blocking code stops the pings and systemd restarts the service.
- ``STATUS=...`` one line for ``systemctl status`` ("idle, last run ok: 3 written").
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier", "sd_notify", "watchdog_loop"]


def _socket_address(raw: str) -> str | None:
    """``$NOTIFY_SOCKET`` as a Python AF_UNIX address; None for kinds we do not speak (vsock:)."""
    if raw.startswith("@") and len(raw) > 1:
        return "\0" + raw[1:]  # abstract namespace: the leading '@' stands for a NUL byte
    if raw.startswith("/"):
        return raw
    return None


def sd_notify(state: str, env: Mapping[str, str] = os.environ) -> bool:
    """Send ``state`` (e.g. ``"READY=1"`` or ``"STOPPING=1\\nSTATUS=draining"``) to the service manager.

    Returns True when the datagram left; False when ``$NOTIFY_SOCKET`` is unset or unusable, or the
    send failed (the manager is gone, its queue is full). Never raises and never blocks: the socket
    is non-blocking, so a notification is dropped rather than stalling the event loop.
    """
    address = _socket_address(env.get("NOTIFY_SOCKET", ""))
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:  # close-on-exec by default
            sock.setblocking(False)
            sock.sendto(state.encode("utf-8"), address)
    except (OSError, ValueError):
        return False
    return True


def _line(text: str) -> str:
    """A value fit for one assignment: a newline would start a new (forged) assignment."""
    return " ".join(text.splitlines())


class Notifier:
    """The daemon's handle on systemd: lifecycle messages, status line and watchdog settings.

    ``env`` is read at each call (default ``os.environ``), so tests pass a plain dict.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env: Mapping[str, str] = os.environ if env is None else env

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens for notifications."""
        return _socket_address(self._env.get("NOTIFY_SOCKET", "")) is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments as one datagram, so systemd applies them together."""
        return sd_notify("\n".join(assignments), self._env)

    def _with_status(self, assignment: str, status: str | None) -> bool:
        if status is None:
            return self.send(assignment)
        return self.send(assignment, f"STATUS={_line(status)}")

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is complete: ``systemctl start``/``reload`` returns now."""
        return self._with_status("READY=1", status)

    def reloading(self, status: str | None = None) -> bool:
        """A reload begins. ``MONOTONIC_USEC`` is required by ``Type=notify-reload`` (systemd >= 253)
        to tell this reload from an earlier one; older managers ignore the field."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        if status is None:
            return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={_line(status)}")

    def stopping(self, status: str | None = None) -> bool:
        """A graceful shutdown began; systemd shows "deactivating" instead of "active"."""
        return self._with_status("STOPPING=1", status)

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status``."""
        return self.send(f"STATUS={_line(text)}")

    def watchdog(self) -> bool:
        """Tell systemd we are alive; without it for ``WatchdogSec=`` it kills and restarts us."""
        return self.send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half ``$WATCHDOG_USEC``), or None when no watchdog is armed for us.

        ``$WATCHDOG_PID``, when set, names the process the watchdog is for: a child that inherited
        the environment (or any other process) gets None, as with sd_watchdog_enabled(3).
        """
        try:
            usec = int(self._env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        if usec <= 0:
            return None
        pid = self._env.get("WATCHDOG_PID")
        if pid is not None and pid.strip() != str(os.getpid()):
            return None
        return usec / 2 / 1_000_000


async def watchdog_loop(notifier: Notifier, interval: float) -> None:
    """Ping the watchdog now and every ``interval`` seconds until cancelled.

    Run it as a task on the daemon's event loop, never in a thread: the pings then prove the loop
    itself still turns, which is what the watchdog is for.
    """
    if interval <= 0:
        raise ValueError(f"watchdog interval must be positive, got {interval!r}")
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)
