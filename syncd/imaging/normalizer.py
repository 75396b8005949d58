"""The picture normalizer: untrusted source bytes in, one small, clean, deterministic picture out.

``normalize(data, profile)`` is a pure function (no I/O, no global state it relies on) meant to run in
a worker thread or process. Every way a source picture can be unusable ends in ``ImageError`` with a
message that says what is wrong with *that picture*; no other exception type escapes.

Pipeline, cheapest first so hostile input is rejected before it costs anything:

1. size and magic-byte checks (``sniff_format``): empty input, oversized input, HTML error pages,
   formats outside the profile's allow-list;
2. ``Image.open(formats=[sniffed])`` reads the header only; the pixel count and side lengths are
   checked against the profile *before* any pixel is decoded (decompression bombs never allocate);
3. the target size is computed in upright (EXIF-rotated) coordinates and mapped back to the stored
   orientation, so JPEGs decode through ``draft()`` at the smallest DCT scale that still covers the
   target (a 12 MP photo decodes at 1/4 or 1/8 size), other formats through ``reduce()``, then a
   Lanczos resample to the exact size;
4. only then the EXIF orientation is applied (on the small picture, where it is cheap), the ICC
   profile (or plain CMYK) is converted to sRGB, 16-bit samples are scaled to 8 bits, and alpha is
   flattened on the profile's background colour (JPEG) or kept (PNG);
5. the result is encoded with fixed settings and no metadata at all (no EXIF, GPS, XMP, ICC,
   comments), so identical input and profile give identical bytes; if it exceeds ``max_bytes`` the
   JPEG quality steps down and then the picture shrinks.

``NORMALIZER_VERSION`` must be bumped whenever the output bytes for the same input and profile would
change; the ledger stores it and re-normalizes every picture after an upgrade.
"""

from __future__ import annotations

import io
import re
import warnings
from typing import Final

from PIL import Image, UnidentifiedImageError

from syncd.errors import ImageError
from syncd.imaging.colour import apply_tone_map, resizable, to_srgb, tone_map
from syncd.imaging.encoding import encode_within
from syncd.imaging.geometry import REDUCING_GAP, UPRIGHT, exif_orientation, stored_target
from syncd.imaging.profile import NormalizedPicture, PictureProfile
from syncd.imaging.sniff import describe_unknown, lacks_end_marker, sniff_format

_CONTENT_TYPES: Final = {"JPEG": "image/jpeg", "PNG": "image/png"}

# Installed once, at import, for Pillow's own warnings only: a decompression-bomb warning (more pixels
# than Image.MAX_IMAGE_PIXELS) is an error, and Pillow's notes about damaged metadata it then ignores
# ("Corrupt EXIF data", ...) are nothing an operator can act on. Not warnings.catch_warnings() around
# each call: that swaps the process-global filter list and races when normalize runs in several threads.
# The explicit pixel check in _normalize is the real bomb guard and needs no warning machinery at all.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


def normalize(
    data: bytes, profile: PictureProfile, thumbnail: PictureProfile | None = None
) -> NormalizedPicture:
    """Turn untrusted source picture bytes into the profile's target picture (and, with ``thumbnail``,
    a thumbnail of the source picture from the same decode).

    Raises ``ImageError`` (and nothing else) when the bytes are not a usable picture. Safe to call
    from several threads or processes at once: it changes no global state.
    """
    if not data:
        raise ImageError("empty picture (0 bytes)")
    if len(data) > profile.max_input_bytes:
        raise ImageError(
            f"picture too large: {len(data):,} bytes > max_input_bytes={profile.max_input_bytes:,}",
            hint="raise picture.max_input_bytes if such pictures are legitimate",
        )
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError(f"not an image: looks like {describe_unknown(data)}")
    if fmt not in profile.allowed_formats:
        raise ImageError(
            f"{fmt} pictures are not allowed (allowed: {', '.join(profile.allowed_formats)})",
            hint="add the format to picture.allowed_formats",
        )
    try:
        return _normalize(data, fmt, profile, thumbnail)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(m.group(1)):,} pixels" if m else "its size"
        limit = min(profile.max_input_pixels, Image.MAX_IMAGE_PIXELS or profile.max_input_pixels)
        raise ImageError(
            f"{fmt} picture has too many pixels (decompression bomb?): {pixels} is over the limit "
            f"of {limit:,}"
        ) from None
    except MemoryError:
        raise ImageError(f"{fmt} picture needs more memory to decode than is available") from None
    except UnidentifiedImageError:
        raise ImageError(f"corrupt {fmt} picture: its header cannot be read") from None
    except Exception as exc:  # Pillow raises many types for bad input; all mean "bad picture"
        detail = str(exc) or type(exc).__name__
        if "truncated" in detail or isinstance(exc, EOFError) or lacks_end_marker(fmt, data):
            raise ImageError(f"truncated {fmt} picture (the data ends too early): {detail}") from None
        raise ImageError(f"corrupt {fmt} picture: {detail}") from None


