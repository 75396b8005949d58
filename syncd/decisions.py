"""The decision table: what to do for one matched (source record, BC record) pair. Pure; no I/O.

Two phases, so most items are decided before anything is downloaded:

1. :func:`decide_before_fetch` from the ledger row, the source fingerprint (SuperOffice ImageInfo) and the
   BC picture's etag/presence as listed → :class:`Pre`.
2. :func:`decide_after_fetch`, only for ``Pre.FETCH``, once the source bytes are downloaded and hashed
   (and, if that is not enough, normalized and hashed again) → :class:`Post`.

Terms
    ours      the BC picture is the one we last wrote: ``item.wrote_picture``, same BC record
              (``item.target_id == target.target_id``), and the listed etag equals ``item.target_etag``
              (both known). An unknown etag (``None``) on either side never counts as "ours".
    comparable  a source fingerprint that proves "unchanged" when equal: not blank and not
              :data:`FINGERPRINT_UNAVAILABLE` (ImageInfo unreadable: decide by downloading).
    done      ``item.status`` is ``written`` or ``unchanged``: the last run left BC mirroring the source.
    foreign   BC has a picture (``target.present``) that is not ours: a first sync onto a record that
              already had one, a picture replaced in BC since we wrote it, or a match that moved to a
              different BC record.

Phase 1 — ``decide_before_fetch`` (first matching row wins)

    ====  ===================  ==========================================================  ===========
    row   source               ledger / BC                                                 result
    ====  ===================  ==========================================================  ===========
    B1    blank                BC has no picture                                           BLANK
    B2    blank                BC picture is ours                                          on_source_blank:
                                                                                           keep → KEEP,
                                                                                           clear → CLEAR
    B3    blank                BC picture is foreign (never clear what we did not write)   BLANK
    S1    picture, not full    comparable fingerprint equal to the item's; done; ours;     SKIP
                               same normalizer version
    T1    picture              BC picture is foreign                                       on_target_changed:
                                                                                           keep → KEEP,
                                                                                           overwrite → FETCH
    F1    picture              anything else (new, changed, failed last time, BC picture   FETCH
                               deleted in BC, normalizer upgraded, ``full`` run)
    ====  ===================  ==========================================================  ===========

Phase 2 — ``decide_after_fetch`` (first matching row wins)

    ====  ==========================================================================  ======
    row   condition                                                                   result
    ====  ==========================================================================  ======
    P1    not (item exists, done and BC picture ours)                                 WRITE
    P2    source hash == item.source_hash and normalizer version unchanged            SKIP
          (re-saved identically; only the fingerprint moved; no decode needed)
    P3    output hash known and == item.output_hash (also across a normalizer         SKIP
          upgrade that happens to give the same bytes)
    P4    otherwise                                                                   WRITE
    ====  ==========================================================================  ======

Call protocol for phase 2: right after the download, call with ``output_hash=None``; on ``WRITE``,
normalize, hash the output and call again; write only if it still says ``WRITE``.

Choices worth knowing
    - A BC record without a picture has nothing to protect: ``on_target_changed: keep`` never stops us
      from filling an empty picture, even if someone deleted ours in BC (the source is the truth).
    - ``Pre.KEEP`` for a foreign picture is re-decided every run (no download), so changing the policy to
      ``overwrite`` takes effect on the next run; ``kept`` is deliberately not a "done" status.
    - A failed item is not done, so it is retried (FETCH, then WRITE) on the next run.
    - When the match moves to another BC record, nothing recorded about the old record applies: the new
      one is a first sync (FETCH, or KEEP if it has a foreign picture and policy says keep).

What the engine must record for these decisions to stay right (the table relies on it)
    =================  ==========================================================================
    outcome            ledger row after it
    =================  ==========================================================================
    WRITE succeeded    status written, wrote_picture=True, target_id, target_etag = the etag BC
                       returned for the new picture, fingerprint, source/output hash, normalizer
                       version, attempts 0, synced_at
    SKIP (either)      status unchanged; refresh fingerprint, source hash, normalizer version (keep
                       output hash, etag, wrote_picture)
    KEEP (T1)          status kept, wrote_picture=False, target_id/etag as listed
    KEEP (B2)          status kept; wrote_picture stays True; fingerprint None
    CLEAR succeeded    status cleared, wrote_picture=False, target_etag as BC returned it
    BLANK              status blank, wrote_picture=False, fingerprint None
    failed             status failed, error, attempts+1; leave fingerprint, hashes, etag and
                       wrote_picture as they were (never store the fingerprint you failed to sync)
    =================  ==========================================================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal

from syncd.ledger import LedgerItem
from syncd.types import Outcome

__all__ = [
    "DONE_STATUSES",
    "FINGERPRINT_UNAVAILABLE",
    "Policy",
    "Post",
    "Pre",
    "SourceState",
    "TargetState",
    "decide_after_fetch",
    "decide_before_fetch",
    "owns_target_picture",
]

DONE_STATUSES: frozenset[str] = frozenset({Outcome.WRITTEN, Outcome.UNCHANGED})
"""Item statuses after which BC mirrors the source; only these items can be skipped."""


@dataclass(frozen=True, slots=True)
class Policy:
    """A mapping's policies (config keys ``on_source_blank`` and ``on_target_changed``)."""

    on_source_blank: Literal["keep", "clear"] = "keep"
    on_target_changed: Literal["overwrite", "keep"] = "overwrite"


