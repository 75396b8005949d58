"""Picture fingerprints: how a run knows, before downloading anything, whether a source picture changed.

A FINGERPRINT is a cheap identity of a source picture (see :mod:`syncd.types`); equal fingerprints of a
done item mean "unchanged, skip". Two strategies give them, behind one interface (:class:`Fingerprints`):

per_record  :class:`PerRecordFingerprints`: ``GET …/{id}/ImageInfo`` for each matched record (BlobId,
            UpdatedDate, sizes, MIME). Works on every installation; costs one SuperOffice request per
            record and run, and a first sync or changed picture two (ImageInfo, then Image).
bulk        :class:`BulkFingerprints`: one pass over the Dynamic archive provider per run
            (``archive/dynamic`` on BinaryObjectLink inner-joined to BinaryObject, keyset-paged, 1,000
            links a page) gives every record's fingerprint at once: link id, blob id, the blob's
            registered/updated/updatedCount, sizes and MIME type, and the link's updated. A record
            without a link row has no picture. A picture costs its download only.

:func:`choose` picks one per mapping and run from ``superoffice.change_detection``:

auto        bulk, verified: the first run on a tenant and every full reconcile compare a sample of up
            to :data:`SAMPLE` records (with and without pictures) with ImageInfo — presence and blob id
            must agree. A provider that answers 400/403/404, a pass that did not complete, or a sample
            that disagrees makes the mapping fall back to per_record for that run, with one warning.
bulk        the provider, always: a provider that cannot be used fails the run (nothing changes) rather
            than costing a request per record; a disagreeing sample is only warned about.
per_record  ImageInfo, as before the provider was used.

Never a blank on a guess: a record absent from the pass is "no picture" only when the pass completed —
every page read, no error, link ids strictly increasing. An incomplete pass is never used at all (its
rows cannot even say which of an owner's links has the lowest rank), so it yields no blank and no clear.
Fingerprints of one strategy are never compared with the other's (``bulk:`` prefix; provider dates and
ImageInfo dates may differ in time zone): after a switch, each picture is downloaded once and, being the
same bytes, skipped by its source hash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import structlog

from syncd.decisions import FINGERPRINT_UNAVAILABLE
from syncd.errors import ApiError, NotFoundError, SyncdError, UnreachableError
from syncd.staging import RunStore
from syncd.storage import Source
from syncd.superoffice import IncompletePass
from syncd.types import SourceKind

__all__ = [
    "FELL_BACK",
    "SAMPLE",
    "BulkFingerprints",
    "ChangeDetection",
    "Choice",
    "Fingerprints",
    "PerRecordFingerprints",
    "Strategy",
    "choose",
]

log = structlog.get_logger("syncd.fingerprints")

ChangeDetection = Literal["auto", "bulk", "per_record"]
Strategy = Literal["bulk", "per_record"]
FELL_BACK = "fell back to per-record ImageInfo"  # how a fallback's note starts (status, syncd status)
SAMPLE = 25  # records checked against ImageInfo on a first run and every full reconcile
UNAVAILABLE_STATUSES = (400, 403, 404)  # the provider is not for us on this tenant


class Fingerprints(Protocol):
    """What the engine asks: the fingerprints it can have without a request per record, and one
    record's fingerprint otherwise (``None``: no picture; :data:`FINGERPRINT_UNAVAILABLE`: decide by
    downloading)."""

    strategy: Strategy

    async def known(self, ids: Sequence[int]) -> Mapping[int, str | None]: ...

    async def of(self, kind: SourceKind, entity_id: int) -> str | None: ...


class PerRecordFingerprints:
    """ImageInfo, one request per record."""

    strategy: Strategy = "per_record"

    def __init__(self, client: Source) -> None:
        self.client = client

    async def known(self, ids: Sequence[int]) -> Mapping[int, str | None]:
        return {}

    async def of(self, kind: SourceKind, entity_id: int) -> str | None:
        try:
            return await self.client.fingerprint(kind, entity_id)
        except NotFoundError:
            # The record vanished, or this installation has no ImageInfo route: decide by download.
            return FINGERPRINT_UNAVAILABLE


class BulkFingerprints(PerRecordFingerprints):
    """A completed pass, kept in the run's store: every listed record's fingerprint, None for those
    without a picture link. Only :func:`choose` makes one, and only from a complete pass."""

    strategy: Strategy = "bulk"

    def __init__(self, client: Source, store: RunStore) -> None:
        super().__init__(client)
        self.store = store

    async def known(self, ids: Sequence[int]) -> Mapping[int, str | None]:
        found = await self.store.pictures(ids)
        return {i: found[i][1] if i in found else None for i in ids}


@dataclass(frozen=True, slots=True)
class Choice:
    """The strategy a mapping's run uses, and why (``note``: the fallback's reason, or what the
    verification found; None when there is nothing to say)."""

    fingerprints: Fingerprints
    note: str | None = None
    fell_back: bool = False

    @property
    def strategy(self) -> Strategy:
        return self.fingerprints.strategy


class _Unusable(Exception):
    """The pass or the sample says the provider cannot be used on this run."""

    def __init__(self, reason: str, cause: BaseException | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


_warned: set[tuple[str, str]] = set()  # (mapping, reason) already warned about by this process


async def choose(
    mode: ChangeDetection,
    *,
    mapping: str,
    kind: SourceKind,
    client: Source,
    store: RunStore,
    verify: bool,
    concurrency: int = 4,
) -> Choice:
    """The fingerprints for one run of ``mapping`` (see the module docstring). ``verify``: check a
    sample against ImageInfo (the first run on a tenant, every full reconcile)."""
    per_record = PerRecordFingerprints(client)
    if mode == "per_record":
        return Choice(per_record)
    try:
        links = await _pass(client, store, kind)
        note = None
        if verify:
            try:
                note = await _verify(client, store, kind, concurrency)
            except _Unusable as exc:
                if mode == "auto":
                    raise
                _warn(mapping, f"{exc.reason}; change_detection is bulk, so the provider is used anyway")
                note = exc.reason
    except _Unusable as exc:
        if mode == "bulk":
            raise _bulk_failed(mapping, exc) from None
        await store.clear_pictures()
        reason = f"{FELL_BACK}: {exc.reason}"
        _warn(mapping, reason)
        return Choice(per_record, note=reason, fell_back=True)
    log.info("picture fingerprints from the Dynamic archive provider", mapping=mapping, links=links)
    return Choice(BulkFingerprints(client, store), note=note)


async def _pass(client: Source, store: RunStore, kind: SourceKind) -> int:
    """Read every picture link of ``kind`` into the store; the number of links. Raises _Unusable when
    the provider is not available or the pass did not complete."""
    count = 0
    try:
        async for page in client.picture_links(kind):
            await store.add_pictures(
                [(lk.owner_id, lk.rank, lk.link_id, lk.blob_id, lk.fingerprint) for lk in page]
            )
            count += len(page)
    except IncompletePass as exc:
        raise _Unusable(f"the picture pass did not complete ({exc.message})", exc) from None
    except ApiError as exc:
        if exc.status in UNAVAILABLE_STATUSES:
            raise _Unusable(
                f"the Dynamic archive provider answered HTTP {exc.status} ({exc.message})", exc
            ) from None
        raise _Unusable(f"the picture pass did not complete ({exc.message})", exc) from None
    except UnreachableError as exc:
        raise _Unusable(f"the picture pass did not complete ({exc.message})", exc) from None
    return count


async def _verify(client: Source, store: RunStore, kind: SourceKind, concurrency: int) -> str:
    """Compare up to SAMPLE records (about half with a picture in the pass, half without) with
    ImageInfo: presence and blob id must agree. Raises _Unusable at the first disagreement."""
    with_picture = await store.sample_sources((SAMPLE + 1) // 2, with_picture=True)
    without = await store.sample_sources(SAMPLE - len(with_picture), with_picture=False)
    if len(with_picture) + len(without) < SAMPLE:  # few records without a picture: more with one
        with_picture = await store.sample_sources(SAMPLE - len(without), with_picture=True)
    ids = sorted([*with_picture, *without])
    bulk = await store.pictures(ids)
    semaphore = asyncio.Semaphore(max(1, concurrency))

    problems: list[str] = []

    async def check(entity_id: int) -> str | None:
        async with semaphore:
            try:
                blob = await client.image_blob_id(kind, entity_id)
            except (ApiError, UnreachableError) as exc:
                # Deleted meanwhile, no ImageInfo route, or ImageInfo failing: no evidence either way.
                problems.append(exc.message)
                return None
        listed = bulk[entity_id][0] if entity_id in bulk else None
        if blob != listed:
            return (
                f"the sample disagrees: {kind} {entity_id} has "
                f"{'blob ' + str(blob) if blob else 'no picture'} by ImageInfo, "
                f"{'blob ' + str(listed) if listed else 'no picture'} by the provider"
            )
        return "ok"

    results = await asyncio.gather(*(check(i) for i in ids))
    for r in results:
        if r not in (None, "ok"):
            raise _Unusable(str(r))
    checked = sum(1 for r in results if r == "ok")
    if ids and not checked:
        raise _Unusable(f"no sampled record could be checked against ImageInfo ({problems[0]})")
    return f"verified: {checked} of {len(ids)} sampled records agree with ImageInfo"


def _warn(mapping: str, reason: str) -> None:
    if (mapping, reason) in _warned:
        log.info("change detection", mapping=mapping, detail=reason)
        return
    _warned.add((mapping, reason))
    log.warning("change detection", mapping=mapping, detail=reason)


def _bulk_failed(mapping: str, exc: _Unusable) -> SyncdError:
    hint = "set superoffice.change_detection to auto (falls back to ImageInfo) or per_record"
    message = f"mapping {mapping!r}: change_detection is bulk, but {exc.reason}"
    if isinstance(exc.cause, UnreachableError):
        return UnreachableError(message, hint=hint)
    status = exc.cause.status if isinstance(exc.cause, ApiError) else 0
    return ApiError(message, status=status, hint=hint)
