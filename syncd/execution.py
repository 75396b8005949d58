"""Phase B of a run (writes): fetch, decide again, normalize, write or clear, record — item by item.

A bounded pool of workers (:class:`syncd.pool.Pool`, ``limits.concurrency``) takes the fetch and clear
items as the run's store hands them out, a chunk at a time. Per item: download the source picture, hash it
BEFORE any decode, decide again with :func:`syncd.decisions.decide_after_fetch`, normalize off the event
loop only when needed, PATCH with ``If-Match`` = the picture etag we listed (on 409/412 re-read and apply
``on_target_changed``), and commit the ledger row for that item at once (a crash loses at most the items
in flight). A picture is cleared only on a positive blank signal; blanks found only here count against
both clear caps and are cleared last. The budget (``max_items_per_run``, ``max_runtime``) and a stop
request end the pool cleanly; an auth error, a safety stop or SuperOffice/BC looking down end it at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import structlog

from syncd import imaging, transitions
from syncd.decisions import Policy, Post, Pre, SourceState, decide_after_fetch, decide_before_fetch
from syncd.errors import (
    ApiError,
    AuthError,
    ImageError,
    PreconditionFailedError,
    SafetyStop,
    SyncdError,
    UnreachableError,
)
from syncd.ledger import LedgerItem
from syncd.pool import FailureStreak, Pool, give_up_after
from syncd.run import RunContext, Work, pending_marker, plan_entry, sha256, target_label, target_state
from syncd.staging import Planned, RunStore
from syncd.superoffice import NoPicture
from syncd.types import Outcome, PlanAction, RunOutcome

log = structlog.get_logger("syncd.engine")  # one logger for the whole run

THUMBNAIL = imaging.PictureProfile(max_width=96, max_height=96, format="JPEG", quality=70)
THUMBS_PER_RUN = 20
OFF_LOOP_HASH_BYTES = 1_000_000  # hashing 1 MB takes ~0.7 ms; a 12 MP PNG (10 MB) would block the loop 7 ms


async def sha256_off_loop(data: bytes) -> str:
    """``sha256`` of a source picture, in a thread when it is big enough to hold up the event loop."""
    if len(data) < OFF_LOOP_HASH_BYTES:
        return sha256(data)
    return await asyncio.to_thread(sha256, data)


def work_of(p: Planned) -> Work:
    """Phase A's decision for one pair, with the ledger row it saw, as phase B takes it."""
    item = LedgerItem.from_row(p.item) if p.item else None
    return Work(p.pair, item, p.fingerprint, target_state(p.pair.target.picture), Pre(p.action))


@dataclass(slots=True)
class ExecutionCounters:
    """Phase B's running totals (besides the result's counts)."""

    thumbnails: int = 0  # before/after pairs kept for the status page (at most THUMBS_PER_RUN)
    clears: int = 0  # clears the plan holds: blanks found late count on top of these for the caps
    clear_base: int = 0  # the mapping's size, for max_clears_percent
    fatal: list[BaseException] = field(default_factory=list)  # what ends the run, first one raised
    deferred: list[Work] = field(default_factory=list)  # blanks found while downloading: cleared last


