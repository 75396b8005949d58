"""The status page's data and HTML: what ``/``, ``/status.json`` and ``/readyz`` of :mod:`syncd.web` show.

:func:`gather_page` reads everything the page shows (the ledger through :func:`syncd.status.status_data`,
like ``syncd status``), :func:`page_json` and :func:`render_status_page` turn it into JSON and HTML. The
HTML is server-rendered with inline CSS, no JavaScript and no external assets; everything shown is
escaped (:func:`html.escape`). :class:`Readiness` is the checks behind ``/readyz``, and
:class:`StatusSource` what all of this needs from the daemon (tests pass a fake).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from syncd import __version__
from syncd.config import Config
from syncd.ledger import Ledger, RecentChange
from syncd.metrics import Metrics
from syncd.servertext import clean
from syncd.status import CompanyStatus, RunStatus, StatusData, status_data

__all__ = [
    "Check",
    "MappingRow",
    "PageData",
    "Readiness",
    "StatusSource",
    "gather_page",
    "page_json",
    "render_status_page",
]

RECENT_SHOWN = 24
ISSUES_SHOWN = 200
HISTORY_SHOWN = 20
REFRESH_SECONDS = 30
THUMB_SIDES = ("source", "output")  # /thumb/{id}/{side}: the SuperOffice picture, what was written


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Readiness:
    """The checks behind ``/readyz``; ready when all pass."""

    checks: Mapping[str, Check]

    @property
    def ready(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks.values())

    @property
    def reason(self) -> str:
        """The failing checks in one line (empty when ready)."""
        return "; ".join(f"{name}: {clean(c.detail)}" for name, c in self.checks.items() if not c.ok)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ready": self.ready,
            "checks": {name: {"ok": c.ok, "detail": clean(c.detail)} for name, c in self.checks.items()},
        }
        if not self.ready:
            out["reason"] = self.reason or "not started"
        return out


class StatusSource(Protocol):
    """What the web endpoint needs from the daemon (tests pass a fake)."""

    @property
    def config(self) -> Config | None: ...
    @property
    def ledger(self) -> Ledger | None: ...
    @property
    def metrics(self) -> Metrics | None: ...
    async def readiness(self) -> Readiness: ...
    def next_runs(self, mapping: str) -> Mapping[str, datetime | None]: ...
    def running(self) -> Mapping[str, str]: ...


def thumbnail(change: RecentChange, side: str) -> bytes | None:
    """A recent change's thumbnail of ``side`` (one of :data:`THUMB_SIDES`), None when it has none."""
    return change.source_thumb if side == "source" else change.output_thumb


# -- data for the page ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MappingRow:
    """One line of the mappings table: the mapping as configured, its last run and its schedule."""

    name: str
    source: str
    target: str
    company: str  # the Business Central company (as configured; for a removed mapping, from the ledger)
    enabled: bool
    in_config: bool
    running: str | None  # mode of the run going on
    last_run: RunStatus | None  # a run from status_data()["runs"]
    next_incremental: datetime | None
    next_full: datetime | None


@dataclass(frozen=True, slots=True)
class PageData:
    status: StatusData  # syncd.status.status_data()
    readiness: Readiness
    mappings: list[MappingRow]
    recent: list[RecentChange]
    generated: datetime
    targets: dict[str, str] = field(default_factory=dict)  # mapping -> BC entity set


async def gather_page(source: StatusSource, *, recent: int = RECENT_SHOWN) -> PageData:
    """Read everything the page shows (the ledger through the same function as ``syncd status``)."""
    config, ledger = source.config, source.ledger
    readiness = await source.readiness()
    status: StatusData
    if ledger is not None:
        status = await status_data(ledger, str(ledger.path))
        changes = await ledger.recent_changes(limit=recent)
    else:
        path = str(config.ledger) if config is not None else ""
        status = {
            "ledger": path,
            "items": 0,
            "runs": [],
            "history": [],
            "issues": [],
            "companies": {},
        }
        changes = []
    last = {r["mapping"]: r for r in status["runs"]}
    running = source.running()
    rows: list[MappingRow] = []
    configured = config.mappings if config is not None else []
    for m in configured:
        assert config is not None
        nxt = source.next_runs(m.name)
        rows.append(
            MappingRow(
                name=m.name,
                source=m.source,
                target=m.target,
                company=_company_shown(config.company_of(m), status["companies"].get(m.name)),
                enabled=m.enabled,
                in_config=True,
                running=running.get(m.name),
                last_run=last.get(m.name),
                next_incremental=nxt.get("incremental"),
                next_full=nxt.get("full"),
            )
        )
    names = {m.name for m in configured}
    for name, run in last.items():
        if name not in names:
            rows.append(
                MappingRow(
                    name=name,
                    source="",
                    target="",
                    company=str(run["company"] or _bound_company(status["companies"].get(name))),
                    enabled=False,
                    in_config=False,
                    running=running.get(name),
                    last_run=run,
                    next_incremental=None,
                    next_full=None,
                )
            )
    targets = {m.name: str(m.target) for m in configured}
    return PageData(status, readiness, rows, changes, datetime.now(UTC), targets)


