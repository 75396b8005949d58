"""The ledger row transitions (syncd/transitions.py), one by one: which fields change, which stay."""

from __future__ import annotations

from dataclasses import fields

import pytest

from syncd import transitions
from syncd.ledger import LedgerItem
from syncd.types import Outcome

AT = "2026-01-02T03:04:05+00:00"

# A row after a write, then one failed attempt: every field has a value, so any change shows.
BEFORE = LedgerItem(
    mapping="customers",
    source_kind="contact",
    source_id=7,
    target_kind="customers",
    target_id="T1",
    target_number="C00010",
    source_fingerprint="F1",
    source_hash="H1",
    output_hash="O1",
    target_etag="E1",
    normalizer_version="norm-1",
    wrote_picture=True,
    status=Outcome.FAILED,
    error="timeout",
    attempts=2,
    synced_at="2025-12-01T00:00:00+00:00",
    checked_at="2025-12-02T00:00:00+00:00",
)


def changes(before: LedgerItem, after: LedgerItem) -> dict[str, object]:
    """The fields ``after`` holds differently from ``before``, with their new values."""
    return {
        f.name: getattr(after, f.name)
        for f in fields(LedgerItem)
        if getattr(before, f.name) != getattr(after, f.name)
    }


def test_first_seen_is_an_empty_row_for_the_pair():
    item = transitions.first_seen(
        mapping="m",
        source_kind="person",
        source_id=3,
        target_kind="employees",
        target_id="T",
        target_number="E1",
    )
    assert item == LedgerItem(
        mapping="m",
        source_kind="person",
        source_id=3,
        target_kind="employees",
        target_id="T",
        target_number="E1",
        status=Outcome.BLANK,
    )
    assert item.checked_at is None and item.synced_at is None and item.attempts == 0


def test_confirmed_takes_the_listed_etag_only():
    assert changes(BEFORE, transitions.confirmed(BEFORE, "E9")) == {"target_etag": "E9"}


def test_checked_changes_only_the_check_time():
    assert changes(BEFORE, transitions.checked(BEFORE, at=AT)) == {"checked_at": AT}


def test_unchanged_remembers_bc_etag_and_clears_the_error():
    after = transitions.unchanged(BEFORE, etag="E2", at=AT)
    assert changes(BEFORE, after) == {
        "target_etag": "E2",
        "status": Outcome.UNCHANGED,
        "error": None,
        "checked_at": AT,
    }


def test_kept_ours_keeps_the_picture_and_the_etag():
    after = transitions.kept_ours(BEFORE, at=AT)
    assert changes(BEFORE, after) == {"status": Outcome.KEPT, "error": None, "checked_at": AT}
    assert after.wrote_picture and after.target_etag == "E1"


@pytest.mark.parametrize("etag", ["E5", None])
def test_kept_foreign_remembers_the_etag_and_that_it_is_not_ours(etag: str | None):
    after = transitions.kept_foreign(BEFORE, target_id="T2", etag=etag, at=AT)
    assert changes(BEFORE, after) == {
        "target_id": "T2",
        "target_etag": etag,
        "wrote_picture": False,
        "status": Outcome.KEPT,
        "error": None,
        "checked_at": AT,
    }


def test_blank_forgets_the_source_picture_but_not_what_we_wrote():
    after = transitions.blank(BEFORE, target_id="T1", at=AT)
    assert changes(BEFORE, after) == {
        "source_fingerprint": None,
        "source_hash": None,
        "status": Outcome.BLANK,
        "error": None,
        "checked_at": AT,
    }
    assert after.output_hash == "O1" and after.target_etag == "E1" and after.wrote_picture


def test_resaved_unchanged_takes_the_new_fingerprint_only():
    after = transitions.resaved_unchanged(BEFORE, fingerprint="F2", at=AT)
    assert changes(BEFORE, after) == {
        "source_fingerprint": "F2",
        "status": Outcome.UNCHANGED,
        "error": None,
        "checked_at": AT,
    }


