"""Measure 4: parallel normalizing — pictures/s with 2 normalizer workers vs 1, and event-loop lag.

The sandbox (its own process, Business Central unthrottled, no concurrency cap) serves N pictures of
the CPU-bound mix (12 MP JPEG with EXIF rotation, 12 MP PNG, 4 MP RGBA PNG, 1 MP JPEG, animated GIF);
syncd (another process) writes them all, once with ``limits.cpu_workers: 1`` and once with 2, in
alternating order over ``ROUNDS`` rounds; the best run of each setting counts. Bar: ≥ 1.7× pictures/s
with 2 workers. During each run ``bench.syncd_child`` samples the event loop's lag (p99 reported).

Per run, from Linux schedstat (``bench.syncd_child``): CPU time of the normalizer threads and of the
event-loop thread — the same normalizer CPU with 1 and 2 workers means no time is lost to the GIL —
and the time syncd's threads were runnable but waited for a CPU (other processes: the sandbox, and on a
shared machine everybody else). ``cpu_bound_speedup`` is what 2 cores would give if syncd and the
sandbox had them to themselves: the 1-worker time over half the CPU the 2-worker run needed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from bench.common import SandboxProcess, run_child, sandbox, write_config
from bench.inputs import NORMALIZER_INPUTS

ROUNDS = 2
UNTHROTTLED = {
    "superoffice": {"limits": {"requests_per_second": 100_000, "concurrency": 16}},
    "businesscentral": {"limits": {"requests_per_second": 100_000, "concurrency": 5}},
}


def _one(sb: SandboxProcess, directory: Path, workers: int, tag: str) -> dict[str, Any]:
    shutil.rmtree(directory, ignore_errors=True)  # a new ledger: every picture is a first sync
    directory.mkdir(parents=True)
    sb.reset(data=True)
    config = write_config(sb, directory, **UNTHROTTLED, limits={"cpu_workers": workers, "concurrency": 8})
    cpu = sb.cpu_seconds
    run = run_child(config, directory, tag=tag)
    counts = run["mappings"][0]["counts"]
    return {
        "workers": workers,
        "seconds": run["seconds"],
        "written": counts["written"],
        "failed": counts["failed"],
        "pictures_per_second": counts["written"] / run["seconds"],
        "decodes": run["decodes"],
        "loop_lag_ms": run["loop_lag_ms"],
        "syncd_cpu_seconds": run["cpu_seconds"],
        "syncd_on_cpu_seconds": run["sched"]["on_cpu_s"],
        "syncd_runqueue_wait_seconds": run["sched"]["runqueue_wait_s"],
        "normalizer_threads_cpu_seconds": run["sched"]["normalize_on_cpu_s"],
        "event_loop_cpu_seconds": run["sched"]["loop_on_cpu_s"],
        "loadavg_after": os.getloadavg(),
        "syncd_max_rss_mb": run["max_rss_mb"],
        "sandbox_cpu_seconds": sb.cpu_seconds - cpu,
    }


def run(n: int, workdir: Path, rounds: int = ROUNDS) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with sandbox(n, "cpumix", max_concurrent=0) as sb:
        for r in range(rounds):
            order = (1, 2) if r % 2 == 0 else (2, 1)
            for workers in order:
                runs.append(_one(sb, workdir / f"w{workers}-r{r}", workers, f"w{workers}-r{r}"))
    best = {
        w: max((x for x in runs if x["workers"] == w), key=lambda x: x["pictures_per_second"]) for w in (1, 2)
    }
    speedup = best[2]["pictures_per_second"] / best[1]["pictures_per_second"]
    lag_p99 = max(x["loop_lag_ms"]["p99"] for x in runs)
    return {
        "pictures": n,
        "mix": list(NORMALIZER_INPUTS),
        "runs": runs,
        "best": {str(w): best[w] for w in (1, 2)},
        "speedup_2_vs_1": speedup,
        "loop_lag_p99_ms_worst": lag_p99,
        "cpu_bound_speedup": best[1]["seconds"]
        / (
            (
                best[2]["normalizer_threads_cpu_seconds"]
                + best[2]["event_loop_cpu_seconds"]
                + best[2]["sandbox_cpu_seconds"]
            )
            / 2
        ),
        "bars": {"speedup_ge_1.7": speedup >= 1.7},
    }


if __name__ == "__main__":  # for profiling this measure alone: python -m bench.parallel N DIR
    import sys

    print(json.dumps(run(int(sys.argv[1]), Path(sys.argv[2])), indent=1))
