"""One ``syncd run --once`` in this process, instrumented, for the benchmarks.

    python -m bench.syncd_child -c CONFIG --out RESULT.json [--full] [--lag-interval 0.005]

Does what the CLI's one-shot run does (same ``open_runtime`` and ``run_job``) and also records:
  decodes     picture decodes, counted in Pillow itself (every ``ImageFile.load`` that has tiles to
              decode), so the count does not depend on the engine's own bookkeeping;
  loop lag    how late a timer that wants to wake every ``--lag-interval`` seconds actually wakes: the
              time the event loop was blocked (by CPU work on the loop thread, or the GIL);
  requests    the API clients' own request counters;
  rusage      this process's CPU time and peak RSS (peak RSS is only meaningful when started through
              ``bench.launch``: Linux carries the parent's high-water mark across exec);
  sched       CPU time of the event-loop thread and the normalizer threads, and time spent runnable
              but waiting for a CPU (what other processes on the machine cost this run).

``BENCH_EXECUTOR=process`` swaps the normalizer's ThreadPoolExecutor for a ProcessPoolExecutor
(spawn) — an experiment for measure 4, not something syncd offers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import threading
import time
from typing import Any

from PIL import ImageFile


class DecodeCounter:
    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        original = ImageFile.ImageFile.load
        counter = self

        def load(image: ImageFile.ImageFile) -> Any:
            if getattr(image, "tile", None):
                with counter._lock:
                    counter.count += 1
            return original(image)

        ImageFile.ImageFile.load = load  # type: ignore[method-assign,assignment]


async def _lag_monitor(interval: float, samples: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(interval)
        samples.append(max(0.0, loop.time() - before - interval))


def schedstat() -> dict[str, float]:
    """Seconds this process's threads spent on a CPU — in total, in the normalizer pool and in the
    event-loop thread — and runnable but waiting for a CPU (Linux schedstat). The wait is what other
    processes on a shared machine cost us."""
    out = {"on_cpu_s": 0.0, "runqueue_wait_s": 0.0, "normalize_on_cpu_s": 0.0, "loop_on_cpu_s": 0.0}
    main = str(threading.main_thread().native_id)
    names = {str(t.native_id): t.name for t in threading.enumerate()}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/schedstat") as f:
                on_cpu, waiting, _ = f.read().split()
        except (OSError, ValueError):
            continue
        name = names.get(task, "")
        out["on_cpu_s"] += int(on_cpu) / 1e9
        out["runqueue_wait_s"] += int(waiting) / 1e9
        if name.startswith("normalize"):
            out["normalize_on_cpu_s"] += int(on_cpu) / 1e9
        if task == main:
            out["loop_on_cpu_s"] += int(on_cpu) / 1e9
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def _run(args: argparse.Namespace, decodes: DecodeCounter) -> dict[str, Any]:
    from syncd.config import load_config
    from syncd.jobs import run_job
    from syncd.logs import configure_logging
    from syncd.report import outcomes_json
    from syncd.run import RunOptions
    from syncd.runtime import open_runtime

    config = load_config(args.config)
    if os.environ.get("BENCH_SLOW_CALLBACK"):  # with PYTHONASYNCIODEBUG=1: log callbacks slower than this
        asyncio.get_running_loop().slow_callback_duration = float(os.environ["BENCH_SLOW_CALLBACK"])
    if os.environ.get("BENCH_SWITCH_INTERVAL"):  # experiment: GIL switch interval (seconds)
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
    if os.environ.get("BENCH_EXECUTOR") == "process":  # experiment: normalizer in processes
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        import syncd.runtime

        def pool(max_workers: int, thread_name_prefix: str = "") -> ProcessPoolExecutor:
            return ProcessPoolExecutor(max_workers, mp_context=multiprocessing.get_context("spawn"))

        syncd.runtime.ThreadPoolExecutor = pool  # type: ignore[attr-defined,assignment]
    configure_logging(json=True, level="warning")
    mappings = [m for m in config.mappings if m.enabled]
    samples: list[float] = []
    stop = asyncio.Event()
    monitor = asyncio.create_task(_lag_monitor(args.lag_interval, samples, stop))
    started_wall = time.time()
    t0 = time.perf_counter()
    async with open_runtime(config) as rt:
        sched0 = schedstat()
        outcomes = await run_job(rt, mappings, RunOptions(full=args.full))
        sched1 = schedstat()  # before the pool's threads end (their counters go with them)
        so_requests, bc_requests = rt.so_api.requests_sent, rt.bc_api.requests_sent
    seconds = time.perf_counter() - t0
    stop.set()
    await monitor
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "started": started_wall,
        "seconds": seconds,
        "mappings": outcomes_json(outcomes),
        "decodes": decodes.count,
        "so_requests_sent": so_requests,
        "bc_requests_sent": bc_requests,
        "loop_lag_ms": {
            "interval": args.lag_interval * 1000,
            "samples": len(samples),
            "p50": percentile(samples, 50) * 1000,
            "p99": percentile(samples, 99) * 1000,
            "max": max(samples, default=0.0) * 1000,
        },
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "sched": {k: sched1[k] - sched0.get(k, 0.0) for k in sched1},
        "max_rss_mb": usage.ru_maxrss / 1024,
        "threads_cpu_workers": config.limits.cpu_workers or os.cpu_count(),
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.syncd_child")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--full", action="store_true")
    p.add_argument("--lag-interval", type=float, default=0.005)
    args = p.parse_args()
    decodes = DecodeCounter()
    result = asyncio.run(_run(args, decodes))
    with open(args.out, "w") as f:
        json.dump(result, f)
    sys.exit(0)


if __name__ == "__main__":
    main()