def _bound_company(bound: CompanyStatus | None) -> str:
    return bound["company"] if bound else ""


def _company_shown(configured: str, bound: Mapping[str, Any] | None) -> str:
    """The company's name when the ledger knows the mapping writes to it (the config may give its id)."""
    if bound and configured.strip().lower() in (
        str(bound["company"]).lower(),
        str(bound["company_id"]).lower(),
    ):
        return str(bound["company"])
    return configured


def page_json(data: PageData) -> dict[str, Any]:
    """``/status.json``: ``status_data()`` plus readiness, schedule and recent changes (no image bytes)."""
    return {
        **data.status,
        "ready": data.readiness.as_json(),
        "mappings": [
            {
                "name": r.name,
                "source": r.source,
                "target": r.target,
                "company": r.company,
                "enabled": r.enabled,
                "in_config": r.in_config,
                "running": r.running,
                "next_incremental": _iso(r.next_incremental),
                "next_full": _iso(r.next_full),
            }
            for r in data.mappings
        ],
        "recent": [
            {
                "id": c.id,
                "mapping": c.mapping,
                "source_kind": c.source_kind,
                "source_id": c.source_id,
                "target": c.target_id,
                "outcome": c.outcome,
                "written_at": c.written_at,
                "thumbs": {side: f"/thumb/{c.id}/{side}" for side in THUMB_SIDES if thumbnail(c, side)},
            }
            for c in data.recent
        ],
        "generated": _iso(data.generated),
    }


# -- rendering ------------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _when(value: str | datetime | None, *, utc: bool = True, seconds: bool = True) -> str:
    """A timestamp for people: ``2026-11-27 10:02:11 UTC`` (without the zone where a header says it)."""
    when = _parse(value) if isinstance(value, str) else value
    if when is None:
        return "" if value is None else str(value)
    fmt = "%Y-%m-%d %H:%M" + (":%S" if seconds else "") + (" UTC" if utc else "")
    return when.astimezone(UTC).strftime(fmt)


def _seconds(run: Mapping[str, Any]) -> str:
    start, end = _parse(run.get("started_at")), _parse(run.get("finished_at"))
    if start is None or end is None:
        return ""
    secs = max(0.0, (end - start).total_seconds())
    return f"{secs:.1f} s" if secs < 120 else f"{secs / 60:.1f} min"


_COUNT_COLUMNS = ("written", "unchanged", "blank", "kept", "cleared", "failed", "unmatched", "ambiguous")

_STYLE = """
:root{
  --fg:#1f2328;
  --muted:#656d76;
  --line:#d0d7de;
  --bg:#f6f8fa;
  --ok:#1a7f37;
  --warn:#9a6700;
  --bad:#cf222e;
  --run:#0969da;
}
*{box-sizing:border-box}
body{
  margin:0;
  font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
  color:var(--fg);
  background:#fff;
}
header{
  display:flex;
  flex-wrap:wrap;
  gap:12px 24px;
  align-items:baseline;
  padding:16px 24px;
  border-bottom:1px solid var(--line);
  background:var(--bg);
}
header h1{margin:0;font-size:20px}
header .meta{color:var(--muted)}
main{padding:8px 24px 32px;max-width:1400px}
h2{font-size:16px;margin:24px 0 8px}
h2 .n{color:var(--muted);font-weight:normal}
table{border-collapse:collapse;width:100%}
th,td{padding:4px 7px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-weight:600;background:var(--bg);white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.when,.flow{white-space:nowrap}
#mappings th.num{font-size:12px}
.scroll{overflow-x:auto}
td.err{color:var(--bad);max-width:60ch;overflow-wrap:anywhere}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.badge{
  display:inline-block;
  padding:1px 8px;
  border-radius:10px;
  font-size:12px;
  font-weight:600;
  color:#fff;
  background:var(--muted);
}
.ok{background:var(--ok)}
.partial,.budget{background:var(--warn)}
.failed,.safety_stop,.interrupted,.bad{background:var(--bad)}
.running{background:var(--run)}
.muted{color:var(--muted)}
.zero{color:#afb8c1}
.changes{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:12px}
figure{margin:0;padding:10px;border:1px solid var(--line);border-radius:8px;background:#fff}
figure .pair{display:flex;align-items:center;justify-content:center;gap:10px;height:100px}
figure img{
  max-width:96px;
  max-height:96px;
  border:1px solid var(--line);
  border-radius:4px;
  background:var(--bg);
}
figure .arrow{font-size:20px;color:var(--muted)}
figcaption{margin-top:6px;font-size:12px;color:var(--muted);text-align:center}
figcaption b{color:var(--fg);font-weight:600}
.empty{color:var(--muted);font-style:italic}
footer{padding:12px 24px;color:var(--muted);border-top:1px solid var(--line);font-size:12px}
footer a{color:var(--run)}
"""


