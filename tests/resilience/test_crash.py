"""Crash consistency: ``kill -9`` of a ``syncd run --once`` at 20 different moments.

The moments are drawn from a seeded RNG, three kinds in turn:

``patch-before``  when the N-th picture PATCH reaches Business Central, before BC applies it (the
                  connection dies with the process, as a real crash mid-request does);
``patch-after``   right after BC applied the N-th PATCH, before its answer leaves (BC has our picture,
                  syncd never learnt it);
``request``       when the N-th request of the run reaches either emulator: anywhere in listing,
                  fingerprints, downloads, with the other workers normalizing or committing.

The kill comes from a middleware in the emulators (the test's own process), so it hits exactly there,
counted in requests rather than seconds: every kill lands in a running process however loaded the
machine is. A PATCH kill first waits until the ledger has committed at least one earlier write, so
each of those kills lands between a committed and an uncommitted write.
After each kill: ``PRAGMA integrity_check`` is ok and the journal is still WAL; then a rerun finishes
everything with no PATCH and no download for the items whose write the ledger had committed before the
kill (no duplicate writes, no fall-back to a full resync), and the killed run is marked interrupted.
The killed runs are real ``syncd`` processes; the reruns run the same job code in the test's process.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, cast

import pytest
from aiohttp import web

from syncd.config import load_config
from syncd.jobs import MappingOutcome, run_job
from syncd.run import RunOptions
from syncd.runtime import open_runtime
from syncd.sandbox.server import Sandbox
from tests.support.e2e import write_config
from tests.support.resilience import (
    committed_writes,
    customers_only,
    finish,
    image_downloads,
    integrity_check,
    last_seq,
    ledger_rows,
    picture_patches,
    start_syncd,
    target_in_path,
)

pytestmark = pytest.mark.slow

KILLS = 20
PARALLEL = 2  # two independent sandboxes at a time: both cores busy


@dataclass(frozen=True)
class KillPoint:
    kind: str  # patch-before | patch-after | request
    nth: int  # the N-th PATCH, or the N-th request to either emulator (1-based)


def kill_points() -> list[KillPoint]:
    rng = random.Random(20261127)
    points = []
    for i in range(KILLS):
        kind = ("patch-before", "patch-after", "request")[i % 3]
        # A full run of these datasets makes 9+ PATCHes and 35+ requests (SO and BC); every point lies inside.
        points.append(KillPoint(kind, rng.randint(2, 8) if kind != "request" else rng.randint(1, 34)))
    return points


COMMIT_WAIT = 60.0  # seconds a PATCH kill waits for an earlier write to be committed (a bound, not a pace)


class Killer:
    """Kills the syncd process when the chosen request arrives at an emulator: the N-th picture PATCH
    (once an earlier write is committed in the ledger), or the N-th request of any kind."""

    def __init__(self, sb: Sandbox, point: KillPoint, ledger: Path) -> None:
        self.point = point
        self.ledger = ledger
        self.pid: int | None = None
        self.patches = 0
        self.requests = 0
        self.fired = False
        for emulator in (sb.so, sb.bc):
            self._install(emulator)

    def _install(self, emulator: Any) -> None:
        make_app = emulator.make_app

        def patched() -> web.Application:
            app = make_app()
            app.middlewares.append(self.middleware)
            return app

        emulator.make_app = patched

    def kill(self) -> None:
        if self.pid is not None and not self.fired:
            self.fired = True
            os.kill(self.pid, signal.SIGKILL)

    def _die_mid_request(self, request: web.Request) -> NoReturn:
        self.kill()
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError("the client died mid-request")

    async def _an_earlier_write_committed(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + COMMIT_WAIT
        while loop.time() < deadline:
            if self.ledger.exists() and await asyncio.to_thread(committed_writes, self.ledger, "customers"):
                return
            await asyncio.sleep(0.01)  # polling a condition; the bound is the deadline above

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests += 1
        if self.point.kind == "request":
            if self.requests == self.point.nth:
                self._die_mid_request(request)
            return await handler(request)
        if request.method != "PATCH" or target_in_path(request.path) is None:
            return await handler(request)
        self.patches += 1
        if self.patches != self.point.nth:
            return await handler(request)
        await self._an_earlier_write_committed()
        if self.point.kind == "patch-before":
            self._die_mid_request(request)
        response = await handler(request)
        self.kill()
        return response


async def rerun(cfg: Path) -> MappingOutcome:
    """The rerun, in this process: the CLI's own job code (config → runtime → locked mapping run), without
    starting another interpreter — twenty of those would double this test's time."""
    config = load_config(cfg)
    async with open_runtime(config) as rt:
        outcomes = await run_job(rt, config.mappings, RunOptions())
    assert len(outcomes) == 1
    return outcomes[0]


