"""One run of one mapping, as an orchestrator of named steps: list, match, detect, plan, check, execute.

The run has two phases so that nothing changes before the whole plan is known:

Listing              :mod:`syncd.listing`: both listings stream page by page into the run's store
                     (:mod:`syncd.staging`, a scratch SQLite database) and are matched there in SQL:
                     memory does not grow with the number of records.
Fingerprints         how phase A learns which pictures changed (:mod:`syncd.fingerprints`): one pass
                     over SuperOffice's Dynamic archive provider for every picture at once (bulk), or
                     ImageInfo per record (per_record); chosen, verified and recorded per run.
Phase A (read only)  :mod:`syncd.planning`: walk the pairs in chunks, take each matched source's picture
                     fingerprint and decide with :func:`syncd.decisions.decide_before_fetch`: skip / fetch
                     / keep / blank / clear. The decisions go to the store.
Safety stops         an empty source listing while the ledger knows items, or more clears than
                     ``limits.max_clears`` or ``max_clears_percent`` — the run stops with nothing changed
                     (not even the ledger) unless ``--force``.
Phase B (writes)     the settled rows are recorded (a transaction per 2,000); then :mod:`syncd.execution`
                     takes the fetch and clear items: download, hash BEFORE any decode, decide again with
                     :func:`syncd.decisions.decide_after_fetch`, normalize when needed, PATCH with
                     ``If-Match``, and commit each item's ledger row at once (:mod:`syncd.transitions`).
                     A picture is cleared only on a positive blank signal, never on a 404.

``--dry-run`` makes the target read-only (:class:`syncd.storage.ReadOnlyTarget` refuses a write) and the
ledger untouched (:class:`syncd.runledger.DryRunLedger` records nothing): writes and clears become plan
entries. Budgets (``max_items_per_run``, ``max_runtime``) and a stop request end phase B cleanly.
What the steps share is a :class:`syncd.run.RunContext`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import structlog

from syncd import listing, planning
from syncd.clock import SecondStamps
from syncd.config import Config, MappingConfig
from syncd.decisions import Policy, Pre
from syncd.errors import ApiError, AuthError, SafetyStop, SyncdError, UnreachableError
from syncd.execution import Execution
from syncd.fingerprints import Fingerprints, choose
from syncd.ledger import Ledger, utcnow
from syncd.matcher import MatchRule
from syncd.run import (
    Normalizer,
    NullReporter,
    Reporter,
    RunContext,
    RunOptions,
    RunResult,
    issues_of,
)
from syncd.runledger import DryRunLedger
from syncd.staging import CHUNK, RunStore
from syncd.storage import ReadOnlyTarget, Source, Target
from syncd.types import Outcome, RunOutcome, SourceKind

log = structlog.get_logger("syncd.engine")

SETTLE_BATCH = 2000  # ledger rows recorded per transaction after phase A (a commit is an fsync)
DEFAULT_OPTIONS = RunOptions()  # an incremental run


class Engine:
    """Runs mappings. Every collaborator is injected, so tests run the real code on the sandbox."""

    def __init__(
        self,
        *,
        config: Config,
        source: Source,
        target: Target,
        ledger: Ledger | None,
        normalizer: Normalizer,
        targets: Mapping[str, Target] | None = None,  # by mapping name (its company)
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

    def _context(self, mapping: MappingConfig, options: RunOptions, result: RunResult) -> RunContext:
        max_runtime = self.config.limits.max_runtime
        target = self.targets.get(mapping.name, self.target)  # the client of the mapping's company
        return RunContext(
            config=self.config,
            mapping=mapping,
            options=options,
            result=result,
            source=self.source,
            target=ReadOnlyTarget(target) if options.dry_run else target,
            ledger=DryRunLedger(self.ledger) if options.dry_run and self.ledger else self.ledger,
            normalizer=self.normalizer,
            reporter=self.reporter,
            stop=self.stop,
            clock=self.clock,
            now=self.now,
            deadline=self.clock() + max_runtime if max_runtime else None,  # the whole run, listings included
            chunk_size=self.chunk_size,
            profile=self.profile,
            normalizer_version=self.normalizer_version,
        )

    # ------------------------------------------------------------------------------------------
    async def run_mapping(self, mapping: MappingConfig, options: RunOptions = DEFAULT_OPTIONS) -> RunResult:
        mode = "dry-run" if options.dry_run else ("full" if options.full else "incremental")
        result = RunResult(mapping=mapping.name, mode=mode, started=time.time())
        ctx = self._context(mapping, options, result)
        ledger = ctx.ledger  # a dry run's records nothing
        if ledger is not None:
            result.run_id = await ledger.start_run(mapping.name, mode)
        bound = log.bind(mapping=mapping.name, mode=mode, run_id=result.run_id)
        bound.info("run started")
        try:
            await self._run(ctx)
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
            if ledger is not None and result.run_id is not None:
                await asyncio.shield(
                    ledger.finish_run(result.run_id, result.counts.as_dict(), result.outcome, result.error)
                )
            bound.info(
                "run finished",
                outcome=result.outcome,
                seconds=round(result.duration, 3),
                **{k: v for k, v in result.counts.as_dict().items() if v},
            )
        return result

    async def _run(self, ctx: RunContext) -> None:
        mapping, options, result, ledger = ctx.mapping, ctx.options, ctx.result, ctx.ledger
        kind: SourceKind = mapping.source
        rule = MatchRule.of(
            mapping.match.source if mapping.match else None,
            mapping.match.target if mapping.match else None,
            mapping.pairs,
        )
        async with RunStore.open(rule, kind, mapping.target) as store:
            if not await listing.list_both(ctx, store):  # max_runtime or a stop request: nothing changed
                return
            known = await ledger.count_items(mapping.name) if ledger else 0
            if not await store.count_sources() and known and not options.force:
                raise SafetyStop(
                    f"mapping {mapping.name!r}: SuperOffice listed no {kind}s, but the ledger knows {known}",
                    hint="a wrong tenant or lost permissions look like this; check, then rerun with --force",
                )
            listing.report_problems(ctx, await store.match())
            done, fingerprints = await ctx.until(self._detect(ctx, store, first_sync=not known))
            if not done or fingerprints is None:  # the picture pass is read-only too: nothing was changed
                ctx.stopped_while("reading picture fingerprints")
                return
            watermark = await ledger.get_watermark(mapping.name, kind) if ledger else None

            total = await store.count_pairs()
            policy = Policy(
                on_source_blank=mapping.on_source_blank, on_target_changed=mapping.on_target_changed
            )
            settled = await planning.plan(ctx, store, total, policy, watermark, fingerprints)
            if settled is None:  # stopped while checking: nothing was changed, nothing half-done
                ctx.stopped_while("checking")
                return
            clears = await store.count_plan(Pre.CLEAR.value)
            ctx.check_clear_cap(clears, max(known, total))

            settled.report(mapping.name, result, self.reporter)
            if ledger:
                async for batch in store.settled(SETTLE_BATCH):  # one transaction per batch
                    await ledger.record_rows([row for _, row in batch if row is not None])
                    checked = [sid for sid, row in batch if row is None]
                    await ledger.set_checked(mapping.name, kind, checked, self.now())
            # Phase B: fetch, normalize, write, clear.
            await Execution(ctx, policy, clears=clears, clear_base=max(known, total)).run(store)
            newest = await store.newest_update()

        failed = result.counts.by_outcome.get(Outcome.FAILED, 0)
        if result.outcome is RunOutcome.OK and failed:
            result.outcome = RunOutcome.PARTIAL
        if ledger and result.run_id is not None:
            await ledger.replace_issues(result.run_id, mapping.name, issues_of(result))
            # Failed items are retried by their ledger status, not by the watermark, so a partial
            # run may advance it too; an interrupted or budget-limited one may not.
            if (
                result.outcome in (RunOutcome.OK, RunOutcome.PARTIAL)
                and newest
                and (watermark is None or newest > watermark)
            ):
                await ledger.set_watermark(mapping.name, kind, newest)

    async def _detect(self, ctx: RunContext, store: RunStore, *, first_sync: bool) -> Fingerprints:
        """This run's fingerprints (:func:`syncd.fingerprints.choose`), recorded with the run. The
        provider is checked against ImageInfo on the first run on a tenant (no verified bulk run yet, or
        a ledger without items: new, or reset for another tenant) and on every full reconcile."""
        mapping, options, result, ledger = ctx.mapping, ctx.options, ctx.result, ctx.ledger
        so = self.config.superoffice
        if so.change_detection != "per_record":
            self.reporter.phase(mapping.name, "reading picture fingerprints", None)
        verified = ledger is not None and await ledger.bulk_verified(mapping.name)
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
        if ledger is not None and result.run_id is not None:
            await ledger.set_change_detection(result.run_id, choice.strategy, choice.note)
        return choice.fingerprints
