"""The one-shot mirror end to end: the real CLI against the sandbox, checked on what the sandbox holds."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageOps

from syncd.ledger import Ledger
from syncd.sandbox.server import Sandbox
from tests.support.e2e import syncd, write_config

pytestmark = pytest.mark.slow

MAPPINGS = ("customers", "staff")


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(seed=7, contacts=110, persons=100) as sb:
        yield sb


def bc_picture(sb: Sandbox, entity: str, target_id: str) -> bytes | None:
    rec = sb.dataset.bc.get_record(sb.dataset.company_id, entity, target_id)
    return rec.picture.data if rec.picture is not None else None


def so_picture(sb: Sandbox, kind: str, source_id: int) -> bytes:
    entities: Any = sb.dataset.so.contacts if kind == "contact" else sb.dataset.so.persons
    image = entities[source_id].image
    assert image is not None
    return bytes(image.content())


def bc_pictures(sb: Sandbox) -> dict[tuple[str, str], str | None]:
    out: dict[tuple[str, str], str | None] = {}
    for entity in ("customers", "employees"):
        for rec in sb.dataset.bc.records(sb.dataset.company_id, entity):
            data = rec.picture.data if rec.picture is not None else None
            out[(entity, rec.id)] = hashlib.sha256(data).hexdigest() if data else None
    return out


@pytest.fixture
async def big_sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(seed=11, contacts=200, persons=200) as sb:
        yield sb


async def test_first_run_mirrors_every_matched_picture_upright_small_and_clean(
    big_sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox = big_sandbox
    before = bc_pictures(sandbox)
    cfg = write_config(sandbox, tmp_path)
    result = await syncd("run", "--once", "--json", "-c", str(cfg))
    assert result.code == 2, result.stderr  # the dataset holds broken pictures on purpose: partial
    summary = {m["mapping"]: m for m in result.json()["mappings"]}

    for name in MAPPINGS:
        exp = sandbox.dataset.expected["mappings"][name]
        counts = summary[name]["counts"]
        assert counts["written"] == len(exp["written"])
        assert counts["failed"] == len(exp["broken"])
        assert counts["blank"] == len(exp["blank"])
        assert counts["unmatched"] == len(exp["unmatched"])
        assert counts["ambiguous"] == len(exp["ambiguous"])
        for source_id, target_id in exp["written"]:
            out = bc_picture(sandbox, exp["target"], target_id)
            assert out is not None, f"{name}: {source_id} → {target_id} not written"
            src = ImageOps.exif_transpose(
                Image.open(io.BytesIO(so_picture(sandbox, exp["source"], source_id)))
            )
            assert src is not None
            with Image.open(io.BytesIO(out)) as im:
                assert im.format == "JPEG"
                assert im.width <= 500 and im.height <= 500
                assert not im.getexif(), "EXIF must be stripped"
                assert "exif" not in im.info and "icc_profile" not in im.info
                # aspect ratio kept (within rounding) — EXIF rotation applied, so upright
                assert (
                    abs(im.width / im.height - src.width / src.height)
                    < 0.02 * (src.width / src.height) + 0.01
                )
        # Blank, unmatched and ambiguous sources and BC records without a source: untouched.
        for target_id in exp["untouched_targets"]:
            key = (exp["target"], target_id)
            current = bc_picture(sandbox, exp["target"], target_id)
            assert (hashlib.sha256(current).hexdigest() if current else None) == before[key]


async def test_recent_changes_keep_a_before_and_after_thumbnail_of_what_was_written(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    cfg = write_config(sandbox, tmp_path)
    assert (await syncd("run", "--once", "-c", str(cfg))).code in (0, 2)
    async with Ledger.open(tmp_path / "ledger.sqlite", readonly=True) as ledger:
        changes = await ledger.recent_changes("customers")
    assert len(changes) == 20  # the first 20 written pictures of the run
    exp = sandbox.dataset.expected["mappings"]["customers"]
    written = {source_id: target_id for source_id, target_id in exp["written"]}
    for change in changes:
        assert change.source_thumb is not None and change.output_thumb is not None
        before = Image.open(io.BytesIO(change.source_thumb))
        after = Image.open(io.BytesIO(change.output_thumb))
        out = bc_picture(sandbox, "customers", written[change.source_id])
        assert out is not None
        written_size = Image.open(io.BytesIO(out)).size
        for thumb in (before, after):
            assert thumb.format == "JPEG" and max(thumb.size) == min(96, max(written_size))
            # The same picture as was written: upright, same proportions.
            assert abs(thumb.width / thumb.height - written_size[0] / written_size[1]) < 0.05


async def test_exif_rotated_photo_arrives_upright(sandbox: Sandbox, tmp_path: Path) -> None:
    cfg = write_config(sandbox, tmp_path)
    await syncd("run", "--once", "-c", str(cfg))
    found = 0
    for name in MAPPINGS:
        exp = sandbox.dataset.expected["mappings"][name]
        kinds = sandbox.dataset.expected["sources"][exp["source"]]["pictures"]
        for source_id, target_id in exp["written"]:
            if kinds.get(source_id) != "jpeg_exif_rotated":
                continue
            found += 1
            out = bc_picture(sandbox, exp["target"], target_id)
            assert out is not None
            with Image.open(io.BytesIO(out)) as im:
                rgb = im.convert("RGB")
                top = rgb.getpixel((rgb.width // 2, 2))
                bottom = rgb.getpixel((rgb.width // 2, rgb.height - 3))
            assert isinstance(top, tuple) and isinstance(bottom, tuple)
            assert top[0] > 180 and top[1] < 90, f"red band must be at the top, got {top} (bottom {bottom})"
    assert found, "the dataset should hold an EXIF-rotated picture"


async def test_second_run_patches_nothing_and_decodes_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    cfg = write_config(sandbox, tmp_path)
    await syncd("run", "--once", "-c", str(cfg))
    patches_before = sandbox.bc.log.count(method="PATCH")
    second = await syncd("run", "--once", "--json", "-c", str(cfg))
    assert sandbox.bc.log.count(method="PATCH") == patches_before
    for m in second.json()["mappings"]:
        assert m["counts"]["patches"] == 0
        assert m["counts"]["decodes"] == 0
        assert m["counts"]["written"] == 0


async def test_changing_one_picture_leads_to_exactly_one_patch(sandbox: Sandbox, tmp_path: Path) -> None:
    cfg = write_config(sandbox, tmp_path)
    await syncd("run", "--once", "-c", str(cfg))
    exp = sandbox.dataset.expected["mappings"]["customers"]
    source_id, target_id = exp["written"][0]
    new = io.BytesIO()
    Image.new("RGB", (640, 480), (10, 200, 30)).save(new, "JPEG")
    sandbox.dataset.so.set_image("contact", source_id, new.getvalue())
    patches_before = sandbox.bc.log.count(method="PATCH")
    result = await syncd("run", "--once", "--json", "-c", str(cfg))
    assert sandbox.bc.log.count(method="PATCH") == patches_before + 1
    counts = {m["mapping"]: m["counts"] for m in result.json()["mappings"]}
    assert counts["customers"]["written"] == 1 and counts["customers"]["decodes"] == 1
    out = bc_picture(sandbox, "customers", target_id)
    assert out is not None
    with Image.open(io.BytesIO(out)) as im:
        assert im.size == (500, 375)
        pixel = im.convert("RGB").getpixel((250, 180))
        assert isinstance(pixel, tuple) and pixel[1] > 150


async def test_dry_run_leaves_sandbox_and_ledger_byte_identical(sandbox: Sandbox, tmp_path: Path) -> None:
    cfg = write_config(sandbox, tmp_path)
    await syncd("run", "--once", "-c", str(cfg))  # a ledger with content
    exp = sandbox.dataset.expected["mappings"]["customers"]
    new = io.BytesIO()
    Image.new("RGB", (300, 300), (0, 0, 255)).save(new, "PNG")
    sandbox.dataset.so.set_image("contact", exp["written"][1][0], new.getvalue())
    ledger = tmp_path / "ledger.sqlite"
    so_before, bc_before = sandbox.dataset.so.snapshot(), sandbox.dataset.bc.snapshot(include_bytes=True)
    ledger_before = ledger.read_bytes()
    writes_before = sandbox.bc.log.count(method="PATCH") + sandbox.bc.log.count(method="DELETE")

    result = await syncd("run", "--once", "--dry-run", "-c", str(cfg))
    assert result.code in (0, 2), result.stderr
    assert sandbox.dataset.so.snapshot() == so_before
    assert sandbox.dataset.bc.snapshot(include_bytes=True) == bc_before
    assert ledger.read_bytes() == ledger_before
    assert sandbox.bc.log.count(method="PATCH") + sandbox.bc.log.count(method="DELETE") == writes_before
    plan = [line.split("\t") for line in result.stdout.splitlines() if line.startswith("customers\t")]
    writes = {p[2] for p in plan if p[1] == "write"}
    assert writes == {f"contact {exp['written'][1][0]}"}
    # the broken pictures are reported again, not re-downloaded: they have not changed
    assert {p[2] for p in plan if p[1] == "failed"} == {f"contact {i}" for i in exp["broken"]}
    assert any(p[1] == "skip" for p in plan) and any(p[1] == "ambiguous" for p in plan)


@pytest.mark.parametrize("dialect", ["v1.0", "beta"])
async def test_older_bc_api_dialects_write_through_content_links(
    sandbox: Sandbox, tmp_path: Path, dialect: str
) -> None:
    cfg = sandbox.config(ledger=str(tmp_path / "ledger.sqlite"))
    base = cfg["businesscentral"]["base_url"].replace("/api/v2.0", f"/api/{dialect}")
    path = write_config(sandbox, tmp_path, businesscentral={"base_url": base}, mappings=[cfg["mappings"][0]])
    result = await syncd("run", "--once", "--json", "-c", str(path))
    assert result.code in (0, 2), result.stderr
    exp = sandbox.dataset.expected["mappings"]["customers"]
    assert result.json()["mappings"][0]["counts"]["written"] == len(exp["written"])
    patched = {e.path for e in sandbox.bc.log.entries if e.method == "PATCH" and e.status == 204}
    assert patched and all(p.endswith("/content") and f"/api/{dialect}/" in p for p in patched)
    again = await syncd("run", "--once", "--json", "-c", str(path))
    assert again.json()["mappings"][0]["counts"]["patches"] == 0


async def test_trust_updated_date_skips_imageinfo_for_records_not_updated(tmp_path: Path) -> None:
    # Where saving a picture does move updatedDate (a sandbox knob), incremental runs may trust it.
    async with Sandbox(seed=5, contacts=80, persons=0, image_updates_touch_updated_date=True) as sb:
        one_mapping = [sb.config()["mappings"][0]]
        cfg = write_config(
            sb,
            tmp_path,
            superoffice={"trust_updated_date": True, "change_detection": "per_record"},
            mappings=one_mapping,
        )
        await syncd("run", "--once", "-c", str(cfg))
        pairs = len(sb.dataset.expected["mappings"]["customers"]["pairs"])
        info_before = sb.so.log.count(route_contains="ImageInfo")
        second = await syncd("run", "--once", "--json", "-c", str(cfg))
        info_calls = sb.so.log.count(route_contains="ImageInfo") - info_before
        assert second.json()["mappings"][0]["counts"]["written"] == 0
        assert info_calls < pairs / 4, f"{info_calls} ImageInfo calls for {pairs} unchanged records"

        source_id, _ = sb.dataset.expected["mappings"]["customers"]["written"][0]
        new = io.BytesIO()
        Image.new("RGB", (200, 100), (200, 0, 0)).save(new, "JPEG")
        sb.dataset.so.set_image("contact", source_id, new.getvalue(), touch=True)
        third = await syncd("run", "--once", "--json", "-c", str(cfg))
        assert third.json()["mappings"][0]["counts"]["written"] == 1
        full = await syncd("run", "--once", "--full", "--json", "-c", str(cfg))
        assert full.json()["mappings"][0]["counts"]["written"] == 0  # full checks all, finds nothing new
