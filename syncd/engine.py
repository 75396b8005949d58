"""One run of one mapping: list both sides, match, decide, normalize, write, record.

The run has two phases so that nothing changes before the whole plan is known:

Listing              both listings stream page by page into the run's store (:mod:`syncd.staging`, a
                     scratch SQLite database) and are matched there in SQL: memory does not grow
                     with the number of records.
Fingerprints         how phase A learns which pictures changed (:mod:`syncd.fingerprints`): one pass
                     over SuperOffice's Dynamic archive provider for every picture at once (bulk), or
                     ImageInfo per record (per_record); chosen, verified and recorded per run.
Phase A (read only)  walk the pairs in chunks (one batched ledger read per chunk): take each matched
                     source's picture fingerprint and decide with
                     :func:`syncd.decisions.decide_before_fetch`: skip / fetch / keep / blank / clear.
                     The decisions go to the store: settled items (skip, blank, keep) with the ledger
                     row to record, fetch and clear items with the ledger row they were decided from.
                     Safety stops are checked next: an empty source listing while the ledger knows
                     items, or more clears than ``limits.max_clears`` or ``max_clears_percent`` —
                     the run stops with nothing changed (not even the ledger) unless ``--force``.
Phase B (writes)     the settled rows are recorded (a transaction per 2,000); then a bounded pool of
                     workers takes the fetch and clear items as the store hands them out: download the
                     source picture, hash it BEFORE any decode, decide again with
                     :func:`syncd.decisions.decide_after_fetch`, normalize off the event loop only when
                     needed, PATCH with ``If-Match`` = the picture etag we listed, and commit the ledger
                     row for that item at once (a crash loses at most the items in flight).
                     A picture is cleared only on a positive blank signal (ImageInfo empty, or
                     ``…/Image`` answering 204 or an empty JSON result), never on a 404; blanks found
                     only here count against both clear caps and are cleared last (past a cap: exit 4).

``--dry-run`` makes the target read-only and the ledger untouched: writes and clears become plan
entries. Budgets (``max_items_per_run``, ``max_runtime``) and a stop request end phase B cleanly.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import structlog

from syncd import imaging, transitions
from syncd.businesscentral import BusinessCentralClient
from syncd.clock import SecondStamps
from syncd.config import Config, MappingConfig
from syncd.decisions import (
    FINGERPRINT_UNAVAILABLE,
    Policy,
    Post,
    Pre,
    SourceState,
    TargetState,
    decide_after_fetch,
    decide_before_fetch,
)
from syncd.errors import (
    ApiError,
    AuthError,
    ImageError,
    PermissionDeniedError,
    PreconditionFailedError,
    SafetyStop,
    SyncdError,
    UnreachableError,
)
from syncd.fingerprints import Fingerprints, choose
from syncd.ledger import (
    Issue,
    IssueKind,
    Ledger,
    LedgerItem,
    item_from_row,
    item_row,
    same_but_checked,
    utcnow,
)
from syncd.matcher import MatchRule, Pair, Problem
from syncd.staging import CHUNK, Planned, RunStore
from syncd.superoffice import NoPicture, SuperOfficeClient
from syncd.types import Outcome, PlanAction, RunCounts, RunOutcome, SourceKind, TargetPicture

log = structlog.get_logger("syncd.engine")
T = TypeVar("T")

PENDING = "pending:"  # ledger etag prefix: written, BC did not tell the new etag; confirmed at next listing
THUMBS_PER_RUN = 20
SETTLE_BATCH = 2000  # ledger rows recorded per transaction after phase A (a commit is an fsync)


@dataclass(frozen=True, slots=True)
class RunOptions:
    full: bool = False
    dry_run: bool = False
    force: bool = False


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """One line of a ``--dry-run`` plan (also kept for the summary of a real run's failures)."""

    action: PlanAction
    source: str  # "contact 12"
    target: str  # "customers C00012 (guid)"
    detail: str = ""


@dataclass(slots=True)
class RunResult:
    mapping: str
    mode: str
    run_id: int | None = None
    counts: RunCounts = field(default_factory=RunCounts)
    outcome: RunOutcome = RunOutcome.OK
    error: str | None = None
    failures: list[PlanEntry] = field(default_factory=list)
    problems: list[PlanEntry] = field(default_factory=list)
    plan: list[PlanEntry] = field(default_factory=list)
    match_problems: list[Problem] = field(default_factory=list)
    failed_items: list[tuple[int, str, str]] = field(default_factory=list)  # (source id, target id, error)
    change_detection: str | None = None  # bulk | per_record (syncd.fingerprints)
    change_detection_note: str | None = None  # why per_record when auto fell back, or the verification
    started: float = 0.0
    finished: float = 0.0

    @property
    def duration(self) -> float:
        return max(0.0, self.finished - self.started)


class Reporter(Protocol):
    """Receives progress; the CLI draws a bar, the daemon feeds metrics. Must never raise."""

    def phase(self, mapping: str, text: str, total: int | None) -> None: ...
    def checked(self, mapping: str) -> None: ...  # one pair's fingerprint read (phase A progress)
    def advance(self, mapping: str, outcome: Outcome) -> None: ...
    def normalized(self, seconds: float) -> None: ...


class NullReporter:
    def phase(self, mapping: str, text: str, total: int | None) -> None:
        pass

    def checked(self, mapping: str) -> None:
        pass

    def advance(self, mapping: str, outcome: Outcome) -> None:
        pass

    def normalized(self, seconds: float) -> None:
        pass


class Normalizer(Protocol):
    """:func:`syncd.imaging.normalize`, awaitable (run off the event loop)."""

    def __call__(
        self, data: bytes, profile: imaging.PictureProfile, thumbnail: imaging.PictureProfile | None = None
    ) -> Awaitable[imaging.NormalizedPicture]: ...


def executor_normalizer(executor: Executor | None) -> Normalizer:
    """Run :func:`syncd.imaging.normalize` in ``executor`` (threads or processes), off the loop."""

    async def run(
        data: bytes, profile: imaging.PictureProfile, thumbnail: imaging.PictureProfile | None = None
    ) -> imaging.NormalizedPicture:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, imaging.normalize, data, profile, thumbnail)

    return run


