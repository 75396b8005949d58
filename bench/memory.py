"""Measure 5: peak RSS of the syncd process for a small and a large mapping.

For each N, a sandbox (its own process, unthrottled) with N contacts carrying typical small pictures
and N matching customers; the plain CLI ``python -m syncd run --once --json`` (``limits.concurrency:
8``) runs as a child process and its peak RSS comes from ``wait4`` — the syncd process alone. Each N
runs twice: the first run writes N pictures, the second (a resync) writes none.
Bars: peak RSS(N large) ≤ 1.2 × peak RSS(N small), and ≤ 150 MB at N large.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.common import run_process, sandbox, write_config

FAST = {
    "superoffice": {"limits": {"requests_per_second": 100_000, "concurrency": 16}},
    "businesscentral": {"limits": {"requests_per_second": 100_000, "concurrency": 5}},
    "limits": {"concurrency": 8},
}


def _syncd(config: Path) -> dict[str, Any]:
    res = run_process([sys.executable, "-m", "syncd", "run", "--once", "--json", "-c", str(config)])
    if res.code != 0:
        raise RuntimeError(f"syncd exited {res.code}: {res.stderr[-3000:]}")
    summary = json.loads(res.stdout)["mappings"][0]
    return {
        "max_rss_mb": res.max_rss_mb,
        "wall": res.wall,
        "cpu_seconds": res.cpu_seconds,
        "counts": summary["counts"],
        "seconds": summary["seconds"],
    }


def run(sizes: tuple[int, int], workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"sizes": list(sizes), "concurrency": 8, "runs": {}}
    for n in sizes:
        directory = workdir / f"n{n}"
        directory.mkdir(parents=True, exist_ok=True)
        with sandbox(n, "small", max_concurrent=0) as sb:
            config = write_config(sb, directory, **FAST)
            first = _syncd(config)
            second = _syncd(config)
        out["runs"][str(n)] = {"first": first, "resync": second}
    small, large = (out["runs"][str(n)] for n in sizes)
    peak_small = max(small["first"]["max_rss_mb"], small["resync"]["max_rss_mb"])
    peak_large = max(large["first"]["max_rss_mb"], large["resync"]["max_rss_mb"])
    out["ratio_large_to_small"] = peak_large / peak_small
    out["peak_large_mb"] = peak_large
    out["bars"] = {"ratio_le_1.2": peak_large / peak_small <= 1.2, "large_le_150mb": peak_large <= 150}
    return out
