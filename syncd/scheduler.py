"""When mappings run in the daemon: APScheduler 3 jobs, one mapping at a time, missed runs collapsed.

Per enabled mapping there are two jobs on an :class:`~apscheduler.schedulers.asyncio.AsyncIOScheduler`:

``<mapping>:incremental``  every ``schedule.interval``; the first one right away.
``<mapping>:full``         on the ``schedule.full_reconcile`` crontab (host's local time zone), a full
                           reconcile (``RunOptions(full=True)``: fingerprints ignored, all compared).

Both jobs have ``max_instances=1`` and ``coalesce=True`` with no misfire grace limit, so a run that
lasts longer than the interval is never started a second time beside itself, and the ticks it missed
collapse into one (APScheduler's "maximum number of running instances reached" message is logged at
INFO: it is this design working, not a problem).

On top of that, one mapping never runs twice at once *within* the daemon: an incremental tick that
finds the mapping busy (e.g. the nightly full run) is dropped; a full reconcile waits for the run in
progress and then goes. Across processes (a ``syncd run --once`` by hand) the runner's
:class:`~syncd.locks.MappingLock` decides; a full reconcile that found the mapping locked is done
at the mapping's next tick instead.

The scheduler knows nothing about the engine: it calls ``runner(mapping_name, full)``. The runner
returns ``False`` when the mapping was locked by another process, ``True`` otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Literal

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from syncd.config import Config
from syncd.errors import ConfigError

__all__ = [
    "JobKind",
    "JobSpec",
    "MappingScheduler",
    "Runner",
    "crontab_day_of_week",
    "crontab_trigger",
    "plan_jobs",
]

log = structlog.get_logger("syncd.scheduler")

JobKind = Literal["incremental", "full"]
Runner = Callable[[str, bool], Awaitable[bool]]

MIN_INTERVAL = 1.0  # seconds; a shorter schedule.interval is a config error
CANCEL_GRACE = 5.0  # seconds for cancelled runs to record their end after shutdown_timeout

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DAY_NUMBER = {name: i for i, name in enumerate(_DAY_NAMES)}
_DOW_PART = re.compile(r"^(\*|[0-7a-z]{1,3}(?:-[0-7a-z]{1,3})?)(?:/(\d+))?$")


def crontab_day_of_week(field: str) -> str:
    """A crontab day-of-week field (0 or 7 = Sunday) as APScheduler 3 expects it (0 = Monday).

    APScheduler 3's ``CronTrigger.from_crontab`` passes the numbers through unchanged, so ``1-5``
    would mean Tuesday to Saturday (its issue #286). Here every day is spelled as a name:
    ``"1-5"`` → ``"mon,tue,wed,thu,fri"``, ``"*/2"`` → ``"sun,tue,thu,sat"``, ``"*"`` stays ``"*"``.
    Raises :class:`ValueError` for anything that is not a crontab day-of-week field.
    """
    text = field.strip().lower()
    if text in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in text.split(","):
        m = _DOW_PART.match(part)
        if m is None:
            raise ValueError(f"day of week {field!r}: cannot read {part!r}")
        span, step_text = m.group(1), m.group(2)
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"day of week {field!r}: step must be at least 1")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            a, b = span.split("-")
            first, last = _day(a, field), _day(b, field)
            if last == 0 and first > 0:  # "5-7" / "fri-sun": 7 and sun close the week
                last = 7
            if first > last:
                raise ValueError(f"day of week {field!r}: range {part!r} runs backwards")
        else:
            first = _day(span, field)
            last = 6 if step_text else first  # "1/2" = from Monday every second day
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


def _day(token: str, field: str) -> int:
    if token.isdigit():
        n = int(token)
        if n > 7:
            raise ValueError(f"day of week {field!r}: {n} is not 0-7")
        return n
    if token in _DAY_NUMBER:
        return _DAY_NUMBER[token]
    raise ValueError(f"day of week {field!r}: {token!r} is not a day")


def crontab_trigger(expr: str, timezone: tzinfo | None = None) -> CronTrigger:
    """A standard 5-field crontab expression (minute hour day month weekday) as a trigger.

    Raises :class:`ConfigError` naming ``schedule.full_reconcile`` when the expression is invalid.
    """
    fields = expr.split()
    try:
        if len(fields) != 5:
            raise ValueError(f"{len(fields)} fields; a crontab expression has 5")
        minute, hour, day, month, dow = fields
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=crontab_day_of_week(dow),
            timezone=timezone,
        )
    except ValueError as exc:
        raise ConfigError(
            f"schedule.full_reconcile {expr!r} is not a valid crontab expression: {exc}",
            hint='write minute hour day month weekday, e.g. "0 3 * * *" for 03:00 every day',
        ) from None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One scheduled job. ``signature`` changes whenever the job must be replaced (and run anew)."""

    id: str
    mapping: str
    kind: JobKind
    trigger: IntervalTrigger | CronTrigger
    signature: str


def plan_jobs(config: Config, timezone: tzinfo | None = None) -> list[JobSpec]:
    """The jobs for ``config``: an incremental and a full job per enabled mapping.

    Pure apart from building trigger objects; raises :class:`ConfigError` for an unusable schedule,
    so that a reload can reject the config before anything changes.
    """
    interval = config.schedule.interval
    if interval < MIN_INTERVAL:
        raise ConfigError(
            f"schedule.interval is {interval:g}s; it must be at least {MIN_INTERVAL:g}s",
            hint="write e.g. interval: 10m",
        )
    cron = crontab_trigger(config.schedule.full_reconcile, timezone)
    specs: list[JobSpec] = []
    for m in config.mappings:
        if not m.enabled:
            continue
        definition = m.model_dump_json()
        specs.append(
            JobSpec(
                id=f"{m.name}:incremental",
                mapping=m.name,
                kind="incremental",
                trigger=IntervalTrigger(seconds=interval, timezone=timezone),
                signature=f"{definition}|every {interval!r}",
            )
        )
        specs.append(
            JobSpec(
                id=f"{m.name}:full",
                mapping=m.name,
                kind="full",
                trigger=cron,
                signature=f"{definition}|cron {config.schedule.full_reconcile}",
            )
        )
    return specs


class _CoalescedAtInfo(logging.Filter):
    """APScheduler logs a skipped tick of a still-running job as a WARNING; here that is by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and "maximum number of running instances" in str(record.msg):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_COALESCED_FILTER = _CoalescedAtInfo()


class MappingScheduler:
    """Runs ``runner(mapping, full)`` on each mapping's schedule; see the module docstring."""

    def __init__(
        self,
        runner: Runner,
        *,
        timezone: tzinfo | None = None,
        clock: Callable[[tzinfo], datetime] = datetime.now,
    ) -> None:
        """``clock(tz)`` is what "now" is when a new job's first run is set (tests pass a fake one)."""
        self._runner = runner
        self._clock = clock
        options: dict[str, Any] = {
            "job_defaults": {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        }
        if timezone is not None:
            options["timezone"] = timezone
        self._scheduler = AsyncIOScheduler(**options)
        self.timezone: tzinfo = self._scheduler.timezone
        self._signatures: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, str] = {}  # mapping -> mode of the run going on
        self._full_pending: set[str] = set()
        self._stopping = False
        aps = logging.getLogger("apscheduler")
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG and aps.level == logging.NOTSET:
            aps.setLevel(logging.WARNING)  # "Running job ..." twice a tick per mapping is noise
        sched_logger = logging.getLogger("apscheduler.scheduler")
        if _COALESCED_FILTER not in sched_logger.filters:
            sched_logger.addFilter(_COALESCED_FILTER)

    # -- jobs ----------------------------------------------------------------------------------
    def apply(self, config: Config) -> None:
        """Make the jobs match ``config``: new or changed ones are (re)added, removed ones dropped,
        unchanged ones keep their next run time. A new or changed mapping's incremental job runs at
        once. Raises :class:`ConfigError` (and changes nothing) when the schedule is unusable."""
        specs = plan_jobs(config, self.timezone)
        wanted = {s.id: s for s in specs}
        for job_id in list(self._signatures):
            if job_id not in wanted:
                self._scheduler.remove_job(job_id)
                del self._signatures[job_id]
                log.info("job removed", job=job_id)
        now = self._clock(self.timezone)
        for spec in specs:
            if self._signatures.get(spec.id) == spec.signature:
                continue
            extra: dict[str, Any] = {"next_run_time": now} if spec.kind == "incremental" else {}
            self._scheduler.add_job(
                self._fire,
                spec.trigger,
                args=(spec.mapping, spec.kind),
                id=spec.id,
                name=spec.id,
                replace_existing=True,
                **extra,
            )
            action = "job replaced" if spec.id in self._signatures else "job added"
            self._signatures[spec.id] = spec.signature
            log.info(action, job=spec.id, trigger=str(spec.trigger))

    def start(self) -> None:
        """Start firing jobs (call from the running event loop)."""
        self._scheduler.start()

    def next_runs(self, mapping: str) -> dict[str, datetime | None]:
        """When the mapping's jobs fire next: ``{"incremental": dt, "full": dt}`` (None: not scheduled)."""
        out: dict[str, datetime | None] = {}
        for kind in ("incremental", "full"):
            job = self._scheduler.get_job(f"{mapping}:{kind}")
            out[kind] = job.next_run_time if job is not None else None
        return out

    def running(self) -> dict[str, str]:
        """The mappings with a run going on, and its mode."""
        return dict(self._running)

    def busy(self, mapping: str) -> bool:
        return mapping in self._locks and self._locks[mapping].locked()

    # -- running -------------------------------------------------------------------------------
    async def _fire(self, mapping: str, kind: JobKind) -> None:
        """The APScheduler job. It lives as long as the run, which is what makes ``max_instances=1``
        hold; the run itself is our own task, so that APScheduler's shutdown never cancels it."""
        if self._stopping:
            return
        task = asyncio.create_task(self._run(mapping, kind), name=f"syncd run {mapping} ({kind})")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.shield(task)

    async def run_now(self, mapping: str, full: bool = False) -> None:
        """Run a mapping outside its schedule (same serialization rules); returns when it is done."""
        await self._fire(mapping, "full" if full else "incremental")

    async def _run(self, mapping: str, kind: JobKind) -> None:
        lock = self._locks.setdefault(mapping, asyncio.Lock())
        if kind == "incremental" and lock.locked():
            log.info(
                "previous run still going; this tick is skipped",
                mapping=mapping,
                running=self._running.get(mapping),
            )
            return
        async with lock:  # a full reconcile waits here for the run in progress
            if self._stopping:
                return
            full = kind == "full" or mapping in self._full_pending
            self._full_pending.discard(mapping)
            self._running[mapping] = "full" if full else "incremental"
            try:
                ran = await self._runner(mapping, full)
            except Exception:
                log.exception("run crashed", mapping=mapping)
                ran = True
            finally:
                self._running.pop(mapping, None)
            if not ran and full:
                self._full_pending.add(mapping)
                log.info("full reconcile postponed to the mapping's next tick", mapping=mapping)

    async def stop(self, grace: float) -> bool:
        """Stop firing; let runs in progress finish for ``grace`` seconds, then cancel them.

        Cancelled runs get :data:`CANCEL_GRACE` seconds to record their end (the engine does that
        shielded). Returns True when every run finished by itself.
        """
        self._stopping = True
        if self._scheduler.running:
            self._scheduler.pause()
        tasks = set(self._tasks)
        finished = True
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(0.0, grace))
            if pending:
                finished = False
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=CANCEL_GRACE)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        return finished
