"""Peak RSS of decoding issue #13's hostile PNGs with 8 in flight, with and without the decode budget.

    .venv/bin/python bench/decode_memory.py            # both pictures, before and after, as JSON lines
    .venv/bin/python bench/decode_memory.py --e2e [--code DIR]
        `syncd run --once` against the sandbox, 16 contacts carrying those PNGs (8 of each), with
        limits.concurrency 8 and cpu_workers 8; --code runs another checkout's syncd package (e.g. one
        extracted with `git archive COMMIT syncd | tar -x -C DIR`) for a before/after comparison

Each measurement runs in a fresh interpreter (ru_maxrss is a high-water mark), with 8 normalizer threads
and 8 decodes submitted at once, as ``limits.concurrency: 8`` and ``limits.cpu_workers: 8`` would do.
"before" is the plain thread-pool normalizer (what syncd did before the budget); "after" is the same
wrapped in :func:`syncd.decodebudget.budgeted` with the default ``picture.max_decode_memory``.
The pictures are made once in a separate process and cached in the temp directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PICTURES = {
    # 7000×7000 RGB with a tRNS chunk (one colour transparent): decodes to RGB, widens to RGBA.
    "png_7000_trns": "Image.new('RGB', (7000, 7000), (200, 180, 160)).save(p, 'PNG', transparency=(0, 0, 0))",
    # 7000×7000 16-bit grey (I;16): widens to 32-bit I before resizing.
    "png_7000_16bit": "Image.new('I;16', (7000, 7000), 1234).save(p, 'PNG')",
}
IN_FLIGHT = 8
ROOT = Path(__file__).resolve().parent.parent

_MEASURE = r"""
import asyncio, json, resource, sys
from concurrent.futures import ThreadPoolExecutor
from syncd import imaging
from syncd.config import PictureConfig
from syncd.decodebudget import DecodeBudget, budgeted
from syncd.run import executor_normalizer
from syncd.errors import ImageError

path, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(path, 'rb').read()
profile = imaging.PictureProfile()
def rss_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
async def main():
    with ThreadPoolExecutor(max_workers=n) as pool:
        normalize = executor_normalizer(pool)
        budget = DecodeBudget(PictureConfig().max_decode_memory)
        if mode == 'after':
            normalize = budgeted(normalize, budget)
        base = rss_mb()
        results = await asyncio.gather(*[normalize(data, profile) for _ in range(n)], return_exceptions=True)
        ok = sum(not isinstance(r, BaseException) for r in results)
        errors = sorted({str(r) for r in results if isinstance(r, BaseException)})
        print(json.dumps({'mode': mode, 'in_flight': n, 'decoded': ok, 'errors': errors,
                          'baseline_rss_mb': round(base), 'peak_rss_mb': round(rss_mb()),
                          'estimate_mb': round(imaging.decode_estimate(data, profile) / 1e6),
                          'budget_mb': round(budget.limit / 1e6),
                          'budget_peak_mb': round(budget.peak / 1e6) if mode == 'after' else None}))
asyncio.run(main())
"""


def picture(name: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"syncd-bench-{name}.png"
    if not path.exists():
        code = f"from PIL import Image; p = {str(path)!r}; {PICTURES[name]}"
        subprocess.run([sys.executable, "-c", code], check=True)
    return path


async def e2e(code: Path) -> dict[str, object]:
    """Peak RSS of the syncd CLI (started through bench.launch, so the figure is its own) over a sandbox
    whose contacts carry the hostile PNGs."""
    import asyncio
    import shutil

    from syncd.sandbox.server import Sandbox

    sys.path.insert(0, str(ROOT / "tests"))
    from e2e import write_config

    tmp = Path(tempfile.mkdtemp(prefix="syncd-bench-e2e-"))
    try:
        async with Sandbox(seed=5, contacts=30, persons=0) as sb:
            written = sb.dataset.expected["mappings"]["customers"]["written"]
            data = [picture(name).read_bytes() for name in PICTURES]
            for i, (sid, _) in enumerate(written[:16]):
                sb.dataset.so.set_image("contact", sid, data[i % 2], "image/png")
            limits = {"concurrency": IN_FLIGHT, "cpu_workers": IN_FLIGHT}
            cfg = write_config(sb, tmp, mappings=[sb.config()["mappings"][0]], limits=limits)
            out = tmp / "launch.json"
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.launch",
                str(out),
                "--",
                sys.executable,
                "-m",
                "syncd",
                "run",
                "--once",
                "--json",
                "-c",
                str(cfg),
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                cwd=str(code),  # `python -m syncd` imports the syncd package found there first
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            stdout, _ = await proc.communicate()
        launched = json.loads(out.read_text())
        counts = json.loads(stdout)["mappings"][0]["counts"]
        return {
            "e2e": str(code),
            "exit": launched["code"],
            "peak_rss_mb": round(launched["max_rss_mb"]),
            "written": counts.get("written", 0),
            "failed": counts.get("failed", 0),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    if "--e2e" in sys.argv:
        import asyncio

        code = Path(sys.argv[sys.argv.index("--code") + 1]) if "--code" in sys.argv else ROOT
        print(json.dumps(asyncio.run(e2e(code.resolve()))), flush=True)
        return 0
    env = dict(os.environ)
    for name in PICTURES:
        path = picture(name)
        for mode in ("before", "after"):
            out = subprocess.run(
                [sys.executable, "-c", _MEASURE, str(path), mode, str(IN_FLIGHT)],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            row = json.loads(out.stdout)
            print(json.dumps({"picture": name, "bytes": path.stat().st_size, **row}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
