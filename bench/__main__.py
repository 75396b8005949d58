"""``python -m bench --smoke | --full``: run the measures of issue 8, write JSON results and PNG charts.

    --full    the sizes BENCHMARKS.md reports (about 20 minutes on 2 cores); outputs in bench/results/
    --smoke   tiny sizes (about a minute), to keep the code from rotting; outputs in bench/results/smoke/
    --only    comma-separated subset: normalizer, ledger, throughput, parallel, memory, so_scale
    --out     another output directory

Every measure reports its numbers and its bars; the exit status is 0 whatever the bars say (nothing
here asserts time) and non-zero only when a measure could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import charts, ledger_pass, memory, normalizer, parallel, so_scale, throughput
from bench.common import FULL, RESULTS, SMOKE, Mode, machine

MEASURES = ("normalizer", "ledger", "throughput", "parallel", "memory", "so_scale")


def _runners(mode: Mode, work: Path) -> dict[str, Callable[[], dict[str, Any]]]:
    return {
        "normalizer": lambda: normalizer.run(mode.normalizer_rounds),
        "ledger": lambda: ledger_pass.run(mode.ledger_rows, work / "ledger"),
        "throughput": lambda: throughput.run(mode, _fresh(work / "throughput")),
        "parallel": lambda: parallel.run(mode.parallel_pictures, work / "parallel", mode.parallel_rounds),
        "memory": lambda: memory.run(mode.memory_sizes, work / "memory"),
        "so_scale": lambda: so_scale.run(mode, _fresh(work / "so_scale")),
    }


def _fresh(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--smoke", action="store_true", help="tiny sizes, about a minute")
    size.add_argument("--full", action="store_true", help="the sizes BENCHMARKS.md reports")
    p.add_argument("--only", help=f"comma-separated subset of {', '.join(MEASURES)}")
    p.add_argument("--out", type=Path, help="output directory (default bench/results[/smoke])")
    args = p.parse_args(argv)
    mode = FULL if args.full else SMOKE
    out: Path = args.out or (RESULTS if args.full else RESULTS / "smoke")
    out.mkdir(parents=True, exist_ok=True)
    wanted = [m.strip() for m in args.only.split(",")] if args.only else list(MEASURES)
    unknown = sorted(set(wanted) - set(MEASURES))
    if unknown:
        p.error(f"unknown measure(s): {', '.join(unknown)}")

    started = time.time()
    summary: dict[str, Any] = {
        "mode": mode.name,
        "command": " ".join([os.path.basename(sys.executable), "-m", "bench", *(argv or sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(started)),
        "machine": machine(),
        "sizes": mode.__dict__,
        "measures": {},
    }
    results: dict[str, Any] = {}
    failed = False
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-"))
    try:
        runners = _runners(mode, work)
        for name in wanted:
            t0 = time.perf_counter()
            print(f"bench: {name} …", file=sys.stderr, flush=True)
            try:
                result = runners[name]()
            except Exception as exc:
                failed = True
                traceback.print_exc()
                result = {"error": f"{type(exc).__name__}: {exc}"}
            result["bench_seconds"] = time.perf_counter() - t0
            result["loadavg_after"] = os.getloadavg()
            results[name] = result
            (out / f"{name}.json").write_text(json.dumps(result, indent=1))
            summary["measures"][name] = {"bars": result.get("bars"), "error": result.get("error")}
            print(f"bench: {name} done in {result['bench_seconds']:.0f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary["seconds"] = time.time() - started
    summary["loadavg_at_end"] = os.getloadavg()
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if charts.available():
        subtitle = (
            f"{mode.name} run, {summary['started']}, load avg {summary['machine']['loadavg_at_start'][0]:.1f}"
        )
        for path in charts.draw_all(results, out, subtitle):
            print(f"bench: chart {path}", file=sys.stderr)
    else:
        print("bench: matplotlib not installed (the bench extra): no charts", file=sys.stderr)
    print(report(results, summary))
    return 1 if failed else 0


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def report(results: dict[str, Any], summary: dict[str, Any]) -> str:
    """A plain-text digest of the numbers and bars (the JSON files have everything)."""
    lines = [f"syncd bench ({summary['mode']}), {summary['started']}, {summary['seconds']:.0f} s"]
    t = results.get("throughput")
    if t and "error" not in t:
        f, s = t["first"], t["second"]
        lines += [
            f"1 throughput  {t['pictures']} pictures: {f['seconds']:.1f} s = {t['ratio_to_ideal']:.3f} × "
            f"({t['requests_needed']} requests / 20/s = {t['ideal_seconds']:.1f} s)  [bar ≤ 1.05]",
            f"              BC requests/picture {f['bc_requests_per_picture']:.4f}, PATCH/picture "
            f"{f['patches_per_picture']:.4f}, picture GETs {f['picture_gets']}, 429s {f['rejected_429']}, "
            f"max in any window {f['max_in_any_window']}/{t['window_allowance']}",
            f"2 resync      {s['seconds']:.1f} s = {t['second_to_first_time']:.3f} × first run; PATCH "
            f"{s['counts']['patches']}, decodes {s['decodes_counted_in_pillow']}, BC requests "
            f"{s['bc_api_requests']} (bar ≤ {t['second_bc_bar']})",
        ]
    n = results.get("normalizer")
    if n and "error" not in n:
        for name, e in n["inputs"].items():
            m = e["methods"]
            vips = f"{e['syncd_vs_pyvips_cpu']:.2f}× pyvips" if "syncd_vs_pyvips_cpu" in e else "no pyvips"
            lines.append(
                f"3 normalizer  {name:15s} syncd {m['syncd']['cpu_ms']:7.1f} ms CPU = {vips}, naive Pillow "
                f"{m['pillow_naive']['cpu_ms'] / m['syncd']['cpu_ms']:.2f}× syncd; MAD syncd "
                f"{m['syncd']['mad']:.2f}, naive {m['pillow_naive']['mad']:.2f}"
                + (f", pyvips {m['pyvips']['mad']:.2f}" if "pyvips" in m else "")
            )
    par = results.get("parallel")
    if par and "error" not in par:
        two = par["best"]["2"]
        lines.append(
            f"4 parallel    {par['best']['1']['pictures_per_second']:.2f} → "
            f"{two['pictures_per_second']:.2f} pictures/s = ×{par['speedup_2_vs_1']:.2f} "
            f"[bar ≥ 1.7] (CPU-bound ×{par['cpu_bound_speedup']:.2f}; waited for a CPU "
            f"{two['syncd_runqueue_wait_seconds']:.1f} s of {two['seconds']:.1f} s); "
            f"loop lag p99 ≤ {par['loop_lag_p99_ms_worst']:.1f} ms"
        )
    mem = results.get("memory")
    if mem and "error" not in mem:
        a, b = (str(x) for x in mem["sizes"])
        lines.append(
            f"5 memory      peak RSS N={a}: {max(v['max_rss_mb'] for v in mem['runs'][a].values()):.1f} MB, "
            f"N={b}: {mem['peak_large_mb']:.1f} MB = ×{mem['ratio_large_to_small']:.2f} "
            "[bars ≤ 1.2, ≤ 150 MB]"
        )
    led = results.get("ledger")
    if led and "error" not in led:
        lines.append(
            f"6 ledger      {led['rows']:,} rows: {led['seconds']:.2f} s ({led['items_per_second']:.0f}/s), "
            f"{led['queries_total']} SQL statements ({led['queries_get_items']} by get_items); "
            f"get_items {led['get_items_seconds']:.2f} s, decisions {led['plan_seconds']:.2f} s, "
            f"recording {led['record_seconds']:.2f} s"
        )
        st = led["steady"]
        lines.append(
            f"              steady state (the next pass): {st['seconds']:.2f} s, {st['queries_total']} SQL "
            f"statements ({st['queries_get_items']} by get_items), recording {st['record_seconds']:.2f} s"
        )
    so = results.get("so_scale")
    if so and "error" not in so:
        f, rs, ch, big = so["first"], so["resync"], so["changes"], so["big_resync"]
        full = so.get("resync_full")
        full_text = (
            f"full reconcile: {full['so_requests_ok']} ({full['so_by_kind']}), {full['seconds']:.1f} s"
            if full
            else "full reconcile not run at this size (it downloads every picture)"
        )
        lines += [
            f"7 SuperOffice first sync {so['pictures']:,}: {f['seconds']:.1f} s = {so['first_ratio']:.3f} × "
            f"ideal {so['first_ideal_seconds']:.1f} s [bar ≤ 1.10]; "
            f"{so['first_so_requests_per_picture']:.3f} SO requests/picture ({f['so_by_kind']}), "
            f"{f['so_429']} × 429",
            f"              resync {so['pictures']:,}: {rs['so_requests_ok']} SO requests "
            f"(bar ≤ {so['resync_bar']}), {rs['seconds']:.1f} s; {full_text}",
            f"              3 changes: {ch['so_by_kind'].get('image', 0)} downloads, "
            f"{ch['bc_by_kind'].get('patch', 0)} PATCHes, {ch['counts'].get('cleared', 0)} cleared",
            f"              resync {so['big']:,}: {big['so_requests_ok']} SO requests (bar ≤ "
            f"{so['big_resync_bar']}), {big['seconds']:.1f} s "
            f"(setup {so['big_setup']['bench_seconds']:.0f} s)",
        ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"! {name}: {r['error']}")
        elif r.get("bars"):
            missed = [k for k, ok in r["bars"].items() if not ok]
            lines.append(f"  {name} bars: " + ("all met" if not missed else "missed " + ", ".join(missed)))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
