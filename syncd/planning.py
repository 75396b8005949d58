"""Phase A of a run (read only): for every matched pair, the picture fingerprint and the first decision.

The pairs come from the run's store a chunk at a time (one batched ledger read per chunk). Each pair's
fingerprint comes from the run's :class:`syncd.fingerprints.Fingerprints` — or, with
``superoffice.trust_updated_date``, from the ledger for a record not updated since the last good run —
and :func:`syncd.decisions.decide_before_fetch` decides: skip / fetch / keep / blank / clear. What is
settled without writing (skip, blank, keep, a picture known to be broken) goes to the store with the ledger
row to record; fetch and clear items go to the store with the ledger row they were decided from, for
phase B (:mod:`syncd.execution`). Nothing is written anywhere but the run's scratch store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from syncd import transitions
from syncd.decisions import FINGERPRINT_UNAVAILABLE, Policy, Pre, SourceState, decide_before_fetch
from syncd.errors import ApiError, PermissionDeniedError, UnreachableError
from syncd.fingerprints import Fingerprints
from syncd.ledger import ItemRow, LedgerItem, same_but_checked
from syncd.matcher import Pair
from syncd.pool import FailureStreak, Pool, give_up_after
from syncd.run import (
    PENDING,
    PlanEntry,
    Reporter,
    RunContext,
    RunResult,
    Work,
    pending_marker,
    target_label,
    target_state,
)
from syncd.staging import RunStore
from syncd.types import Outcome, PlanAction, TargetPicture

log = structlog.get_logger("syncd.engine")  # one logger for the whole run


@dataclass(slots=True)
class Settled:
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


async def plan(
    ctx: RunContext,
    store: RunStore,
    total: int,
    policy: Policy,
    watermark: str | None,
    fingerprints: Fingerprints,
) -> Settled | None:
    """Fingerprints and first decisions (read only), a chunk of pairs at a time. The decisions go
    to the store, so the plan for 200,000 pairs costs no memory either; what the chunk settles
    without writing is noted in the returned :class:`Settled`. None: stopped meanwhile."""
    mapping = ctx.mapping
    ctx.reporter.phase(mapping.name, "checking pictures", total)
    unchanged_before = trusted_cutoff(ctx, watermark)
    settled = Settled()
    async for pairs in store.pairs(ctx.chunk_size):
        ids = [p.source.id for p in pairs]
        stored = await ctx.ledger.get_items(mapping.name, mapping.source, ids) if ctx.ledger else {}
        _, work = await ctx.until(
            decide_pairs(ctx, pairs, applicable(stored, pairs), policy, unchanged_before, fingerprints)
        )
        if work is None or ctx.stop.is_set() or ctx.past_deadline():
            return None
        rows: list[tuple[int, ItemRow | None]] = []
        planned: list[tuple[int, str, str | None, ItemRow | None]] = []
        for w in work:
            if w.known_broken or w.action not in (Pre.FETCH, Pre.CLEAR):
                values = settle(ctx, w, settled).to_row()
                before = stored.get(w.pair.source.id)  # None: the row stays as it is, but for checked_at
                same = before is not None and same_but_checked(before.to_row(), values)
                rows.append((w.pair.source.id, None if same else values))
            else:
                item = w.item.to_row() if w.item else None
                planned.append((w.pair.source.id, w.action.value, w.fingerprint, item))
        await store.add_settled(rows)
        await store.add_plan(planned)
    return settled


async def decide_pairs(
    ctx: RunContext,
    pairs: list[Pair],
    items: dict[int, LedgerItem],
    policy: Policy,
    unchanged_before: datetime | None,
    fingerprints: Fingerprints,
) -> list[Work]:
    """One chunk's fingerprints and decisions, read by a pool of ``superoffice.limits.concurrency``."""
    mapping, so = ctx.mapping, ctx.config.superoffice
    work: list[Work | None] = [None] * len(pairs)
    known = await fingerprints.known([p.source.id for p in pairs])  # bulk: all; per_record: none
    unreachable = FailureStreak(give_up_after(so.limits.concurrency))  # ImageInfo failed past retries

    async def fingerprint_of(pair: Pair) -> str | None:
        """The item's fingerprint; when ImageInfo fails past its retries the item is decided by
        downloading in phase B (where a failure fails this item only), unless SuperOffice looks down."""
        try:
            value = await fingerprints.of(mapping.source, pair.source.id)
        except PermissionDeniedError:
            raise
        except (UnreachableError, ApiError) as exc:
            if isinstance(exc, UnreachableError) and unreachable.failed():
                raise
            log.warning(
                "picture fingerprint unavailable; deciding by download",
                mapping=mapping.name,
                source_id=pair.source.id,
                error=exc.message,
            )
            return FINGERPRINT_UNAVAILABLE
        unreachable.succeeded()
        return value

    async def decide(i: int) -> bool:
        pair = pairs[i]
        item = items.get(pair.source.id)
        if pair.source.id in known:
            fingerprint: str | None = known[pair.source.id]
        elif (
            unchanged_before is not None
            and item is not None
            and item.source_fingerprint
            and parse_so_date(pair.source.updated) < unchanged_before
        ):
            # trust_updated_date: a record not updated since the last good run keeps its picture
            fingerprint = item.source_fingerprint
        else:
            fingerprint = await fingerprint_of(pair)
        tstate = target_state(pair.target.picture)
        action = decide_before_fetch(
            item,
            SourceState(fingerprint=fingerprint),
            tstate,
            policy,
            ctx.normalizer_version,
            ctx.options.full,
        )
        broken = (
            not ctx.options.full
            and action is Pre.FETCH
            and item is not None
            and item.status is Outcome.FAILED
            and fingerprint not in (None, FINGERPRINT_UNAVAILABLE)
            and item.source_fingerprint == fingerprint
            and item.target_etag == tstate.etag
            and item.normalizer_version == ctx.normalizer_version
        )
        work[i] = Work(pair, item, fingerprint, tstate, action, known_broken=broken)
        ctx.reporter.checked(mapping.name)
        return True

    # max_runtime or a stop request: plan() sees it and stops the run before any change
    pool: Pool[int] = Pool(min(so.limits.concurrency, max(1, len(pairs))))
    await pool.run(
        range(len(pairs)), decide, may_take=lambda: not ctx.stop.is_set() and not ctx.past_deadline()
    )
    return [w for w in work if w is not None]


