"""What people read in the terminal: the progress bar, the end-of-run summary, the dry-run plan and
``syncd status``. Rendering only; the numbers come from the engine and the ledger.

Text that came from a server (error messages, keys, numbers) is data: it goes through
:func:`syncd.servertext.for_terminal` (secrets masked, control characters gone, Rich markup escaped)
or is printed with ``markup=False`` after :func:`~syncd.servertext.clean`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from syncd.jobs import MappingOutcome
from syncd.servertext import clean, for_terminal
from syncd.status import CompanyStatus, RunStatus, StatusData
from syncd.types import Outcome

SUMMARY_COLUMNS = [
    Outcome.WRITTEN,
    Outcome.UNCHANGED,
    Outcome.BLANK,
    Outcome.CLEARED,
    Outcome.KEPT,
    Outcome.UNMATCHED,
    Outcome.AMBIGUOUS,
    Outcome.FAILED,
]
MAX_LISTED = 25


class ProgressReporter:
    """A rich progress bar per mapping phase (only on a TTY; elsewhere the JSON log says it all)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.fields[mapping]}[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._tasks: dict[str, TaskID] = {}  # task fields/descriptions below are rendered as markup
        self._writing: set[str] = set()  # mappings whose bar counts written items (phase B)

    def __enter__(self) -> ProgressReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def phase(self, mapping: str, text: str, total: int | None) -> None:
        if text.startswith("writing"):
            self._writing.add(mapping)
        else:
            self._writing.discard(mapping)
        task = self._tasks.get(mapping)
        if task is None:
            self._tasks[mapping] = self.progress.add_task(
                for_terminal(text), total=total, mapping=for_terminal(mapping)
            )
        else:
            self.progress.reset(task, total=total, description=for_terminal(text))

    def checked(self, mapping: str) -> None:
        task = self._tasks.get(mapping)
        if task is not None:
            self.progress.advance(task)

    def advance(self, mapping: str, outcome: Outcome) -> None:
        task = self._tasks.get(mapping)
        if task is not None and mapping in self._writing:
            self.progress.advance(task)

    def normalized(self, seconds: float) -> None:
        pass


def print_summary(
    console: Console, outcomes: Sequence[MappingOutcome], *, dry_run: bool, max_listed: int = MAX_LISTED
) -> None:
    title = "syncd — dry run (nothing was changed)" if dry_run else "syncd — run summary"
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for mo in outcomes:
        table.add_column(for_terminal(mo.mapping), justify="right")
    labels = {
        "written": "would write" if dry_run else "written",
        "cleared": "would clear" if dry_run else "cleared",
    }
    rows: list[tuple[str, list[str]]] = []
    for o in SUMMARY_COLUMNS:
        rows.append((labels.get(o.value, o.value), [_count(mo, o.value) for mo in outcomes]))
    rows.append(("PATCH requests", [_count(mo, "patches") for mo in outcomes]))
    rows.append(("pictures decoded", [_count(mo, "decodes") for mo in outcomes]))
    rows.append(("time", [f"{mo.result.duration:.1f}s" if mo.result else "" for mo in outcomes]))
    rows.append(("outcome", [_outcome(mo) for mo in outcomes]))
    for label, values in rows:
        table.add_row(label, *values)
    console.print(table)
    for mo in outcomes:
        name = for_terminal(mo.mapping)
        if mo.error is not None:
            console.print(f"[red]✗ {name}:[/] {for_terminal(mo.error.message)}", highlight=False)
            if mo.error.hint:
                console.print(f"  hint: {for_terminal(mo.error.hint)}", highlight=False)
        if mo.result is None:
            continue
        r = mo.result
        if r.error and r.outcome not in ("ok", "partial"):
            console.print(
                f"[yellow]! {name}: {for_terminal(r.outcome)}: {for_terminal(r.error)}[/]", highlight=False
            )
        _listing(
            console, f"{mo.mapping}: failed", [(e.source, e.target, e.detail) for e in r.failures], max_listed
        )
        _listing(
            console,
            f"{mo.mapping}: not written (unmatched / ambiguous)",
            [(f"{e.action}: {e.source}", e.target, e.detail) for e in r.problems],
            max_listed,
        )


def _listing(
    console: Console, title: str, rows: list[tuple[str, str, str | None]], max_listed: int = MAX_LISTED
) -> None:
    if not rows:
        return
    console.print(f"[bold]{for_terminal(title)}[/] ({len(rows)})", highlight=False)
    for source, target, detail in rows[:max_listed]:
        arrow = f" → {target}" if target else ""
        line = clean(f"  {source}{arrow}: {detail}")
        console.print(line, highlight=False, markup=False, overflow="fold")
    if len(rows) > max_listed:
        more = f"… and {len(rows) - max_listed} more" if max_listed else "listed"
        console.print(f"  {more} in `syncd status`", highlight=False)


def _count(mo: MappingOutcome, key: str) -> str:
    return str(mo.result.counts.as_dict().get(key, 0)) if mo.result is not None else "–"


def _outcome(mo: MappingOutcome) -> str:
    if mo.result is None:
        return f"[red]{type(mo.error).__name__ if mo.error else 'error'}[/]"
    style = {"ok": "green", "partial": "yellow", "budget": "yellow", "interrupted": "yellow"}.get(
        mo.result.outcome, "red"
    )
    return f"[{style}]{for_terminal(mo.result.outcome)}[/]"


def print_plan(out: IO[str], outcomes: Sequence[MappingOutcome]) -> None:
    """The dry-run plan, one line per item: ``ACTION  SOURCE  →  TARGET  DETAIL``."""
    for mo in outcomes:
        if mo.result is None:
            continue
        for e in [*mo.result.plan, *mo.result.problems]:
            fields = [mo.mapping, e.action, e.source, e.target, *([e.detail] if e.detail else [])]
            out.write("\t".join(clean(f) for f in fields) + "\n")  # one line per item, whatever the text


def outcomes_json(outcomes: Sequence[MappingOutcome]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for mo in outcomes:
        row: dict[str, Any] = {"mapping": mo.mapping, "exit_code": int(mo.exit_code)}
        if mo.error is not None:
            row["error"] = clean(mo.error.message)
        if mo.result is not None:
            r = mo.result
            row.update(outcome=r.outcome, counts=r.counts.as_dict(), seconds=round(r.duration, 3))
            row["change_detection"] = r.change_detection
            if r.change_detection_note:
                row["change_detection_note"] = r.change_detection_note
            if r.error:
                row["reason"] = clean(r.error)  # which budget or safety stop ended the run
            row["failures"] = [_entry(e) for e in r.failures]
        rows.append(row)
    return rows


def _entry(e: Any) -> dict[str, str]:
    return {
        "action": e.action,
        "source": clean(e.source),
        "target": clean(e.target),
        "detail": clean(e.detail),
    }


def _bound_company(bound: CompanyStatus | None) -> str:
    return bound["company"] if bound else ""


def print_status(console: Console, status: StatusData) -> None:
    runs = status["runs"]
    table = Table(title="syncd — last run of each mapping", title_justify="left")
    table.add_column("")
    for run in runs:
        table.add_column(for_terminal(run["mapping"]), justify="right")

    def cell(run: RunStatus, key: str) -> str:
        return for_terminal(run.get("counts", {}).get(key, 0))

    companies = status.get("companies", {})
    table.add_row(
        "company",
        *[for_terminal(run.get("company") or _bound_company(companies.get(run["mapping"]))) for run in runs],
    )
    table.add_row(
        "started (UTC)", *[for_terminal((run["started_at"] or "")[:19].replace("T", " ")) for run in runs]
    )
    table.add_row("mode", *[for_terminal(run["mode"]) for run in runs])
    table.add_row("outcome", *[for_terminal(run["outcome"] or "running") for run in runs])
    for key in ("written", "unchanged", "blank", "cleared", "kept", "unmatched", "ambiguous", "failed"):
        table.add_row(key, *[cell(run, key) for run in runs])
    table.add_row("seconds", *[str(run.get("seconds") or "") for run in runs])
    table.add_row("change detection", *[str(run.get("change_detection") or "") for run in runs])
    console.print(table)
    for run in runs:
        if run.get("change_detection_fell_back"):
            line = clean(f"{run['mapping']}: change detection {run['change_detection_note']}")
            console.print(line, highlight=False, markup=False, overflow="fold")
    console.print(f"ledger: {status['ledger']} — {status['items']} items", highlight=False, markup=False)
    for run in runs:  # why the last run of a mapping did not end well
        if run.get("error") and run.get("outcome") not in (None, "ok", "partial"):
            line = clean(f"{run['mapping']}: {run['outcome']}: {run['error']}")
            console.print(line, highlight=False, markup=False, overflow="fold")
    issues = status["issues"]
    for kind in ("failed", "ambiguous", "unmatched"):
        rows = [i for i in issues if i["kind"] == kind]
        _listing(console, kind, [(f"{i['mapping']} {i['source']}", i["target"], i["detail"]) for i in rows])


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)