THUMBNAIL = imaging.PictureProfile(max_width=96, max_height=96, format="JPEG", quality=70)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


OFF_LOOP_HASH_BYTES = 1_000_000  # hashing 1 MB takes ~0.7 ms; a 12 MP PNG (10 MB) would block the loop 7 ms


async def sha256_off_loop(data: bytes) -> str:
    """``sha256`` of a source picture, in a thread when it is big enough to hold up the event loop."""
    if len(data) < OFF_LOOP_HASH_BYTES:
        return sha256(data)
    return await asyncio.to_thread(sha256, data)


@dataclass(slots=True)
class _Work:
    pair: Pair
    item: LedgerItem | None
    fingerprint: str | None
    target: TargetState
    action: Pre
    known_broken: bool = False  # failed last time on this very picture (not decodable): don't retry


class Engine:
    """Runs mappings. Every collaborator is injected, so tests run the real code on the sandbox."""

    def __init__(
        self,
        *,
        config: Config,
        source: SuperOfficeClient,
        target: BusinessCentralClient,
        ledger: Ledger | None,
        normalizer: Normalizer,
        targets: Mapping[str, BusinessCentralClient] | None = None,  # by mapping name (its company)
        reporter: Reporter | None = None,
        clock: Callable[[], float] = time.monotonic,
        stop: asyncio.Event | None = None,
        chunk_size: int = CHUNK,
    ) -> None:
        self.config = config
        self.chunk_size = chunk_size  # pairs per step through the run's store (and per ledger read)
        self.source = source
        self.target = target
        self.targets = dict(targets or {})
        self.ledger = ledger
        self.normalizer = normalizer
        self.reporter: Reporter = reporter or NullReporter()
        self.clock = clock
        self.now = SecondStamps(ledger.clock if ledger is not None else utcnow)  # the ledger's, to the second
        self.stop = stop or asyncio.Event()
        self.profile = config.picture_profile()
        self.normalizer_version = self.profile.cache_key()

    def _target(self, mapping: MappingConfig) -> BusinessCentralClient:
        """The client of the company ``mapping`` writes to."""
        return self.targets.get(mapping.name, self.target)

    # ------------------------------------------------------------------------------------------
    async def run_mapping(self, mapping: MappingConfig, options: RunOptions = RunOptions()) -> RunResult:
        mode = "dry-run" if options.dry_run else ("full" if options.full else "incremental")
        result = RunResult(mapping=mapping.name, mode=mode, started=time.time())
        max_runtime = self.config.limits.max_runtime
        deadline = self.clock() + max_runtime if max_runtime else None  # the whole run, listings included
        writable = not options.dry_run and self.ledger is not None
        if writable:
            assert self.ledger is not None
            result.run_id = await self.ledger.start_run(mapping.name, mode)
        bound = log.bind(mapping=mapping.name, mode=mode, run_id=result.run_id)
        bound.info("run started")
        try:
            await self._run(mapping, options, result, deadline)
        except SafetyStop as exc:
            result.outcome, result.error = RunOutcome.SAFETY_STOP, str(exc)
            bound.error("safety stop", error=str(exc))
            raise
        except (AuthError, UnreachableError, ApiError, SyncdError) as exc:
            result.outcome, result.error = RunOutcome.FAILED, str(exc)
            bound.error("run failed", error=str(exc))
            raise
        except asyncio.CancelledError:
            result.outcome, result.error = RunOutcome.INTERRUPTED, "cancelled"
            raise
        except Exception as exc:  # a bug or a reply nobody foresaw: the ledger says so, never "ok"
            result.outcome, result.error = (
                RunOutcome.FAILED,
                f"internal error: {type(exc).__name__}: {exc}"[:2000],
            )
            bound.error("run failed", error=result.error)
            raise
        finally:
            result.finished = time.time()
            if writable and result.run_id is not None:
                assert self.ledger is not None
                await asyncio.shield(
                    self.ledger.finish_run(
                        result.run_id, result.counts.as_dict(), result.outcome, result.error
                    )
                )
            bound.info(
                "run finished",
                outcome=result.outcome,
                seconds=round(result.duration, 3),
                **{k: v for k, v in result.counts.as_dict().items() if v},
            )
        return result

    async def _run(
        self, mapping: MappingConfig, options: RunOptions, result: RunResult, deadline: float | None = None
    ) -> None:
        kind: SourceKind = mapping.source
        rule = MatchRule.of(
            mapping.match.source if mapping.match else None,
            mapping.match.target if mapping.match else None,
            mapping.pairs,
        )
        async with RunStore.open(rule, kind, mapping.target) as store:
            stopped = await self._list(mapping, store, result, deadline)
            if stopped:  # max_runtime or a stop request while listing: nothing was changed
                return
            known = await self.ledger.count_items(mapping.name) if self.ledger else 0
            if not await store.count_sources() and known and not options.force:
                raise SafetyStop(
                    f"mapping {mapping.name!r}: SuperOffice listed no {kind}s, but the ledger knows {known}",
                    hint="a wrong tenant or lost permissions look like this; check, then rerun with --force",
                )
            self._report_problems(kind, await store.match(), result)
            done, fingerprints = await self._until(
                self._detect(mapping, store, options, result, first_sync=not known), deadline
            )
            if not done or fingerprints is None:  # the picture pass is read-only too: nothing was changed
                if self.stop.is_set():
                    result.outcome = RunOutcome.INTERRUPTED
                else:
                    result.outcome = RunOutcome.BUDGET
                    limit = self.config.limits.max_runtime
                    result.error = f"max_runtime ({limit:g}s) reached while reading picture fingerprints"
                return
            watermark = await self.ledger.get_watermark(mapping.name, kind) if self.ledger else None

            total = await store.count_pairs()
            policy = Policy(
                on_source_blank=mapping.on_source_blank, on_target_changed=mapping.on_target_changed
            )
            settled = await self._phase_a(
                mapping, store, total, policy, options, watermark, fingerprints, deadline
            )
            if settled is None:  # stopped while checking: nothing was changed, nothing half-done
                if self.stop.is_set():
                    result.outcome = RunOutcome.INTERRUPTED
                else:
                    result.outcome = RunOutcome.BUDGET
                    result.error = f"max_runtime ({self.config.limits.max_runtime:g}s) reached while checking"
                return
            clears = await store.count_plan(Pre.CLEAR.value)
            self._check_clear_cap(mapping, clears, max(known, total), options)

            settled.report(mapping.name, result, self.reporter)
            if self.ledger and not options.dry_run:
                async for batch in store.settled(SETTLE_BATCH):  # one transaction per batch
                    await self.ledger.record_rows([row for _, row in batch if row is not None])
                    checked = [sid for sid, row in batch if row is None]
                    await self.ledger.set_checked(mapping.name, kind, checked, self.now())
            # Phase B: fetch, normalize, write, clear.
            await self._execute(mapping, store, clears, policy, options, result, deadline, max(known, total))
            newest = await store.newest_update()

        failed = result.counts.by_outcome.get(Outcome.FAILED, 0)
        if result.outcome is RunOutcome.OK and failed:
            result.outcome = RunOutcome.PARTIAL
        if self.ledger and not options.dry_run:
            assert result.run_id is not None
            await self.ledger.replace_issues(result.run_id, mapping.name, _issues(mapping, result))
            # Failed items are retried by their ledger status, not by the watermark, so a partial
            # run may advance it too; an interrupted or budget-limited one may not.
            if (
                result.outcome in (RunOutcome.OK, RunOutcome.PARTIAL)
                and newest
                and (watermark is None or newest > watermark)
            ):
                await self.ledger.set_watermark(mapping.name, kind, newest)

    async def _phase_a(
        self,
        mapping: MappingConfig,
        store: RunStore,
        total: int,
        policy: Policy,
        options: RunOptions,
        watermark: str | None,
        fingerprints: Fingerprints,
        deadline: float | None = None,
    ) -> _Settled | None:
        """Fingerprints and first decisions (read only), a chunk of pairs at a time. The decisions go
        to the store, so the plan for 200,000 pairs costs no memory either; what the chunk settles
        without writing is noted in the returned :class:`_Settled`. None: stopped meanwhile."""
        self.reporter.phase(mapping.name, "checking pictures", total)
        unchanged_before = self._trusted_cutoff(watermark, options)
        settled = _Settled()
        async for pairs in store.pairs(self.chunk_size):
            ids = [p.source.id for p in pairs]
            stored = await self.ledger.get_items(mapping.name, mapping.source, ids) if self.ledger else {}
            _, work = await self._until(
                self._plan(
                    mapping,
                    pairs,
                    self._applicable(stored, pairs),
                    policy,
                    options,
                    unchanged_before,
                    fingerprints,
                    deadline,
                ),
                deadline,
            )
            if work is None or self.stop.is_set() or (deadline is not None and self.clock() >= deadline):
                return None
            rows: list[tuple[int, tuple[Any, ...] | None]] = []
            planned: list[tuple[int, str, str | None, tuple[Any, ...] | None]] = []
            for w in work:
                if w.known_broken or w.action not in (Pre.FETCH, Pre.CLEAR):
                    row = self._settle(mapping, w, options, settled)
                    if not options.dry_run:  # None: the row stays as it is, but for checked_at
                        values = item_row(row)
                        before = stored.get(w.pair.source.id)
                        same = before is not None and same_but_checked(item_row(before), values)
                        rows.append((w.pair.source.id, None if same else values))
                else:
                    item = item_row(w.item) if w.item else None
                    planned.append((w.pair.source.id, w.action.value, w.fingerprint, item))
            await store.add_settled(rows)
            await store.add_plan(planned)
        return settled

    async def _list(
        self, mapping: MappingConfig, store: RunStore, result: RunResult, deadline: float | None
    ) -> bool:
        """Both listings into the store, bounded by ``max_runtime`` and the stop event (a listing that
        does not end, or a stalled page, cannot hold the run); True when stopped (outcome set). Records
        the listings skipped as malformed are reported as failures."""
        bad: list[str] = []
        finished, _ = await self._until(self._list_all(mapping, store, bad.append), deadline)
        if finished:  # (a listing error has failed the run)
            for text in bad:
                result.counts.add(Outcome.FAILED)
                result.failures.append(PlanEntry(PlanAction.FAILED, "(listing)", "", text))
            return False
        if self.stop.is_set():
            result.outcome = RunOutcome.INTERRUPTED
        else:
            result.outcome = RunOutcome.BUDGET
            result.error = f"max_runtime ({self.config.limits.max_runtime:g}s) reached while listing"
        return True

    async def _until(self, work: Awaitable[T], deadline: float | None) -> tuple[bool, T | None]:
        """``work`` raced against ``deadline`` and the stop event: (True, its result), or (False, None)
        when it was cancelled first — a read-only step (a listing, phase A's reads) never holds the run
        past ``max_runtime`` or a stop request, not even with a request hanging. Its errors propagate."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            await asyncio.wait({task, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            return False, None
        return True, task.result()

    async def _list_all(self, mapping: MappingConfig, store: RunStore, on_bad: Callable[[str], None]) -> None:
        """Stream both listings into the store, a page's worth of rows at a time."""
        self.reporter.phase(mapping.name, f"listing {mapping.target}", None)
        target_fields = [mapping.match.target] if mapping.match else []
        batch: list[Any] = []
        async for row in self._target(mapping).list(mapping.target, target_fields, on_bad=on_bad):
            batch.append(row)
            if len(batch) >= self.chunk_size:
                await store.add_targets(batch)
                batch = []
        await store.add_targets(batch)
        self.reporter.phase(mapping.name, f"listing {mapping.source}s", None)
        columns = [mapping.match.source] if mapping.match else []
        batch = []
        async for source in self.source.list(mapping.source, columns, on_bad=on_bad):
            batch.append(source)
            if len(batch) >= self.chunk_size:
                await store.add_sources(batch)
                batch = []
        await store.add_sources(batch)

    def _applicable(self, items: dict[int, LedgerItem], pairs: list[Pair]) -> dict[int, LedgerItem]:
        """The ledger rows of ``pairs`` as they apply to the listed BC records: a write whose new etag
        BC did not tell is confirmed by this listing; a row about another BC record (the key now points
        elsewhere) does not apply — that pair is a first sync there."""
        out: dict[int, LedgerItem] = {}
        for p in pairs:
            item = self._confirm_pending(items.get(p.source.id), p.target.picture)
            if item is not None and item.target_id in (None, p.target.id):
                out[p.source.id] = item
        return out

    def _settle(self, mapping: MappingConfig, w: _Work, options: RunOptions, settled: _Settled) -> LedgerItem:
        """Phase A's outcome for an item it settles without writing (skip, blank, keep, or a picture
        known to be broken), noted in ``settled``; returns the ledger row to record."""
        if w.known_broken:  # the same undecodable picture as last time: report, don't re-download
            assert w.item is not None
            error = w.item.error or "picture cannot be used"
            entry = PlanEntry(
                PlanAction.FAILED,
                f"{mapping.source} {w.pair.source.id}",
                f"{mapping.target} {w.pair.target.number}",
                f"{error} (unchanged since last run)",
            )
            settled.add(Outcome.FAILED, entry if options.dry_run else None)
            settled.failures.append(entry)
            settled.failed_items.append((w.pair.source.id, _target_label(w.pair), error))
            return transitions.checked(w.item, at=self.now())
        outcome = {Pre.SKIP: Outcome.UNCHANGED, Pre.BLANK: Outcome.BLANK, Pre.KEEP: Outcome.KEPT}[w.action]
        settled.add(outcome, _plan_entry(w, PlanAction(w.action.value)) if options.dry_run else None)
        return self._checked(mapping, w, outcome)

    # -- phase A ---------------------------------------------------------------------------------
    async def _plan(
        self,
        mapping: MappingConfig,
        pairs: list[Pair],
        items: dict[int, LedgerItem],
        policy: Policy,
        options: RunOptions,
        unchanged_before: datetime | None,
        fingerprints: Fingerprints,
        deadline: float | None = None,
    ) -> list[_Work]:
        work: list[_Work | None] = [None] * len(pairs)
        known = await fingerprints.known([p.source.id for p in pairs])  # bulk: all; per_record: none
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(pairs)):
            queue.put_nowait(i)
        unreachable = [0]  # consecutive ImageInfo requests that failed past their retries
        give_up = max(5, 2 * self.config.superoffice.limits.concurrency)

        async def fingerprint_of(pair: Pair) -> str | None:
            """The item's fingerprint; when ImageInfo fails past its retries the item is decided by
            downloading in phase B (where a failure fails this item only), unless SuperOffice looks down."""
            try:
                value = await fingerprints.of(mapping.source, pair.source.id)
            except PermissionDeniedError:
                raise
            except (UnreachableError, ApiError) as exc:
                if isinstance(exc, UnreachableError):
                    unreachable[0] += 1
                    if unreachable[0] >= give_up:
                        raise
                log.warning(
                    "picture fingerprint unavailable; deciding by download",
                    mapping=mapping.name,
                    source_id=pair.source.id,
                    error=exc.message,
                )
                return FINGERPRINT_UNAVAILABLE
            unreachable[0] = 0
            return value

        async def worker() -> None:
            while not queue.empty() and not self.stop.is_set():
                if deadline is not None and self.clock() >= deadline:
                    return  # max_runtime: _phase_a sees it and stops the run before any change
                i = queue.get_nowait()
                pair = pairs[i]
                item = items.get(pair.source.id)
                if pair.source.id in known:
                    fingerprint: str | None = known[pair.source.id]
                elif (
                    unchanged_before is not None
                    and item is not None
                    and item.source_fingerprint
                    and _parse_so_date(pair.source.updated) < unchanged_before
                ):
                    # trust_updated_date: a record not updated since the last good run keeps its picture
                    fingerprint = item.source_fingerprint
                else:
                    fingerprint = await fingerprint_of(pair)
                tstate = _target_state(pair.target.picture)
                action = decide_before_fetch(
                    item,
                    SourceState(fingerprint=fingerprint),
                    tstate,
                    policy,
                    self.normalizer_version,
                    options.full,
                )
                broken = (
                    not options.full
                    and action is Pre.FETCH
                    and item is not None
                    and item.status is Outcome.FAILED
                    and fingerprint not in (None, FINGERPRINT_UNAVAILABLE)
                    and item.source_fingerprint == fingerprint
                    and item.target_etag == tstate.etag
                    and item.normalizer_version == self.normalizer_version
                )
                work[i] = _Work(pair, item, fingerprint, tstate, action, known_broken=broken)
                self.reporter.checked(mapping.name)

        n = min(self.config.superoffice.limits.concurrency, max(1, len(pairs)))
        tasks = [asyncio.ensure_future(worker()) for _ in range(n)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:  # one worker's fatal error: the others stop too, not in the background
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [w for w in work if w is not None]

    def _trusted_cutoff(self, watermark: str | None, options: RunOptions) -> datetime | None:
        """With ``superoffice.trust_updated_date``, records updated before this instant are assumed to
        have the picture they had (no ImageInfo request). One day of overlap: SimpleContact's
        ``updatedDate`` may be a date without time, and clocks differ."""
        if not self.config.superoffice.trust_updated_date or options.full or not watermark:
            return None
        parsed = _parse_so_date(watermark)
        return None if parsed == datetime.max.replace(tzinfo=UTC) else parsed - timedelta(days=1)

    async def _detect(
        self,
        mapping: MappingConfig,
        store: RunStore,
        options: RunOptions,
        result: RunResult,
        *,
        first_sync: bool,
    ) -> Fingerprints:
        """This run's fingerprints (:func:`syncd.fingerprints.choose`), recorded with the run. The
        provider is checked against ImageInfo on the first run on a tenant (no verified bulk run yet, or
        a ledger without items: new, or reset for another tenant) and on every full reconcile."""
        so = self.config.superoffice
        if so.change_detection != "per_record":
            self.reporter.phase(mapping.name, "reading picture fingerprints", None)
        verified = self.ledger is not None and await self.ledger.bulk_verified(mapping.name)
        verify = options.full or first_sync or not verified
        choice = await choose(
            so.change_detection,
            mapping=mapping.name,
            kind=mapping.source,
            client=self.source,
            store=store,
            verify=verify,
            concurrency=so.limits.concurrency,
        )
        result.change_detection, result.change_detection_note = choice.strategy, choice.note
        if self.ledger is not None and result.run_id is not None and not options.dry_run:
            await self.ledger.set_change_detection(result.run_id, choice.strategy, choice.note)
        return choice.fingerprints

    def _confirm_pending(self, item: LedgerItem | None, picture: TargetPicture | None) -> LedgerItem | None:
        """A write whose reply did not carry the new etag is confirmed by the next listing: if the
        listed picture has the dimensions we wrote, its etag is ours."""
        if item is None or not item.target_etag or not item.target_etag.startswith(PENDING):
            return item
        if (
            picture is not None
            and picture.present
            and item.target_etag == _pending_marker(picture.width, picture.height)
        ):
            return transitions.confirmed(item, picture.etag)
        return item

    def _check_clear_cap(
        self, mapping: MappingConfig, clears: int, base: int, options: RunOptions, *, found_late: bool = False
    ) -> None:
        """Both clear caps. ``found_late``: phase B met one more blank than the plan knew of (ImageInfo
        unavailable or changed meanwhile); then the run has already written what it wrote."""
        lim = self.config.limits
        if clears == 0 or options.force:
            return
        percent = 100.0 * clears / max(1, base)
        if clears > lim.max_clears or percent > lim.max_clears_percent:
            late = (
                " (blanks found while downloading; none of them was cleared, pictures written before "
                "the stop stay written)"
                if found_late
                else ""
            )
            raise SafetyStop(
                f"mapping {mapping.name!r} would clear {clears} Business Central pictures "
                f"({percent:.0f}% of {base}){late}; limits: max_clears={lim.max_clears}, "
                f"max_clears_percent={lim.max_clears_percent:g}",
                hint="if the SuperOffice pictures really were removed, rerun with --force",
            )

    def _checked(self, mapping: MappingConfig, w: _Work, outcome: Outcome) -> LedgerItem:
        """The ledger row after phase A settled an item without writing."""
        base = w.item or _new_item(mapping, w.pair)
        if outcome is Outcome.KEPT and w.fingerprint is None:
            return transitions.kept_ours(base, at=self.now())
        if outcome is Outcome.KEPT:
            return transitions.kept_foreign(
                base, target_id=w.pair.target.id, etag=w.target.etag, at=self.now()
            )
        if outcome is Outcome.BLANK:
            return transitions.blank(base, target_id=w.pair.target.id, at=self.now())
        return transitions.unchanged(base, etag=w.target.etag, at=self.now())

    def _report_problems(self, kind: SourceKind, problems: list[Problem], result: RunResult) -> None:
        result.match_problems = problems
        for p in problems:
            outcome = Outcome.UNMATCHED if p.kind == "unmatched" else Outcome.AMBIGUOUS
            for _ in p.source_ids:
                result.counts.add(outcome)
            source = f"{kind} {', '.join(str(s) for s in p.source_ids)}"
            result.problems.append(PlanEntry(PlanAction(p.kind), source, ", ".join(p.target_ids), p.detail))

    # -- phase B ---------------------------------------------------------------------------------
    async def _execute(
        self,
        mapping: MappingConfig,
        store: RunStore,
        clears: int,
        policy: Policy,
        options: RunOptions,
        result: RunResult,
        deadline: float | None = None,
        clear_base: int = 0,
    ) -> None:
        """Phase B: a bounded pool of workers takes the fetch and clear items as the store hands them
        out, a chunk at a time (the queue holds at most one chunk). Blanks that only the download
        reveals are cleared last, once the run knows they stay within both clear caps (``clear_base``
        is the mapping's size for ``max_clears_percent``): one past a cap stops the run (exit 4)
        before any of them is cleared, so the next run stops again rather than clearing the rest."""
        limits = self.config.limits
        total = await store.count_plan()
        if not total:
            return
        self.reporter.phase(mapping.name, "writing pictures", total)
        n = min(limits.concurrency, total)
        queue: asyncio.Queue[_Work | None] = asyncio.Queue(maxsize=self.chunk_size)
        state = {"taken": 0, "consecutive_unreachable": 0, "thumbs": 0, "clears": clears, "base": clear_base}
        fatal: list[BaseException] = []
        deferred: list[_Work] = []  # blanks found while downloading: cleared after the rest

        async def produce() -> None:
            async for chunk in store.planned(self.chunk_size):
                for p in chunk:
                    await queue.put(_work(p))
            for _ in range(n):
                await queue.put(None)

        async def worker() -> None:
            while not fatal:
                w = await queue.get()
                if w is None:
                    return
                if self.stop.is_set():
                    result.outcome = RunOutcome.INTERRUPTED
                    return
                if limits.max_items_per_run is not None and state["taken"] >= limits.max_items_per_run:
                    result.outcome = RunOutcome.BUDGET
                    result.error = f"max_items_per_run ({limits.max_items_per_run}) reached"
                    return
                if deadline is not None and self.clock() >= deadline:
                    result.outcome = RunOutcome.BUDGET
                    result.error = f"max_runtime ({limits.max_runtime:g}s) reached"
                    return
                state["taken"] += 1
                if not await handle(w):
                    return

        async def handle(w: _Work, later: list[_Work] | None = deferred) -> bool:
            """One item, counted and reported; False when the run must end (``fatal``)."""
            try:
                outcome = await self._item(mapping, w, policy, options, result, state, later)
                state["consecutive_unreachable"] = 0
            except (AuthError, SafetyStop) as exc:  # in-flight items finish, no new ones start
                fatal.append(exc)
                return False
            except (UnreachableError, ApiError, ImageError) as exc:
                outcome = Outcome.FAILED
                await self._failed(mapping, w, exc, options, result)
                if isinstance(exc, UnreachableError):
                    state["consecutive_unreachable"] += 1
                    if state["consecutive_unreachable"] >= max(5, 2 * limits.concurrency):
                        fatal.append(exc)
                        return False
            if outcome is not None:  # None: deferred, counted when it is cleared
                result.counts.add(outcome)
                self.reporter.advance(mapping.name, outcome)
            return True

        producer = asyncio.ensure_future(produce())
        workers = [asyncio.ensure_future(worker()) for _ in range(n)]
        pending: set[asyncio.Future[None]] = {producer, *workers}
        try:
            # Until every worker has ended (done, stopped, out of budget or fatal); a failing producer
            # (the ledger or the store) or worker ends the run at once.
            while not all(w.done() for w in workers):
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if (exc := task.exception()) is not None:
                        raise exc
        finally:
            for task in (producer, *workers):
                task.cancel()
            await asyncio.gather(producer, *workers, return_exceptions=True)
        if fatal:
            raise fatal[0]
        for w in deferred:  # within both caps (checked as each was found); not after a stop request
            if self.stop.is_set() or not await handle(w, None):
                break
        if fatal:
            raise fatal[0]

    async def _item(
        self,
        mapping: MappingConfig,
        w: _Work,
        policy: Policy,
        options: RunOptions,
        result: RunResult,
        state: dict[str, int],
        deferred: list[_Work] | None = None,
    ) -> Outcome | None:
        """One fetch or clear item; None: a blank found only now, put in ``deferred`` to clear later."""
        pair, kind = w.pair, mapping.source
        base = w.item or _new_item(mapping, w.pair)
        if w.action is Pre.CLEAR:
            if options.dry_run:
                result.plan.append(_plan_entry(w, PlanAction.CLEAR))
                return Outcome.CLEARED
            try:
                await self._target(mapping).delete_picture(
                    mapping.target, pair.target.id, if_match=w.target.etag
                )
            except PreconditionFailedError:
                # Someone put another picture there since the listing: it is not ours to clear.
                log.warning(
                    "picture changed in Business Central during the run; not cleared",
                    mapping=mapping.name,
                    target=pair.target.id,
                )
                await self._record(
                    transitions.kept_foreign(base, target_id=pair.target.id, etag=None, at=self.now())
                )
                return Outcome.KEPT
            await self._record(transitions.cleared(base, target_id=pair.target.id, at=self.now()))
            return Outcome.CLEARED

        data = await self.source.image(kind, pair.source.id)
        if isinstance(data, NoPicture):  # blank after all (removed meanwhile, or ImageInfo unavailable)
            again = decide_before_fetch(
                w.item, SourceState(fingerprint=None), w.target, policy, self.normalizer_version, options.full
            )
            blank = replace(w, fingerprint=None, action=again)
            if again is Pre.CLEAR and data.confirmed and options.force:
                return await self._item(mapping, blank, policy, options, result, state)  # no cap to wait for
            if again is Pre.CLEAR and data.confirmed and deferred is not None:
                # A positive blank signal: cleared after the other items, within both caps of the run.
                self._check_clear_cap(
                    mapping, state["clears"] + len(deferred) + 1, state["base"], options, found_late=True
                )
                deferred.append(blank)
                return None
            if again is Pre.CLEAR:  # a 404 is no proof of "no picture": never clear on it
                log.warning(
                    "SuperOffice sent no picture, but no positive blank signal (a 404, no ImageInfo): "
                    "keeping the Business Central picture",
                    mapping=mapping.name,
                    source_id=pair.source.id,
                    target=pair.target.number,
                )
                again = Pre.KEEP
            outcome = Outcome.KEPT if again is Pre.KEEP else Outcome.BLANK
            if options.dry_run:
                result.plan.append(_plan_entry(w, PlanAction(again.value)))
            else:
                await self._record(self._checked(mapping, blank, outcome))
            return outcome
        source_hash = await sha256_off_loop(data)
        if decide_after_fetch(w.item, source_hash, None, w.target, self.normalizer_version) is Post.SKIP:
            if options.dry_run:
                result.plan.append(_plan_entry(w, PlanAction.SKIP, "picture re-saved unchanged"))
            else:
                await self._record(
                    transitions.resaved_unchanged(base, fingerprint=w.fingerprint, at=self.now())
                )
            return Outcome.UNCHANGED
        if options.dry_run:
            result.plan.append(
                _plan_entry(w, PlanAction.WRITE, f"{len(data)} bytes, sha256 {source_hash[:12]}")
            )
            return Outcome.WRITTEN

        started = time.perf_counter()
        want_thumbs = self.ledger is not None and state["thumbs"] < THUMBS_PER_RUN
        out = await self.normalizer(data, self.profile, THUMBNAIL if want_thumbs else None)
        self.reporter.normalized(time.perf_counter() - started)
        result.counts.decodes += 1
        output_hash = sha256(out.data)
        if (
            decide_after_fetch(w.item, source_hash, output_hash, w.target, self.normalizer_version)
            is Post.SKIP
        ):
            await self._record(
                transitions.normalized_unchanged(
                    base,
                    fingerprint=w.fingerprint,
                    source_hash=source_hash,
                    normalizer_version=self.normalizer_version,
                    at=self.now(),
                )
            )
            return Outcome.UNCHANGED

        etag = await self._write(mapping, w, out, policy, result)
        if etag is None:  # policy kept the picture someone else put there
            return Outcome.KEPT
        await self._record(
            transitions.written(
                base,
                target_id=pair.target.id,
                target_number=pair.target.number,
                fingerprint=w.fingerprint,
                source_hash=source_hash,
                output_hash=output_hash,
                etag=etag,
                normalizer_version=self.normalizer_version,
                at=self.now(),
            )
        )
        if out.source_thumbnail is not None and state["thumbs"] < THUMBS_PER_RUN:
            state["thumbs"] += 1
            await self._thumbnails(mapping, w, out)
        return Outcome.WRITTEN

    async def _write(
        self,
        mapping: MappingConfig,
        w: _Work,
        out: imaging.NormalizedPicture,
        policy: Policy,
        result: RunResult,
    ) -> str | None:
        """PATCH the picture with the listed etag; on 409/412 re-read and apply the policy.

        Returns the etag to remember, or None when the policy keeps BC's picture.
        """
        kind, rid = mapping.target, w.pair.target.id
        picture = w.pair.target.picture
        etag = w.target.etag
        if not etag:  # the listing did not carry the picture etag: read it (never send `*`)
            picture = await self._target(mapping).get_picture(kind, rid)
            etag = picture.etag
        for attempt in range(2):
            if not etag:
                raise ApiError(
                    f"{kind} {rid}: Business Central gave no picture etag; refusing to write blindly",
                    status=0,
                )
            try:
                new_etag = await self._target(mapping).put_picture(
                    kind, rid, picture, out.data, if_match=etag
                )
                result.counts.patches += 1
                return new_etag or _pending_marker(out.width, out.height)
            except PreconditionFailedError:
                result.counts.patches += 1
                fresh = await self._target(mapping).get_picture(kind, rid)
                if fresh.present:
                    current = await self._target(mapping).picture_content(kind, rid, fresh)
                    if sha256(current) == sha256(out.data):
                        return fresh.etag or _pending_marker(out.width, out.height)  # ours landed already
                log.warning(
                    "picture changed in Business Central during the run",
                    mapping=mapping.name,
                    target=rid,
                    policy=policy.on_target_changed,
                    attempt=attempt + 1,
                )
                if policy.on_target_changed == "keep" and fresh.present:  # an empty picture: fill it
                    await self._record(
                        transitions.kept_foreign(
                            w.item or _new_item(mapping, w.pair),
                            target_id=rid,
                            etag=fresh.etag,
                            at=self.now(),
                        )
                    )
                    return None
                picture, etag = fresh, fresh.etag
        raise PreconditionFailedError(
            f"{kind} {rid}: the picture keeps changing in Business Central; not overwritten", status=409
        )

    async def _failed(
        self, mapping: MappingConfig, w: _Work, exc: BaseException, options: RunOptions, result: RunResult
    ) -> None:
        message = exc.message if isinstance(exc, SyncdError) else str(exc)
        entry = PlanEntry(
            PlanAction.FAILED,
            f"{mapping.source} {w.pair.source.id}",
            f"{mapping.target} {w.pair.target.number}",
            message,
        )
        result.failures.append(entry)
        result.failed_items.append((w.pair.source.id, _target_label(w.pair), message))
        if options.dry_run:
            result.plan.append(entry)
            return
        log.warning(
            "item failed",
            mapping=mapping.name,
            source_id=w.pair.source.id,
            target=w.pair.target.number,
            error=message,
        )
        base = w.item or _new_item(mapping, w.pair)
        # A picture that cannot be decoded stays broken until it changes: remember which one it was,
        # so the next run reports it without downloading it again. Transient errors are retried.
        permanent = isinstance(exc, ImageError)
        await self._record(
            transitions.failed(
                base,
                target_id=w.pair.target.id,
                error=message,
                permanent=permanent,
                fingerprint=w.fingerprint,
                etag=w.target.etag,
                normalizer_version=self.normalizer_version,
                at=self.now(),
            )
        )

    async def _record(self, item: LedgerItem) -> None:
        if self.ledger is not None:
            await asyncio.shield(self.ledger.record(item))

    async def _thumbnails(self, mapping: MappingConfig, w: _Work, out: imaging.NormalizedPicture) -> None:
        """Keep a before/after pair for the status page: the source from the decode that just happened,
        and what was written, decoded again (a small picture, so this costs little)."""
        assert self.ledger is not None and out.source_thumbnail is not None
        try:
            written = await self.normalizer(out.data, THUMBNAIL)
        except ImageError:
            return
        await self.ledger.add_recent_change(
            mapping.name,
            mapping.source,
            w.pair.source.id,
            w.pair.target.number,
            source_thumb=out.source_thumbnail,
            output_thumb=written.data,
        )


# -- helpers ----------------------------------------------------------------------------------------


def _parse_so_date(value: str | None) -> datetime:
    """SuperOffice archive dates ("2024-05-01T10:00:00", "2024-05-01", UTC); unknown → the distant past
    is wrong here, so unknown → far future (never trusted as unchanged)."""
    if not value:
        return datetime.max.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _pending_marker(width: int, height: int) -> str:
    return f"{PENDING}{width}x{height}"


def _target_state(picture: TargetPicture | None) -> TargetState:
    if picture is None:
        return TargetState(etag=None, present=False)
    return TargetState(etag=picture.etag, present=picture.present)


def _new_item(mapping: MappingConfig, pair: Pair) -> LedgerItem:
    return transitions.first_seen(
        mapping=mapping.name,
        source_kind=mapping.source,
        source_id=pair.source.id,
        target_kind=mapping.target,
        target_id=pair.target.id,
        target_number=pair.target.number,
    )


def _work(p: Planned) -> _Work:
    """Phase A's decision for one pair, with the ledger row it saw, as phase B takes it."""
    item = item_from_row(p.item) if p.item else None
    target = _target_state(p.pair.target.picture)
    return _Work(p.pair, item, p.fingerprint, target, Pre(p.action))


@dataclass(slots=True)
class _Settled:
    """What phase A settled without writing, held back until the safety checks pass: counts per
    outcome, failures (pictures known to be broken) and, for ``--dry-run``, the plan's lines."""

    counts: dict[Outcome, int] = field(default_factory=dict)
    plan: list[PlanEntry] = field(default_factory=list)
    failures: list[PlanEntry] = field(default_factory=list)
    failed_items: list[tuple[int, str, str]] = field(default_factory=list)

    def add(self, outcome: Outcome, entry: PlanEntry | None) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if entry is not None:
            self.plan.append(entry)

    def report(self, mapping: str, result: RunResult, reporter: Reporter) -> None:
        for outcome, n in self.counts.items():
            for _ in range(n):
                result.counts.add(outcome)
                reporter.advance(mapping, outcome)
        result.plan.extend(self.plan)
        result.failures.extend(self.failures)
        result.failed_items.extend(self.failed_items)


def _target_label(pair: Pair) -> str:
    return f"{pair.target.number} ({pair.target.id})"


def _plan_entry(w: _Work, action: PlanAction, detail: str = "") -> PlanEntry:
    p = w.pair
    return PlanEntry(
        action,
        f"{p.source.kind} {p.source.id}",
        f"{p.target.kind} {p.target.number} ({p.target.id})",
        detail,
    )


MAX_ISSUES_PER_KIND = 1000  # counts stay exact; the ledger keeps this many records of each kind


def _issues(mapping: MappingConfig, result: RunResult) -> list[Issue]:
    issues: list[Issue] = []
    for p in result.match_problems:
        for sid in p.source_ids:
            kind: IssueKind = "unmatched" if p.kind == "unmatched" else "ambiguous"
            labels = tuple(f"{n} ({t})" for n, t in zip(p.target_numbers, p.target_ids, strict=False))
            targets = labels or p.target_ids
            issues.append(Issue(kind=kind, source_id=sid, target_ids=targets, key=p.key, detail=p.detail))
    for f in result.failed_items:
        issues.append(Issue(kind="failed", source_id=f[0], target_ids=(f[1],), detail=f[2]))
    kept: dict[str, int] = {}
    out = []
    for i in issues:
        kept[i.kind] = kept.get(i.kind, 0) + 1
        if kept[i.kind] <= MAX_ISSUES_PER_KIND:
            out.append(i)
    return out