def _badge(text: str, css: str) -> str:
    return f'<span class="badge {_e(css)}">{_e(text)}</span>'


def _mapping_rows(rows: Sequence[MappingRow]) -> str:
    head = (
        "<tr><th>Mapping</th><th>Last run (UTC)</th><th>Outcome</th>"
        + "".join(f'<th class="num">{c}</th>' for c in _COUNT_COLUMNS)
        + "<th>Next run (UTC)</th></tr>"
    )
    width = len(_COUNT_COLUMNS) + 4
    body: list[str] = []
    for r in rows:
        run: Mapping[str, Any] = r.last_run or {}
        counts: Mapping[str, Any] = run.get("counts") or {}
        if r.running:
            outcome = _badge(f"running ({r.running})", "running")
        elif run:
            value = str(run.get("outcome") or "running")
            outcome = _badge(value, value if run.get("outcome") else "running")
        else:
            outcome = '<span class="muted">never run</span>'
        if not r.in_config:
            flow, nxt = "not in the config any more", ""
        else:
            flow = f"{r.source} → {r.target} · {r.company}"
            if not r.enabled:
                nxt = '<span class="muted">disabled</span>'
            else:
                nxt = _e(_when(r.next_incremental, utc=False, seconds=False))
                if r.next_full is not None:
                    full = _when(r.next_full, utc=False, seconds=False)
                    nxt += f'<br><span class="muted">full {_e(full)}</span>'
        last = ""
        if run:
            detail = " · ".join(str(x) for x in (run.get("mode"), _seconds(run)) if x)
            last = f'{_e(_when(run.get("started_at"), utc=False))}<br><span class="muted">{_e(detail)}</span>'
        cells = "".join(
            f'<td class="num{" zero" if not counts.get(c) else ""}">{_e(counts.get(c, 0))}</td>'
            for c in _COUNT_COLUMNS
        )
        error = run.get("error") if run.get("outcome") not in (None, "ok") else None
        err_row = (
            f'<tr class="run-error"><td></td><td class="err" colspan="{width - 1}">{_e(error)}</td></tr>'
            if error
            else ""
        )
        if run.get("change_detection_fell_back"):  # auto could not use the Dynamic archive provider
            err_row += (
                f'<tr class="run-note"><td></td><td class="muted" colspan="{width - 1}">change detection '
                f"{_e(run.get('change_detection_note'))}</td></tr>"
            )
        body.append(
            f'<tr class="mapping" data-mapping="{_e(r.name)}"><td><b>{_e(r.name)}</b><br>'
            f'<span class="muted flow">{_e(flow)}</span></td><td class="when">{last}</td><td>{outcome}</td>'
            f'{cells}<td class="when">{nxt}</td></tr>{err_row}'
        )
    if not body:
        body.append(f'<tr><td colspan="{width}" class="empty">no mappings</td></tr>')
    return f'<div class="scroll"><table id="mappings">{head}{"".join(body)}</table></div>'


def _recent(changes: Sequence[RecentChange], targets: Mapping[str, str]) -> str:
    if not changes:
        return '<p class="empty">No pictures written yet.</p>'
    figures: list[str] = []
    for c in changes:
        target = f"{targets.get(c.mapping, 'record')} {c.target_id or ''}".strip()
        source = f"{c.source_kind} {c.source_id}"
        imgs = []
        for side, label in (("source", f"SuperOffice {source}"), ("output", f"Business Central {target}")):
            if thumbnail(c, side):
                imgs.append(
                    f'<img src="/thumb/{c.id}/{side}" width="96" height="96" class="{side}" '
                    f'alt="{_e(label)}" title="{_e(label)}" loading="lazy">'
                )
            else:
                imgs.append(f'<span class="muted">{"cleared" if side == "output" else "no picture"}</span>')
        figures.append(
            f'<figure class="change" data-id="{c.id}"><div class="pair">{imgs[0]}'
            f'<span class="arrow">→</span>{imgs[1]}</div>'
            f"<figcaption><b>{_e(c.mapping)}</b>: {_e(source)} → {_e(target)}<br>"
            f"{_e(c.outcome)} {_e(_when(c.written_at))}</figcaption></figure>"
        )
    return f'<div class="changes">{"".join(figures)}</div>'


