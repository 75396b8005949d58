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
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

from PIL import Image, ImageCms, UnidentifiedImageError

from syncd.errors import ConfigError, ImageError

NORMALIZER_VERSION: Final = 2  # 2: BICUBIC final resample

#: Formats ``sniff_format`` recognises, which are also the Pillow plugin names used to open them.
KNOWN_FORMATS: Final = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")
OUTPUT_FORMATS: Final = ("JPEG", "PNG")
_CONTENT_TYPES: Final = {"JPEG": "image/jpeg", "PNG": "image/png"}

#: JPEG qualities tried, in order, after the profile's own, while the output is over ``max_bytes``.
QUALITY_STEPS: Final = (85, 75, 65, 55, 45)
#: After the lowest quality, each further attempt shrinks both sides by this factor.
_SHRINK_STEP: Final = 0.75
_MIN_SIDE: Final = 16

#: Decode/reduce to at least this multiple of the target before the final Lanczos pass. 2.0 is what
#: Pillow's own ``thumbnail()`` uses; it is visually indistinguishable from a full-size resample.
_REDUCING_GAP: Final = 2.0

_EXIF_ORIENTATION: Final = 0x0112
# EXIF orientation → the transpose that makes the stored picture upright (ImageOps.exif_transpose).
_UPRIGHT: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES: Final = frozenset({5, 6, 7, 8})

# Installed once, at import, for Pillow's own warnings only: a decompression-bomb warning (more pixels
# than Image.MAX_IMAGE_PIXELS) is an error, and Pillow's notes about damaged metadata it then ignores
# ("Corrupt EXIF data", ...) are nothing an operator can act on. Not warnings.catch_warnings() around
# each call: that swaps the process-global filter list and races when normalize runs in several threads.
# The explicit pixel check in _normalize is the real bomb guard and needs no warning machinery at all.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")

_HEX_COLOUR = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")


def _parse_colour(value: object) -> tuple[int, int, int]:
    """``"#rrggbb"``, ``"#rgb"`` (``#`` optional) or a sequence of three 0..255 ints → an RGB tuple."""
    if isinstance(value, str):
        m = _HEX_COLOUR.fullmatch(value.strip())
        if not m:
            raise ConfigError(
                f"picture background {value!r} is not a colour", hint='write it as "#rrggbb", e.g. "#ffffff"'
            )
        digits = m.group(1)
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
    if (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)
    ):
        return int(value[0]), int(value[1]), int(value[2])
    raise ConfigError(
        f"picture background {value!r} is not a colour", hint='write it as "#rrggbb" or [r, g, b] (0..255)'
    )


@dataclass(frozen=True)
class PictureProfile:
    """What a target picture must look like, and how much a source picture may cost to decode.

    ``background`` accepts an RGB tuple or a ``"#rrggbb"`` string (normalized to a tuple).
    ``max_input_pixels`` is the decompression-bomb limit, checked on the header before decoding;
    Pillow's global ``Image.MAX_IMAGE_PIXELS`` also applies, so the effective limit is the smaller.
    ``max_input_side`` rejects absurd headers (e.g. 100000×1) that the pixel limit lets through.
    """

    max_width: int = 500
    max_height: int = 500
    format: str = "JPEG"
    quality: int = 85
    background: tuple[int, int, int] = (255, 255, 255)
    max_bytes: int = 1_000_000
    max_input_pixels: int = 50_000_000
    max_input_bytes: int = 20_000_000
    max_input_side: int = 65_535
    allowed_formats: tuple[str, ...] = KNOWN_FORMATS

    def __post_init__(self) -> None:
        fmt = str(self.format).upper()
        if fmt == "JPG":
            fmt = "JPEG"
        if fmt not in OUTPUT_FORMATS:
            raise ConfigError(f"picture format {self.format!r} is not supported", hint="use JPEG or PNG")
        object.__setattr__(self, "format", fmt)
        object.__setattr__(self, "background", _parse_colour(self.background))
        allowed = tuple(str(f).upper() for f in self.allowed_formats)
        unknown = [f for f in allowed if f not in KNOWN_FORMATS]
        if unknown:
            raise ConfigError(
                f"picture allowed_formats has unknown format(s) {', '.join(unknown)}",
                hint=f"choose from {', '.join(KNOWN_FORMATS)}",
            )
        object.__setattr__(self, "allowed_formats", allowed)
        positive = (
            "max_width",
            "max_height",
            "max_bytes",
            "max_input_pixels",
            "max_input_bytes",
            "max_input_side",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"picture {name} must be a positive integer, not {value!r}")
        if not isinstance(self.quality, int) or not 1 <= self.quality <= 95:
            raise ConfigError(
                f"picture quality must be 1..95, not {self.quality!r}", hint="85 is a good default"
            )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PictureProfile:
        """Build from the config file's ``picture:`` mapping; unknown keys are a ConfigError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ConfigError(
                f"unknown picture setting(s): {', '.join(unknown)}", hint=f"known: {', '.join(sorted(names))}"
            )
        values = dict(config)
        if "allowed_formats" in values and isinstance(values["allowed_formats"], list):
            values["allowed_formats"] = tuple(values["allowed_formats"])
        return cls(**values)

    def cache_key(self) -> str:
        """A stable string that changes whenever a setting that affects the output bytes changes.

        Includes ``NORMALIZER_VERSION``. The input limits are left out: they decide whether a picture
        is rejected, never what an accepted picture looks like.
        """
        r, g, b = self.background
        return (
            f"n{NORMALIZER_VERSION}:{self.format}:{self.max_width}x{self.max_height}:q{self.quality}"
            f":bg{r:02x}{g:02x}{b:02x}:max{self.max_bytes}"
        )


@dataclass(frozen=True)
class NormalizedPicture:
    """The encoded output and what it is."""

    data: bytes = field(repr=False)
    width: int
    height: int
    content_type: str  # "image/jpeg" | "image/png"
    source_format: str  # what the input was, e.g. "JPEG", "PNG"
    # The source picture (upright, as a viewer shows it) in the ``thumbnail`` profile, when asked for:
    # made from the same decode, so a before/after pair costs no second decode of the source.
    source_thumbnail: bytes | None = field(default=None, repr=False)


# --- sniffing -----------------------------------------------------------------------------------------

_BMP_DIB_HEADER_SIZES: Final = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def sniff_format(data: bytes) -> str | None:
    """The picture format by magic bytes: "JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if (
        data[:2] == b"BM"
        and len(data) >= 18
        and int.from_bytes(data[14:18], "little") in _BMP_DIB_HEADER_SIZES
    ):
        return "BMP"
    return None


