"""Encoding the result: fixed encoder settings and no metadata (same pixels, same bytes), stepping the
JPEG quality down and then shrinking until the output fits the profile's ``max_bytes``."""

from __future__ import annotations

import io
from typing import Final

from PIL import Image

from syncd.errors import ImageError
from syncd.imaging.profile import PictureProfile

#: JPEG qualities tried, in order, after the profile's own, while the output is over ``max_bytes``.
QUALITY_STEPS: Final = (85, 75, 65, 55, 45)
#: After the lowest quality, each further attempt shrinks both sides by this factor.
_SHRINK_STEP: Final = 0.75
_MIN_SIDE: Final = 16


def _encode(im: Image.Image, fmt: str, quality: int) -> bytes:
    """Fixed encoder settings, no metadata: same pixels → same bytes."""
    im.info = {}  # nothing from the source (EXIF, ICC, XMP, comment, dpi) may leak into the output
    out = io.BytesIO()
    if fmt == "JPEG":
        im.save(out, "JPEG", quality=quality, optimize=True, progressive=False, subsampling="4:2:0")
    else:
        im.save(out, "PNG", optimize=True)
    return out.getvalue()


def encode_within(im: Image.Image, profile: PictureProfile) -> tuple[bytes, Image.Image]:
    """Encode, stepping JPEG quality down and then shrinking until the output fits ``max_bytes``."""
    if profile.format == "JPEG":
        qualities = [profile.quality] + [q for q in QUALITY_STEPS if q < profile.quality]
    else:
        qualities = [0]
    for q in qualities:
        data = _encode(im, profile.format, q)
        if len(data) <= profile.max_bytes:
            return data, im
    while True:
        w, h = round(im.width * _SHRINK_STEP), round(im.height * _SHRINK_STEP)
        if min(w, h) < _MIN_SIDE:
            raise ImageError(
                f"cannot make this picture smaller than max_bytes={profile.max_bytes}",
                hint="raise picture.max_bytes in the config",
            )
        im = im.resize((w, h), Image.Resampling.LANCZOS)
        data = _encode(im, profile.format, qualities[-1])
        if len(data) <= profile.max_bytes:
            return data, im
