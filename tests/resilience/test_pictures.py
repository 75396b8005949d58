"""Hostile pictures end to end: the crafted corpus (tests/support/pictures_corpus.py) stored in SuperOffice on
matched records, one real run over all of them.

Each picture either arrives in Business Central as a correct normalized JPEG, or fails with a clear
error recorded in the ledger (item and issue) and in the run summary; the run goes on (exit 2, partial)
and does not hang. The syncd process's peak RSS is measured exactly: the CLI runs in a small wrapper
that reports its own ``VmHWM`` from /proc when ``main()`` returns (``ru_maxrss`` of a child would
include the RSS that pytest had when it forked).
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from syncd.sandbox.server import Sandbox
from tests.support.e2e import Result, write_config
from tests.support.pictures_corpus import hostile_cases, hostile_corpus
from tests.support.resilience import customers_only, ledger_rows

pytestmark = pytest.mark.slow

PEAK_RSS_LIMIT_MB = 400  # a decoded 30000×30000 bomb alone would need ~3.6 GB

_WRAPPER = """
import sys
from syncd.cli import main
code = main(sys.argv[2:])
with open("/proc/self/status") as status, open(sys.argv[1], "w") as out:
    out.write(next(line for line in status if line.startswith("VmHWM:")).split()[1])
sys.exit(code)
"""


async def run_measured(peak_file: Path, *args: str, timeout: float = 240) -> tuple[Result, int]:
    """The CLI in a process of its own; returns its result and its peak RSS in kB."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WRAPPER,
        str(peak_file),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("syncd hung on the hostile corpus") from None
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode()), int(peak_file.read_text())


async def test_every_hostile_picture_is_written_correctly_or_fails_clearly_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    corpus = hostile_corpus()
    messages = {case.name: case.message for case in hostile_cases()}
    async with Sandbox(seed=41, contacts=80, persons=0) as sb:
        exp = sb.dataset.expected["mappings"]["customers"]
        pairs = [(int(s), str(t)) for s, t in exp["pairs"]]
        assert len(pairs) >= len(corpus) >= 25
        placed: dict[str, tuple[int, str, bytes, str]] = {}
        for (name, data, expect), (source_id, target_id) in zip(corpus, pairs, strict=False):
            # stored as the bytes they are; served as image/jpeg like any upload through a web client
            sb.dataset.so.set_image("contact", source_id, data, "image/jpeg")
            placed[name] = (source_id, target_id, data, expect)
        for source_id, _ in pairs[len(corpus) :]:
            sb.dataset.so.set_image("contact", source_id, None)
        bc_before = {t: _bc_picture(sb, t) for _, t in pairs}
        # TIFF and BMP are opt-in (picture.allowed_formats); the corpus has both, so allow every format
        every_format = {"allowed_formats": ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"]}
        cfg = write_config(sb, tmp_path, mappings=customers_only(sb), picture=every_format)

        started = time.perf_counter()
        result, peak_kb = await run_measured(tmp_path / "peak", "run", "--once", "--json", "-c", str(cfg))
        seconds = time.perf_counter() - started
        assert result.code == 2, result.stderr[-3000:]  # partial: the broken ones failed, the rest synced
        mapping = result.json()["mappings"][0]
        failures = {f["source"]: f["detail"] for f in mapping["failures"]}
        items = {
            r["source_id"]: r
            for r in ledger_rows(
                tmp_path / "ledger.sqlite", "SELECT * FROM items WHERE mapping = 'customers'"
            )
        }
        issues = {
            r["source_id"]: r["detail"]
            for r in ledger_rows(tmp_path / "ledger.sqlite", "SELECT * FROM issues WHERE kind = 'failed'")
        }

        wrong: list[str] = []
        for name, (source_id, target_id, _data, expect) in placed.items():
            item = items.get(source_id)
            out = _bc_picture(sb, target_id)
            if expect == "ok":
                if item is None or item["status"] != "written" or out is None:
                    wrong.append(
                        f"{name}: expected a picture, got {item and item['status']}: {item and item['error']}"
                    )
                    continue
                with Image.open(io.BytesIO(out)) as im:
                    im.load()
                    if im.format != "JPEG" or im.width > 500 or im.height > 500 or im.mode != "RGB":
                        wrong.append(f"{name}: wrote {im.format} {im.mode} {im.size}")
            else:
                fragment = messages[name].lower()
                detail = failures.get(f"contact {source_id}", "")
                if (
                    item is None
                    or item["status"] != "failed"
                    or fragment not in (item["error"] or "").lower()
                ):
                    wrong.append(f"{name}: ledger says {item and item['status']}: {item and item['error']}")
                elif fragment not in detail.lower() or fragment not in issues.get(source_id, "").lower():
                    wrong.append(f"{name}: summary {detail!r}, issue {issues.get(source_id)!r}")
                if out != bc_before[target_id]:
                    wrong.append(f"{name}: the BC picture changed although the source is unusable")
        assert not wrong, "\n".join(wrong)
        n_ok = sum(1 for *_, e in corpus if e == "ok")
        assert mapping["counts"]["written"] == n_ok
        assert mapping["counts"]["failed"] == len(corpus) - n_ok

        assert peak_kb < PEAK_RSS_LIMIT_MB * 1024, f"peak RSS {peak_kb / 1024:.0f} MB"
        print(
            f"\nhostile corpus: {len(corpus)} pictures ({n_ok} ok, {len(corpus) - n_ok} errors) in one run"
            f" of {seconds:.1f}s; syncd peak RSS {peak_kb / 1024:.0f} MB"
        )


def _bc_picture(sb: Sandbox, target_id: str) -> bytes | None:
    rec = sb.dataset.bc.get_record(sb.dataset.company_id, "customers", target_id)
    return rec.picture.data if rec.picture is not None else None
