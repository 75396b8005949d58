"""Picture sizes: fitting into the profile's box, the EXIF orientation, and the target size in the
picture's stored (not yet rotated) orientation, which the decoder and the memory estimate work in."""

from __future__ import annotations

from typing import Final

from PIL import Image

from syncd.imaging.profile import PictureProfile

#: Decode/reduce to at least this multiple of the target before the final Lanczos pass. 2.0 is what
#: Pillow's own ``thumbnail()`` uses; it is visually indistinguishable from a full-size resample.
REDUCING_GAP: Final = 2.0

_EXIF_ORIENTATION: Final = 0x0112
# EXIF orientation → the transpose that makes the stored picture upright (ImageOps.exif_transpose).
UPRIGHT: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES: Final = frozenset({5, 6, 7, 8})


def _fit(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """The largest size with the same aspect ratio inside the box, never larger than the original."""
    if width <= max_width and height <= max_height:
        return width, height
    scale = min(max_width / width, max_height / height)
    return max(1, min(max_width, round(width * scale))), max(1, min(max_height, round(height * scale)))


def stored_target(width: int, height: int, orientation: int, profile: PictureProfile) -> tuple[int, int]:
    """The output size in *stored* orientation: fitted upright, then turned back if EXIF swaps sides."""
    swap = orientation in _SWAPS_SIDES
    upright_w, upright_h = (height, width) if swap else (width, height)
    out_w, out_h = _fit(upright_w, upright_h, profile.max_width, profile.max_height)
    return (out_h, out_w) if swap else (out_w, out_h)


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8); missing, invalid or unparsable EXIF counts as 1 (as stored)."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # any malformed EXIF simply means "no orientation"
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1
