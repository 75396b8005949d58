"""The decision table, row by row (see syncd/decisions.py), plus its edge cases and invariants."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from syncd.decisions import (
    FINGERPRINT_UNAVAILABLE,
    Policy,
    Post,
    Pre,
    SourceState,
    TargetState,
    decide_after_fetch,
    decide_before_fetch,
    owns_target_picture,
)
from syncd.ledger import LedgerItem
from syncd.types import Outcome, PlanAction

NV = "norm-2"  # the running normalizer version

# A ledger row after a successful write: BC shows our picture with etag E1 on record T1.
WRITTEN = LedgerItem(
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
    normalizer_version=NV,
    wrote_picture=True,
    status=Outcome.WRITTEN,
)
OURS = TargetState(etag="E1", present=True, target_id="T1")  # BC still shows what we wrote
REPLACED = TargetState(etag="E2", present=True, target_id="T1")  # someone changed it in BC
EMPTY = TargetState(etag="E0", present=False, target_id="T1")  # BC record without picture
SAME = SourceState("F1")
CHANGED = SourceState("F2")
BLANK = SourceState(None)

DEFAULT = Policy()
KEEP_BOTH = Policy(on_source_blank="keep", on_target_changed="keep")
CLEAR = Policy(on_source_blank="clear")
CLEAR_KEEP = Policy(on_source_blank="clear", on_target_changed="keep")


def pre(
    item: LedgerItem | None,
    source: SourceState,
    target: TargetState,
    policy: Policy = DEFAULT,
    *,
    full: bool = False,
    nv: str = NV,
) -> Pre:
    return decide_before_fetch(item, source, target, policy, nv, full)


def post(
    item: LedgerItem | None,
    source_hash: str,
    output_hash: str | None,
    target: TargetState = OURS,
    nv: str = NV,
) -> Post:
    return decide_after_fetch(item, source_hash, output_hash, target, nv)


# ---------------------------------------------------------------- phase 1: source blank (B1–B3)


def test_blank_source_and_bc_without_picture_is_blank():  # B1
    assert pre(None, BLANK, EMPTY, CLEAR) is Pre.BLANK


def test_blank_source_does_not_clear_an_already_empty_bc_picture_again():  # B1 over B2
    cleared = replace(WRITTEN, status=Outcome.CLEARED, target_etag="E0")
    assert pre(cleared, BLANK, EMPTY, CLEAR) is Pre.BLANK


def test_picture_removed_in_superoffice_keeps_ours_in_bc_by_default():  # B2 keep
    assert pre(WRITTEN, BLANK, OURS) is Pre.KEEP


def test_picture_removed_in_superoffice_clears_ours_with_clear_policy():  # B2 clear
    assert pre(WRITTEN, BLANK, OURS, CLEAR) is Pre.CLEAR


def test_blank_source_never_clears_a_picture_someone_replaced_in_bc():  # B3
    assert pre(WRITTEN, BLANK, REPLACED, CLEAR) is Pre.BLANK


def test_blank_source_never_clears_a_bc_picture_on_first_sync():  # B3
    assert pre(None, BLANK, OURS, CLEAR) is Pre.BLANK


def test_blank_source_never_clears_a_picture_we_did_not_write():  # B3
    not_ours = replace(WRITTEN, wrote_picture=False, status=Outcome.KEPT)
    assert pre(not_ours, BLANK, OURS, CLEAR) is Pre.BLANK


def test_blank_source_keeps_clearing_decision_when_last_clear_failed():  # B2 after a failure
    failed = replace(WRITTEN, status=Outcome.FAILED, error="503")
    assert pre(failed, BLANK, OURS, CLEAR) is Pre.CLEAR


# ---------------------------------------------------------------- phase 1: skip (S1)


def test_unchanged_picture_is_skipped_without_download():  # S1
    assert pre(WRITTEN, SAME, OURS) is Pre.SKIP


def test_item_recorded_unchanged_last_run_is_skipped_again():  # S1
    assert pre(replace(WRITTEN, status=Outcome.UNCHANGED), SAME, OURS) is Pre.SKIP


def test_full_reconcile_downloads_even_unchanged_pictures():
    assert pre(WRITTEN, SAME, OURS, full=True) is Pre.FETCH


def test_changed_fingerprint_is_fetched():  # F1
    assert pre(WRITTEN, CHANGED, OURS) is Pre.FETCH


def test_normalizer_upgrade_refetches_every_picture():  # F1
    assert pre(WRITTEN, SAME, OURS, nv="norm-3") is Pre.FETCH


def test_failed_item_is_retried_even_when_nothing_seems_changed():  # F1
    failed = replace(WRITTEN, status=Outcome.FAILED, error="timeout", attempts=1)
    assert pre(failed, SAME, OURS) is Pre.FETCH


def test_unavailable_fingerprint_is_never_trusted_for_a_skip():
    item = replace(WRITTEN, source_fingerprint=FINGERPRINT_UNAVAILABLE)
    assert pre(item, SourceState(FINGERPRINT_UNAVAILABLE), OURS) is Pre.FETCH


def test_unavailable_fingerprint_counts_as_a_picture_not_as_blank():
    assert pre(WRITTEN, SourceState(FINGERPRINT_UNAVAILABLE), OURS, CLEAR) is Pre.FETCH


@pytest.mark.parametrize(
    "status", [Outcome.BLANK, Outcome.CLEARED, Outcome.KEPT, Outcome.UNMATCHED, Outcome.AMBIGUOUS]
)
def test_only_written_or_unchanged_items_can_be_skipped(status: Outcome):
    assert pre(replace(WRITTEN, status=status), SAME, OURS) is Pre.FETCH


# ---------------------------------------------------------------- phase 1: foreign BC picture (T1)


def test_picture_replaced_in_bc_is_overwritten_by_default():  # T1 overwrite
    assert pre(WRITTEN, SAME, REPLACED) is Pre.FETCH


def test_picture_replaced_in_bc_is_kept_with_keep_policy():  # T1 keep
    assert pre(WRITTEN, SAME, REPLACED, KEEP_BOTH) is Pre.KEEP
    assert pre(WRITTEN, CHANGED, REPLACED, KEEP_BOTH) is Pre.KEEP


def test_first_sync_onto_a_bc_picture_overwrites_by_default():  # T1 overwrite
    assert pre(None, SAME, OURS) is Pre.FETCH


def test_first_sync_onto_a_bc_picture_keeps_it_with_keep_policy():  # T1 keep
    assert pre(None, SAME, OURS, KEEP_BOTH) is Pre.KEEP


def test_first_sync_onto_empty_bc_record_is_fetched():  # F1
    assert pre(None, SAME, EMPTY, KEEP_BOTH) is Pre.FETCH


def test_keep_policy_still_fills_a_picture_deleted_in_bc():  # F1: nothing to protect
    assert pre(WRITTEN, SAME, TargetState(etag="E3", present=False, target_id="T1"), KEEP_BOTH) is Pre.FETCH


def test_kept_picture_is_decided_again_each_run_so_a_policy_change_applies():
    kept = replace(WRITTEN, wrote_picture=False, status=Outcome.KEPT, target_etag="E2")
    assert pre(kept, SAME, REPLACED, KEEP_BOTH) is Pre.KEEP
    assert pre(kept, SAME, REPLACED, DEFAULT) is Pre.FETCH


def test_full_reconcile_still_honours_keep_policy():
    assert pre(WRITTEN, SAME, REPLACED, KEEP_BOTH, full=True) is Pre.KEEP


# ---------------------------------------------------------------- edge cases: etags and moved matches


def test_unknown_bc_etag_is_never_taken_for_ours():
    unknown = TargetState(etag=None, present=True, target_id="T1")
    no_etag_item = replace(WRITTEN, target_etag=None)
    assert pre(no_etag_item, SAME, unknown) is Pre.FETCH  # None == None proves nothing
    assert pre(no_etag_item, BLANK, unknown, CLEAR) is Pre.BLANK
    assert pre(WRITTEN, SAME, unknown, KEEP_BOTH) is Pre.KEEP


def test_item_without_recorded_etag_is_not_skipped():
    assert pre(replace(WRITTEN, target_etag=None), SAME, OURS) is Pre.FETCH


def test_match_moved_to_another_bc_record_is_written_there():
    moved = TargetState(etag="E1", present=True, target_id="T2")  # even an equal etag proves nothing
    assert pre(WRITTEN, SAME, moved) is Pre.FETCH
    assert post(WRITTEN, "H1", "O1", moved) is Post.WRITE


def test_match_moved_to_a_record_with_its_own_picture_follows_keep_policy():
    moved = TargetState(etag="X9", present=True, target_id="T2")
    assert pre(WRITTEN, SAME, moved, KEEP_BOTH) is Pre.KEEP


def test_match_moved_never_clears_the_new_record():
    moved = TargetState(etag="E1", present=True, target_id="T2")
    assert pre(WRITTEN, BLANK, moved, CLEAR) is Pre.BLANK


def test_without_target_id_the_caller_vouches_for_the_record():
    anonymous = TargetState(etag="E1", present=True)
    assert pre(WRITTEN, SAME, anonymous) is Pre.SKIP


def test_written_status_without_ownership_is_not_skipped():
    inconsistent = replace(WRITTEN, wrote_picture=False)
    assert pre(inconsistent, SAME, OURS) is Pre.FETCH


# ---------------------------------------------------------------- phase 2 (P1–P4)


def test_first_sync_always_writes():  # P1
    assert post(None, "H1", None) is Post.WRITE


def test_resaved_identical_source_is_not_rewritten_or_decoded():  # P2
    assert post(WRITTEN, "H1", None) is Post.SKIP


def test_changed_source_needs_normalizing_before_deciding():  # P4 with unknown output
    assert post(WRITTEN, "H2", None) is Post.WRITE


def test_changed_source_with_identical_output_is_not_rewritten():  # P3
    assert post(WRITTEN, "H2", "O1") is Post.SKIP


def test_changed_source_with_new_output_is_written():  # P4
    assert post(WRITTEN, "H2", "O2") is Post.WRITE


def test_unknown_output_hash_never_matches_an_unrecorded_one():  # P4, not P3 with None == None
    assert post(replace(WRITTEN, output_hash=None), "H2", None) is Post.WRITE


def test_normalizer_upgrade_giving_the_same_bytes_is_not_rewritten():  # P3 across versions
    assert post(WRITTEN, "H1", None, nv="norm-3") is Post.WRITE  # must normalize first
    assert post(WRITTEN, "H1", "O1", nv="norm-3") is Post.SKIP


def test_normalizer_upgrade_giving_new_bytes_is_written():  # P4
    assert post(WRITTEN, "H1", "O2", nv="norm-3") is Post.WRITE


def test_bc_picture_changed_since_listing_our_write_is_rewritten():  # P1
    assert post(WRITTEN, "H1", "O1", REPLACED) is Post.WRITE


def test_foreign_bc_picture_is_overwritten_even_when_our_hashes_match():  # P1
    # We once wrote H1/O1, someone replaced it in BC, policy was keep (kept, etag E2 recorded) and is now
    # overwrite: equal hashes must not hide that BC shows someone else's picture.
    kept = replace(WRITTEN, wrote_picture=False, status=Outcome.KEPT, target_etag="E2")
    assert post(kept, "H1", "O1", REPLACED) is Post.WRITE


def test_failed_item_is_rewritten_even_when_hashes_match():  # P1
    failed = replace(WRITTEN, status=Outcome.FAILED)
    assert post(failed, "H1", "O1") is Post.WRITE


def test_unknown_bc_etag_after_download_writes():  # P1
    assert post(WRITTEN, "H1", "O1", TargetState(etag=None, present=True, target_id="T1")) is Post.WRITE


# ---------------------------------------------------------------- vocabulary


def test_phase_one_outcomes_share_the_action_vocabulary():
    for p in (Pre.SKIP, Pre.KEEP, Pre.BLANK, Pre.CLEAR):
        assert PlanAction(p.value).value == p.value
    assert PlanAction(Post.WRITE.value) is PlanAction.WRITE


def test_owns_target_picture_needs_wrote_picture_same_record_and_known_equal_etag():
    assert owns_target_picture(WRITTEN, OURS)
    assert not owns_target_picture(None, OURS)
    assert not owns_target_picture(WRITTEN, REPLACED)
    assert not owns_target_picture(replace(WRITTEN, wrote_picture=False), OURS)
    assert not owns_target_picture(WRITTEN, replace(OURS, target_id="T2"))


# ---------------------------------------------------------------- invariants over every combination

ITEMS: list[LedgerItem | None] = [
    None,
    WRITTEN,
    replace(WRITTEN, status=Outcome.UNCHANGED),
    replace(WRITTEN, status=Outcome.FAILED),
    replace(WRITTEN, status=Outcome.KEPT, wrote_picture=False, target_etag="E2"),
    replace(WRITTEN, status=Outcome.KEPT, source_fingerprint=None),
    replace(WRITTEN, status=Outcome.BLANK, wrote_picture=False, source_fingerprint=None, target_etag="E0"),
    replace(WRITTEN, status=Outcome.CLEARED, wrote_picture=False, target_etag=None),
    replace(WRITTEN, target_etag=None),
    replace(WRITTEN, normalizer_version="norm-1"),
    replace(WRITTEN, target_id="T0"),
]
SOURCES = [SAME, CHANGED, BLANK, SourceState(FINGERPRINT_UNAVAILABLE)]
TARGETS = [
    OURS,
    REPLACED,
    EMPTY,
    TargetState(etag=None, present=True, target_id="T1"),
    TargetState(etag=None, present=False, target_id="T1"),
    TargetState(etag="E1", present=True, target_id="T2"),
]
POLICIES = [DEFAULT, KEEP_BOTH, CLEAR, CLEAR_KEEP]
COMBINATIONS = list(itertools.product(ITEMS, SOURCES, TARGETS, POLICIES, [False, True]))


def test_no_combination_breaks_the_safety_rules():
    assert len(COMBINATIONS) == 2112
    for item, source, target, policy, full in COMBINATIONS:
        result = pre(item, source, target, policy, full=full)
        ours = owns_target_picture(item, target)
        where = f"{item} {source} {target} {policy} full={full} → {result}"
        if source.blank:
            assert result in (Pre.BLANK, Pre.KEEP, Pre.CLEAR), where
        else:
            assert result in (Pre.SKIP, Pre.FETCH, Pre.KEEP), where
        if result is Pre.CLEAR:  # only ever clear our own picture, and only when asked to
            assert ours and target.present and policy.on_source_blank == "clear", where
        if result is Pre.SKIP:  # skipping needs proof that BC shows our picture of this exact source
            assert not full and ours and item is not None and item.status in ("written", "unchanged"), where
            assert source.fingerprint == item.source_fingerprint and item.normalizer_version == NV, where
        if result is Pre.FETCH and target.present and not ours:  # a foreign picture is only overwritten
            assert policy.on_target_changed == "overwrite", where  # when the policy says so
        if result is Pre.KEEP and not source.blank:
            assert policy.on_target_changed == "keep" and target.present and not ours, where


def test_phase_two_never_skips_a_picture_that_is_not_ours():
    for item, target in itertools.product(ITEMS, TARGETS):
        for source_hash, output_hash in itertools.product(["H1", "H2"], [None, "O1", "O2"]):
            result = post(item, source_hash, output_hash, target)
            if result is Post.SKIP:
                assert item is not None and owns_target_picture(item, target), (item, target)
                assert item.status in ("written", "unchanged")
