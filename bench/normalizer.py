"""Measure 3: ``syncd.imaging.normalize`` against naive Pillow and pyvips, on time and on quality.

Methods, all to the same target (fit in 500×500, JPEG quality 85, upright, alpha on white where the
method can):
  syncd         ``syncd.imaging.normalize(data, PictureProfile())``
  pillow_naive  open → ``ImageOps.exif_transpose`` → ``resize(LANCZOS)`` → save (``convert("RGB")``
                first when the mode cannot be saved as JPEG) — what most code does
  pyvips        ``pyvips.Image.thumbnail_buffer`` (shrink-on-load, auto-rotate) → flatten alpha →
                ``write_to_buffer(".jpg", Q=85)``, libvips limited to ONE thread and with its operation
                cache off, so it does the same work per call as the others (the threaded figure is
                reported too, as ``pyvips_threads``, for information)

Time: wall and CPU per call; the median over rounds, the methods' order rotating every round.
Quality: mean absolute difference (0..255 per channel) of the decoded output against a high-quality
reference of the same size: the full-resolution picture (first frame, EXIF applied, alpha flattened
on white) resized per channel in 32-bit float with Lanczos and no reducing shortcut.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from bench.inputs import DESCRIPTIONS, NORMALIZER_INPUTS, picture
from syncd import imaging

BOX = 500
PROFILE = imaging.PictureProfile(max_width=BOX, max_height=BOX, format="JPEG", quality=85)


def _fit(w: int, h: int) -> tuple[int, int]:
    if w <= BOX and h <= BOX:
        return w, h
    s = min(BOX / w, BOX / h)
    return max(1, round(w * s)), max(1, round(h * s))


def syncd_method(data: bytes) -> bytes:
    return imaging.normalize(data, PROFILE).data


def pillow_naive(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as src:
        im = ImageOps.exif_transpose(src)
        im = im.resize(_fit(*im.size), Image.Resampling.LANCZOS)
        if im.mode != "RGB":
            im = im.convert("RGB")
        out = io.BytesIO()
        im.save(out, "JPEG", quality=85)
        return out.getvalue()


def _vips(data: bytes) -> bytes:
    import pyvips  # type: ignore[import-untyped]

    im = pyvips.Image.thumbnail_buffer(data, BOX, height=BOX, size="down")
    if im.hasalpha():
        im = im.flatten(background=[255, 255, 255])
    if im.interpretation not in ("srgb", "b-w"):
        im = im.colourspace("srgb")
    return bytes(im.write_to_buffer(".jpg", Q=85, keep="none"))


def _vips_with_threads(threads: int) -> Callable[[bytes], bytes]:
    def run(data: bytes) -> bytes:
        import pyvips

        pyvips.concurrency_set(threads)
        try:
            return _vips(data)
        finally:
            pyvips.concurrency_set(1)

    return run


def _setup_vips() -> bool:
    try:
        import pyvips
    except Exception:
        return False
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)
    pyvips.concurrency_set(1)
    return True


# -- quality ---------------------------------------------------------------------------------------------


def _reference_full(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as src:
        src.seek(0)
        im = ImageOps.exif_transpose(src).convert("RGBA")
    flat = Image.new("RGBA", im.size, (255, 255, 255, 255))
    flat.alpha_composite(im)
    return flat.convert("RGB")


def _reference(full: Image.Image, size: tuple[int, int]) -> np.ndarray:
    channels = [
        np.asarray(c.convert("F").resize(size, Image.Resampling.LANCZOS, reducing_gap=None))
        for c in full.split()
    ]
    reference: np.ndarray = np.clip(np.stack(channels, axis=-1), 0, 255)
    return reference


def _decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        pixels: np.ndarray = np.asarray(im.convert("RGB"), dtype=np.float32)
        return pixels


# -- the measure ----------------------------------------------------------------------------------------


def run(rounds: int) -> dict[str, Any]:
    methods: dict[str, Callable[[bytes], bytes]] = {"syncd": syncd_method, "pillow_naive": pillow_naive}
    if _setup_vips():
        methods["pyvips"] = _vips
        methods["pyvips_threads"] = _vips_with_threads(0)  # 0: libvips picks (one per CPU)
    inputs: dict[str, Any] = {}
    for name in NORMALIZER_INPUTS:
        data = picture(name)
        with Image.open(io.BytesIO(data)) as im:
            header = {"format": im.format, "mode": im.mode, "size": list(im.size)}
        walls: dict[str, list[float]] = {m: [] for m in methods}
        cpus: dict[str, list[float]] = {m: [] for m in methods}
        outputs: dict[str, bytes] = {m: fn(data) for m, fn in methods.items()}  # warm-up, and the output
        order = list(methods)
        for r in range(rounds):
            for m in order[r % len(order) :] + order[: r % len(order)]:
                c0, t0 = time.process_time(), time.perf_counter()
                methods[m](data)
                walls[m].append(time.perf_counter() - t0)
                cpus[m].append(time.process_time() - c0)
        full = _reference_full(data)
        results: dict[str, Any] = {}
        refs: dict[tuple[int, int], np.ndarray] = {}
        for m, out in outputs.items():
            got = _decoded(out)
            size = (got.shape[1], got.shape[0])
            if size not in refs:
                refs[size] = _reference(full, size)
            results[m] = {
                "wall_ms": statistics.median(walls[m]) * 1000,
                "cpu_ms": statistics.median(cpus[m]) * 1000,
                "wall_ms_all": [w * 1000 for w in walls[m]],
                "output_size": list(size),
                "output_bytes": len(out),
                "mad": float(np.mean(np.abs(got - refs[size]))),
            }
        entry: dict[str, Any] = {
            "description": DESCRIPTIONS[name],
            "input_bytes": len(data),
            "input": header,
            "methods": results,
        }
        if "pyvips" in results:
            entry["syncd_vs_pyvips"] = results["syncd"]["wall_ms"] / results["pyvips"]["wall_ms"]
            entry["syncd_vs_pyvips_cpu"] = results["syncd"]["cpu_ms"] / results["pyvips"]["cpu_ms"]
        entry["naive_vs_syncd"] = results["pillow_naive"]["wall_ms"] / results["syncd"]["wall_ms"]
        inputs[name] = entry
    bars: dict[str, bool] = {}
    j = inputs["jpeg_12mp_exif"]
    if "syncd_vs_pyvips" in j:
        bars["jpeg_12mp_le_1.0x_pyvips"] = j["syncd_vs_pyvips"] <= 1.0
        for png in ("png_12mp", "png_4mp_rgba"):
            bars[f"{png}_le_1.3x_pyvips"] = inputs[png]["syncd_vs_pyvips"] <= 1.3
    bars["jpeg_12mp_ge_3.5x_faster_than_naive"] = j["naive_vs_syncd"] >= 3.5
    return {
        "rounds": rounds,
        "box": BOX,
        "quality": 85,
        "methods": list(methods),
        "inputs": inputs,
        "bars": bars,
    }
