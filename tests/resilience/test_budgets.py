"""Budgets: ``limits.max_items_per_run`` and ``limits.max_runtime`` end a run cleanly.

Decision (README "Exit codes"): reaching a budget is not an error. The run stops taking items, finishes
those in flight, records outcome ``budget`` (summary, ``--json``, ``syncd status``, the ledger's runs)
and exits 0 — a budget is a limit the operator chose, the next run (timer or daemon) continues where it
stopped, and a non-zero code would mark every budget-limited timer run as failed in systemd. Items that
failed before the budget was reached still make it exit 2, as in any run.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from syncd.sandbox.server import Sandbox
from tests.support.e2e import syncd, write_config
from tests.support.resilience import customers_only, ledger_rows, picture_writes

pytestmark = pytest.mark.slow


async def test_max_items_per_run_stops_cleanly_says_budget_exits_0_and_the_next_run_continues(
    tmp_path: Path,
) -> None:
    async with Sandbox(seed=31, contacts=19, persons=0) as sb:
        exp = sb.dataset.expected["mappings"]["customers"]
        assert len(exp["written"]) > 5
        cfg = write_config(sb, tmp_path, mappings=customers_only(sb), limits={"max_items_per_run": 5})

        first = await syncd("run", "--once", "-c", str(cfg))
        assert first.code == 0, first.stderr
        assert "max_items_per_run (5) reached" in first.stdout
        assert "budget" in first.stdout.split("outcome", 1)[1].splitlines()[0]
        assert sum(picture_writes(sb).values()) == 5
        status = await syncd("status", "--json", "-c", str(cfg))
        assert status.json()["runs"][0]["outcome"] == "budget"

        runs = 1
        while True:
            again = await syncd("run", "--once", "--json", "-c", str(cfg))
            runs += 1
            assert again.code == 0, again.stderr
            if again.json()["mappings"][0]["outcome"] == "ok":
                break
            assert again.json()["mappings"][0]["outcome"] == "budget" and runs < 5
        writes = picture_writes(sb)
        assert set(writes) == {t for _, t in exp["written"]} and max(writes.values()) == 1
        outcomes = [r["outcome"] for r in ledger_rows(tmp_path / "ledger.sqlite", "SELECT outcome FROM runs")]
        assert outcomes == ["budget"] * (runs - 1) + ["ok"]


async def test_a_budget_run_with_a_failed_item_exits_2(tmp_path: Path) -> None:
    async with Sandbox(seed=32, contacts=19, persons=0) as sb:
        exp = sb.dataset.expected["mappings"]["customers"]
        broken_source = exp["written"][0][0]  # phase B takes items in source id order: this one first
        sb.dataset.so.set_image("contact", broken_source, b"<html>502 Bad Gateway</html>", "image/jpeg")
        cfg = write_config(sb, tmp_path, mappings=customers_only(sb), limits={"max_items_per_run": 3})
        result = await syncd("run", "--once", "--json", "-c", str(cfg))
        assert result.code == 2, result.stderr
        mapping = result.json()["mappings"][0]
        assert mapping["outcome"] == "budget" and mapping["counts"]["failed"] == 1
        assert mapping["failures"][0]["source"] == f"contact {broken_source}"


async def test_max_runtime_stops_the_run_cleanly_with_outcome_budget(tmp_path: Path) -> None:
    async with Sandbox(seed=33, contacts=19, persons=0) as sb:
        exp = sb.dataset.expected["mappings"]["customers"]
        # The listings alone take longer than this: no item is started, the run ends as "budget".
        cfg = write_config(sb, tmp_path, mappings=customers_only(sb), limits={"max_runtime": "1ms"})
        result = await syncd("run", "--once", "-c", str(cfg))
        assert result.code == 0, result.stderr
        assert "max_runtime (0.001s) reached" in result.stdout
        assert sum(picture_writes(sb).values()) == 0

        unlimited = write_config(sb, tmp_path, "unlimited.yaml", mappings=customers_only(sb))
        done = await syncd("run", "--once", "--json", "-c", str(unlimited))
        assert done.code == 0 and done.json()["mappings"][0]["counts"]["written"] == len(exp["written"])
        for _, target_id in exp["written"]:
            rec = sb.dataset.bc.get_record(sb.dataset.company_id, "customers", target_id)
            assert rec.picture is not None
            with Image.open(io.BytesIO(rec.picture.data)) as im:
                assert im.format == "JPEG"
