"""The listing step of a run: both listings stream into the run's store a page at a time, then match there.

Business Central first (its records, with the key the mapping matches on and the picture's etag), then
SuperOffice (its records, with the key column). Records a listing had to skip as malformed count as
failures; keys that match nothing or more than one record become the run's problems (and ``syncd status``
issues). Both listings are read-only and raced against ``max_runtime`` and a stop request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from syncd.matcher import Problem
from syncd.run import PlanEntry, RunContext
from syncd.staging import RunStore
from syncd.types import Outcome, PlanAction

R = TypeVar("R")


async def list_both(ctx: RunContext, store: RunStore) -> bool:
    """Both listings into the store, bounded by ``max_runtime`` and the stop event (a listing that
    does not end, or a stalled page, cannot hold the run); False when stopped (the outcome says why).
    Records the listings skipped as malformed are reported as failures."""
    result = ctx.result
    bad: list[str] = []
    finished, _ = await ctx.until(_list_all(ctx, store, bad.append))
    if finished:  # (a listing error has failed the run)
        for text in bad:
            result.counts.add(Outcome.FAILED)
            result.failures.append(PlanEntry(PlanAction.FAILED, "(listing)", "", text))
        return True
    ctx.stopped_while("listing")
    return False


async def _list_all(ctx: RunContext, store: RunStore, on_bad: Callable[[str], None]) -> None:
    """Stream both listings into the store, a page's worth of rows at a time."""
    mapping = ctx.mapping
    ctx.reporter.phase(mapping.name, f"listing {mapping.target}", None)
    target_fields = [mapping.match.target] if mapping.match else []
    targets = ctx.target.list(mapping.target, target_fields, on_bad=on_bad)
    await _in_batches(targets, store.add_targets, ctx.chunk_size)
    ctx.reporter.phase(mapping.name, f"listing {mapping.source}s", None)
    columns = [mapping.match.source] if mapping.match else []
    await _in_batches(
        ctx.source.list(mapping.source, columns, on_bad=on_bad), store.add_sources, ctx.chunk_size
    )


async def _in_batches(rows: AsyncIterator[R], add: Callable[[list[R]], Awaitable[None]], size: int) -> None:
    """``rows`` handed to ``add`` ``size`` at a time (the last batch may be shorter, or empty)."""
    batch: list[R] = []
    async for row in rows:
        batch.append(row)
        if len(batch) >= size:
            await add(batch)
            batch = []
    await add(batch)


def report_problems(ctx: RunContext, problems: list[Problem]) -> None:
    """The keys that matched nothing or more than one record: counted, and listed as the run's problems."""
    result, kind = ctx.result, ctx.mapping.source
    result.match_problems = problems
    for p in problems:
        outcome = Outcome.UNMATCHED if p.kind == "unmatched" else Outcome.AMBIGUOUS
        for _ in p.source_ids:
            result.counts.add(outcome)
        source = f"{kind} {', '.join(str(s) for s in p.source_ids)}"
        result.problems.append(PlanEntry(PlanAction(p.kind), source, ", ".join(p.target_ids), p.detail))
