"""Measures 1 and 2: throughput under the Business Central ceiling, then an unchanged resync.

Measure 1  The sandbox throttles Business Central like BC does, with a sliding window per principal of
           20 requests/s (6,000 / 5 min; the benchmark shortens the window but keeps the rate). syncd is
           configured to match (``requests_per_second: 20``, ``burst`` = the window's allowance) and the
           SuperOffice side is unthrottled. N contacts with small pictures, N matching customers without
           pictures: the first run writes N pictures.
           Bar: run time ≤ 1.05 × (requests needed / 20), where requests needed = 1 company lookup + the
           list pages + N PATCHes. Reported: BC requests per picture, PATCHes per picture, 429s, the
           most requests the server saw in any window, and the requests-per-second timeline (chart).
Measure 2  The same run again, over the same data, once the window has emptied: no PATCH, no decode
           (counted in Pillow by ``bench.syncd_child``), BC requests ≤ list pages + 1.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import BC_RATE, Mode, SandboxProcess, classify, run_child, sandbox, write_config

UNTHROTTLED_SO = {"limits": {"requests_per_second": 100_000, "concurrency": 16}}


def _api(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """BC API requests (the Entra token endpoint is another host in reality and not rate limited)."""
    return [e for e in log if classify(e) != "token"]


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((bisect.bisect_right(times, t + window - 1e-9) - i for i, t in enumerate(times)), default=0)


def _timeline(api: list[dict[str, Any]], t0: float, window: float) -> dict[str, Any]:
    """Requests per 1-s bin (accepted / 429) and the trailing-window average rate, from ``t0``."""
    if not api:
        return {"seconds": [], "accepted": [], "rejected": [], "window_rate": []}
    end = max(e["finished"] for e in api) - t0
    bins = max(1, math.ceil(end))
    accepted, rejected = [0] * bins, [0] * bins
    ok_times: list[float] = []
    for e in api:
        t = e["started"] - t0
        b = min(bins - 1, max(0, int(t)))
        if e["status"] == 429:
            rejected[b] += 1
        else:
            accepted[b] += 1
            ok_times.append(t)
    ok_times.sort()
    window_rate = []
    for s in range(bins):
        hi = bisect.bisect_right(ok_times, s + 1)
        lo = bisect.bisect_right(ok_times, s + 1 - window)
        window_rate.append((hi - lo) / window)
    return {
        "seconds": list(range(bins)),
        "accepted": accepted,
        "rejected": rejected,
        "window_rate": window_rate,
    }


def _summarize(run: dict[str, Any], log: list[dict[str, Any]], window: float) -> dict[str, Any]:
    api = _api(log)
    kinds = Counter(classify(e) for e in api)
    statuses = Counter(e["status"] for e in api)
    counts = run["mappings"][0]["counts"]
    pages = sum(1 for e in api if classify(e) == "list" and e["status"] < 400)
    written = counts["written"]
    accepted = [e["started"] for e in api if e["status"] != 429]
    return {
        "seconds": run["seconds"],
        "process_wall": run["process"]["wall"],
        "outcome": run["mappings"][0].get("outcome"),
        "counts": counts,
        "decodes_counted_in_pillow": run["decodes"],
        "bc_api_requests": len(api),
        "bc_requests_by_kind": dict(kinds),
        "bc_status": {str(k): v for k, v in statuses.items()},
        "rejected_429": statuses.get(429, 0),
        "list_pages": pages,
        "written": written,
        "bc_requests_per_picture": len(api) / written if written else None,
        "patches_per_picture": kinds.get("patch", 0) / written if written else None,
        "picture_gets": kinds.get("get_picture", 0) + kinds.get("get_content", 0),
        "max_in_any_window": _max_in_window(accepted, window),
        "so_requests_sent": run["so_requests_sent"],
        "loop_lag_ms": run["loop_lag_ms"],
        "cpu_seconds": run["cpu_seconds"],
        "max_rss_mb": run["max_rss_mb"],
    }


def run(mode: Mode, workdir: Path) -> dict[str, Any]:
    n, window, allowance = mode.throughput_pictures, mode.window_seconds, mode.window_allowance
    bc_limits = {"requests_per_second": BC_RATE, "burst": allowance, "concurrency": 5}
    with sandbox(n, "small", rate_limit=(allowance, window)) as sb:
        config = write_config(
            sb,
            workdir,
            superoffice=UNTHROTTLED_SO,
            businesscentral={
                "limits": {"requests_per_second": BC_RATE, "burst": allowance, "concurrency": 5}
            },
        )
        first, log1, sandbox_cpu1 = _one(sb, config, workdir, "first")
        time.sleep(window + 1)  # let the server's window empty, as between two scheduled runs
        second, log2, _ = _one(sb, config, workdir, "second")
        # For information: the same resync with superoffice.trust_updated_date (no ImageInfo requests
        # for records not updated since the last good run).
        trusting = write_config(
            sb,
            workdir,
            superoffice={**UNTHROTTLED_SO, "trust_updated_date": True},
            businesscentral={
                "limits": {"requests_per_second": BC_RATE, "burst": allowance, "concurrency": 5}
            },
        )
        third, log3, _ = _one(sb, trusting, workdir, "third")
    m1 = _summarize(first, log1, window)
    m2 = _summarize(second, log2, window)
    m3 = _summarize(third, log3, window)
    needed = 1 + m1["list_pages"] + n
    ideal = needed / BC_RATE
    api1 = _api(log1)
    t0 = first["started"]
    return {
        "pictures": n,
        "rate_per_second": BC_RATE,
        "window_seconds": window,
        "window_allowance": allowance,
        "syncd_limits": bc_limits,
        "sandbox_cpu_seconds_first_run": sandbox_cpu1,
        "first": m1,
        "requests_needed": needed,
        "ideal_seconds": ideal,
        "ratio_to_ideal": m1["seconds"] / ideal,
        "ratio_to_ideal_process_wall": m1["process_wall"] / ideal,
        "timeline": _timeline(api1, t0, window),
        "second": m2,
        "second_bc_bar": m2["list_pages"] + 1,
        "second_to_first_time": m2["seconds"] / m1["seconds"],
        "resync_trusting_updated_date": m3,
        "resync_trusting_to_first_time": m3["seconds"] / m1["seconds"],
        "bars": {
            "throughput_ratio_le_1.05": m1["seconds"] / ideal <= 1.05,
            "one_patch_per_picture": (m1["patches_per_picture"] or 0) <= 1.0,
            "no_picture_gets": m1["picture_gets"] == 0,
            "resync_no_patch": m2["counts"]["patches"] == 0,
            "resync_no_decode": m2["decodes_counted_in_pillow"] == 0,
            "resync_bc_requests_le_pages_plus_1": m2["bc_api_requests"] <= m2["list_pages"] + 1,
        },
    }


def _one(
    sb: SandboxProcess, config: Path, workdir: Path, tag: str
) -> tuple[dict[str, Any], list[Any], float]:
    sb.reset()
    cpu = sb.cpu_seconds
    result = run_child(config, workdir, tag=tag)
    return result, sb.bc_requests(), sb.cpu_seconds - cpu