class Execution:
    """Phase B of one run: :meth:`run` takes every fetch and clear item the store holds."""

    def __init__(self, ctx: RunContext, policy: Policy, *, clears: int, clear_base: int) -> None:
        self.ctx = ctx
        self.policy = policy
        self.counters = ExecutionCounters(clears=clears, clear_base=clear_base)
        limits = ctx.config.limits
        self.unreachable = FailureStreak(give_up_after(limits.concurrency))

    async def run(self, store: RunStore) -> None:
        """The pool over the store's plan, a chunk at a time (the queue holds at most one chunk). Blanks
        that only the download reveals are cleared last, once the run knows they stay within both
        clear caps: one past a cap stops the run (exit 4) before any of them is cleared, so the next
        run stops again rather than clearing the rest."""
        ctx, c = self.ctx, self.counters
        total = await store.count_plan()
        if not total:
            return
        ctx.reporter.phase(ctx.mapping.name, "writing pictures", total)

        async def planned() -> AsyncIterator[Work]:
            async for chunk in store.planned(ctx.chunk_size):
                for p in chunk:
                    yield work_of(p)

        pool: Pool[Work] = Pool(min(ctx.config.limits.concurrency, total), queue_size=ctx.chunk_size)
        await pool.run(planned(), self._handle, may_take=lambda: self._may_take(pool.counters.taken))
        if c.fatal:
            raise c.fatal[0]
        for w in c.deferred:  # within both caps (checked as each was found); not after a stop request
            if ctx.stop.is_set() or not await self._handle(w, deferring=False):
                break
        if c.fatal:
            raise c.fatal[0]

    def _may_take(self, taken: int) -> bool:
        """Whether a worker may start one more item; if not, the result says why the run ended."""
        ctx, limits, result = self.ctx, self.ctx.config.limits, self.ctx.result
        if ctx.stop.is_set():
            result.outcome = RunOutcome.INTERRUPTED
            return False
        if limits.max_items_per_run is not None and taken >= limits.max_items_per_run:
            result.outcome = RunOutcome.BUDGET
            result.error = f"max_items_per_run ({limits.max_items_per_run}) reached"
            return False
        if ctx.past_deadline():
            result.outcome = RunOutcome.BUDGET
            result.error = f"max_runtime ({limits.max_runtime:g}s) reached"
            return False
        return True

    async def _handle(self, w: Work, deferring: bool = True) -> bool:
        """One item, counted and reported; False when the run must end (``fatal``)."""
        ctx, c = self.ctx, self.counters
        try:
            outcome = await self.item(w, c.deferred if deferring else None)
            self.unreachable.succeeded()
        except (AuthError, SafetyStop) as exc:  # in-flight items finish, no new ones start
            c.fatal.append(exc)
            return False
        except (UnreachableError, ApiError, ImageError) as exc:
            outcome = Outcome.FAILED
            await self.failed(w, exc)
            if isinstance(exc, UnreachableError) and self.unreachable.failed():
                c.fatal.append(exc)
                return False
        if outcome is not None:  # None: deferred, counted when it is cleared
            ctx.result.counts.add(outcome)
            ctx.reporter.advance(ctx.mapping.name, outcome)
        return True

    async def item(self, w: Work, deferred: list[Work] | None = None) -> Outcome | None:
        """One fetch or clear item; None: a blank found only now, put in ``deferred`` to clear later."""
        ctx, c = self.ctx, self.counters
        mapping, options, result = ctx.mapping, ctx.options, ctx.result
        pair = w.pair
        base = w.item or ctx.new_item(pair)
        if w.action is Pre.CLEAR:
            if options.dry_run:
                result.plan.append(plan_entry(w, PlanAction.CLEAR))
                return Outcome.CLEARED
            try:
                await ctx.target.delete_picture(mapping.target, pair.target.id, if_match=w.target.etag)
            except PreconditionFailedError:
                # Someone put another picture there since the listing: it is not ours to clear.
                log.warning(
                    "picture changed in Business Central during the run; not cleared",
                    mapping=mapping.name,
                    target=pair.target.id,
                )
                await self.record(
                    transitions.kept_foreign(base, target_id=pair.target.id, etag=None, at=ctx.now())
                )
                return Outcome.KEPT
            await self.record(transitions.cleared(base, target_id=pair.target.id, at=ctx.now()))
            return Outcome.CLEARED

        data = await ctx.source.image(mapping.source, pair.source.id)
        if isinstance(data, NoPicture):  # blank after all (removed meanwhile, or ImageInfo unavailable)
            again = decide_before_fetch(
                w.item,
                SourceState(fingerprint=None),
                w.target,
                self.policy,
                ctx.normalizer_version,
                options.full,
            )
            blank = replace(w, fingerprint=None, action=again)
            if again is Pre.CLEAR and data.confirmed and options.force:
                return await self.item(blank)  # no cap to wait for
            if again is Pre.CLEAR and data.confirmed and deferred is not None:
                # A positive blank signal: cleared after the other items, within both caps of the run.
                ctx.check_clear_cap(c.clears + len(deferred) + 1, c.clear_base, found_late=True)
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
            ctx.planned(plan_entry(w, PlanAction(again.value)))
            await self.record(ctx.settled_row(blank, outcome))  # a dry run's ledger records nothing
            return outcome
        source_hash = await sha256_off_loop(data)
        if decide_after_fetch(w.item, source_hash, None, w.target, ctx.normalizer_version) is Post.SKIP:
            ctx.planned(plan_entry(w, PlanAction.SKIP, "picture re-saved unchanged"))
            await self.record(transitions.resaved_unchanged(base, fingerprint=w.fingerprint, at=ctx.now()))
            return Outcome.UNCHANGED
        if options.dry_run:
            result.plan.append(
                plan_entry(w, PlanAction.WRITE, f"{len(data)} bytes, sha256 {source_hash[:12]}")
            )
            return Outcome.WRITTEN

        started = time.perf_counter()
        want_thumbs = ctx.ledger is not None and c.thumbnails < THUMBS_PER_RUN
        out = await ctx.normalizer(data, ctx.profile, THUMBNAIL if want_thumbs else None)
        ctx.reporter.normalized(time.perf_counter() - started)
        result.counts.decodes += 1
        output_hash = sha256(out.data)
        if (
            decide_after_fetch(w.item, source_hash, output_hash, w.target, ctx.normalizer_version)
            is Post.SKIP
        ):
            await self.record(
                transitions.normalized_unchanged(
                    base,
                    fingerprint=w.fingerprint,
                    source_hash=source_hash,
                    normalizer_version=ctx.normalizer_version,
                    at=ctx.now(),
                )
            )
            return Outcome.UNCHANGED

        etag = await self.write(w, out)
        if etag is None:  # policy kept the picture someone else put there
            return Outcome.KEPT
        await self.record(
            transitions.written(
                base,
                target_id=pair.target.id,
                target_number=pair.target.number,
                fingerprint=w.fingerprint,
                source_hash=source_hash,
                output_hash=output_hash,
                etag=etag,
                normalizer_version=ctx.normalizer_version,
                at=ctx.now(),
            )
        )
        if out.source_thumbnail is not None and c.thumbnails < THUMBS_PER_RUN:
            c.thumbnails += 1
            await self.thumbnails(w, out)
        return Outcome.WRITTEN

    async def write(self, w: Work, out: imaging.NormalizedPicture) -> str | None:
        """PATCH the picture with the listed etag; on 409/412 re-read and apply the policy.

        Returns the etag to remember, or None when the policy keeps BC's picture.
        """
        ctx = self.ctx
        target, result = ctx.target, ctx.result
        kind, rid = ctx.mapping.target, w.pair.target.id
        picture = w.pair.target.picture
        etag = w.target.etag
        if not etag:  # the listing did not carry the picture etag: read it (never send `*`)
            picture = await target.get_picture(kind, rid)
            etag = picture.etag
        for attempt in range(2):
            if not etag:
                raise ApiError(
                    f"{kind} {rid}: Business Central gave no picture etag; refusing to write blindly",
                    status=0,
                )
            try:
                new_etag = await target.put_picture(kind, rid, picture, out.data, if_match=etag)
                result.counts.patches += 1
                return new_etag or pending_marker(out.width, out.height)
            except PreconditionFailedError:
                result.counts.patches += 1
                fresh = await target.get_picture(kind, rid)
                if fresh.present:
                    current = await target.picture_content(kind, rid, fresh)
                    if sha256(current) == sha256(out.data):
                        return fresh.etag or pending_marker(out.width, out.height)  # ours landed already
                log.warning(
                    "picture changed in Business Central during the run",
                    mapping=ctx.mapping.name,
                    target=rid,
                    policy=self.policy.on_target_changed,
                    attempt=attempt + 1,
                )
                if self.policy.on_target_changed == "keep" and fresh.present:  # an empty picture: fill it
                    await self.record(
                        transitions.kept_foreign(
                            w.item or ctx.new_item(w.pair), target_id=rid, etag=fresh.etag, at=ctx.now()
                        )
                    )
                    return None
                picture, etag = fresh, fresh.etag
        raise PreconditionFailedError(
            f"{kind} {rid}: the picture keeps changing in Business Central; not overwritten", status=409
        )

    async def failed(self, w: Work, exc: BaseException) -> None:
        ctx, result = self.ctx, self.ctx.result
        message = exc.message if isinstance(exc, SyncdError) else str(exc)
        entry = ctx.failure_entry(w, message)
        result.failures.append(entry)
        result.failed_items.append((w.pair.source.id, target_label(w.pair), message))
        if ctx.options.dry_run:
            result.plan.append(entry)
            return
        log.warning(
            "item failed",
            mapping=ctx.mapping.name,
            source_id=w.pair.source.id,
            target=w.pair.target.number,
            error=message,
        )
        # A picture that cannot be decoded stays broken until it changes: remember which one it was,
        # so the next run reports it without downloading it again. Transient errors are retried.
        await self.record(
            transitions.failed(
                w.item or ctx.new_item(w.pair),
                target_id=w.pair.target.id,
                error=message,
                permanent=isinstance(exc, ImageError),
                fingerprint=w.fingerprint,
                etag=w.target.etag,
                normalizer_version=ctx.normalizer_version,
                at=ctx.now(),
            )
        )

    async def record(self, item: LedgerItem) -> None:
        if self.ctx.ledger is not None:
            await asyncio.shield(self.ctx.ledger.record(item))

    async def thumbnails(self, w: Work, out: imaging.NormalizedPicture) -> None:
        """Keep a before/after pair for the status page: the source from the decode that just happened,
        and what was written, decoded again (a small picture, so this costs little)."""
        ctx = self.ctx
        assert ctx.ledger is not None and out.source_thumbnail is not None
        try:
            written = await ctx.normalizer(out.data, THUMBNAIL)
        except ImageError:
            return
        await ctx.ledger.add_recent_change(
            ctx.mapping.name,
            ctx.mapping.source,
            w.pair.source.id,
            w.pair.target.number,
            source_thumb=out.source_thumbnail,
            output_thumb=written.data,
        )
