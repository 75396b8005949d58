"""The ledger's rows as Python values: an item (:class:`LedgerItem`, and :class:`ItemRow`, its row with
named columns), a run, a company binding, an issue, a recent change; and how text is stored (clipped and
redacted). Pure: no SQL is run here.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, NamedTuple

from syncd.servertext import clean, clean_optional
from syncd.types import Outcome

RunMode = Literal["incremental", "full", "dry-run"]
IssueKind = Literal["unmatched", "ambiguous", "failed"]

MAX_ERROR_CHARS = 2000  # error text kept per item / run / issue

_OUTCOMES = {o.value: o for o in Outcome}


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerItem:
    """One ``items`` row. Frozen: derive the next state with ``dataclasses.replace``."""

    mapping: str
    source_kind: str
    source_id: int
    target_kind: str
    status: Outcome
    target_id: str | None = None
    target_number: str | None = None
    source_fingerprint: str | None = None
    source_hash: str | None = None
    output_hash: str | None = None
    target_etag: str | None = None
    normalizer_version: str | None = None
    wrote_picture: bool = False
    error: str | None = None
    attempts: int = 0
    synced_at: str | None = None  # when we last changed the BC picture (write or clear)
    checked_at: str | None = None  # when a run last decided about this item

    def to_row(self) -> ItemRow:
        """The ``items`` row of this item: plain values (also JSON- and marshal-safe), error text clipped."""
        if self.status not in _OUTCOMES:
            check_choice(self.status, _OUTCOMES, "item status")
        return _new_row(  # (ItemRow's own __new__ is a Python frame; this is the C one, same tuple)
            ItemRow,
            (
                self.mapping,
                self.source_kind,
                self.source_id,
                self.target_kind,
                str(self.status),
                self.target_id,
                self.target_number,
                self.source_fingerprint,
                self.source_hash,
                self.output_hash,
                self.target_etag,
                self.normalizer_version,
                int(self.wrote_picture),
                clip(self.error),
                self.attempts,
                self.synced_at,
                self.checked_at,
            ),
        )

    @classmethod
    def from_row(cls, values: Sequence[Any]) -> LedgerItem:
        """The item of a row: an :class:`ItemRow`, or its values in :data:`ITEM_COLUMNS` order (a SQLite
        row selected by :data:`ITEM_COLUMNS`, or a row the run's scratch store gave back)."""
        (
            mapping,
            source_kind,
            source_id,
            target_kind,
            status,
            target_id,
            target_number,
            source_fingerprint,
            source_hash,
            output_hash,
            target_etag,
            normalizer_version,
            wrote_picture,
            error,
            attempts,
            synced_at,
            checked_at,
        ) = values  # the names of ITEM_COLUMNS, in its order (asserted below); unpacking is one C step
        return cls(
            mapping=mapping,
            source_kind=source_kind,
            source_id=source_id,
            target_kind=target_kind,
            status=_OUTCOMES[status],
            target_id=target_id,
            target_number=target_number,
            source_fingerprint=source_fingerprint,
            source_hash=source_hash,
            output_hash=output_hash,
            target_etag=target_etag,
            normalizer_version=normalizer_version,
            wrote_picture=bool(wrote_picture),
            error=clean_optional(error),  # rows stored before redaction at store time are redacted here
            attempts=attempts,
            synced_at=synced_at,
            checked_at=checked_at,
        )


class ItemRow(NamedTuple):
    """An ``items`` row as plain values, one named field per column (the names of LedgerItem's fields)."""

    mapping: str
    source_kind: str
    source_id: int
    target_kind: str
    status: str
    target_id: str | None
    target_number: str | None
    source_fingerprint: str | None
    source_hash: str | None
    output_hash: str | None
    target_etag: str | None
    normalizer_version: str | None
    wrote_picture: int
    error: str | None
    attempts: int
    synced_at: str | None
    checked_at: str | None


ITEM_COLUMNS = ItemRow._fields
"""The ``items`` columns syncd reads and writes, in :class:`ItemRow` order (the SQL is built from it)."""
assert tuple(f.name for f in fields(LedgerItem)) == ITEM_COLUMNS, (
    "ItemRow and LedgerItem name the same fields"
)
_CHECKED_AT = ITEM_COLUMNS.index("checked_at")
_new_row = tuple.__new__


def same_but_checked(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Whether two item rows differ at most in ``checked_at``."""
    return a[:_CHECKED_AT] == b[:_CHECKED_AT] and a[_CHECKED_AT + 1 :] == b[_CHECKED_AT + 1 :]


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One ``runs`` row. ``finished_at``/``outcome`` are ``None`` while the run is in progress."""

    id: int
    mapping: str
    started_at: str
    finished_at: str | None
    mode: str
    counts: dict[str, int]
    outcome: str | None
    error: str | None
    company: str | None = None  # the BC company's name when the run started (None: before schema v3)
    change_detection: str | None = None  # bulk | per_record (None: not decided, or before schema v2)
    change_detection_note: str | None = None  # why per_record when auto fell back, or the verification


@dataclass(frozen=True, slots=True)
class CompanyBinding:
    """The Business Central company a mapping's ledger rows describe."""

    mapping: str
    company_id: str
    company: str  # its name
    target_kind: str
    bound_at: str


@dataclass(frozen=True, slots=True)
class Issue:
    """A record a run could not sync: shown by ``syncd status`` and the status page.

    ``mapping`` and ``run_id`` are filled in by :meth:`Ledger.list_issues`; callers of
    :meth:`Ledger.replace_issues` leave them ``None``.
    """

    kind: IssueKind
    source_id: int
    target_ids: tuple[str, ...] = ()  # the candidate BC records (ambiguous) or the matched one (failed)
    key: str | None = None  # the match key value, e.g. the org number that matched twice
    detail: str | None = None  # human-readable reason / error message
    mapping: str | None = None
    run_id: int | None = None


@dataclass(frozen=True, slots=True)
class RecentChange:
    """A recently changed BC picture with before/after thumbnails (small JPEGs)."""

    id: int
    mapping: str
    source_kind: str
    source_id: int
    target_id: str | None
    outcome: str  # "written" or "cleared"
    written_at: str
    source_thumb: bytes | None
    output_thumb: bytes | None


def check_choice(value: str, choices: Iterable[str], what: str) -> None:
    allowed = tuple(choices)
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")


def clip(text: str | None) -> str | None:
    """Error text as stored: secrets redacted and control characters gone (servers echo what they were
    sent; see :mod:`syncd.servertext`), at most :data:`MAX_ERROR_CHARS`."""
    if text is None:
        return None
    text = clean(text)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def run_from_row(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        mapping=row["mapping"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        mode=row["mode"],
        counts={str(k): int(v) for k, v in json.loads(row["counts_json"]).items()},
        outcome=row["outcome"],
        error=clean_optional(row["error"]),
        company=row["company"] if "company" in row.keys() else None,  # noqa: SIM118 (Row: `in` is values)
        change_detection=row["change_detection"],
        change_detection_note=row["change_detection_note"],
    )


def exported(run: RunRecord) -> dict[str, Any]:
    """A run as ``syncd ledger export`` writes it (the change-detection columns are left out)."""
    return {
        "id": run.id,
        "mapping": run.mapping,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "mode": run.mode,
        "counts": run.counts,
        "outcome": run.outcome,
        "error": run.error,
        "company": run.company,
    }