def _issue_table(kind: str, issues: Sequence[Mapping[str, Any]]) -> str:
    rows = [i for i in issues if i.get("kind") == kind]
    title = {"failed": "Failures", "unmatched": "Unmatched records", "ambiguous": "Ambiguous records"}[kind]
    head = f'<h2 id="{kind}-title">{title} <span class="n">({len(rows)})</span></h2>'
    if not rows:
        return head + f'<p class="empty" id="{kind}">none</p>'
    targets_col = {"failed": "Business Central record", "ambiguous": "Candidates"}.get(kind)
    key_col = kind in ("unmatched", "ambiguous")
    detail_col = "Error" if kind == "failed" else "Why"
    body: list[str] = []
    for i in rows[:ISSUES_SHOWN]:
        cells = [_e(i.get("mapping")), _e(_joined(i.get("source")))]
        if key_col:
            cells.append(f"<code>{_e(i.get('key'))}</code>")
        if targets_col:
            cells.append(_e(_joined(i.get("target"))))
        css = ' class="err"' if kind == "failed" else ""
        body.append(
            "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + f"<td{css}>{_e(i.get('detail'))}</td></tr>"
        )
    more = (
        f'<p class="muted">… and {len(rows) - ISSUES_SHOWN} more (see <code>syncd status</code>)</p>'
        if len(rows) > ISSUES_SHOWN
        else ""
    )
    header = (
        "<th>Mapping</th><th>SuperOffice id</th>"
        + ("<th>Key</th>" if key_col else "")
        + (f"<th>{targets_col}</th>" if targets_col else "")
    )
    return f'{head}<table id="{kind}"><tr>{header}<th>{detail_col}</th></tr>{"".join(body)}</table>{more}'


def _joined(value: object) -> object:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return value


def _history(runs: Sequence[Mapping[str, Any]]) -> str:
    if not runs:
        return '<p class="empty">No runs yet.</p>'
    rows = []
    for r in runs[:HISTORY_SHOWN]:
        c = r.get("counts") or {}
        value = str(r.get("outcome") or "running")
        rows.append(
            f"<tr><td>{_e(r.get('id'))}</td><td>{_e(r.get('mapping'))}</td><td>{_e(r.get('mode'))}</td>"
            f'<td>{_e(_when(r.get("started_at")))}</td><td class="num">{_e(_seconds(r))}</td>'
            f'<td>{_badge(value, value)}</td><td class="num">{_e(c.get("written", 0))}</td>'
            f'<td class="num">{_e(c.get("failed", 0))}</td></tr>'
        )
    return (
        '<div class="scroll"><table id="history"><tr><th>Run</th><th>Mapping</th><th>Mode</th>'
        '<th>Started</th><th class="num">Duration</th><th>Outcome</th><th class="num">written</th>'
        f'<th class="num">failed</th></tr>{"".join(rows)}</table></div>'
    )


def render_status_page(data: PageData) -> str:
    """The status page as one HTML document (pure: the same data gives the same bytes)."""
    ready = data.readiness
    state = _badge("ready", "ok") if ready.ready else _badge("not ready", "bad")
    reason = "" if ready.ready else f' <span class="muted">{_e(ready.reason)}</span>'
    status = data.status
    issues = status.get("issues", [])
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>syncd status</title><style>{_STYLE}</style></head><body>"
        f'<header><h1>syncd</h1><span id="readiness">{state}{reason}</span>'
        f'<span class="meta">ledger <code>{_e(status.get("ledger"))}</code> · '
        f'<span id="items">{_e(status.get("items", 0))}</span> items</span></header><main>'
        f"<h2>Mappings</h2>{_mapping_rows(data.mappings)}"
        f'<h2>Recent changes <span class="n">SuperOffice picture → what was written</span></h2>'
        f'<section id="recent">{_recent(data.recent, data.targets)}</section>'
        f"{_issue_table('failed', issues)}{_issue_table('unmatched', issues)}"
        f"{_issue_table('ambiguous', issues)}"
        f"<h2>Run history</h2>{_history(status.get('history', []))}"
        f"</main><footer>syncd {_e(__version__)} · generated {_e(_when(data.generated))} · refreshes every "
        f'{REFRESH_SECONDS} s · <a href="/status.json">status.json</a> · <a href="/metrics">metrics</a> · '
        '<a href="/readyz">readyz</a></footer></body></html>'
    )