def settle(ctx: RunContext, w: Work, settled: Settled) -> LedgerItem:
    """Phase A's outcome for an item it settles without writing (skip, blank, keep, or a picture
    known to be broken), noted in ``settled``; returns the ledger row to record."""
    if w.known_broken:  # the same undecodable picture as last time: report, don't re-download
        assert w.item is not None
        error = w.item.error or "picture cannot be used"
        entry = ctx.failure_entry(w, f"{error} (unchanged since last run)")
        settled.add(Outcome.FAILED, entry if ctx.options.dry_run else None)
        settled.failures.append(entry)
        settled.failed_items.append((w.pair.source.id, target_label(w.pair), error))
        return transitions.checked(w.item, at=ctx.now())
    outcome = {Pre.SKIP: Outcome.UNCHANGED, Pre.BLANK: Outcome.BLANK, Pre.KEEP: Outcome.KEPT}[w.action]
    settled.add(outcome, ctx.for_plan(w, PlanAction(w.action.value)))
    return ctx.settled_row(w, outcome)


def applicable(items: dict[int, LedgerItem], pairs: list[Pair]) -> dict[int, LedgerItem]:
    """The ledger rows of ``pairs`` as they apply to the listed BC records: a write whose new etag
    BC did not tell is confirmed by this listing; a row about another BC record (the key now points
    elsewhere) does not apply — that pair is a first sync there."""
    out: dict[int, LedgerItem] = {}
    for p in pairs:
        item = confirm_pending(items.get(p.source.id), p.target.picture)
        if item is not None and item.target_id in (None, p.target.id):
            out[p.source.id] = item
    return out


def confirm_pending(item: LedgerItem | None, picture: TargetPicture | None) -> LedgerItem | None:
    """A write whose reply did not carry the new etag is confirmed by the next listing: if the
    listed picture has the dimensions we wrote, its etag is ours."""
    if item is None or not item.target_etag or not item.target_etag.startswith(PENDING):
        return item
    if (
        picture is not None
        and picture.present
        and item.target_etag == pending_marker(picture.width, picture.height)
    ):
        return transitions.confirmed(item, picture.etag)
    return item


def trusted_cutoff(ctx: RunContext, watermark: str | None) -> datetime | None:
    """With ``superoffice.trust_updated_date``, records updated before this instant are assumed to
    have the picture they had (no ImageInfo request). One day of overlap: SimpleContact's
    ``updatedDate`` may be a date without time, and clocks differ."""
    if not ctx.config.superoffice.trust_updated_date or ctx.options.full or not watermark:
        return None
    parsed = parse_so_date(watermark)
    return None if parsed == datetime.max.replace(tzinfo=UTC) else parsed - timedelta(days=1)


def parse_so_date(value: str | None) -> datetime:
    """SuperOffice archive dates ("2024-05-01T10:00:00", "2024-05-01", UTC); unknown → the distant past
    is wrong here, so unknown → far future (never trusted as unchanged)."""
    if not value:
        return datetime.max.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