def _normalize(
    data: bytes, fmt: str, profile: PictureProfile, thumbnail: PictureProfile | None = None
) -> NormalizedPicture:
    with Image.open(io.BytesIO(data), formats=[fmt]) as src:
        width, height = src.size
        if width < 1 or height < 1:
            raise ImageError(f"{fmt} picture has no pixels ({width}×{height})")
        if width * height > profile.max_input_pixels:
            raise ImageError(
                f"{fmt} picture has too many pixels (decompression bomb?): {width}×{height} = "
                f"{width * height:,} > max_input_pixels={profile.max_input_pixels:,}",
                hint="raise picture.max_input_pixels if such pictures are legitimate",
            )
        # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; whatever the warning filters
        # say (a test runner or the host application may reset them), that range is refused too.
        pillow_limit = Image.MAX_IMAGE_PIXELS
        if pillow_limit is not None and width * height > pillow_limit:
            raise ImageError(
                f"{fmt} picture has too many pixels (decompression bomb?): {width}×{height} = "
                f"{width * height:,} > Pillow's Image.MAX_IMAGE_PIXELS={pillow_limit:,}"
            )
        if max(width, height) > profile.max_input_side:
            raise ImageError(
                f"{fmt} picture has absurd dimensions {width}×{height} "
                f"(max_input_side={profile.max_input_side:,})"
            )
        icc = src.info.get("icc_profile")
        icc = icc if isinstance(icc, bytes) else None

        box: tuple[float, float, float, float] | None = None
        if fmt == "JPEG":
            # JPEG EXIF is in the header, so the target size is known before decoding: let libjpeg
            # decode at the smallest DCT scale (1/2, 1/4, 1/8) that still leaves REDUCING_GAP × target.
            orientation = exif_orientation(src)
            sw, sh = stored_target(width, height, orientation, profile)
            drafted = src.draft(src.mode, (max(1, int(sw * REDUCING_GAP)), max(1, int(sh * REDUCING_GAP))))
            if drafted is not None:
                box = drafted[1]  # the decoded picture's area in its own (scaled) pixels
            src.load()
        else:
            src.load()  # PNG may keep its EXIF after the pixels; other formats have no draft anyway
            orientation = exif_orientation(src)
            sw, sh = stored_target(width, height, orientation, profile)

        im = resizable(src, profile)
        tone = tone_map(im)
        if im.size != (sw, sh) or (box is not None and box != (0, 0, *im.size)):
            # BICUBIC for the last ≤ 2:1 step: it was 1.5× faster than LANCZOS here at a mean
            # difference from the full-quality reference of 1.615 vs 1.603 (BENCHMARKS.md, measure 3).
            im = im.resize((sw, sh), Image.Resampling.BICUBIC, box=box, reducing_gap=REDUCING_GAP)
        elif im is src:
            im = im.copy()
    if tone is not None:
        im = apply_tone_map(im, tone)
    if orientation in UPRIGHT:
        im = im.transpose(UPRIGHT[orientation])
    rgb, alpha = to_srgb(im, icc)

    if profile.format == "JPEG":
        if alpha is not None:
            flat = Image.new("RGB", rgb.size, profile.background)
            flat.paste(rgb, (0, 0), alpha)
            rgb = flat
        out = rgb
    elif alpha is not None and alpha.getextrema() != (255, 255):
        rgb.putalpha(alpha)
        out = rgb
    else:
        out = rgb

    encoded, final = encode_within(out, profile)
    return NormalizedPicture(
        data=encoded,
        width=final.width,
        height=final.height,
        content_type=_CONTENT_TYPES[profile.format],
        source_format=fmt,
        source_thumbnail=_thumbnail(out, thumbnail) if thumbnail is not None else None,
    )


def _thumbnail(picture: Image.Image, profile: PictureProfile) -> bytes:
    """The upright picture before encoding (RGB or RGBA, at most the output's size) fitted into a
    thumbnail ``profile``."""
    small = picture.copy()
    small.thumbnail((profile.max_width, profile.max_height), Image.Resampling.BICUBIC)
    if small.mode == "RGBA" and profile.format == "JPEG":
        flat = Image.new("RGB", small.size, profile.background)
        flat.paste(small, (0, 0), small.getchannel("A"))
        small = flat
    return encode_within(small, profile)[0]
