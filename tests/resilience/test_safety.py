"""Safety stops (exit 4, nothing changed, ``--force`` proceeds) and runs with nothing to do (exit 0).

- An empty SuperOffice listing while the ledger knows items looks like a wrong tenant or lost
  permissions: stop.
- A run that would clear more than ``limits.max_clears`` pictures, or more than
  ``limits.max_clears_percent`` of the mapping, stops (only with ``on_source_blank: clear``).
"Nothing changed" is checked on the emulators' data (every BC picture byte), on their request logs
(no PATCH, no DELETE) and on the ledger's items.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from syncd.sandbox.server import Sandbox
from tests.support.e2e import syncd, write_config
from tests.support.resilience import customers_only, ledger_rows, target_of

pytestmark = pytest.mark.slow

GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def writes(sb: Sandbox) -> int:
    return sb.bc.log.count(method="PATCH") + sb.bc.log.count(method="DELETE")


def items(ledger: Path) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in ledger_rows(ledger, "SELECT * FROM items ORDER BY mapping, source_id")]


def config(sb: Sandbox, tmp_path: Path, name: str = "syncd.yaml", **overrides: Any) -> Path:
    limits = overrides.pop("limits", {})
    return write_config(sb, tmp_path, name, mappings=customers_only(sb, **overrides), limits=limits)


async def test_an_empty_source_listing_is_a_safety_stop_until_forced(tmp_path: Path) -> None:
    async with Sandbox(seed=21, contacts=14, persons=0) as sb:
        cfg = config(sb, tmp_path)
        first = await syncd("run", "--once", "-c", str(cfg))
        assert first.code == 0, first.stderr
        idle = await syncd("run", "--once", "--json", "-c", str(cfg))
        assert idle.code == 0, "a run with nothing to do is a success"
        assert idle.json()["mappings"][0]["counts"]["patches"] == 0

        sb.dataset.so.contacts.clear()  # the tenant now lists no contacts at all
        ledger = tmp_path / "ledger.sqlite"
        bc_before, items_before, writes_before = sb.dataset.bc.snapshot(True), items(ledger), writes(sb)
        stop = await syncd("run", "--once", "-c", str(cfg))
        assert stop.code == 4, stop.stdout + stop.stderr
        text = stop.stdout + stop.stderr
        assert "listed no contacts" in text and "--force" in text
        assert sb.dataset.bc.snapshot(True) == bc_before and writes(sb) == writes_before
        assert items(ledger) == items_before
        outcome = ledger_rows(ledger, "SELECT outcome FROM runs ORDER BY id DESC LIMIT 1")[0]["outcome"]
        assert outcome == "safety_stop"

        forced = await syncd("run", "--once", "--force", "--json", "-c", str(cfg))
        assert forced.code == 0, forced.stderr
        assert forced.json()["mappings"][0]["outcome"] == "ok"
        assert sb.dataset.bc.snapshot(True) == bc_before  # on_source_blank: keep — nothing to clear


async def test_clearing_more_pictures_than_max_clears_is_a_safety_stop_until_forced(tmp_path: Path) -> None:
    async with Sandbox(seed=22, contacts=14, persons=0) as sb:
        cfg = config(
            sb, tmp_path, on_source_blank="clear", limits={"max_clears": 2, "max_clears_percent": 100}
        )
        assert (await syncd("run", "--once", "-c", str(cfg))).code == 0
        written = sb.dataset.expected["mappings"]["customers"]["written"]
        gone = written[:3]
        for source_id, _ in gone:
            sb.dataset.so.set_image("contact", source_id, None)  # pictures removed in SuperOffice

        ledger = tmp_path / "ledger.sqlite"
        bc_before, items_before, writes_before = sb.dataset.bc.snapshot(True), items(ledger), writes(sb)
        stop = await syncd("run", "--once", "-c", str(cfg))
        assert stop.code == 4, stop.stdout + stop.stderr
        assert "would clear 3" in stop.stdout + stop.stderr
        assert sb.dataset.bc.snapshot(True) == bc_before and writes(sb) == writes_before
        assert items(ledger) == items_before

        forced = await syncd("run", "--once", "--force", "--json", "-c", str(cfg))
        assert forced.code == 0, forced.stderr
        assert forced.json()["mappings"][0]["counts"]["cleared"] == 3
        assert sb.bc.log.count(method="DELETE", status=204) == 3
        for _, target_id in gone:
            assert sb.dataset.bc.get_record(sb.dataset.company_id, "customers", target_id).picture is None


async def test_clearing_more_than_max_clears_percent_stops_and_clears_within_both_caps_proceed(
    tmp_path: Path,
) -> None:
    async with Sandbox(seed=23, contacts=14, persons=0) as sb:
        strict = config(
            sb, tmp_path, "strict.yaml", on_source_blank="clear", limits={"max_clears_percent": 20}
        )
        loose = config(sb, tmp_path, "loose.yaml", on_source_blank="clear", limits={"max_clears_percent": 50})
        assert (await syncd("run", "--once", "-c", str(strict))).code == 0
        written = sb.dataset.expected["mappings"]["customers"]["written"]
        known = len(ledger_rows(tmp_path / "ledger.sqlite", "SELECT 1 FROM items"))
        gone = written[:3]
        assert 20 < 100 * len(gone) / known <= 50 and len(gone) <= 10  # above 20 %, below 50 % and 10
        for source_id, _ in gone:
            sb.dataset.so.set_image("contact", source_id, None)

        bc_before = sb.dataset.bc.snapshot(True)
        stop = await syncd("run", "--once", "-c", str(strict))
        assert stop.code == 4 and "max_clears_percent=20" in stop.stdout + stop.stderr
        assert sb.dataset.bc.snapshot(True) == bc_before and sb.bc.log.count(method="DELETE") == 0

        ok = await syncd("run", "--once", "--json", "-c", str(loose))  # within both caps: no --force needed
        assert ok.code == 0, ok.stderr
        assert ok.json()["mappings"][0]["counts"]["cleared"] == 3
        assert sb.bc.log.count(method="DELETE", status=204) == 3


async def test_a_first_run_against_an_empty_tenant_has_nothing_to_do_and_succeeds(tmp_path: Path) -> None:
    async with Sandbox(seed=24, contacts=0, persons=0) as sb:
        cfg = write_config(sb, tmp_path)
        result = await syncd("run", "--once", "--json", "-c", str(cfg))
        assert result.code == 0, result.stderr
        assert all(m["outcome"] == "ok" for m in result.json()["mappings"])
        assert writes(sb) == 0
        con = sqlite3.connect(tmp_path / "ledger.sqlite")
        try:
            assert con.execute("SELECT count(*) FROM items").fetchone() == (0,)
        finally:
            con.close()


def _norm(key: str) -> str:
    return " ".join(key.split()).casefold()


def _ambiguous_groups(
    exp: dict[str, Any], targets: dict[str, set[str]], sb: Sandbox
) -> list[tuple[str, set[str]]]:
    """(SuperOffice ids as the summary joins them, BC ids) per ambiguous key."""
    contacts = sb.dataset.so.contacts
    groups = []
    for key, ids in targets.items():
        sources = sorted(
            i for i in exp["ambiguous"] if i in contacts and _norm(contacts[i].code) == _norm(key)
        )
        groups.append((", ".join(str(i) for i in sources), ids))
    return groups


async def test_ambiguous_and_unmatched_records_are_never_written_and_reported_with_every_id(
    tmp_path: Path,
) -> None:
    async with Sandbox(seed=25, contacts=19, persons=0) as sb:
        exp = sb.dataset.expected["mappings"]["customers"]
        records = sb.dataset.bc.records(sb.dataset.company_id, "customers")
        ambiguous_targets = {
            key: {r.id for r in records if _norm(r.number) == _norm(key)} for key in exp["ambiguous_keys"]
        }
        assert any(len(ids) == 2 for ids in ambiguous_targets.values()), "two BC customers share a key"
        assert any(len(ids) == 1 for ids in ambiguous_targets.values()), "two contacts share a key"
        pictures_before = {r.id: r.picture.data if r.picture else None for r in records}
        cfg = config(sb, tmp_path)

        result = await syncd("run", "--once", "-c", str(cfg))
        assert result.code == 0, result.stderr
        touched = {t for e in sb.bc.log.entries if e.method in ("PATCH", "DELETE") and (t := target_of(e))}
        for ids in ambiguous_targets.values():
            assert not ids & touched
            for rid in ids:
                rec = sb.dataset.bc.get_record(sb.dataset.company_id, "customers", rid)
                assert (rec.picture.data if rec.picture else None) == pictures_before[rid]
        # The summary lists each ambiguous source with every BC record involved (rich may fold long lines).
        summary = result.stdout.replace("\n", "")
        for issue_sources, ids in _ambiguous_groups(exp, ambiguous_targets, sb):
            assert f"ambiguous: contact {issue_sources}" in summary
            assert all(i in summary for i in ids)

        status = await syncd("status", "--json", "-c", str(cfg))
        assert status.code == 0, status.stderr
        issues = status.json()["issues"]
        ambiguous = [i for i in issues if i["kind"] == "ambiguous"]
        assert {int(i["source"]) for i in ambiguous} == set(exp["ambiguous"])
        for issue in ambiguous:
            ids = ambiguous_targets[next(k for k in ambiguous_targets if _norm(k) == _norm(issue["key"]))]
            assert set(re.findall(GUID, issue["target"])) == ids, issue["target"]
        unmatched = {int(i["source"]) for i in issues if i["kind"] == "unmatched"}
        assert unmatched == set(exp["unmatched"])
