"""What one run of one mapping is given, shares between its steps, and gives back.

RunOptions / RunResult / PlanEntry  the run's input flags and its result (counts, plan, failures)
Reporter / Normalizer               progress sink and picture normalizer, injected into the engine
RunContext                          everything the steps of one run share: the mapping, the clients, the
                                    ledger, the clocks, the deadline, the result being filled in
Work                                one pair as phase A decided it and phase B takes it
helpers                             the plan line of a pair, the ledger row of a settled pair, the clear caps,
                                    racing a read-only step against the deadline and the stop event

The steps themselves live in :mod:`syncd.engine` (listing, orchestration), :mod:`syncd.planning` (phase A)
and :mod:`syncd.execution` (phase B).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from syncd import imaging, transitions
from syncd.clock import SecondStamps
from syncd.config import Config, MappingConfig
from syncd.decisions import Pre, TargetState
from syncd.errors import SafetyStop
from syncd.ledger import Issue, IssueKind, LedgerItem
from syncd.matcher import Pair, Problem
from syncd.runledger import RunLedger
from syncd.storage import Source, Target
from syncd.types import Outcome, PlanAction, RunCounts, RunOutcome, TargetPicture

T = TypeVar("T")

PENDING = "pending:"  # ledger etag prefix: written, BC did not tell the new etag; confirmed at next listing


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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(slots=True)
class RunContext:
    """What every step of one run of one mapping shares. Built by the engine at the start of a run."""

    config: Config
    mapping: MappingConfig
    options: RunOptions
    result: RunResult
    source: Source
    target: Target  # the client of the company this mapping writes to
    ledger: RunLedger | None  # a DryRunLedger in a dry run: it records nothing
    normalizer: Normalizer
    reporter: Reporter
    stop: asyncio.Event
    clock: Callable[[], float]  # monotonic, for the deadline
    now: SecondStamps  # the ledger's clock, for the rows' time stamps
    deadline: float | None  # on ``clock``: max_runtime for the whole run
    chunk_size: int
    profile: imaging.PictureProfile  # what pictures are normalized to
    normalizer_version: str  # the profile's cache key, remembered with every picture written

    def past_deadline(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    async def until(self, work: Awaitable[T]) -> tuple[bool, T | None]:
        """``work`` raced against the deadline and the stop event: (True, its result), or (False, None)
        when it was cancelled first — a read-only step (a listing, phase A's reads) never holds the run
        past ``max_runtime`` or a stop request, not even with a request hanging. Its errors propagate."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            timeout = None if self.deadline is None else max(0.0, self.deadline - self.clock())
            await asyncio.wait({task, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            return False, None
        return True, task.result()

    def stopped_while(self, what: str) -> None:
        """A read-only step was cut short (:meth:`until` said so): the run's outcome says by what."""
        if self.stop.is_set():
            self.result.outcome = RunOutcome.INTERRUPTED
        else:
            self.result.outcome = RunOutcome.BUDGET
            self.result.error = f"max_runtime ({self.config.limits.max_runtime:g}s) reached while {what}"

    def check_clear_cap(self, clears: int, base: int, *, found_late: bool = False) -> None:
        """Both clear caps. ``found_late``: phase B met one more blank than the plan knew of (ImageInfo
        unavailable or changed meanwhile); then the run has already written what it wrote."""
        lim = self.config.limits
        if clears == 0 or self.options.force:
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
                f"mapping {self.mapping.name!r} would clear {clears} Business Central pictures "
                f"({percent:.0f}% of {base}){late}; limits: max_clears={lim.max_clears}, "
                f"max_clears_percent={lim.max_clears_percent:g}",
                hint="if the SuperOffice pictures really were removed, rerun with --force",
            )

    def new_item(self, pair: Pair) -> LedgerItem:
        """The ledger row of a pair the ledger does not know yet."""
        m = self.mapping
        return transitions.first_seen(
            mapping=m.name,
            source_kind=m.source,
            source_id=pair.source.id,
            target_kind=m.target,
            target_id=pair.target.id,
            target_number=pair.target.number,
        )

    def settled_row(self, w: Work, outcome: Outcome) -> LedgerItem:
        """The ledger row of an item settled without writing (unchanged, blank or kept)."""
        base = w.item or self.new_item(w.pair)
        if outcome is Outcome.KEPT and w.fingerprint is None:
            return transitions.kept_ours(base, at=self.now())
        if outcome is Outcome.KEPT:
            return transitions.kept_foreign(
                base, target_id=w.pair.target.id, etag=w.target.etag, at=self.now()
            )
        if outcome is Outcome.BLANK:
            return transitions.blank(base, target_id=w.pair.target.id, at=self.now())
        return transitions.unchanged(base, etag=w.target.etag, at=self.now())

    def for_plan(self, w: Work, action: PlanAction) -> PlanEntry | None:
        """``w``'s plan line when this run is a dry run (its plan is the output), else None without
        building it: a real run keeps no plan lines."""
        return plan_entry(w, action) if self.options.dry_run else None

    def planned(self, entry: PlanEntry) -> None:
        """One line of a dry run's plan (a real run keeps none)."""
        if self.options.dry_run:
            self.result.plan.append(entry)

    def failure_entry(self, w: Work, message: str) -> PlanEntry:
        return PlanEntry(
            PlanAction.FAILED,
            f"{self.mapping.source} {w.pair.source.id}",
            f"{self.mapping.target} {w.pair.target.number}",
            message,
        )


@dataclass(slots=True)
class Work:
    """One pair as phase A decided it (with the ledger row it saw) and phase B takes it."""

    pair: Pair
    item: LedgerItem | None
    fingerprint: str | None
    target: TargetState
    action: Pre
    known_broken: bool = False  # failed last time on this very picture (not decodable): don't retry


def pending_marker(width: int, height: int) -> str:
    return f"{PENDING}{width}x{height}"


def target_state(picture: TargetPicture | None) -> TargetState:
    if picture is None:
        return TargetState(etag=None, present=False)
    return TargetState(etag=picture.etag, present=picture.present)


def target_label(pair: Pair) -> str:
    return f"{pair.target.number} ({pair.target.id})"


def plan_entry(w: Work, action: PlanAction, detail: str = "") -> PlanEntry:
    p = w.pair
    return PlanEntry(
        action,
        f"{p.source.kind} {p.source.id}",
        f"{p.target.kind} {p.target.number} ({p.target.id})",
        detail,
    )


MAX_ISSUES_PER_KIND = 1000  # counts stay exact; the ledger keeps this many records of each kind


def issues_of(result: RunResult) -> list[Issue]:
    """What ``syncd status`` and the status page list for this run: unmatched, ambiguous, failed."""
    issues: list[Issue] = []
    for p in result.match_problems:
        for sid in p.source_ids:
            kind: IssueKind = "unmatched" if p.kind == "unmatched" else "ambiguous"
            labels = tuple(f"{n} ({t})" for n, t in zip(p.target_numbers, p.target_ids, strict=False))
            targets = labels or p.target_ids
            issues.append(Issue(kind=kind, source_id=sid, target_ids=targets, key=p.key, detail=p.detail))
    for source_id, target, error in result.failed_items:
        issues.append(Issue(kind="failed", source_id=source_id, target_ids=(target,), detail=error))
    kept: dict[str, int] = {}
    out = []
    for i in issues:
        kept[i.kind] = kept.get(i.kind, 0) + 1
        if kept[i.kind] <= MAX_ISSUES_PER_KIND:
            out.append(i)
    return out