def test_normalized_unchanged_remembers_source_and_normalizer_not_the_target():
    after = transitions.normalized_unchanged(
        BEFORE, fingerprint="F2", source_hash="H2", normalizer_version="norm-2", at=AT
    )
    assert changes(BEFORE, after) == {
        "source_fingerprint": "F2",
        "source_hash": "H2",
        "normalizer_version": "norm-2",
        "status": Outcome.UNCHANGED,
        "error": None,
        "checked_at": AT,
    }


def test_written_remembers_everything_and_starts_the_attempts_over():
    after = transitions.written(
        BEFORE,
        target_id="T2",
        target_number="C00011",
        fingerprint="F2",
        source_hash="H2",
        output_hash="O2",
        etag="pending:96x96",
        normalizer_version="norm-2",
        at=AT,
    )
    assert changes(BEFORE, after) == {
        "target_id": "T2",
        "target_number": "C00011",
        "source_fingerprint": "F2",
        "source_hash": "H2",
        "output_hash": "O2",
        "target_etag": "pending:96x96",
        "normalizer_version": "norm-2",
        "status": Outcome.WRITTEN,
        "error": None,
        "attempts": 0,
        "synced_at": AT,
        "checked_at": AT,
    }
    assert after.wrote_picture


def test_cleared_forgets_every_picture_field():
    after = transitions.cleared(BEFORE, target_id="T1", at=AT)
    assert changes(BEFORE, after) == {
        "target_etag": None,
        "wrote_picture": False,
        "source_hash": None,
        "source_fingerprint": None,
        "output_hash": None,
        "status": Outcome.CLEARED,
        "error": None,
        "synced_at": AT,
        "checked_at": AT,
    }
    assert after.normalizer_version == "norm-1" and after.attempts == 2


def test_failed_transient_forgets_the_fingerprint_so_the_next_run_retries():
    after = transitions.failed(
        BEFORE,
        target_id="T1",
        error="503",
        permanent=False,
        fingerprint="F2",
        etag="E3",
        normalizer_version="norm-2",
        at=AT,
    )
    assert changes(BEFORE, after) == {
        "error": "503",
        "source_fingerprint": None,
        "target_etag": "E3",
        "attempts": 3,
        "checked_at": AT,
    }
    assert after.normalizer_version == "norm-1" and after.status is Outcome.FAILED


def test_failed_permanent_remembers_which_picture_and_normalizer():
    after = transitions.failed(
        BEFORE,
        target_id="T2",
        error="not a picture",
        permanent=True,
        fingerprint="F2",
        etag="E3",
        normalizer_version="norm-2",
        at=AT,
    )
    assert changes(BEFORE, after) == {
        "target_id": "T2",
        "error": "not a picture",
        "source_fingerprint": "F2",
        "target_etag": "E3",
        "normalizer_version": "norm-2",
        "attempts": 3,
        "checked_at": AT,
    }
    assert after.synced_at == BEFORE.synced_at and after.wrote_picture


def test_failed_from_a_first_seen_row_counts_one_attempt():
    new = transitions.first_seen(
        mapping="m",
        source_kind="contact",
        source_id=1,
        target_kind="customers",
        target_id="T",
        target_number="C1",
    )
    after = transitions.failed(
        new,
        target_id="T",
        error="x",
        permanent=False,
        fingerprint="F",
        etag=None,
        normalizer_version="n",
        at=AT,
    )
    assert after.status is Outcome.FAILED and after.attempts == 1 and after.normalizer_version is None


def test_transitions_do_not_touch_the_row_they_are_given():
    snapshot = changes(BEFORE, BEFORE)
    transitions.cleared(BEFORE, target_id="T1", at=AT)
    transitions.written(
        BEFORE,
        target_id="T",
        target_number="C",
        fingerprint=None,
        source_hash="h",
        output_hash="o",
        etag="e",
        normalizer_version="n",
        at=AT,
    )
    assert snapshot == {} and BEFORE.status is Outcome.FAILED and BEFORE.attempts == 2
