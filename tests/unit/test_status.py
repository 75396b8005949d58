"""``syncd.status.status_data``: the typed shape ``syncd status --json`` and the status page share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_type_hints

from syncd.ledger import Issue, Ledger
from syncd.status import CompanyStatus, IssueStatus, RunStatus, StatusData, fell_back, status_data


async def test_status_data_has_exactly_the_typed_keys(tmp_path: Path) -> None:
    async with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        run = await ledger.start_run("customers", "incremental")
        await ledger.bind_company("customers", "c-1", "CRONUS", "customers")
        await ledger.finish_run(run, {"written": 2, "failed": 1}, "partial", "one failed")
        await ledger.replace_issues(
            run, "customers", [Issue(kind="failed", source_id=4, target_ids=("C4", "C5"), detail="bad")]
        )
        data = await status_data(ledger, "the-ledger")

    assert set(data) == set(get_type_hints(StatusData))
    assert data["ledger"] == "the-ledger" and data["items"] == 0
    (latest,) = data["runs"]
    assert set(latest) == set(get_type_hints(RunStatus))
    assert latest["mapping"] == "customers" and latest["outcome"] == "partial"
    assert latest["counts"] == {"written": 2, "failed": 1} and latest["change_detection_fell_back"] is False
    assert isinstance(latest["seconds"], float)
    assert data["history"] == data["runs"]
    (issue,) = data["issues"]
    assert set(issue) == set(get_type_hints(IssueStatus))
    assert issue == {
        "mapping": "customers",
        "kind": "failed",
        "source": "4",
        "target": "C4, C5",
        "key": None,
        "detail": "bad",
    }
    assert set(data["companies"]["customers"]) == set(get_type_hints(CompanyStatus))
    assert data["companies"]["customers"] == {"company": "CRONUS", "company_id": "c-1", "target": "customers"}
    json.dumps(data)  # JSON-able as it is


async def test_an_empty_ledger_has_an_empty_status(tmp_path: Path) -> None:
    async with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        data = await status_data(ledger, "x")
    assert data == {"ledger": "x", "items": 0, "runs": [], "history": [], "issues": [], "companies": {}}


def test_fell_back_reads_the_change_detection_note() -> None:
    from syncd.fingerprints import FELL_BACK

    assert fell_back(f"{FELL_BACK} (HTTP 403)") and not fell_back(None) and not fell_back("verified")