def _describe_unknown(data: bytes) -> str:
    """What bytes that are not a supported picture look like, for the error message."""
    head = data[:512]
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    ftyp_brand = head[8:12] if head[4:8] == b"ftyp" else b""
    checks: tuple[tuple[bool, str], ...] = (
        (
            text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")),
            "HTML (an error or login page?)",
        ),
        (b"<svg" in text and text.startswith((b"<?xml", b"<svg", b"<!doctype svg")), "SVG (vector graphics)"),
        (text.startswith(b"<?xml"), "XML"),
        (text.startswith((b"{", b"[")), "JSON"),
        (head.startswith(b"%PDF-"), "PDF"),
        (head.startswith(b"PK\x03\x04"), "a ZIP archive (or an Office document)"),
        (head.startswith(b"\x1f\x8b"), "gzip-compressed data"),
        (ftyp_brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"), "HEIC/HEIF"),
        (ftyp_brand in (b"avif", b"avis"), "AVIF"),
        (head.startswith(b"\x00\x00\x01\x00"), "an ICO icon"),
        (head.startswith(b"8BPS"), "a Photoshop PSD"),
        (head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")), "JPEG XL"),
        (head.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")), "JPEG 2000"),
        (head.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")), "PostScript/EPS"),
        (head.startswith(b"BM"), "a damaged BMP"),
    )
    for matched, what in checks:
        if matched:
            return what
    if all(32 <= c < 127 or c in (9, 10, 13) for c in head[:64]):
        return f"text ({head[:40].decode('ascii', 'replace')!r})"
    return f"unknown binary data starting {head[:8].hex(' ')}"


# --- colour and mode handling -------------------------------------------------------------------------

_srgb_profile: ImageCms.ImageCmsProfile | None = None


def _srgb() -> ImageCms.ImageCmsProfile:
    global _srgb_profile  # created once per process; profiles are immutable
    if _srgb_profile is None:
        _srgb_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return _srgb_profile


_ToneMap = tuple[float, float]  # 8-bit value = sample * scale + offset


def _tone_map(im: Image.Image) -> _ToneMap | None:
    """For I and F pictures, how to scale samples to 0..255 (never clipped); None for 8-bit modes.

    Decided on the full-size picture (``getextrema`` allocates nothing), applied after resizing, so
    the wide intermediate is only ever the small one. I;16 has arrived here as I with its 0..65535
    range (see ``_resizable``). Mode I proper (32-bit TIFF) carries no nominal range, so values within
    0..255 are taken as 8-bit, within 0..65535 as 16-bit, anything else is stretched over its extrema.
    Mode F is taken as 0..1 when it fits, otherwise stretched.
    """
    if im.mode not in ("I", "F"):
        return None
    lo, hi = im.getextrema()
    if not isinstance(lo, float | int) or not isinstance(hi, float | int):  # pragma: no cover - 1 band
        raise ImageError("picture has unreadable sample values")
    if im.mode == "I" and lo >= 0 and hi <= 255:
        return 1.0, 0.0
    if im.mode == "I" and lo >= 0 and hi <= 65535:
        return 1 / 257, 0.5
    if im.mode == "F" and lo >= 0 and hi <= 1:
        return 255.0, 0.5
    span = max(float(hi) - float(lo), 1e-12)
    return 255 / span, 0.5 - float(lo) * 255 / span


def _apply_tone_map(im: Image.Image, tone: _ToneMap) -> Image.Image:
    scale, offset = tone
    return im.point(lambda v: v * scale + offset).convert("L")


def _flattened_palette(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """A palette picture with transparency, flattened onto ``background`` through its palette alone.

    Exact (flattening is linear, so it commutes with resampling) and cheap: the full-size picture
    becomes RGB, never RGBA plus a premultiplied copy.
    """
    transparency = im.info.get("transparency")
    palette = (im.getpalette("RGB") or []) + [0] * 768
    alphas = [255] * 256
    if isinstance(transparency, int) and 0 <= transparency < 256:
        alphas[transparency] = 0
    elif isinstance(transparency, bytes):
        alphas[: len(transparency[:256])] = transparency[:256]
    flat: list[int] = []
    for index in range(256):
        a = alphas[index]
        for channel in range(3):
            value = palette[3 * index + channel] * a + background[channel] * (255 - a)
            flat.append((value + 127) // 255)
    im = im.copy()
    im.info.pop("transparency", None)
    im.putpalette(flat, "RGB")
    return im.convert("RGB")


def _resizable(im: Image.Image, profile: PictureProfile) -> Image.Image:
    """The full-size picture in a mode resize() handles well: L, LA, RGB, RGBA, CMYK, I or F.

    Transparency is kept as an alpha channel (or, for palette pictures going to JPEG, flattened
    through the palette); I;16 widens to I, whose tones ``_tone_map`` scales after resizing.
    """
    mode = im.mode
    has_tr = "transparency" in im.info
    if mode in ("L", "RGB", "CMYK", "I", "F") and not has_tr:
        return im
    if mode in ("LA", "RGBA"):
        return im
    if mode == "L":
        return im.convert("LA")
    if mode == "RGB":
        return im.convert("RGBA")
    if mode == "P" and has_tr and profile.format == "JPEG":
        return _flattened_palette(im, profile.background)
    if mode in ("P", "PA"):
        return im.convert("RGBA" if has_tr or mode == "PA" else "RGB")
    if mode == "1":
        return im.convert("L")
    if mode.startswith("I;16"):
        return im.convert("I")
    if mode == "La":
        return im.convert("LA")
    if mode == "RGBa":
        return im.convert("RGBA")
    if mode in ("RGBX", "YCbCr", "HSV"):
        return im.convert("RGB")
    raise ImageError(f"unsupported colour mode {mode}")


def _to_srgb(im: Image.Image, icc: bytes | None) -> tuple[Image.Image, Image.Image | None]:
    """Split ``im`` (L, LA, RGB, RGBA or CMYK) into an sRGB "RGB" picture and its alpha (or None).

    The embedded ICC profile is honoured when it is usable; a corrupt profile, or one for another
    colour space than the pixels, is ignored (plain conversion instead), never an error.
    """
    alpha: Image.Image | None = None
    if im.mode in ("LA", "RGBA"):
        alpha = im.getchannel("A")
        im = im.convert("L" if im.mode == "LA" else "RGB")
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(
                im, src, _srgb(), renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB"
            )
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError, KeyError):
            converted = None
        if isinstance(converted, Image.Image) and converted.size == im.size:
            return converted, alpha
    return (im if im.mode == "RGB" else im.convert("RGB")), alpha


# --- geometry -----------------------------------------------------------------------------------------


def _fit(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """The largest size with the same aspect ratio inside the box, never larger than the original."""
    if width <= max_width and height <= max_height:
        return width, height
    scale = min(max_width / width, max_height / height)
    return max(1, min(max_width, round(width * scale))), max(1, min(max_height, round(height * scale)))


def _stored_target(width: int, height: int, orientation: int, profile: PictureProfile) -> tuple[int, int]:
    """The output size in *stored* orientation: fitted upright, then turned back if EXIF swaps sides."""
    swap = orientation in _SWAPS_SIDES
    upright_w, upright_h = (height, width) if swap else (width, height)
    out_w, out_h = _fit(upright_w, upright_h, profile.max_width, profile.max_height)
    return (out_h, out_w) if swap else (out_w, out_h)


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8); missing, invalid or unparsable EXIF counts as 1 (as stored)."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # any malformed EXIF simply means "no orientation"
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# --- encoding -----------------------------------------------------------------------------------------


def _encode(im: Image.Image, fmt: str, quality: int) -> bytes:
    """Fixed encoder settings, no metadata: same pixels → same bytes."""
    im.info = {}  # nothing from the source (EXIF, ICC, XMP, comment, dpi) may leak into the output
    out = io.BytesIO()
    if fmt == "JPEG":
        im.save(out, "JPEG", quality=quality, optimize=True, progressive=False, subsampling="4:2:0")
    else:
        im.save(out, "PNG", optimize=True)
    return out.getvalue()


def _encode_within(im: Image.Image, profile: PictureProfile) -> tuple[bytes, Image.Image]:
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


# --- memory --------------------------------------------------------------------------------------------

#: Bytes per pixel as Pillow holds a mode in memory (three-band modes are padded to four bytes).
_MODE_BYTES: Final[dict[str, int]] = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_WIDE_MODE_BYTES: Final = 4  # LA, PA, RGB, RGBA, RGBX, CMYK, YCbCr, LAB, HSV, I, F, La, RGBa
#: What the decoder itself holds besides the pixels (zlib window, line buffers, the input as a stream).
_DECODER_OVERHEAD: Final = 8_000_000


def decode_estimate(data: bytes, profile: PictureProfile) -> int:
    """The memory :func:`normalize` needs for ``data``, in bytes, from the header alone (no pixel is
    decoded): the decoded picture (pixels × bands × bytes per sample, at the JPEG draft scale that
    :func:`normalize` will use), plus the full-size copy ``_resizable`` makes when the mode must change
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
                sw, sh = _stored_target(width, height, _orientation(src), profile)
                want_w, want_h = max(1, int(sw * _REDUCING_GAP)), max(1, int(sh * _REDUCING_GAP))
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
        converted = _WIDE_MODE_BYTES  # _resizable makes a full-size RGB(A)/LA/L/I copy
    alpha = has_tr or mode in ("LA", "RGBA", "PA", "La", "RGBa")
    premultiplied = _WIDE_MODE_BYTES if alpha and not (mode == "P" and profile.format == "JPEG") else 0
    return len(data) + _DECODER_OVERHEAD + pixels * (decoded + converted + premultiplied)


# --- the normalizer -----------------------------------------------------------------------------------


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
        raise ImageError(f"not an image: looks like {_describe_unknown(data)}")
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
        if "truncated" in detail or isinstance(exc, EOFError) or _lacks_end_marker(fmt, data):
            raise ImageError(f"truncated {fmt} picture (the data ends too early): {detail}") from None
        raise ImageError(f"corrupt {fmt} picture: {detail}") from None


def _lacks_end_marker(fmt: str, data: bytes) -> bool:
    """Whether a picture that failed to decode is missing its format's end marker (cut short)."""
    tail = data[-64:]
    if fmt == "PNG":
        return b"IEND" not in tail
    if fmt == "JPEG":
        return b"\xff\xd9" not in data[-1024:]
    if fmt == "GIF":
        return not data.rstrip(b"\x00").endswith(b"\x3b")
    return False


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
            # decode at the smallest DCT scale (1/2, 1/4, 1/8) that still leaves _REDUCING_GAP × target.
            orientation = _orientation(src)
            sw, sh = _stored_target(width, height, orientation, profile)
            drafted = src.draft(src.mode, (max(1, int(sw * _REDUCING_GAP)), max(1, int(sh * _REDUCING_GAP))))
            if drafted is not None:
                box = drafted[1]  # the decoded picture's area in its own (scaled) pixels
            src.load()
        else:
            src.load()  # PNG may keep its EXIF after the pixels; other formats have no draft anyway
            orientation = _orientation(src)
            sw, sh = _stored_target(width, height, orientation, profile)

        im = _resizable(src, profile)
        tone = _tone_map(im)
        if im.size != (sw, sh) or (box is not None and box != (0, 0, *im.size)):
            # BICUBIC for the last ≤ 2:1 step: it was 1.5× faster than LANCZOS here at a mean
            # difference from the full-quality reference of 1.615 vs 1.603 (BENCHMARKS.md, measure 3).
            im = im.resize((sw, sh), Image.Resampling.BICUBIC, box=box, reducing_gap=_REDUCING_GAP)
        elif im is src:
            im = im.copy()
    if tone is not None:
        im = _apply_tone_map(im, tone)
    if orientation in _UPRIGHT:
        im = im.transpose(_UPRIGHT[orientation])
    rgb, alpha = _to_srgb(im, icc)

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

    encoded, final = _encode_within(out, profile)
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
    return _encode_within(small, profile)[0]
