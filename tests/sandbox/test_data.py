"""The seeded dataset: deterministic, lazy, varied, and its expected outcomes agree with the matcher."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

from syncd.matcher import normalize_key
from syncd.sandbox.data import SPECIAL_KINDS, Dataset, build_dataset
from syncd.sandbox.pictures import BROKEN_KINDS, make_picture
from syncd.sandbox.superoffice import SOContact, display
from syncd.types import SourceRow, TargetPicture, TargetRow
from tests.support.matching import join

MAPPINGS = {"customers": ("contact", "customers", "code"), "staff": ("person", "employees", "personNumber")}


def digest(ds: Dataset) -> str:
    blob = json.dumps({"so": ds.so.snapshot(), "bc": ds.bc.snapshot()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def source_rows(ds: Dataset, kind: str) -> list[SourceRow]:
    rows = []
    for entity in ds.so.table("contact" if kind == "contact" else "person"):
        cols = {
            c.name: display(c, c.get(entity))
            for c in ds.so.columns("contact" if kind == "contact" else "person")
        }
        eid = entity.contact_id if isinstance(entity, SOContact) else entity.person_id
        rows.append(SourceRow(kind=kind, id=eid, columns=cols))  # type: ignore[arg-type]
    return rows


def target_rows(ds: Dataset, entity_set: str) -> list[TargetRow]:
    out = []
    for rec in ds.bc.records(ds.company_id, entity_set):
        pic = None
        if rec.picture is not None:
            pic = TargetPicture(None, rec.picture.width, rec.picture.height, rec.picture.content_type, None)
        out.append(
            TargetRow(
                kind=entity_set,
                id=rec.id,
                number=rec.number,  # type: ignore[arg-type]
                display_name=rec.display_name,
                fields=rec.fields,
                picture=pic,
            )
        )
    return out


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return build_dataset(seed=11, contacts=150, persons=130)


def test_same_seed_gives_the_same_snapshots() -> None:
    assert digest(build_dataset(4, 60, 40)) == digest(build_dataset(4, 60, 40))
    assert build_dataset(4, 60, 40).expected == build_dataset(4, 60, 40).expected


def test_another_seed_gives_other_data() -> None:
    assert digest(build_dataset(4, 60, 40)) != digest(build_dataset(5, 60, 40))


def test_snapshots_are_identical_in_another_process() -> None:
    code = (
        "import json, hashlib; from syncd.sandbox.data import build_dataset; ds = build_dataset(4, 60, 40); "
        "print(hashlib.sha256(json.dumps({'so': ds.so.snapshot(), 'bc': ds.bc.snapshot()}, sort_keys=True)"
        ".encode()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == digest(build_dataset(4, 60, 40))


def test_pictures_are_made_only_on_demand(ds: Dataset) -> None:
    images = [e.image for e in [*ds.so.contacts.values(), *ds.so.persons.values()] if e.image is not None]
    assert images and not any(img.resolved for img in images)
    kind = ds.expected["sources"]["contact"]["pictures"][1] or "jpeg_small"
    fresh = build_dataset(seed=11, contacts=150, persons=130)
    image = fresh.so.contacts[1].image
    if image is not None:
        assert image.content() == make_picture(kind, 11 * 1_000_003 + 1)


def test_expected_outcomes_agree_with_the_matcher(ds: Dataset) -> None:
    for name, (kind, entity_set, column) in MAPPINGS.items():
        exp = ds.expected["mappings"][name]
        result = join(
            source_rows(ds, kind), target_rows(ds, entity_set), source_column=column, target_field="number"
        )
        assert sorted([p.source.id, p.target.id] for p in result.pairs) == sorted(exp["pairs"])
        problems: dict[str, set[int]] = {"unmatched": set(), "ambiguous": set()}
        for problem in result.problems:
            problems[problem.kind].update(problem.source_ids)
        assert problems["unmatched"] == set(exp["unmatched"])
        assert problems["ambiguous"] == set(exp["ambiguous"])


def test_expected_outcomes_cover_every_source_once(ds: Dataset) -> None:
    for name, (kind, _, _) in MAPPINGS.items():
        exp = ds.expected["mappings"][name]
        n = len(ds.so.contacts if kind == "contact" else ds.so.persons)
        assert sorted(exp["outcomes"]) == list(range(1, n + 1))
        assert exp["counts"] == dict(sorted(Counter(exp["outcomes"].values()).items()))
        assert set(exp["counts"]) == {"written", "blank", "failed", "unmatched", "ambiguous"}
        assert {s for s, _ in exp["written"]} == {s for s, o in exp["outcomes"].items() if o == "written"}
        assert all(pair in exp["pairs"] for pair in exp["written"])
        assert set(exp["blank"]) == {s for s, o in exp["outcomes"].items() if o == "blank"}
        assert set(exp["broken"]) == {s for s, o in exp["outcomes"].items() if o == "failed"}
        assert exp["no_key"] and set(exp["no_key"]) <= set(exp["unmatched"])


def test_sources_are_varied_like_a_real_crm(ds: Dataset) -> None:
    for kind in ("contact", "person"):
        src = ds.expected["sources"][kind]
        kinds = Counter(src["pictures"].values())
        n = len(src["pictures"])
        assert kinds["jpeg_small"] > n / 2
        assert 0.07 * n <= kinds[None] <= 0.13 * n
        assert 1 <= sum(kinds[k] for k in BROKEN_KINDS) <= 0.04 * n
        assert kinds["jpeg_12mp"] >= 1
        assert all(kinds[k] >= 1 for k in SPECIAL_KINDS)
        for sid in src["blank"]:
            entity = ds.so.entity(kind, sid)  # type: ignore[arg-type]
            assert entity is not None and entity.image is None


def test_every_special_picture_is_on_a_pair_that_gets_written(ds: Dataset) -> None:
    for name, (kind, _, _) in MAPPINGS.items():
        written = {s for s, _ in ds.expected["mappings"][name]["written"]}
        pictures = ds.expected["sources"][kind]["pictures"]
        assert {pictures[s] for s in written} >= {*SPECIAL_KINDS, "jpeg_12mp", "jpeg_small"}


def test_ambiguous_bc_numbers_differ_only_by_case_or_spaces(ds: Dataset) -> None:
    exp = ds.expected["mappings"]["customers"]
    numbers: dict[str, list[str]] = {}
    for rec in ds.bc.records(ds.company_id, "customers"):
        numbers.setdefault(normalize_key(rec.number), []).append(rec.number)
    doubled = {k: v for k, v in numbers.items() if len(v) > 1}
    assert doubled and all(len(set(v)) == 2 for v in doubled.values())
    assert {normalize_key(k) for k in exp["ambiguous_keys"]} >= set(doubled)
    codes = Counter(normalize_key(c.code) for c in ds.so.contacts.values() if c.code)
    assert any(n == 2 for n in codes.values())  # two contacts sharing a code


def test_some_bc_records_already_have_pictures_or_no_source(ds: Dataset) -> None:
    for name in MAPPINGS:
        exp: dict[str, Any] = ds.expected["mappings"][name]
        target_of = {s: t for s, t in exp["pairs"]}
        with_picture = set(exp["targets_with_picture"])
        assert any(target_of[s] in with_picture for s in exp["blank"])  # BC picture, SO blank: leave it
        assert any(t in with_picture for _, t in exp["written"])  # BC picture, SO picture: overwritten
        orphans = set(exp["targets_without_source"])
        assert orphans and not orphans & set(target_of.values())
        assert orphans <= set(exp["untouched_targets"])
        assert not {t for _, t in exp["written"]} & set(exp["untouched_targets"])


@pytest.mark.parametrize(("contacts", "persons"), [(0, 0), (1, 1), (5, 5), (12, 3), (25, 0)])
def test_small_datasets_are_consistent(contacts: int, persons: int) -> None:
    ds = build_dataset(3, contacts, persons)
    assert len(ds.so.contacts) == contacts and len(ds.so.persons) == persons
    assert sum(ds.expected["mappings"]["customers"]["counts"].values()) == contacts
    assert sum(ds.expected["mappings"]["staff"]["counts"].values()) == persons


def test_persons_need_a_contact() -> None:
    with pytest.raises(ValueError, match="contact"):
        build_dataset(1, 0, 3)
