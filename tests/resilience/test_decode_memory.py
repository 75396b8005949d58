"""Decodes are bounded by memory, not only by pixel count (issue #13, point 5).

A small PNG can decode to hundreds of megabytes (a 7000×7000 PNG with a tRNS chunk is 155 KB and needs
~570 MB); with 8 items in flight that is gigabytes. Each decode reserves what its header says it needs
(``syncd.imaging.decode_estimate``) from ``picture.max_decode_memory`` first; ``picture.allowed_formats``
and ``picture.max_input_pixels`` are config keys. These run the real engine against the sandbox.
"""

from __future__ import annotations

import asyncio
import io
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from syncd import imaging
from syncd.config import load_config, parse_config
from syncd.decodebudget import DecodeBudget
from syncd.errors import ConfigError
from syncd.jobs import MappingOutcome, run_job
from syncd.run import RunOptions
from syncd.runtime import open_runtime
from syncd.sandbox.server import Sandbox
from tests.support.e2e import write_config

MB = 1_000_000


def trns_png(side: int) -> bytes:
    """An RGB PNG with one transparent colour: tiny on the wire, decodes to RGB and widens to RGBA."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (200, 180, 160)).save(out, "PNG", transparency=(0, 0, 0))
    return out.getvalue()


class DecodeWatch:
    """Wraps ``imaging.normalize`` (which the engine's thread pool calls) to see which pictures are
    decoded and how many of the watched ones at once."""

    def __init__(self, watched: set[bytes]) -> None:
        self.watched = watched
        self.lock = threading.Lock()
        self.now = self.most = 0
        self.decoded: list[bytes] = []
        self.real = imaging.normalize

    def __call__(self, data: bytes, *args: Any) -> imaging.NormalizedPicture:
        hit = data in self.watched
        with self.lock:
            self.decoded.append(data)
            if hit:
                self.now += 1
                self.most = max(self.most, self.now)
        try:
            return self.real(data, *args)
        finally:
            if hit:
                with self.lock:
                    self.now -= 1


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[DecodeWatch]:
    w = DecodeWatch(set())
    monkeypatch.setattr(imaging, "normalize", w)
    yield w


async def _run(path: Path) -> MappingOutcome:
    config = load_config(path)
    async with open_runtime(config) as rt:
        [outcome] = await run_job(rt, config.mappings, RunOptions())
    return outcome


def _failures(outcome: MappingOutcome) -> dict[str, str]:
    assert outcome.result is not None, outcome.error
    return {f.source: f.detail for f in outcome.result.failures}


async def test_concurrent_decodes_share_max_decode_memory_and_a_picture_too_big_for_it_is_not_decoded(
    tmp_path: Path, watch: DecodeWatch
) -> None:
    big = trns_png(2600)  # ~81 MB to decode (RGB + RGBA + premultiplied): one at a time in 120 MB
    huge = trns_png(4000)  # ~200 MB: more than the whole budget
    assert 70 * MB < imaging.decode_estimate(big, imaging.PictureProfile()) < 120 * MB // 1
    watch.watched = {big, huge}
    async with Sandbox(seed=4, contacts=30, persons=0) as sb:
        written = sb.dataset.expected["mappings"]["customers"]["written"]
        hostile = [sid for sid, _ in written[:8]]
        for sid in hostile:
            sb.dataset.so.set_image("contact", sid, big, "image/png")
        sb.dataset.so.set_image("contact", written[8][0], huge, "image/png")
        path = write_config(
            sb,
            tmp_path,
            mappings=[sb.config()["mappings"][0]],
            limits={"concurrency": 8, "cpu_workers": 8},
            picture={"max_decode_memory": "120MB"},
        )
        outcome = await _run(path)
    failures = _failures(outcome)
    assert watch.decoded.count(big) == 8  # all of them were written ...
    assert watch.most == 1  # ... one at a time, whatever limits.concurrency and cpu_workers allow
    assert huge not in watch.decoded
    reason = failures[f"contact {written[8][0]}"]
    assert "max_decode_memory" in reason and "MB" in reason
    assert not any(f"contact {sid}" in failures for sid in hostile)


async def test_allowed_formats_and_max_input_pixels_are_config_keys_that_take_effect(tmp_path: Path) -> None:
    async with Sandbox(seed=4, contacts=60, persons=0) as sb:
        kinds = sb.dataset.expected["sources"]["contact"]["pictures"]
        written = {sid for sid, _ in sb.dataset.expected["mappings"]["customers"]["written"]}
        path = write_config(
            sb,
            tmp_path,
            mappings=[sb.config()["mappings"][0]],
            picture={"allowed_formats": ["jpeg", "png"], "max_input_pixels": 5_000_000},
        )
        outcome = await _run(path)
    failures = _failures(outcome)
    gifs = [sid for sid in written if str(kinds[sid]).startswith("gif")]
    webps = [sid for sid in written if kinds[sid] == "webp"]
    big = [sid for sid in written if kinds[sid] == "jpeg_12mp"]
    assert gifs and webps and big, kinds
    for sid in gifs + webps:
        assert "not allowed" in failures[f"contact {sid}"]
        assert "picture.allowed_formats" not in failures[f"contact {sid}"]  # the hint is not the message
    for sid in big:
        assert "max_input_pixels=5,000,000" in failures[f"contact {sid}"]


CONFIG = """
superoffice:
  base_url: http://127.0.0.1:1/Cust1/api/v1
  auth: {type: basic, username: u, password: pppppppp}
businesscentral:
  base_url: http://127.0.0.1:1/v2.0/t/production/api/v2.0
  company: CRONUS
  auth: {type: basic, username: u, password: pppppppp}
ledger: ./ledger.sqlite
mappings: [{name: customers, source: contact, target: customers, match: {source: code, target: number}}]
"""


def test_picture_keys_are_checked_when_the_config_loads() -> None:
    default = parse_config(CONFIG).picture_profile()
    assert default.allowed_formats == ("JPEG", "PNG", "GIF", "WEBP")  # no TIFF or BMP unless asked
    profile = parse_config(
        CONFIG + "picture: {allowed_formats: [jpg, WebP, tiff], max_input_pixels: 20000000}\n"
    ).picture_profile()
    assert profile.allowed_formats == ("JPEG", "WEBP", "TIFF") and profile.max_input_pixels == 20_000_000
    for bad, key in (
        ("{allowed_formats: [HEIC]}", "allowed_formats"),
        ("{allowed_formats: []}", "allowed_formats"),
        ("{max_input_pixels: 0}", "max_input_pixels"),
        ("{max_decode_memory: 1MB}", "max_decode_memory"),
    ):
        with pytest.raises(ConfigError, match=key):
            parse_config(CONFIG + f"picture: {bad}\n")


async def test_the_budget_admits_first_come_first_served_and_survives_cancelled_waiters() -> None:
    budget = DecodeBudget(100)
    admitted: list[str] = []
    release = {name: asyncio.Event() for name in "abcd"}

    async def decode(name: str, cost: int) -> None:
        async with budget.reserve(cost):
            admitted.append(name)
            await release[name].wait()

    async def settle() -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    a = asyncio.ensure_future(decode("a", 60))
    await settle()
    b = asyncio.ensure_future(decode("b", 60))  # does not fit next to a
    await settle()
    c = asyncio.ensure_future(decode("c", 30))  # would fit, but b came first: a big picture is not starved
    await settle()
    assert admitted == ["a"] and budget.in_use == 60
    b.cancel()  # b gives up its turn: c fits now
    await settle()
    assert admitted == ["a", "c"] and budget.in_use == 90
    d = asyncio.ensure_future(decode("d", 50))
    await settle()
    release["a"].set()
    await settle()
    assert admitted == ["a", "c", "d"] and budget.in_use == 80
    release["c"].set()
    release["d"].set()
    await asyncio.gather(a, c, d)
    assert b.cancelled() and budget.in_use == 0 and budget.peak == 90
    with pytest.raises(ValueError):
        async with budget.reserve(101):
            pass


def test_the_estimate_follows_the_decode_a_header_announces() -> None:
    profile = imaging.PictureProfile()

    def encoded(im: Image.Image, fmt: str, **kw: Any) -> bytes:
        out = io.BytesIO()
        im.save(out, fmt, **kw)
        return out.getvalue()

    pictures = {
        "small_jpeg": encoded(Image.new("RGB", (300, 200), "red"), "JPEG"),
        "big_jpeg": encoded(Image.new("RGB", (4000, 3000), "red"), "JPEG"),
        "grey16": encoded(Image.new("I;16", (2000, 2000), 1000), "PNG"),
        "trns": trns_png(2000),
    }
    est = {name: imaging.decode_estimate(data, profile) for name, data in pictures.items()}
    assert est["small_jpeg"] >= 300 * 200 * 4  # decoded whole: it is smaller than the target already
    # a 12 MP JPEG decodes at 1/4 scale (draft) for a 500×500 target: 1000×750 RGB, not 4000×3000
    assert 1000 * 750 * 4 <= est["big_jpeg"] < 4000 * 3000 * 4
    assert est["grey16"] >= 2000 * 2000 * (2 + 4)  # I;16, then widened to I
    assert est["trns"] >= 2000 * 2000 * (4 + 4 + 4)  # RGB, its RGBA copy, and the premultiplied one
    assert imaging.decode_estimate(b"not a picture", profile) == len(b"not a picture")
    # a header announcing 9000×9000 (CRC fixed, so it parses): refused on its header by normalize, so
    # the estimate does not hold budget for it
    png = bytearray(trns_png(100))
    png[16:24] = (9000).to_bytes(4, "big") * 2
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")
    with Image.open(io.BytesIO(bytes(png))) as header:
        assert header.size == (9000, 9000)
    small_limit = imaging.PictureProfile(max_input_pixels=1_000_000)
    assert imaging.decode_estimate(bytes(png), small_limit) == len(png)
    roomy = imaging.PictureProfile(max_input_pixels=100_000_000)
    assert imaging.decode_estimate(bytes(png), roomy) > 9000 * 9000 * 12
