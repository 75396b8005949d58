"""`make demo` runs `syncd demo`: a new user must see pictures flow, then a run with nothing to do."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


async def test_demo_shows_first_run_writes_and_second_run_writes_nothing(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncd",
        "demo",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "100"},
    )
    out_bytes, _ = await asyncio.wait_for(proc.communicate(), 300)
    out = out_bytes.decode()
    assert proc.returncode == 0, out
    first = re.search(r"received (\d+) picture PATCH requests in run 1", out)
    second = re.search(r"received (\d+) picture PATCH requests in run 2", out)
    assert first and int(first.group(1)) > 200, out
    assert second and int(second.group(1)) == 0, out
    # Run 2 repeats run 1's failures and problems without listing them again: it says where they are.
    run2 = out[out.index("run 2") :]
    assert "listed in `syncd status`" in run2 and "more in `syncd status`" not in run2, run2
    assert re.search(r"… and \d+ more in `syncd status`", out[: out.index("run 2")]), out
    assert (tmp_path / "demo" / "syncd.yaml").exists()
    # the status command the demo recommends works on what it left behind
    status = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncd",
        "status",
        "-c",
        "demo/syncd.yaml",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    s_out, s_err = await asyncio.wait_for(status.communicate(), 60)
    assert status.returncode == 0, s_err.decode()
    assert "customers" in s_out.decode() and "staff" in s_out.decode()
