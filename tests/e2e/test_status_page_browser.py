"""The status page in a real headless browser (Debian's chromium), served by a real daemon that has
just mirrored the sandbox's pictures: the DOM has the mapping rows and thumbnails, and the screenshot
is a rendered page, not a blank one.

Skipped only when chromium is not installed (CI's .ci/run installs it).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from syncd.config import load_config
from syncd.daemon import Daemon
from syncd.notify import Notifier
from syncd.sandbox.server import Sandbox
from tests.support.config import FAST_LIMITS, WriteConfig, merge

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
SHOT = Path(os.environ.get("SYNCD_SCREENSHOT_DIR", "")) if os.environ.get("SYNCD_SCREENSHOT_DIR") else None

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
]


async def chromium(profile: Path, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run headless chromium with a throwaway profile and no network chatter; (code, stdout, stderr)."""
    assert CHROMIUM is not None
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def test_status_page_renders_in_a_real_browser(
    make_sandbox: Any, write_config: WriteConfig, tmp_path: Path
) -> None:
    sb: Sandbox = await make_sandbox(contacts=20, persons=20)
    cfg = write_config(
        sb, **merge(merge({}, FAST_LIMITS), {"server": {"port": 0}, "schedule": {"interval": "1h"}})
    )
    daemon = Daemon(load_config(cfg), config_path=cfg, notifier=Notifier({}), install_signals=False)
    task = asyncio.create_task(daemon.run())
    try:
        deadline = time.monotonic() + 60
        while len(daemon.last_outcomes()) < 2 or daemon.running():
            assert not task.done(), f"daemon exited: {task.result()}"
            assert time.monotonic() < deadline, "the first runs did not finish"
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{daemon.web.port}/"

        code, dom, err = await chromium(tmp_path / "profile-dom", "--dump-dom", url)
        assert code == 0, err[-2000:]
        shot = (SHOT or tmp_path) / "status-page.png"
        code, _, err = await chromium(
            tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1200,900", url
        )
        assert code == 0, err[-2000:]
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0

    # The DOM as the browser built it: one row per mapping, before/after thumbnails of written pictures.
    assert '<tr class="mapping" data-mapping="customers">' in dom
    assert '<tr class="mapping" data-mapping="staff">' in dom
    thumbs = re.findall(r'<img src="/thumb/(\d+)/(source|output)"', dom)
    assert len(thumbs) >= 4 and {side for _, side in thumbs} == {"source", "output"}
    assert "<script" not in dom
    assert re.search(r'id="items">\d+<', dom)

    # The screenshot: a page with content, images and colour, not an empty or single-colour canvas.
    with Image.open(shot) as img:
        assert img.size == (1200, 900)
        rgb = img.convert("RGB")
        colours = rgb.getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 200, "the screenshot is (nearly) a single colour"
        white = sum(n for n, c in colours if c == (255, 255, 255))
        assert white < 0.9 * 1200 * 900, "the screenshot is mostly blank"
