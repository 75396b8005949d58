"""Pairs are made only on keys unique on both sides; everything else is reported, never written."""

from __future__ import annotations

from syncd.types import SourceRow, TargetRow
from tests.support.matching import join


def src(i: int, code: str) -> SourceRow:
    return SourceRow(kind="contact", id=i, columns={"code": code})


def tgt(i: str, number: str, **fields: str) -> TargetRow:
    return TargetRow(kind="customers", id=i, number=number, display_name=i, fields=fields, picture=None)


def test_keys_match_ignoring_case_and_surrounding_spaces() -> None:
    r = join([src(1, " c00012 ")], [tgt("g1", "C00012")], source_column="code", target_field="number")
    assert [(p.source.id, p.target.id) for p in r.pairs] == [(1, "g1")]
    assert r.problems == []


def test_two_bc_records_with_one_key_are_ambiguous_and_name_both() -> None:
    r = join([src(1, "C1")], [tgt("g1", "C1"), tgt("g2", " c1")], source_column="code", target_field="number")
    assert r.pairs == []
    [p] = r.problems
    assert p.kind == "ambiguous" and set(p.target_ids) == {"g1", "g2"} and p.source_ids == (1,)


def test_two_sources_with_one_key_are_ambiguous() -> None:
    r = join([src(1, "C1"), src(2, "c1")], [tgt("g1", "C1")], source_column="code", target_field="number")
    assert r.pairs == []
    assert r.problems[0].kind == "ambiguous" and r.problems[0].source_ids == (1, 2)
    assert r.count("ambiguous") == 2


def test_missing_key_and_missing_target_are_unmatched() -> None:
    r = join([src(1, ""), src(2, "C9")], [tgt("g1", "C1")], source_column="code", target_field="number")
    assert r.pairs == []
    assert sorted(p.source_ids for p in r.problems) == [(1,), (2,)]
    assert {p.kind for p in r.problems} == {"unmatched"}


def test_match_on_any_bc_field() -> None:
    r = join(
        [SourceRow(kind="contact", id=5, columns={"orgnr": "NO 123"})],
        [tgt("g1", "C1", taxRegistrationNumber="no 123")],
        source_column="orgnr",
        target_field="taxRegistrationNumber",
    )
    assert [p.target.id for p in r.pairs] == ["g1"]


def test_explicit_pairs_override_the_rule() -> None:
    r = join(
        [src(1, "C1"), src(2, "C2")],
        [tgt("g1", "C1"), tgt("g2", "C2"), tgt("v10", "V00010")],
        source_column="code",
        target_field="number",
        pairs={"1": "V00010"},
    )
    assert sorted((p.source.id, p.target.id) for p in r.pairs) == [(1, "v10"), (2, "g2")]


def test_pairs_alone_need_no_match_rule() -> None:
    r = join(
        [src(1, ""), src(2, "")],
        [tgt("v10", "V00010")],
        source_column=None,
        target_field=None,
        pairs={"1": "v00010"},
    )
    assert [(p.source.id, p.target.id) for p in r.pairs] == [(1, "v10")]
    assert r.problems == []  # source 2 is simply not part of this mapping


def test_a_record_claimed_by_an_explicit_pair_and_the_rule_gets_neither_picture() -> None:
    # Source 1 is paired by hand to V00010; source 2's code matches V00010 by the rule. Writing both
    # would flip the record's picture on every run: neither is paired, both are reported.
    r = join(
        [src(1, "C1"), src(2, "V00010"), src(3, "C3")],
        [tgt("g1", "C1"), tgt("v10", "V00010"), tgt("g3", "C3")],
        source_column="code",
        target_field="number",
        pairs={"1": "V00010"},
    )
    assert [(p.source.id, p.target.id) for p in r.pairs] == [(3, "g3")]
    [problem] = r.problems
    assert problem.kind == "ambiguous" and problem.source_ids == (1, 2) and problem.target_ids == ("v10",)
    assert "V00010" in problem.detail


def test_two_explicit_pairs_naming_one_record_are_ambiguous() -> None:
    r = join(
        [src(1, ""), src(2, "")],
        [tgt("v10", "V00010")],
        source_column=None,
        target_field=None,
        pairs={"1": "V00010", "2": " v00010 "},
    )
    assert r.pairs == []
    assert [(p.kind, p.source_ids) for p in r.problems] == [("ambiguous", (1, 2))]
