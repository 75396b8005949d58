"""`python -m bench --smoke` runs every measure end to end and writes its results (nothing about time).

The benchmarks start the sandbox and syncd as subprocesses, exactly as `make bench` does, only with tiny
sizes; this keeps them from rotting when the code they drive changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MEASURES = ("normalizer", "ledger", "throughput", "parallel", "memory")


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def test_bench_smoke_runs_every_measure_and_writes_results_and_charts(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mode"] == "smoke"
    assert summary["machine"]["cpus"] >= 1
    for name in MEASURES:
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert "error" not in result, (name, result.get("error"))
        assert result["bars"], name

    throughput = json.loads((tmp_path / "throughput.json").read_text())
    # What the run did is checked, not how fast: every picture written once, nothing on the resync.
    assert throughput["first"]["written"] == throughput["pictures"]
    assert throughput["first"]["counts"]["failed"] == 0
    assert throughput["second"]["counts"]["patches"] == 0
    assert throughput["second"]["decodes_counted_in_pillow"] == 0
    assert throughput["timeline"]["accepted"]

    ledger = json.loads((tmp_path / "ledger.json").read_text())
    assert ledger["unchanged"] == ledger["rows"]

    memory = json.loads((tmp_path / "memory.json").read_text())
    assert all(run["first"]["max_rss_mb"] > 0 for run in memory["runs"].values())

    if _has("matplotlib"):
        for chart in ("throughput", "normalizer", "parallel", "memory"):
            png = tmp_path / f"{chart}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", chart
    assert "syncd bench (smoke)" in proc.stdout
