"""The domain vocabulary, named once.

SOURCE      a SuperOffice entity that may carry a picture: a contact (company) or a person.
TARGET      a Business Central record whose picture we write: customer, vendor, employee or item.
FINGERPRINT a cheap, pre-download identity of a source picture (SuperOffice ImageInfo), or None.
SOURCE HASH sha256 of the source picture's bytes as downloaded; decides "changed" before any decode.
OUTPUT HASH sha256 of the normalized bytes we wrote.
ETAG        the BC picture's ``@odata.etag`` as BC last reported it; tells us whether someone else
            changed the picture in BC since we wrote it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

SourceKind = Literal["contact", "person"]
TargetKind = Literal["customers", "vendors", "employees", "items"]
SOURCE_KINDS: tuple[SourceKind, ...] = ("contact", "person")
TARGET_KINDS: tuple[TargetKind, ...] = ("customers", "vendors", "employees", "items")


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One SuperOffice contact or person as listed (slim archive row)."""

    kind: SourceKind
    id: int
    columns: dict[str, str]  # every listed column, display strings as SuperOffice returns them
    updated: str | None = None  # updatedDate / personUpdatedDate as returned


@dataclass(frozen=True, slots=True)
class TargetPicture:
    """A BC picture as embedded by ``$expand=picture`` or read from ``…/picture``."""

    etag: str | None
    width: int
    height: int
    content_type: str
    edit_link: str | None  # pictureContent@odata.mediaEditLink (v2.0) / content@odata.mediaEditLink (v1.0)

    @property
    def present(self) -> bool:
        return self.width > 0 or bool(self.content_type)


@dataclass(frozen=True, slots=True)
class TargetRow:
    """One BC record as listed with ``$expand=picture``."""

    kind: TargetKind
    id: str  # SystemId GUID
    number: str
    display_name: str
    fields: dict[str, Any]
    picture: TargetPicture | None


class PlanAction(enum.StrEnum):
    """What a plan line says the run does (or, in a real run, did) for one source record: the action
    of a ``--dry-run`` plan line, of a failure or of a match problem (:class:`syncd.run.PlanEntry`)."""

    SKIP = "skip"  # unchanged: no decode, no write
    WRITE = "write"  # normalize and PATCH
    CLEAR = "clear"  # source went blank and policy says clear: DELETE the BC picture
    KEEP = "keep"  # BC side changed by hand (or source blank) and policy says leave it
    BLANK = "blank"  # source has no picture and we never wrote one: nothing to do
    UNMATCHED = "unmatched"  # no BC record has the source's key
    AMBIGUOUS = "ambiguous"  # several BC records (or sources) share the key
    FAILED = "failed"  # the item failed (listed as a failure)


class Outcome(enum.StrEnum):
    """How one item ended in one run; what the summary counts."""

    WRITTEN = "written"
    UNCHANGED = "unchanged"
    BLANK = "blank"
    CLEARED = "cleared"
    KEPT = "kept"
    UNMATCHED = "unmatched"
    AMBIGUOUS = "ambiguous"
    FAILED = "failed"


class RunOutcome(enum.StrEnum):
    """How one run of one mapping ended; the value is what the ledger's ``runs.outcome`` stores."""

    OK = "ok"
    PARTIAL = "partial"  # some items failed
    SAFETY_STOP = "safety_stop"  # a clear cap or an empty listing stopped the run (exit 4)
    BUDGET = "budget"  # max_items_per_run or max_runtime ended it
    INTERRUPTED = "interrupted"  # a stop request or a cancellation ended it
    FAILED = "failed"  # an error ended it


@dataclass(slots=True)
class RunCounts:
    """Counts for one run of one mapping."""

    by_outcome: dict[Outcome, int] = field(default_factory=lambda: {o: 0 for o in Outcome})
    patches: int = 0
    decodes: int = 0

    def add(self, outcome: Outcome) -> None:
        self.by_outcome[outcome] = self.by_outcome.get(outcome, 0) + 1

    def as_dict(self) -> dict[str, int]:
        out = {o.value: n for o, n in self.by_outcome.items()}
        out["patches"] = self.patches
        out["decodes"] = self.decodes
        return out