FINGERPRINT_UNAVAILABLE: Final = "unavailable"
"""Fingerprint for "has a picture, or might: ImageInfo could not be read". Never matches, so the item is
downloaded and compared by source hash (rows P2/P3) instead of being skipped on the fingerprint."""


@dataclass(frozen=True, slots=True)
class SourceState:
    """The source picture as known before download.

    ``fingerprint=None``: the source has no picture. :data:`FINGERPRINT_UNAVAILABLE`: unknown, decide by
    downloading.
    """

    fingerprint: str | None

    @property
    def blank(self) -> bool:
        return self.fingerprint is None

    @property
    def comparable(self) -> bool:
        """Whether an equal fingerprint proves an unchanged picture."""
        return self.fingerprint is not None and self.fingerprint != FINGERPRINT_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class TargetState:
    """The matched BC record's picture as listed now.

    ``etag`` is the picture's etag, ``None`` if BC did not report one. ``target_id`` is the BC record's
    SystemId: a ledger row about another record (the match moved) says nothing about this one, so with
    ``target_id`` given the table treats such a row as a first sync. ``None`` means the caller has
    already checked that ``item`` is about this record (or passes ``item=None`` when it is not).
    """

    etag: str | None
    present: bool
    target_id: str | None = None


class Pre(enum.StrEnum):
    """Phase-1 outcomes. Values equal :class:`syncd.types.PlanAction` where the meaning is the same."""

    SKIP = "skip"  # unchanged: no download, no decode, no write
    FETCH = "fetch"  # download the source picture and go to phase 2
    KEEP = "keep"  # leave the BC picture as it is, by policy
    BLANK = "blank"  # source has no picture and BC has none of ours: nothing to do
    CLEAR = "clear"  # source went blank and policy says clear: delete our BC picture


class Post(enum.StrEnum):
    """Phase-2 outcomes."""

    SKIP = "skip"  # BC already shows this picture
    WRITE = "write"  # (normalize and) write it


def owns_target_picture(item: LedgerItem | None, target: TargetState) -> bool:
    """Whether BC's picture is the one we last wrote (see "ours" in the module docstring)."""
    return (
        item is not None
        and item.wrote_picture
        and (target.target_id is None or item.target_id == target.target_id)
        and item.target_etag is not None
        and target.etag == item.target_etag
    )


def _done_and_ours(item: LedgerItem | None, target: TargetState) -> bool:
    return item is not None and item.status in DONE_STATUSES and owns_target_picture(item, target)


def decide_before_fetch(
    item: LedgerItem | None,
    source: SourceState,
    target: TargetState,
    policy: Policy,
    normalizer_version: str,
    full: bool,
) -> Pre:
    """Phase 1 of the decision table (rows B1–F1 in the module docstring).

    ``item`` is the ledger row for this source record (``None`` on a first sync); ``full`` is a full
    reconcile, which never skips on the fingerprint alone.
    """
    ours = owns_target_picture(item, target)
    if source.blank:
        if not target.present:
            return Pre.BLANK  # B1
        if ours:
            return Pre.KEEP if policy.on_source_blank == "keep" else Pre.CLEAR  # B2
        return Pre.BLANK  # B3
    if (
        not full
        and item is not None
        and source.comparable
        and _done_and_ours(item, target)
        and source.fingerprint == item.source_fingerprint
        and normalizer_version == item.normalizer_version
    ):
        return Pre.SKIP  # S1
    if target.present and not ours:
        return Pre.KEEP if policy.on_target_changed == "keep" else Pre.FETCH  # T1
    return Pre.FETCH  # F1


def decide_after_fetch(
    item: LedgerItem | None,
    source_hash: str,
    output_hash: str | None,
    target: TargetState,
    normalizer_version: str,
) -> Post:
    """Phase 2 of the decision table (rows P1–P4 in the module docstring).

    ``output_hash`` is ``None`` until the picture has been normalized (see the call protocol).
    """
    if item is None or not _done_and_ours(item, target):
        return Post.WRITE  # P1
    if source_hash == item.source_hash and normalizer_version == item.normalizer_version:
        return Post.SKIP  # P2
    if output_hash is not None and output_hash == item.output_hash:
        return Post.SKIP  # P3
    return Post.WRITE  # P4
