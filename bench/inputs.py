"""Generated benchmark pictures (never downloaded): the normalizer inputs and the sandbox picture pools.

The same name always gives the same bytes, in any process, so the sandbox child and the benchmark
process agree on what syncd is fed. The big ones take a second or two to make, so they are cached
per process.
"""

from __future__ import annotations

import functools
import io
import random

from PIL import Image, ImageDraw, ImageFilter

from syncd.sandbox.pictures import make_picture, photo_jpeg

#: The normalizer inputs of measure 3 (and the CPU-bound mix of measure 4), in display order.
NORMALIZER_INPUTS: tuple[str, ...] = (
    "jpeg_12mp_exif",
    "png_12mp",
    "png_4mp_rgba",
    "jpeg_1mp",
    "gif_animated",
)

DESCRIPTIONS: dict[str, str] = {
    "jpeg_12mp_exif": "12 MP camera JPEG (4000×3000 upright), stored sideways with EXIF Orientation 6, q90",
    "png_12mp": "12 MP RGB PNG (4000×3000 photo with sensor noise), zlib level 6",
    "png_4mp_rgba": "4 MP RGBA PNG (2000×2000, soft-edged alpha over a photo)",
    "jpeg_1mp": "1 MP JPEG (1152×864), q90",
    "gif_animated": "animated GIF, 640×480, 6 frames, 64-colour palette",
}


@functools.cache
def picture(name: str) -> bytes:
    """The bytes of the named benchmark input."""
    if name == "jpeg_12mp_exif":
        return photo_jpeg(4000, 3000, seed=12, orientation=6)
    if name == "png_12mp":
        return _png(_photo(4000, 3000, seed=13))
    if name == "png_4mp_rgba":
        im = _photo(2000, 2000, seed=14).convert("RGBA")
        mask = Image.new("L", im.size, 0)
        ImageDraw.Draw(mask).ellipse((150, 150, 1850, 1850), fill=255)
        im.putalpha(mask.filter(ImageFilter.GaussianBlur(40)))
        return _png(im)
    if name == "jpeg_1mp":
        return photo_jpeg(1152, 864, seed=15)
    if name == "gif_animated":
        frames = [_photo(640, 480, seed=16 + k).quantize(64, dither=Image.Dither.NONE) for k in range(6)]
        out = io.BytesIO()
        frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=150, loop=0)
        return out.getvalue()
    raise ValueError(f"unknown benchmark input {name!r}; known: {', '.join(NORMALIZER_INPUTS)}")


def _photo(width: int, height: int, seed: int) -> Image.Image:
    with Image.open(io.BytesIO(photo_jpeg(width, height, seed=seed))) as im:
        return im.convert("RGB")


def _png(im: Image.Image) -> bytes:
    out = io.BytesIO()
    im.save(out, "PNG", compress_level=6)
    return out.getvalue()


def small_pool(size: int = 32) -> list[bytes]:
    """Typical CRM pictures: the sandbox's ``jpeg_small`` kind (200–800 px JPEGs), ``size`` distinct ones."""
    return [make_picture("jpeg_small", 70_000 + k) for k in range(size)]


def tiny_pool(size: int = 32) -> list[bytes]:
    """Distinct 24×24 JPEGs: for large datasets whose pictures only have to exist (measure 8's setup)."""
    out = []
    for k in range(size):
        buf = io.BytesIO()
        Image.new("RGB", (24, 24), (k * 7 % 256, k * 13 % 256, k * 29 % 256)).save(buf, "JPEG", quality=80)
        out.append(buf.getvalue())
    return out


def cpu_mix_pool() -> list[bytes]:
    """The normalizer inputs, one of each: a CPU-bound mix where decoding dominates."""
    return [picture(name) for name in NORMALIZER_INPUTS]


def shuffled(items: list[bytes], seed: int) -> list[bytes]:
    out = list(items)
    random.Random(seed).shuffle(out)
    return out
