"""A clear needs a positive blank signal, and blanks that only the download reveals stay within both caps.

Without ImageInfo (an installation or proxy that has no such route) syncd learns that a picture is gone
only from ``…/Image``. A 404 there is no proof — a missing record, route or proxy says the same — so it
never clears; a 204 (or an empty JSON result) is, and those clears count against ``max_clears`` and
``max_clears_percent`` together with phase A's. One past a cap stops the run (exit 4) before any of
them is cleared, so the next run stops again instead of clearing the rest.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from syncd.config import load_config
from syncd.errors import ExitCode
from syncd.jobs import MappingOutcome, run_job
from syncd.run import RunOptions
from syncd.runtime import open_runtime
from syncd.sandbox.server import Sandbox
from tests.support.e2e import write_config
from tests.support.so_proxy import SuperOfficeProxy


def _via(sb: Sandbox, proxy: SuperOfficeProxy) -> str:
    return proxy.url + urlsplit(sb.so_url).path


async def _run(path: Path, options: RunOptions | None = None) -> MappingOutcome:
    config = load_config(path)
    async with open_runtime(config) as rt:
        [outcome] = await run_job(rt, config.mappings, options or RunOptions())
    return outcome


async def _first_sync_then_remove(sb: Sandbox, path: Path, removed: int) -> list[str]:
    """Sync every picture, then remove ``removed`` of them in SuperOffice; their BC record ids."""
    first = await _run(path)
    assert first.result is not None and first.result.counts.as_dict()["written"] >= removed
    written = sb.dataset.expected["mappings"]["customers"]["written"]
    for source_id, _ in written[:removed]:
        sb.dataset.so.set_image("contact", source_id, None)
    return [t for _, t in written[:removed]]


def _pictures_left(sb: Sandbox, targets: list[str]) -> int:
    bc = sb.dataset.bc
    return sum(bc.get_record(sb.dataset.company_id, "customers", t).picture is not None for t in targets)


async def test_a_404_for_the_picture_without_imageinfo_never_clears_over_two_runs(tmp_path: Path) -> None:
    """The reproduced bug: 20 of 20 cleared over two runs with max_clears 10, max_clears_percent 10."""
    async with (
        Sandbox(seed=3, contacts=40, persons=0) as sb,
        SuperOfficeProxy(urlsplit(sb.so_url)._replace(path="").geturl()) as proxy,
    ):
        mapping = {**sb.config()["mappings"][0], "on_source_blank": "clear"}
        path = write_config(
            sb,
            tmp_path,
            mappings=[mapping],
            superoffice={"base_url": _via(sb, proxy), "change_detection": "per_record"},
            limits={"max_clears": 10, "max_clears_percent": 10},
        )
        targets = await _first_sync_then_remove(sb, path, 20)
        proxy.knobs.image_info_missing = True  # from now on: no ImageInfo, and …/Image says 404
        deletes_before = sb.bc.log.count(method="DELETE")
        for _ in range(2):
            outcome = await _run(path)
            assert outcome.result is not None, outcome.error
            assert outcome.result.counts.as_dict()["cleared"] == 0
            assert outcome.result.counts.as_dict()["kept"] >= 20
        assert sb.bc.log.count(method="DELETE") == deletes_before
        assert _pictures_left(sb, targets) == 20
        assert any("/imageinfo" in s.lower() for s in proxy.knobs.seen)


async def test_blanks_found_while_downloading_past_the_percent_cap_stop_the_run_and_clear_nothing(
    tmp_path: Path,
) -> None:
    async with (
        Sandbox(seed=3, contacts=40, persons=0) as sb,
        SuperOfficeProxy(urlsplit(sb.so_url)._replace(path="").geturl()) as proxy,
    ):
        mapping = {**sb.config()["mappings"][0], "on_source_blank": "clear"}
        path = write_config(
            sb,
            tmp_path,
            mappings=[mapping],
            superoffice={"base_url": _via(sb, proxy), "change_detection": "per_record"},
            limits={"max_clears": 10, "max_clears_percent": 10},  # 10% of ~40 records: 4
        )
        targets = await _first_sync_then_remove(sb, path, 8)
        proxy.knobs.image_info_missing = True
        proxy.knobs.blank_image_status = 204  # a positive "no picture", found only by downloading
        deletes_before = sb.bc.log.count(method="DELETE")
        for _ in range(2):  # the second run does not clear what the first one refused to
            outcome = await _run(path)
            assert outcome.exit_code == ExitCode.SAFETY_STOP
            assert "max_clears_percent=10" in str(outcome.error) and "while downloading" in str(outcome.error)
        assert sb.bc.log.count(method="DELETE") == deletes_before
        assert _pictures_left(sb, targets) == 8

        forced = await _run(path, RunOptions(force=True))  # the user checked: clear them
        assert forced.result is not None and forced.result.counts.as_dict()["cleared"] == 8
        assert _pictures_left(sb, targets) == 0


async def test_blanks_found_while_downloading_past_max_clears_stop_the_run(tmp_path: Path) -> None:
    async with (
        Sandbox(seed=3, contacts=40, persons=0) as sb,
        SuperOfficeProxy(urlsplit(sb.so_url)._replace(path="").geturl()) as proxy,
    ):
        mapping = {**sb.config()["mappings"][0], "on_source_blank": "clear"}
        path = write_config(
            sb,
            tmp_path,
            mappings=[mapping],
            superoffice={"base_url": _via(sb, proxy), "change_detection": "per_record"},
            limits={"max_clears": 2, "max_clears_percent": 100},
        )
        targets = await _first_sync_then_remove(sb, path, 6)
        proxy.knobs.image_info_missing = True
        proxy.knobs.blank_image_status = 204
        deletes_before = sb.bc.log.count(method="DELETE")
        outcome = await _run(path)
        assert outcome.exit_code == ExitCode.SAFETY_STOP and "max_clears=2" in str(outcome.error)
        assert sb.bc.log.count(method="DELETE") == deletes_before
        assert _pictures_left(sb, targets) == 6


async def test_blanks_found_while_downloading_within_both_caps_are_cleared(tmp_path: Path) -> None:
    async with (
        Sandbox(seed=3, contacts=40, persons=0) as sb,
        SuperOfficeProxy(urlsplit(sb.so_url)._replace(path="").geturl()) as proxy,
    ):
        mapping = {**sb.config()["mappings"][0], "on_source_blank": "clear"}
        path = write_config(
            sb,
            tmp_path,
            mappings=[mapping],
            superoffice={"base_url": _via(sb, proxy), "change_detection": "per_record"},
            limits={"max_clears": 10, "max_clears_percent": 10},
        )
        targets = await _first_sync_then_remove(sb, path, 3)
        proxy.knobs.image_info_missing = True
        proxy.knobs.blank_image_status = 204
        outcome = await _run(path)
        assert outcome.exit_code == ExitCode.PARTIAL  # the sandbox's broken pictures fail, as always
        assert outcome.result is not None and outcome.result.counts.as_dict()["cleared"] == 3
        assert _pictures_left(sb, targets) == 0
