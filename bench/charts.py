"""PNG charts of the results (matplotlib, from the ``bench`` extra; skipped when it is not installed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {"syncd": "#2b6cb0", "pillow_naive": "#c05621", "pyvips": "#2f855a", "pyvips_threads": "#9ae6b4"}
LABELS = {
    "syncd": "syncd.imaging.normalize",
    "pillow_naive": "naive Pillow",
    "pyvips": "pyvips thumbnail (1 thread)",
    "pyvips_threads": "pyvips thumbnail (all threads)",
}


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def draw_all(results: dict[str, Any], out: Path, subtitle: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    drawn: list[Path] = []
    for name, draw in (
        ("throughput", _throughput),
        ("normalizer", _normalizer),
        ("parallel", _parallel),
        ("memory", _memory),
        ("so_scale", _so_scale),
    ):
        if name in results and "error" not in results[name]:
            path = out / f"{name}.png"
            draw(results[name], path, subtitle)
            drawn.append(path)
    return drawn


def _throughput(r: dict[str, Any], path: Path, subtitle: str) -> None:
    import matplotlib.pyplot as plt

    t = r["timeline"]
    fig, ax = plt.subplots(figsize=(10, 4.2), dpi=110)
    secs = t["seconds"]
    ax.bar(secs, t["accepted"], width=1.0, align="edge", color="#4a90d9", label="requests accepted (per 1 s)")
    if any(t["rejected"]):
        ax.bar(
            secs, t["rejected"], width=1.0, align="edge", bottom=t["accepted"], color="#e53e3e", label="429"
        )
    ax.plot(
        [s + 1 for s in secs],
        t["window_rate"],
        color="#1a202c",
        linewidth=1.6,
        label=f"average over the last {r['window_seconds']:g} s",
    )
    ax.axhline(r["rate_per_second"], color="#e53e3e", linestyle="--", linewidth=1.2, label="ceiling 20/s")
    first = r["first"]
    ax.set_title(
        f"Measure 1 — Business Central requests per second, {r['pictures']:,} pictures "
        f"(window {r['window_allowance']} per {r['window_seconds']:g} s)\n"
        f"run {first['seconds']:.1f} s = {r['ratio_to_ideal']:.3f} × requests/rate "
        f"({r['requests_needed']:,} / 20 = {r['ideal_seconds']:.1f} s); "
        f"{first['bc_requests_per_picture']:.4f} BC requests per picture, {first['rejected_429']} × 429",
        fontsize=9,
    )
    ax.set_xlabel(f"seconds since syncd started   [{subtitle}]", fontsize=8)
    ax.set_ylabel("requests")
    ax.set_yscale("symlog", linthresh=30)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _normalizer(r: dict[str, Any], path: Path, subtitle: str) -> None:
    import matplotlib.pyplot as plt

    names = list(r["inputs"])
    methods = [m for m in r["methods"] if m in COLOURS]
    fig, (ax, aq) = plt.subplots(2, 1, figsize=(10, 6.4), dpi=110, gridspec_kw={"height_ratios": [3, 2]})
    width = 0.8 / len(methods)
    for k, m in enumerate(methods):
        xs = [i + (k - (len(methods) - 1) / 2) * width for i in range(len(names))]
        cpu = [r["inputs"][n]["methods"][m]["cpu_ms"] for n in names]
        mad = [r["inputs"][n]["methods"][m]["mad"] for n in names]
        ax.bar(xs, cpu, width=width, color=COLOURS[m], label=LABELS[m])
        for x, v in zip(xs, cpu, strict=True):
            ax.text(x, v, f"{v:.0f}", ha="center", va="bottom", fontsize=6.5)
        aq.bar(xs, mad, width=width, color=COLOURS[m])
    for ax_ in (ax, aq):
        ax_.set_xticks(range(len(names)))
        ax_.set_xticklabels(names, fontsize=8)
        ax_.grid(axis="y", alpha=0.3)
    ax.set_yscale("log")
    ax.set_ylabel("CPU ms per picture (median)")
    ax.set_title(
        "Measure 3 — normalizing to fit 500×500 JPEG q85: time per input (lower is better)\n"
        f"median of {r['rounds']} rounds; CPU time, so a shared machine's waiting is not counted",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    aq.set_ylabel("mean abs. difference\nvs reference (0–255)")
    aq.set_xlabel(f"input   [{subtitle}]", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _parallel(r: dict[str, Any], path: Path, subtitle: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    for run in r["runs"]:
        w = run["workers"]
        ax.scatter([w], [run["pictures_per_second"]], color="#a0aec0", zorder=3, s=18)
    best = [r["best"]["1"]["pictures_per_second"], r["best"]["2"]["pictures_per_second"]]
    ax.bar([1, 2], best, color=["#a0c4e8", "#2b6cb0"], width=0.6)
    for x, v in zip([1, 2], best, strict=True):
        ax.text(x, v, f"{v:.2f}/s", ha="center", va="bottom", fontsize=8)
    ax.set_xticks([1, 2])
    ax.set_xticklabels(["cpu_workers: 1", "cpu_workers: 2"])
    ax.set_ylabel("pictures per second")
    ax.set_title(
        f"Measure 4 — CPU-bound mix, {r['pictures']} pictures: ×{r['speedup_2_vs_1']:.2f} with 2 workers\n"
        f"(×{r['cpu_bound_speedup']:.2f} if syncd and the sandbox had both cores to themselves); "
        f"event-loop lag p99 ≤ {r['loop_lag_p99_ms_worst']:.1f} ms\n(grey: every run; bars: best of each)",
        fontsize=9,
    )
    ax.set_xlabel(subtitle, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _memory(r: dict[str, Any], path: Path, subtitle: str) -> None:
    import matplotlib.pyplot as plt

    sizes = [str(n) for n in r["sizes"]]
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=110)
    for k, phase in enumerate(("first", "resync")):
        xs = [i + (k - 0.5) * 0.38 for i in range(len(sizes))]
        vals = [r["runs"][n][phase]["max_rss_mb"] for n in sizes]
        ax.bar(xs, vals, width=0.38, color=["#2b6cb0", "#90cdf4"][k], label=f"{phase} run")
        for x, v in zip(xs, vals, strict=True):
            ax.text(x, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax.axhline(150, color="#e53e3e", linestyle="--", linewidth=1, label="150 MB")
    small = max(r["runs"][sizes[0]][p]["max_rss_mb"] for p in ("first", "resync"))
    ax.axhline(1.2 * small, color="#dd6b20", linestyle=":", linewidth=1, label=f"1.2 × N={sizes[0]}")
    ax.set_xticks(range(len(sizes)))
    ax.set_xticklabels([f"N = {int(n):,}" for n in sizes])
    ax.set_ylabel("peak RSS of syncd (MB)")
    ax.set_title(
        f"Measure 5 — peak RSS, concurrency 8: ×{r['ratio_large_to_small']:.2f} from N={sizes[0]} to "
        f"N={sizes[1]}",
        fontsize=9,
    )
    ax.set_xlabel(subtitle, fontsize=8)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _so_scale(r: dict[str, Any], path: Path, subtitle: str) -> None:
    import matplotlib.pyplot as plt

    runs = [
        (f"first sync\n{r['pictures']:,}", r["first"]),
        (f"resync\n{r['pictures']:,}", r["resync"]),
        *([(f"full reconcile\n{r['pictures']:,}", r["resync_full"])] if "resync_full" in r else []),
        (f"3 changes\namong {r['pictures']:,}", r["changes"]),
        (f"resync\n{r['big']:,}", r["big_resync"]),
    ]
    kinds = (
        ("list", "listing pages", "#2b6cb0"),
        ("dynamic", "picture pages (archive/dynamic)", "#2f855a"),
        ("image_info", "ImageInfo", "#c05621"),
        ("image", "picture downloads", "#805ad5"),
    )
    fig, ax = plt.subplots(figsize=(12, 4.6), dpi=110)
    xs = list(range(len(runs)))
    bottom = [0.0] * len(runs)
    for key, label, colour in kinds:
        vals = [float(run["so_by_kind"].get(key, 0)) for _, run in runs]
        ax.bar(xs, vals, bottom=bottom, color=colour, label=label, width=0.6)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    for x, (_, run), total in zip(xs, runs, bottom, strict=True):
        ax.text(x, total * 1.15 + 0.5, f"{int(total):,} req\n{run['seconds']:.1f} s", ha="center", fontsize=8)
    per_record = [
        r["pictures"] + r["resync"]["so_by_kind"].get("list", 0),
        r["big"] + r["big_resync"]["so_by_kind"].get("list", 0),
    ]
    ax.scatter(
        [1, len(runs) - 1],
        per_record,
        marker="_",
        s=900,
        color="#e53e3e",
        zorder=3,
        label="per-record ImageInfo would need (N + pages)",
    )
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(0, max(max(bottom), *per_record) * 12)
    ax.set_xticks(xs)
    ax.set_xticklabels([name for name, _ in runs], fontsize=8)
    ax.set_ylabel("SuperOffice requests")
    ax.set_title(
        f"Measure 8 — SuperOffice requests per run (SuperOffice 10/s, BC 20/s, syncd default limits)\n"
        f"first sync {r['first']['seconds']:.1f} s = {r['first_ratio']:.3f} × ideal "
        f"({r['first_ideal_seconds']:.1f} s); {r['first_so_requests_per_picture']:.3f} SuperOffice "
        f"requests per picture",
        fontsize=9,
    )
    ax.set_xlabel(subtitle, fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
