"""Prometheus metrics of one daemon, fed as an :class:`~syncd.http.HttpObserver` and an engine
:class:`~syncd.run.Reporter`, served at ``/metrics``.

Every daemon (and every test) gets its own :class:`~prometheus_client.CollectorRegistry`, never the
process-global one, so two daemons in one test process do not share counters.

=========================================  =========  ======================  ==========================
metric                                     type       labels                  fed by
=========================================  =========  ======================  ==========================
``syncd_items_total``                      counter    mapping, result         engine progress, run end
``syncd_http_requests_total``              counter    api, method, status     each response (0: none)
``syncd_http_retries_total``               counter    api, reason             each retry
``syncd_rate_limit_wait_seconds_total``    counter    api                     Retry-After, rate limit
``syncd_normalize_duration_seconds``       histogram                          each picture normalized
``syncd_runs_total``                       counter    mapping, mode, outcome  each run end
``syncd_run_duration_seconds``             histogram  mapping, mode           each run end
``syncd_run_in_progress``                  gauge      mapping                 run start and end
``syncd_last_run_timestamp_seconds``       gauge      mapping                 each run end
``syncd_last_success_timestamp_seconds``   gauge      mapping                 run end, ok or partial
``syncd_ledger_items``                     gauge                              after each run
``syncd_build_info``                       info       version                 start
``syncd_start_time_seconds``               gauge                              start
``syncd_schedule_interval_seconds``        gauge      mapping                 start, reload
``syncd_ready``                            gauge                              each scrape (``/readyz``)
``syncd_ready_check``                      gauge      check                   each scrape (``/readyz``)
=========================================  =========  ======================  ==========================

Every metric with a ``mapping`` label also has a ``company`` label: the Business Central company the
mapping writes to, as the config names it (``company:`` of the mapping, else
``businesscentral.company``). The label sets of a configured mapping exist from the start with 0
(items by result, runs by mode and outcome), so ``increase()`` sees the first failure too.
``contrib/prometheus/syncd-rules.yml`` alerts on these; ``contrib/grafana/syncd.json`` shows them.

All observer and reporter methods are cheap and never raise: a metrics bug must not fail a sync.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter as Tally
from collections.abc import Callable, Mapping

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from syncd import __version__
from syncd.types import Outcome

__all__ = ["CONTENT_TYPE", "Metrics"]

log = structlog.get_logger("syncd.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
_OUTCOMES = frozenset(o.value for o in Outcome)
_NORMALIZE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_RUN_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
_RUN_OUTCOMES = ("ok", "partial", "failed", "safety_stop", "interrupted", "budget", "locked")
_SCHEDULED_MODES = ("incremental", "full")


class Metrics:
    """The daemon's metrics. Pass it to ``open_runtime(observer=..., reporter=...)``."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._clock = clock
        r = self.registry
        self.items = Counter(
            "syncd_items",
            "Items (matched source records) by how a run ended for them.",
            ["mapping", "company", "result"],
            registry=r,
        )
        self.http_requests = Counter(
            "syncd_http_requests",
            "API responses by HTTP status (0: connection failed, no response).",
            ["api", "method", "status"],
            registry=r,
        )
        self.http_retries = Counter(
            "syncd_http_retries",
            "Requests sent again, by HTTP status or connection error class.",
            ["api", "reason"],
            registry=r,
        )
        self.rate_limit_wait = Counter(
            "syncd_rate_limit_wait_seconds",
            "Seconds spent waiting for Retry-After or the request rate limit before sending.",
            ["api"],
            registry=r,
        )
        self.normalize_duration = Histogram(
            "syncd_normalize_duration_seconds",
            "Time to normalize one picture (decode, resize, encode).",
            buckets=_NORMALIZE_BUCKETS,
            registry=r,
        )
        self.runs = Counter(
            "syncd_runs",
            "Runs by outcome (ok, partial, failed, safety_stop, interrupted, budget, locked).",
            ["mapping", "company", "mode", "outcome"],
            registry=r,
        )
        self.run_duration = Histogram(
            "syncd_run_duration_seconds",
            "Duration of a mapping's run.",
            ["mapping", "company", "mode"],
            buckets=_RUN_BUCKETS,
            registry=r,
        )
        self.run_in_progress = Gauge(
            "syncd_run_in_progress",
            "1 while a run of the mapping is going on.",
            ["mapping", "company"],
            registry=r,
        )
        self.last_run = Gauge(
            "syncd_last_run_timestamp_seconds",
            "Unix time the mapping's last run ended, whatever its outcome.",
            ["mapping", "company"],
            registry=r,
        )
        self.last_success = Gauge(
            "syncd_last_success_timestamp_seconds",
            "Unix time the mapping's last run that went through ended (outcome ok or partial); after a "
            "restart, the last such run in the ledger.",
            ["mapping", "company"],
            registry=r,
        )
        self.ledger_items = Gauge("syncd_ledger_items", "Rows in the ledger's items table.", registry=r)
        Info("syncd_build", "syncd version.", registry=r).info({"version": __version__})
        self.start_time = Gauge(
            "syncd_start_time_seconds", "Unix time this syncd process started.", registry=r
        )
        self.start_time.set(clock())
        self.schedule_interval = Gauge(
            "syncd_schedule_interval_seconds",
            "schedule.interval of each enabled mapping of the config in effect (seconds).",
            ["mapping", "company"],
            registry=r,
        )
        self.ready = Gauge(
            "syncd_ready",
            "1 when /readyz answers ready (config in effect, last authentication ok, ledger writable).",
            registry=r,
        )
        self.ready_check = Gauge(
            "syncd_ready_check",
            "Each readiness check of /readyz: 1 passing, 0 failing (check: config, auth, ledger, state).",
            ["check"],
            registry=r,
        )
        self._seen: dict[str, Tally[str]] = {}
        self._company: dict[str, str] = {}
        self._intervals: dict[str, tuple[str, float]] = {}

    # -- configuration ---------------------------------------------------------------------------
    def company_of(self, mapping: str) -> str:
        """The ``company`` label of a mapping (empty until :meth:`set_mappings` names it)."""
        return self._company.get(mapping, "")

    def set_mappings(self, companies: Mapping[str, str], intervals: Mapping[str, float]) -> None:
        """The config in effect: each mapping's company label, and the schedule interval of each
        enabled one (a mapping gone from the config or disabled loses its interval series)."""
        self._company.update(companies)
        for name, (company, _) in list(self._intervals.items()):
            if name not in intervals or self.company_of(name) != company:
                with contextlib.suppress(KeyError):
                    self.schedule_interval.remove(name, company)
                del self._intervals[name]
        for name, seconds in intervals.items():
            company = self.company_of(name)
            self.schedule_interval.labels(mapping=name, company=company).set(seconds)
            self._intervals[name] = (company, seconds)
            for result in _OUTCOMES:
                self.items.labels(mapping=name, company=company, result=result).inc(0)
            for mode in _SCHEDULED_MODES:
                for outcome in _RUN_OUTCOMES:
                    self.runs.labels(mapping=name, company=company, mode=mode, outcome=outcome).inc(0)

    def set_last_success(self, mapping: str, timestamp: float) -> None:
        """Seed the last success from the ledger at start, so a restart does not forget it."""
        self.last_success.labels(mapping=mapping, company=self.company_of(mapping)).set(timestamp)

    def set_readiness(self, ready: bool, checks: Mapping[str, bool]) -> None:
        self.ready.set(1 if ready else 0)
        for name, ok in checks.items():
            self.ready_check.labels(check=name).set(1 if ok else 0)

    # -- HttpObserver --------------------------------------------------------------------------
    def on_response(self, api: str, method: str, status: int) -> None:
        self.http_requests.labels(api=api, method=method.upper(), status=str(status)).inc()

    def on_retry(self, api: str, reason: str) -> None:
        self.http_retries.labels(api=api, reason=reason).inc()

    def on_wait(self, api: str, seconds: float) -> None:
        if seconds > 0:
            self.rate_limit_wait.labels(api=api).inc(seconds)

    # -- engine Reporter -----------------------------------------------------------------------
    def phase(self, mapping: str, text: str, total: int | None) -> None:
        pass

    def checked(self, mapping: str) -> None:
        pass

    def advance(self, mapping: str, outcome: Outcome) -> None:
        value = str(outcome)
        self.items.labels(mapping=mapping, company=self.company_of(mapping), result=value).inc()
        self._seen.setdefault(mapping, Tally())[value] += 1

    def normalized(self, seconds: float) -> None:
        self.normalize_duration.observe(max(0.0, seconds))

    # -- runs ----------------------------------------------------------------------------------
    def run_started(self, mapping: str) -> None:
        self._seen[mapping] = Tally()
        self.run_in_progress.labels(mapping=mapping, company=self.company_of(mapping)).set(1)

    def run_finished(
        self,
        mapping: str,
        mode: str,
        outcome: str,
        seconds: float,
        counts: Mapping[str, int] | None = None,
    ) -> None:
        """A run ended. ``counts`` (the run's :meth:`RunCounts.as_dict`) tops up item results the
        engine decided without reporting them item by item (unmatched and ambiguous records)."""
        seen = self._seen.pop(mapping, Tally())
        company = self.company_of(mapping)
        for result, n in (counts or {}).items():
            missing = n - seen[result]
            if result in _OUTCOMES and missing > 0:
                self.items.labels(mapping=mapping, company=company, result=result).inc(missing)
        now = self._clock()
        self.run_in_progress.labels(mapping=mapping, company=company).set(0)
        self.runs.labels(mapping=mapping, company=company, mode=mode, outcome=outcome).inc()
        self.run_duration.labels(mapping=mapping, company=company, mode=mode).observe(max(0.0, seconds))
        self.last_run.labels(mapping=mapping, company=company).set(now)
        if outcome in ("ok", "partial"):
            self.last_success.labels(mapping=mapping, company=company).set(now)

    def set_ledger_items(self, n: int) -> None:
        self.ledger_items.set(n)

    # -- exposition ----------------------------------------------------------------------------
    def render(self) -> bytes:
        """The registry in the Prometheus text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)
