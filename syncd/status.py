"""What ``syncd status`` and the status page show: :func:`status_data` and its typed, JSON-able shape.

Both the CLI (``syncd status``) and the web status page read the ledger through :func:`status_data`, so
they can never disagree; this module sits below both so that neither has to import the other.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TypedDict

from syncd.fingerprints import FELL_BACK
from syncd.ledger import Issue, Ledger, RunRecord


class RunStatus(TypedDict):
    """One run as shown: the latest of its mapping, or an entry of the history."""

    id: int
    mapping: str
    mode: str
    started_at: str
    finished_at: str | None
    outcome: str | None
    error: str | None
    counts: dict[str, int]
    seconds: float | None
    company: str | None
    change_detection: str | None
    change_detection_note: str | None
    change_detection_fell_back: bool


class IssueStatus(TypedDict):
    """A record a run could not sync."""

    mapping: str | None
    kind: str
    source: str
    target: str
    key: str | None
    detail: str | None


class CompanyStatus(TypedDict):
    """The Business Central company a mapping's ledger rows describe."""

    company: str
    company_id: str
    target: str


class StatusData(TypedDict):
    """The whole of ``syncd status --json`` (the status page adds readiness, schedule and changes)."""

    ledger: str
    items: int
    runs: list[RunStatus]
    history: list[RunStatus]
    issues: list[IssueStatus]
    companies: dict[str, CompanyStatus]


async def status_data(ledger: Ledger, path: str) -> StatusData:
    """What `syncd status` and the status page show; JSON-able."""
    runs = await ledger.last_runs(limit=500)  # enough to hold the latest run of every mapping
    latest: dict[str, RunRecord] = {}
    for r in runs:
        latest.setdefault(r.mapping, r)
    issues = await ledger.list_issues()
    companies = await ledger.companies()
    return {
        "ledger": path,
        "items": await ledger.count_items(),
        "runs": [run_status(r) for r in latest.values()],
        "history": [run_status(r) for r in runs[:20]],
        "issues": [issue_status(i) for i in issues],
        # the Business Central company each mapping's ledger rows describe
        "companies": {
            name: {"company": b.company, "company_id": b.company_id, "target": b.target_kind}
            for name, b in companies.items()
        },
    }


def run_status(r: RunRecord) -> RunStatus:
    """One ledger run row as shown."""
    counts = r.counts if isinstance(r.counts, dict) else json.loads(r.counts or "{}")
    return {
        "id": r.id,
        "mapping": r.mapping,
        "mode": r.mode,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "outcome": r.outcome,
        "error": r.error,
        "counts": counts,
        "seconds": seconds_between(r.started_at, r.finished_at),
        "company": r.company,
        "change_detection": r.change_detection,
        "change_detection_note": r.change_detection_note,
        "change_detection_fell_back": fell_back(r.change_detection_note),
    }


def issue_status(i: Issue) -> IssueStatus:
    """One ledger issue as shown."""
    return {
        "mapping": i.mapping,
        "kind": i.kind,
        "source": str(i.source_id),
        "target": ", ".join(i.target_ids),
        "key": i.key,
        "detail": i.detail,
    }


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one ISO timestamp to another, to a tenth; ``None`` if either is missing or bad."""
    if start is None or end is None:
        return None
    try:
        return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 1)
    except (TypeError, ValueError):  # e.g. one aware, one naive
        return None


def fell_back(note: str | None) -> bool:
    """Whether a run's change-detection note says ``auto`` fell back to per-record ImageInfo."""
    return bool(note) and str(note).startswith(FELL_BACK)
