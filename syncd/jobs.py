"""A job = runs of one or more mappings under their locks, each ending in a result or a typed error.

Used by ``syncd run --once`` and by the daemon's scheduled jobs alike, so both take the same locks
and report the same way. The exit code of a job is the most serious of its mappings' outcomes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from syncd.config import MappingConfig
from syncd.errors import ConfigError, ExitCode, SyncdError
from syncd.locks import MappingLock
from syncd.run import RunOptions, RunResult
from syncd.runtime import Runtime
from syncd.targets import check_owner
from syncd.types import Outcome, RunOutcome

log = structlog.get_logger("syncd.jobs")

# Most serious first: an auth failure or a safety stop must not hide behind a partial run.
SEVERITY = [
    ExitCode.CONFIG,
    ExitCode.AUTH,
    ExitCode.SAFETY_STOP,
    ExitCode.RETRYABLE,
    ExitCode.LOCKED,
    ExitCode.PARTIAL,
    ExitCode.OK,
]


@dataclass(slots=True)
class MappingOutcome:
    mapping: str
    result: RunResult | None
    error: SyncdError | None

    @property
    def exit_code(self) -> ExitCode:
        if self.error is not None:
            return self.error.exit_code
        assert self.result is not None
        # A run that stopped at a budget (or on request) is a success, unless items failed before that.
        if self.result.outcome is RunOutcome.PARTIAL or self.result.counts.by_outcome.get(Outcome.FAILED, 0):
            return ExitCode.PARTIAL
        return ExitCode.OK


def job_exit_code(outcomes: Sequence[MappingOutcome]) -> ExitCode:
    codes = {o.exit_code for o in outcomes}
    return next((c for c in SEVERITY if c in codes), ExitCode.OK)


async def run_mapping_locked(rt: Runtime, mapping: MappingConfig, options: RunOptions) -> MappingOutcome:
    """One mapping under its lock. Errors a user can act on come back as values, not exceptions."""
    try:
        await check_owner(rt, mapping)  # resolves its company; two mappings never own one BC record
        if options.dry_run:  # a dry run changes nothing, so it needs no lock
            return MappingOutcome(mapping.name, await rt.engine.run_mapping(mapping, options), None)
        company = rt.config.company_of(mapping)
        async with MappingLock(rt.config.ledger, mapping.name, company=company):
            if rt.ledger is not None:
                target = rt.target_of(mapping.name)
                assert target.company_id is not None  # resolved by check_owner
                await rt.ledger.bind_company(
                    mapping.name, target.company_id, target.company_name or company, mapping.target
                )
            return MappingOutcome(mapping.name, await rt.engine.run_mapping(mapping, options), None)
    except SyncdError as exc:
        if isinstance(exc, ConfigError):
            log.error("mapping refused", mapping=mapping.name, error=exc.message, hint=exc.hint)
        return MappingOutcome(mapping.name, None, exc)


async def run_job(
    rt: Runtime, mappings: Sequence[MappingConfig], options: RunOptions, stop: asyncio.Event | None = None
) -> list[MappingOutcome]:
    """Run the mappings one after the other (they share the API rate limits anyway)."""
    outcomes: list[MappingOutcome] = []
    for m in mappings:
        if stop is not None and stop.is_set():
            break
        outcome = await run_mapping_locked(rt, m, options)
        outcomes.append(outcome)
        if outcome.error is not None and outcome.error.exit_code in (ExitCode.AUTH, ExitCode.CONFIG):
            break  # the next mapping would fail the same way
    return outcomes
