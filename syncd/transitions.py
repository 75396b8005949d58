"""How a ledger row changes: one named pure function per thing that can happen to an item in a run.

Each takes the row as it was (:class:`syncd.ledger.LedgerItem`, frozen) and returns the next one; ``at``
is the run's time stamp (:class:`syncd.clock.SecondStamps`). Nothing here reads a clock, the ledger or
the network, so :mod:`tests.unit.test_transitions` checks each one field by field: which fields change,
which stay.

first_seen            a pair the ledger has no row for yet (the placeholder every transition starts from)
confirmed             a write whose new etag BC did not tell is confirmed by the next listing
checked               phase A looked again and changed nothing (a picture known to be broken)
unchanged             phase A: the fingerprint says the picture is the one BC already shows
kept_ours             source blank, policy keeps the picture we wrote: still ours, etag and all
kept_foreign          BC shows someone else's picture and it stays: remember its etag, not ours
                      (phase A's keep, a clear refused by BC's etag, a write conflict under ``keep``)
blank                 no source picture and none of ours in BC: forget the source's fingerprint and hash
resaved_unchanged     downloaded: the same bytes as last time (the picture was re-saved unchanged)
normalized_unchanged  downloaded and normalized: BC already shows exactly this output
written               the picture was written to BC (``etag`` may be a ``pending:`` marker)
cleared               our picture was removed from BC
failed                the item failed; a permanent (picture) error remembers which picture it was
"""

from __future__ import annotations

from dataclasses import replace

from syncd.ledger import LedgerItem
from syncd.types import Outcome


def first_seen(
    *,
    mapping: str,
    source_kind: str,
    source_id: int,
    target_kind: str,
    target_id: str,
    target_number: str,
) -> LedgerItem:
    """The row of a pair the ledger does not know yet: nothing synced, nothing checked."""
    return LedgerItem(
        mapping=mapping,
        source_kind=source_kind,
        source_id=source_id,
        target_kind=target_kind,
        target_id=target_id,
        target_number=target_number,
        source_fingerprint=None,
        source_hash=None,
        output_hash=None,
        target_etag=None,
        normalizer_version=None,
        wrote_picture=False,
        status=Outcome.BLANK,  # placeholder: every transition recorded sets the real status
        error=None,
        attempts=0,
        synced_at=None,
        checked_at=None,
    )


def confirmed(item: LedgerItem, etag: str | None) -> LedgerItem:
    """A ``pending:`` write confirmed by the listing: BC's etag is ours."""
    return replace(item, target_etag=etag)


def checked(item: LedgerItem, *, at: str) -> LedgerItem:
    """Looked at again, nothing else changes (a picture known to be broken, reported again)."""
    return replace(item, checked_at=at)


def unchanged(item: LedgerItem, *, etag: str | None, at: str) -> LedgerItem:
    """Phase A: the source picture is the one BC shows; BC's current etag is remembered."""
    return replace(item, target_etag=etag, status=Outcome.UNCHANGED, error=None, checked_at=at)


def kept_ours(item: LedgerItem, *, at: str) -> LedgerItem:
    """Source blank and policy keeps the picture we wrote: it stays ours, etag and all."""
    return replace(item, status=Outcome.KEPT, error=None, checked_at=at)


def kept_foreign(item: LedgerItem, *, target_id: str, etag: str | None, at: str) -> LedgerItem:
    """Someone else's picture in BC stays: its etag is remembered, and that it is not ours."""
    return replace(
        item,
        target_id=target_id,
        target_etag=etag,
        wrote_picture=False,
        status=Outcome.KEPT,
        error=None,
        checked_at=at,
    )


def blank(item: LedgerItem, *, target_id: str, at: str) -> LedgerItem:
    """No source picture and none of ours in BC: the source's fingerprint and hash are forgotten."""
    return replace(
        item,
        target_id=target_id,
        source_fingerprint=None,
        source_hash=None,
        status=Outcome.BLANK,
        error=None,
        checked_at=at,
    )


def resaved_unchanged(item: LedgerItem, *, fingerprint: str | None, at: str) -> LedgerItem:
    """Downloaded: the same bytes as last time (a new fingerprint for the same picture)."""
    return replace(item, source_fingerprint=fingerprint, status=Outcome.UNCHANGED, error=None, checked_at=at)


def normalized_unchanged(
    item: LedgerItem, *, fingerprint: str | None, source_hash: str, normalizer_version: str, at: str
) -> LedgerItem:
    """Downloaded and normalized: the output is what BC already shows, so nothing is written."""
    return replace(
        item,
        source_fingerprint=fingerprint,
        source_hash=source_hash,
        normalizer_version=normalizer_version,
        status=Outcome.UNCHANGED,
        error=None,
        checked_at=at,
    )


def written(
    item: LedgerItem,
    *,
    target_id: str,
    target_number: str,
    fingerprint: str | None,
    source_hash: str,
    output_hash: str,
    etag: str,
    normalizer_version: str,
    at: str,
) -> LedgerItem:
    """The picture was written to BC: everything about it is remembered, the attempts start over."""
    return replace(
        item,
        target_id=target_id,
        target_number=target_number,
        source_fingerprint=fingerprint,
        source_hash=source_hash,
        output_hash=output_hash,
        target_etag=etag,
        normalizer_version=normalizer_version,
        wrote_picture=True,
        status=Outcome.WRITTEN,
        error=None,
        attempts=0,
        synced_at=at,
        checked_at=at,
    )


def cleared(item: LedgerItem, *, target_id: str, at: str) -> LedgerItem:
    """Our picture was removed from BC: nothing about a picture is left to remember."""
    return replace(
        item,
        target_id=target_id,
        target_etag=None,
        wrote_picture=False,
        source_hash=None,
        source_fingerprint=None,
        output_hash=None,
        status=Outcome.CLEARED,
        error=None,
        synced_at=at,
        checked_at=at,
    )


def failed(
    item: LedgerItem,
    *,
    target_id: str,
    error: str,
    permanent: bool,
    fingerprint: str | None,
    etag: str | None,
    normalizer_version: str,
    at: str,
) -> LedgerItem:
    """The item failed, one more attempt. ``permanent`` (the picture cannot be used): which picture it
    was (fingerprint, normalizer) is kept, so the next run reports it without downloading it again;
    otherwise the fingerprint is forgotten, so the next run retries."""
    return replace(
        item,
        target_id=target_id,
        status=Outcome.FAILED,
        error=error,
        source_fingerprint=fingerprint if permanent else None,
        target_etag=etag,
        normalizer_version=normalizer_version if permanent else item.normalizer_version,
        attempts=item.attempts + 1,
        checked_at=at,
    )