async def crash_and_recover(point: KillPoint, seed: int, tmp_path: Path) -> dict[str, object]:
    sb = Sandbox(seed=seed, contacts=14, persons=0)
    ledger = tmp_path / "ledger.sqlite"
    killer = Killer(sb, point, ledger)
    await sb.start()
    try:
        exp = sb.dataset.expected["mappings"]["customers"]
        cfg = write_config(sb, tmp_path, mappings=customers_only(sb))

        proc = await start_syncd("run", "--once", "-c", str(cfg))
        killer.pid = proc.pid
        first = await finish(proc)
        killed = first.code == -signal.SIGKILL
        assert killed or first.code == 0, (point, first.stderr[-2000:])

        committed: dict[int, str] = {}
        if ledger.exists():
            assert integrity_check(ledger) == "ok", point
            con = sqlite3.connect(ledger)
            try:
                assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            finally:
                con.close()
            committed = committed_writes(ledger, "customers")
        patched_before = picture_patches(sb)
        bc_mark, so_mark = last_seq(sb, "bc"), last_seq(sb, "so")

        again = await rerun(cfg)
        assert again.exit_code == 0 and again.result is not None, (point, again.error)
        counts = again.result.counts.as_dict()

        # Committed before the kill: not written again, not even downloaded again.
        patched_after = picture_patches(sb, bc_mark)
        assert not set(committed.values()) & set(patched_after), (point, committed, patched_after)
        assert not set(committed) & set(image_downloads(sb, so_mark)), point
        # What was left is finished, in one rerun, and nothing more.
        expected = {int(s): str(t) for s, t in exp["written"]}
        assert counts["written"] == len(expected) - len(committed), (point, counts, committed)
        assert counts["patches"] == counts["written"]
        rows = {
            r["target_id"]: r for r in ledger_rows(ledger, "SELECT * FROM items WHERE mapping = 'customers'")
        }
        for target_id in expected.values():
            rec = sb.dataset.bc.get_record(sb.dataset.company_id, "customers", target_id)
            assert rec.picture is not None and rows[target_id]["status"] in ("written", "unchanged")
            assert hashlib.sha256(rec.picture.data).hexdigest() == rows[target_id]["output_hash"]
        outcomes = [r["outcome"] for r in ledger_rows(ledger, "SELECT outcome FROM runs ORDER BY id")]
        # The killed run is marked interrupted by the rerun (or had finished just before the kill).
        assert outcomes[-1] == "ok" and all(o in ("interrupted", "ok") for o in outcomes), (point, outcomes)
        return {
            "point": point,
            "killed": killed,
            "committed": len(committed),
            "patched_before_kill": sum(patched_before.values()),
            "rewritten": counts["written"],
        }
    finally:
        await sb.stop()


async def test_kill_9_at_twenty_moments_leaves_an_intact_ledger_and_a_rerun_finishes_without_rewrites(
    tmp_path: Path,
) -> None:
    points = kill_points()
    queue: asyncio.Queue[tuple[int, KillPoint]] = asyncio.Queue()
    for i, p in enumerate(points):
        queue.put_nowait((i, p))
    reports: list[dict[str, object]] = []

    async def lane() -> None:
        while not queue.empty():
            i, point = queue.get_nowait()
            where = tmp_path / f"kill{i:02d}"
            where.mkdir()
            reports.append(await crash_and_recover(point, 60 + i, where))

    await asyncio.gather(*(lane() for _ in range(PARALLEL)))
    killed = [r for r in reports if r["killed"]]
    mid_run = [r for r in killed if int(str(r["committed"])) > 0 and int(str(r["rewritten"])) > 0]
    print(f"\nkill -9: {len(killed)} of {len(reports)} runs killed, {len(mid_run)} between two commits")
    for r in sorted(reports, key=lambda r: str(r["point"])):
        print("  ", r)
    assert len(killed) == KILLS, "every kill point lies inside a run, so every run must be killed"
    patch_kills = [r for r in reports if cast(KillPoint, r["point"]).kind.startswith("patch")]
    assert len(mid_run) >= len(patch_kills), "each PATCH kill lands between committed and uncommitted writes"
