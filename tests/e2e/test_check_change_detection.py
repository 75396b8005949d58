"""`syncd check` says which change detection the runs will use, and why (in process, on the sandbox)."""

from __future__ import annotations

from pathlib import Path

from syncd.check import check_config
from syncd.config import load_config
from syncd.errors import ExitCode
from syncd.sandbox.server import Sandbox
from tests.support.e2e import write_config


async def so_lines(sb: Sandbox, tmp_path: Path, mode: str) -> tuple[list[str], ExitCode]:
    cfg = load_config(write_config(sb, tmp_path, superoffice={"change_detection": mode}))
    sections = await check_config(cfg)
    so = next(s for s in sections if s.title.startswith("SuperOffice"))
    return [f.text for f in so.findings if "change detection" in f.text], so.code


async def test_check_names_the_strategy_and_the_reason(tmp_path: Path) -> None:
    async with Sandbox(contacts=10, persons=10) as sb:
        lines, code = await so_lines(sb, tmp_path, "auto")
        assert code is ExitCode.OK and len(lines) == 1 and lines[0].startswith("change detection: bulk")
        lines, code = await so_lines(sb, tmp_path, "per_record")
        assert (
            code is ExitCode.OK
            and lines[0].startswith("change detection: per_record")
            and "configured" in lines[0]
        )

        sb.so.dynamic_provider_status = 403
        lines, code = await so_lines(sb, tmp_path, "auto")
        assert (
            code is ExitCode.OK and lines[0].startswith("change detection: per_record") and "403" in lines[0]
        )
        lines, code = await so_lines(sb, tmp_path, "bulk")  # bulk insists: runs would fail, so does check
        assert code is ExitCode.AUTH and "bulk is configured" in lines[0]
