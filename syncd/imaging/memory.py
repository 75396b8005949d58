"""How much memory normalizing a picture will take, read from its header alone: what the decode budget
(:mod:`syncd.decodebudget`) reserves before a decode starts."""

from __future__ import annotations

import io
from typing import Final

from PIL import Image

from syncd.imaging.geometry import REDUCING_GAP, exif_orientation, stored_target
from syncd.imaging.profile import PictureProfile
from syncd.imaging.sniff import sniff_format

#: Bytes per pixel as Pillow holds a mode in memory (three-band modes are padded to four bytes).
_MODE_BYTES: Final[dict[str, int]] = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_WIDE_MODE_BYTES: Final = 4  # LA, PA, RGB, RGBA, RGBX, CMYK, YCbCr, LAB, HSV, I, F, La, RGBa
#: What the decoder itself holds besides the pixels (zlib window, line buffers, the input as a stream).
_DECODER_OVERHEAD: Final = 8_000_000


def decode_estimate(data: bytes, profile: PictureProfile) -> int:
    """The memory :func:`normalize` needs for ``data``, in bytes, from the header alone (no pixel is
    decoded): the decoded picture (pixels × bands × bytes per sample, at the JPEG draft scale that
    :func:`normalize` will use), plus the full-size copy ``resizable`` makes when the mode must change
    (tRNS → alpha, palette → RGB, 16-bit → 32-bit), plus the premultiplied copy that resizing a picture
    with alpha makes. A picture whose header cannot be read costs what its bytes do: :func:`normalize`
    will reject it before it decodes anything.

    Checked against the peak RSS of one decode (``bench/decode_memory.py``): 7000×7000 RGB with tRNS,
    estimate 596 MB, measured 568 MB; 7000×7000 16-bit grey, estimate 302 MB, measured 288 MB.
    """
    fmt = sniff_format(data)
    if fmt is None or fmt not in profile.allowed_formats:
        return len(data)
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as src:
            width, height = src.size
            mode = src.mode
            has_tr = "transparency" in src.info
            if fmt == "JPEG":
                sw, sh = stored_target(width, height, exif_orientation(src), profile)
                want_w, want_h = max(1, int(sw * REDUCING_GAP)), max(1, int(sh * REDUCING_GAP))
                scale = min(width // want_w, height // want_h)
                s = next((f for f in (8, 4, 2) if scale >= f), 1)  # as Pillow's JpegImageFile.draft
                width, height = (width + s - 1) // s, (height + s - 1) // s
    except Exception:  # unreadable header: normalize says what is wrong with it
        return len(data)
    pixels = width * height
    if pixels > profile.max_input_pixels or max(width, height) > profile.max_input_side:
        return len(data)  # refused on its header, before any decode (and with the clearer message)
    decoded = _MODE_BYTES.get(mode, _WIDE_MODE_BYTES)
    converted = 0
    if mode not in ("L", "RGB", "CMYK", "I", "F", "LA", "RGBA") or (has_tr and mode in ("L", "RGB")):
        converted = _WIDE_MODE_BYTES  # resizable makes a full-size RGB(A)/LA/L/I copy
    alpha = has_tr or mode in ("LA", "RGBA", "PA", "La", "RGBa")
    premultiplied = _WIDE_MODE_BYTES if alpha and not (mode == "P" and profile.format == "JPEG") else 0
    return len(data) + _DECODER_OVERHEAD + pixels * (decoded + converted + premultiplied)
