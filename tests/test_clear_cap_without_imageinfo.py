"""Without ImageInfo, blank pictures surface only while downloading: the clear cap still holds."""

from __future__ import annotations

from pathlib import Path

from e2e import write_config

from syncd.config import load_config
from syncd.engine import RunOptions
from syncd.jobs import run_job
from syncd.runtime import open_runtime
from syncd.sandbox.server import Sandbox


async def test_blanks_found_during_download_never_exceed_max_clears(tmp_path: Path) -> None:
    async with Sandbox(seed=3, contacts=40, persons=0) as sb:
        mapping = {**sb.config()["mappings"][0], "on_source_blank": "clear"}
        path = write_config(
            sb,
            tmp_path,
            mappings=[mapping],
            limits={"max_clears": 2, "max_clears_percent": 100},
            # an installation without ImageInfo has no Dynamic provider either: per-record detection
            superoffice={"change_detection": "per_record"},
        )
        config = load_config(path)
        async with open_runtime(config) as rt:
            [first] = await run_job(rt, config.mappings, RunOptions())
        assert first.result is not None and first.result.counts.as_dict()["written"] > 5

        written = sb.dataset.expected["mappings"]["customers"]["written"]
        for source_id, _ in written[:6]:  # six pictures removed in SuperOffice
            sb.dataset.so.set_image("contact", source_id, None)
        deletes_before = sb.bc.log.count(method="DELETE")
        async with open_runtime(config) as rt:
            rt.source.image_info_supported = False  # as on an installation without the ImageInfo route
            [second] = await run_job(rt, config.mappings, RunOptions())
        assert second.result is not None
        counts = second.result.counts.as_dict()
        assert sb.bc.log.count(method="DELETE") - deletes_before == 2
        assert counts["cleared"] == 2 and counts["kept"] >= 4
        still_there = [
            t
            for _, t in written[:6]
            if sb.dataset.bc.get_record(sb.dataset.company_id, "customers", t).picture is not None
        ]
        assert len(still_there) == 4
