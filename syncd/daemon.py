"""``syncd run`` without ``--once``: the long-running service.

Lifecycle
    start     signal handlers, watchdog pings, the HTTP endpoint (``/healthz`` answers at once), the
              runtime (sessions, ledger), then a real authentication and one small read on both sides
              (the BC company lookup, one SuperOffice row). Only then ``READY=1`` and the schedule starts;
              every mapping's first incremental run goes at once. Startup failures exit with the error's
              code: 5 bad credentials (systemd's ``RestartPreventExitStatus`` stops restarting), 3 an API
              unreachable (systemd restarts), 1 config (ledger, company, schedule, port).
    run       :class:`~syncd.scheduler.MappingScheduler` fires runs; each run goes through
              :func:`syncd.jobs.run_mapping_locked`, so a ``syncd run --once`` on the same ledger and this
              daemon never sync one mapping at once. A locked mapping is logged with who holds it and
              tried again at its next tick. ``STATUS=`` says what the last runs did.
    SIGHUP    ``RELOADING=1``, re-read the config file. An invalid config, or one whose credentials do not
              authenticate, is rejected with one clear log line and the old one keeps running. A good one
              gets a fresh runtime (new sessions and auth, same ledger file); runs in progress finish on the
              old runtime, which is closed afterwards; the jobs are replaced (new or changed mappings run
              at once). ``READY=1`` either way.
    SIGTERM/  ``STOPPING=1``, the engine's stop event is set (no new items), runs in progress get
    SIGINT    ``shutdown_timeout`` seconds to finish their items in flight, then they are cancelled (each
              item is committed on its own, so the ledger is consistent at any point); the ledger is
              closed; exit 0. A second SIGTERM/SIGINT exits at once.

Health
    ``/readyz`` is ready when the config is loaded, the last authentication worked (the startup probe, or
    a later run that reached the APIs) and the ledger is writable. After a run fails authentication the
    daemon keeps its schedule (a token endpoint outage heals by itself) and reports not ready.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from syncd.config import Config, load_config
from syncd.errors import ConfigError, ExitCode, LockedError, SafetyStop, SyncdError, UnreachableError
from syncd.jobs import MappingOutcome, run_mapping_locked
from syncd.ledger import Ledger
from syncd.metrics import Metrics
from syncd.notify import Notifier, watchdog_loop
from syncd.readiness import probe
from syncd.run import RunOptions
from syncd.runtime import Runtime, open_runtime
from syncd.scheduler import MappingScheduler, plan_jobs
from syncd.statuspage import Check, Readiness
from syncd.web import WebServer, ledger_writable

__all__ = ["Daemon", "run_daemon"]

log = structlog.get_logger("syncd.daemon")


def run_daemon(config: Config, *, config_path: str | os.PathLike[str]) -> int:
    """Run the daemon until SIGTERM/SIGINT; the process exit code (0 after a clean stop)."""
    return asyncio.run(Daemon(config, config_path=config_path).run())


@dataclass(eq=False)
class _Generation:
    """One config and the runtime built from it. Replaced on reload, closed when its runs are done."""

    config: Config
    runtime: Runtime
    stack: AsyncExitStack
    users: int = 0
    retired: bool = False
    closed: bool = False


@dataclass
class _LastRun:
    outcome: str
    counts: Mapping[str, int] = field(default_factory=dict)
    at: float = 0.0


class _Stopped(Exception):
    """Raised inside startup when a stop signal arrived meanwhile."""


class Daemon:
    """The service: one config file, one ledger, a scheduler, an HTTP endpoint, sd_notify.

    Tests drive it in-process: ``install_signals=False``, then :meth:`request_stop` and
    :meth:`request_reload` stand in for SIGTERM and SIGHUP.
    """

    def __init__(
        self,
        config: Config,
        *,
        config_path: str | os.PathLike[str],
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
        install_signals: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config_path = Path(config_path)
        self._initial = config
        self.notifier = notifier or Notifier()
        self._metrics = metrics or Metrics(clock=clock)
        self._install_signals = install_signals
        self._clock = clock
        self._gen: _Generation | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._stop_signals = 0
        self._state = "starting"  # starting | ready | reloading | stopping
        self._auth_problem: str | None = None
        self._auth_verified = False
        self._ledger_problem: str | None = None
        self._last: dict[str, _LastRun] = {}
        self._reload_task: asyncio.Task[None] | None = None
        self._reload_again = False
        self._reload_pending = False
        self.scheduler = MappingScheduler(self._run_mapping)
        self.web = WebServer(self)
        self.reloads = 0  # completed reloads (accepted or rejected), for tests and logs

    # -- StatusSource (the web endpoint reads these) --------------------------------------------
    @property
    def config(self) -> Config:
        return self._gen.config if self._gen is not None else self._initial

    @property
    def ledger(self) -> Ledger | None:
        return self._gen.runtime.ledger if self._gen is not None else None

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    @property
    def state(self) -> str:
        return self._state

    def next_runs(self, mapping: str) -> Mapping[str, datetime | None]:
        return self.scheduler.next_runs(mapping)

    def running(self) -> Mapping[str, str]:
        return self.scheduler.running()

    async def readiness(self) -> Readiness:
        checks: dict[str, Check] = {}
        if self._gen is None:
            checks["config"] = Check(False, "starting: config not in effect yet")
        else:
            checks["config"] = Check(True, f"{self.config_path} ({len(self._gen.config.mappings)} mappings)")
        if self._auth_problem is not None:
            checks["auth"] = Check(False, self._auth_problem)
        elif not self._auth_verified:
            checks["auth"] = Check(False, "not authenticated yet")
        else:
            checks["auth"] = Check(True, "authenticated with both APIs")
        if self._ledger_problem is not None:
            checks["ledger"] = Check(False, self._ledger_problem)
        else:
            checks["ledger"] = await ledger_writable(self.ledger)
        if self._state == "stopping":
            checks["state"] = Check(False, "stopping")
        else:
            checks["state"] = Check(True, self._state)
        return Readiness(checks)

    # -- control ----------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """What SIGTERM does: stop taking items and shut down (see :meth:`run`)."""
        self._stop.set()

    def request_reload(self) -> None:
        """What SIGHUP does: re-read the config file (coalesced with a reload in progress)."""
        if self._stop.is_set():
            return
        if self._state == "starting":
            self._reload_pending = True  # applied once started
            log.info("reload requested during startup; applied once started")
            return
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_again = True
            return
        self._reload_task = asyncio.create_task(self._reload(), name="syncd reload")

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self.request_reload()
            return
        self._stop_signals += 1
        if self._stop_signals > 1:
            log.warning("second stop signal: exiting at once", signal=signal.Signals(signum).name)
            logging.shutdown()
            os._exit(130 if signum == signal.SIGINT else 143)
        log.info(
            "stop requested: finishing the items in flight (send again to exit at once)",
            signal=signal.Signals(signum).name,
            shutdown_timeout=self.config.shutdown_timeout,
        )
        self.request_stop()

    # -- main -------------------------------------------------------------------------------------
    async def run(self) -> int:
        """Start, serve until stopped, shut down. Returns the process exit code."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        if self._install_signals:
            for sig in signals:
                loop.add_signal_handler(sig, self._on_signal, sig)
        watchdog: asyncio.Task[None] | None = None
        interval = self.notifier.watchdog_interval()
        if interval is not None:
            watchdog = asyncio.create_task(watchdog_loop(self.notifier, interval), name="syncd watchdog")
            log.info("watchdog armed", ping_every=round(interval, 3))
        try:
            code = await self._start()
            if code is not None:
                return code
            await self._stop.wait()
            await self._shutdown()
            return int(ExitCode.OK)
        finally:
            if watchdog is not None:
                watchdog.cancel()
                with suppress(asyncio.CancelledError):
                    await watchdog
            await self._close_all()
            await self.web.stop()
            if self._install_signals:
                for sig in signals:
                    loop.remove_signal_handler(sig)

    async def _start(self) -> int | None:
        """Everything before READY=1; an exit code when the daemon must not go on."""
        config = self._initial
        log.info(
            "starting",
            config=str(self.config_path),
            ledger=str(config.ledger),
            mappings=[m.name for m in config.mappings if m.enabled],
        )
        self.notifier.status("starting: checking config, credentials and ledger")
        if config.server.enabled:
            try:
                await self.web.start(config.server.host, config.server.port)
            except OSError as exc:
                log.error(
                    "cannot listen for HTTP; check server.host and server.port in the config",
                    host=config.server.host,
                    port=config.server.port,
                    error=str(exc),
                )
                return int(ExitCode.CONFIG)
        try:
            self.scheduler.apply(config)  # validates the schedule before anything is opened
            self._gen = await self._until_stopped(self._open(config))
        except _Stopped:
            log.info("stopped during startup")
            return int(ExitCode.OK)
        except SyncdError as exc:
            self._startup_failed(exc)
            return int(exc.exit_code)
        self._auth_verified = True
        await self._update_ledger_gauge(self._gen)
        await self._seed_metrics(self._gen)
        self.scheduler.start()
        self._state = "ready"
        log.info(
            "ready",
            mappings=[m.name for m in config.mappings if m.enabled],
            interval=config.schedule.interval,
            full_reconcile=config.schedule.full_reconcile,
        )
        self.notifier.ready(status="ready; first runs starting")
        if self._reload_pending:
            self._reload_pending = False
            self.request_reload()
        return None

    def _startup_failed(self, exc: SyncdError) -> None:
        if exc.exit_code == ExitCode.AUTH:
            what = "authentication failed; not retrying (systemd will not restart on exit 5)"
        elif isinstance(exc, UnreachableError):
            what = "an API is unreachable; exiting so that the service manager restarts syncd later"
        else:
            what = "cannot start"
        log.error(what, error=exc.message, hint=exc.hint, exit_code=int(exc.exit_code))
        self.notifier.status(f"failed: {exc.message}")

    async def _until_stopped(self, aw: Any) -> Any:
        """Await ``aw`` unless a stop is requested first (then cancel it and raise :class:`_Stopped`)."""
        task = asyncio.ensure_future(aw)
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await task
            raise _Stopped
        return task.result()

    async def _open(self, config: Config) -> _Generation:
        """A runtime for ``config``, proven to authenticate and read on both sides."""
        stack = AsyncExitStack()
        try:
            rt = await stack.enter_async_context(
                open_runtime(
                    config, reporter=self._metrics, observer=self._metrics, stop=self._stop, clock=self._clock
                )
            )
            await probe(rt)
        except BaseException:
            await stack.aclose()
            raise
        log.info(
            "authenticated with both APIs",
            superoffice=rt.so_api.auth.describe(),
            businesscentral=rt.bc_api.auth.describe(),
            companies={
                m.name: f"{t.company_name or t.company} ({t.company_id})"
                for m in config.mappings
                if (t := rt.target_of(m.name)).company_id
            },
        )
        return _Generation(config, rt, stack)

    # -- runs -------------------------------------------------------------------------------------
    async def _run_mapping(self, name: str, full: bool) -> bool:
        """The scheduler's runner: one run of one mapping on the current runtime."""
        gen = self._gen
        if gen is None or self._stop.is_set():
            return True
        try:
            mapping = gen.config.mapping(name)
        except ConfigError:
            return True  # removed by a reload since the tick fired
        if not mapping.enabled:
            return True
        mode = "full" if full else "incremental"
        gen.users += 1
        self._metrics.run_started(name)
        started = time.monotonic()
        outcome: MappingOutcome | None = None
        try:
            outcome = await run_mapping_locked(gen.runtime, mapping, RunOptions(full=full))
        except sqlite3.Error as exc:
            self._ledger_problem = f"ledger error: {exc}"
            log.error("run failed: ledger error", mapping=name, error=str(exc))
            outcome = MappingOutcome(name, None, SyncdError(f"ledger error: {exc}"))
        except Exception as exc:
            log.exception("run crashed (a bug in syncd)", mapping=name)
            outcome = MappingOutcome(name, None, SyncdError(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            seconds = time.monotonic() - started
            if outcome is None:  # cancelled at shutdown
                self._metrics.run_finished(name, mode, "interrupted", seconds)
            gen.users -= 1
            self._maybe_close(gen)
        assert outcome is not None
        await self._after_run(gen, name, mode, outcome, seconds)
        return not isinstance(outcome.error, LockedError)

    async def _after_run(
        self, gen: _Generation, name: str, mode: str, outcome: MappingOutcome, seconds: float
    ) -> None:
        err, result = outcome.error, outcome.result
        if result is not None:
            label: str = result.outcome
            counts = result.counts.as_dict()
            self._auth_problem = None
            self._auth_verified = True
            self._ledger_problem = None
        else:
            counts = {}
            if isinstance(err, LockedError):
                label = "locked"
            elif isinstance(err, SafetyStop):
                label = "safety_stop"
            else:
                label = "failed"
        self._metrics.run_finished(name, mode, label, seconds, counts)
        if isinstance(err, LockedError):
            nxt = self.scheduler.next_runs(name).get("incremental")
            log.warning(
                "mapping is locked by another syncd process; trying again at the next tick",
                mapping=name,
                holder=err.message,
                next_try=nxt.isoformat() if nxt else None,
            )
        elif err is not None and err.exit_code == ExitCode.AUTH:
            self._auth_problem = err.message
            log.error(
                "authentication failed; the daemon stays up and tries again at the next tick",
                mapping=name,
                error=err.message,
                hint=err.hint,
            )
        self._last[name] = _LastRun(label, counts, self._clock())
        await self._update_ledger_gauge(gen)
        if self._state == "ready":
            self.notifier.status(self.status_line(done=name))

    def last_outcomes(self) -> dict[str, str]:
        """Each mapping's last run outcome in this process (ok, partial, failed, locked, ...)."""
        return {name: last.outcome for name, last in self._last.items()}

    def status_line(self, done: str | None = None) -> str:
        """The one line for ``systemctl status``: each mapping's last outcome and counts
        (``done``: a mapping whose run just ended, though the scheduler still lists it)."""
        parts: list[str] = []
        for name, last in self._last.items():
            c = last.counts
            shown = [f"{c[k]} {k}" for k in ("written", "unchanged", "cleared", "failed") if c.get(k)]
            when = time.strftime("%H:%M:%S", time.localtime(last.at))
            parts.append(f"{name} {last.outcome} {when}" + (f" ({', '.join(shown)})" if shown else ""))
        running = {n: m for n, m in self.scheduler.running().items() if n != done}
        if running:
            parts.append("running: " + ", ".join(f"{n} ({m})" for n, m in running.items()))
        return "; ".join(parts) or "ready"

    def _set_metric_mappings(self, config: Config) -> None:
        self._metrics.set_mappings(
            {m.name: config.company_of(m) for m in config.mappings},
            {m.name: config.schedule.interval for m in config.mappings if m.enabled},
        )

    async def _seed_metrics(self, gen: _Generation) -> None:
        """The config's mappings and, from the ledger, each one's last success before this start."""
        self._set_metric_mappings(gen.config)
        ledger = gen.runtime.ledger
        if ledger is None:
            return
        for m in gen.config.mappings:
            try:
                when = await ledger.last_success_at(m.name)
            except (sqlite3.Error, ValueError) as exc:
                log.warning("cannot read the last successful run", mapping=m.name, error=str(exc))
                continue
            if when is not None:
                self._metrics.set_last_success(m.name, when.timestamp())

    async def _update_ledger_gauge(self, gen: _Generation) -> None:
        ledger = gen.runtime.ledger
        if ledger is None or gen.closed:
            return
        try:
            self._metrics.set_ledger_items(await ledger.count_items())
        except (sqlite3.Error, ValueError) as exc:
            log.warning("cannot count ledger items", error=str(exc))

    # -- reload -----------------------------------------------------------------------------------
    async def _reload(self) -> None:
        while True:
            self._reload_again = False
            await self._reload_once()
            self.reloads += 1
            if not self._reload_again or self._stop.is_set():
                return

    async def _reload_once(self) -> None:
        self._state = "reloading"
        self.notifier.reloading(status="reloading config")
        log.info("reloading config", config=str(self.config_path))
        old = self._gen
        try:
            try:
                config = await asyncio.to_thread(load_config, self.config_path)
                self._check_schedule(config)
            except ConfigError as exc:
                self._reject(exc.message, exc.hint)
                return
            try:
                gen = await self._until_stopped(self._open(config))
            except _Stopped:
                return
            except SyncdError as exc:
                self._reject(f"the new config does not work: {exc.message}", exc.hint)
                return
            self._gen = gen
            self._auth_problem, self._auth_verified = None, True
            self.scheduler.apply(config)
            self._set_metric_mappings(config)
            if old is not None:
                old.retired = True
                self._maybe_close(old)
                await self._apply_side_changes(old.config, config)
            log.info(
                "config reloaded",
                mappings=[m.name for m in config.mappings if m.enabled],
                interval=config.schedule.interval,
                full_reconcile=config.schedule.full_reconcile,
            )
            self.notifier.ready(status="config reloaded; " + self.status_line())
        finally:
            if self._state == "reloading":
                self._state = "ready"

    def _check_schedule(self, config: Config) -> None:
        """Raise :class:`ConfigError` when ``config``'s schedule cannot be planned (nothing changes)."""
        plan_jobs(config, self.scheduler.timezone)

    def _reject(self, message: str, hint: str | None) -> None:
        log.error("reload rejected; the running config stays in effect", error=message, hint=hint)
        self.notifier.ready(status=f"reload rejected: {message.splitlines()[0]}; old config in effect")

    async def _apply_side_changes(self, old: Config, new: Config) -> None:
        if new.log_level != old.log_level:
            _set_log_level(new.log_level)
            log.info("log level changed", level=new.log_level)
        if (new.server.host, new.server.port, new.server.enabled) != (
            old.server.host,
            old.server.port,
            old.server.enabled,
        ):
            if not new.server.enabled:
                log.warning("server.enabled: false takes effect at the next restart")
            else:
                try:
                    await self.web.start(new.server.host, new.server.port)
                except OSError as exc:
                    log.error(
                        "cannot listen on the new server address; keeping the old one",
                        host=new.server.host,
                        port=new.server.port,
                        error=str(exc),
                    )

    # -- generations ------------------------------------------------------------------------------
    def _maybe_close(self, gen: _Generation) -> None:
        if gen.retired and gen.users == 0 and not gen.closed:
            gen.closed = True
            task = asyncio.create_task(gen.stack.aclose(), name="syncd close old runtime")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close_all(self) -> None:
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._reload_task
        gen, self._gen = self._gen, None
        if gen is not None and not gen.closed:
            gen.closed = True
            await gen.stack.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # -- stop -------------------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        self._state = "stopping"
        running = self.scheduler.running()
        timeout = self.config.shutdown_timeout
        self.notifier.stopping(status=f"stopping: finishing {len(running)} runs in flight")
        log.info("stopping", running=running, shutdown_timeout=timeout)
        finished = await self.scheduler.stop(timeout)
        if not finished:
            log.warning(
                "shutdown_timeout reached: the items in flight were abandoned; the next run redoes them",
                shutdown_timeout=timeout,
            )
        await self._close_all()
        log.info("stopped")


def _set_log_level(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if isinstance(numeric, int):
        logging.getLogger().setLevel(numeric)
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(numeric))
