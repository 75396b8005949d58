"""Colour and mode handling: every Pillow mode made resizable, 16-bit and float samples scaled to
8 bits, palette transparency flattened, ICC profiles (or plain CMYK) converted to sRGB."""

from __future__ import annotations

import io

from PIL import Image, ImageCms

from syncd.errors import ImageError
from syncd.imaging.profile import PictureProfile

_srgb_profile: ImageCms.ImageCmsProfile | None = None


def _srgb() -> ImageCms.ImageCmsProfile:
    global _srgb_profile  # created once per process; profiles are immutable
    if _srgb_profile is None:
        _srgb_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return _srgb_profile


_ToneMap = tuple[float, float]  # 8-bit value = sample * scale + offset


def tone_map(im: Image.Image) -> _ToneMap | None:
    """For I and F pictures, how to scale samples to 0..255 (never clipped); None for 8-bit modes.

    Decided on the full-size picture (``getextrema`` allocates nothing), applied after resizing, so
    the wide intermediate is only ever the small one. I;16 has arrived here as I with its 0..65535
    range (see ``resizable``). Mode I proper (32-bit TIFF) carries no nominal range, so values within
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


def apply_tone_map(im: Image.Image, tone: _ToneMap) -> Image.Image:
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


def resizable(im: Image.Image, profile: PictureProfile) -> Image.Image:
    """The full-size picture in a mode resize() handles well: L, LA, RGB, RGBA, CMYK, I or F.

    Transparency is kept as an alpha channel (or, for palette pictures going to JPEG, flattened
    through the palette); I;16 widens to I, whose tones ``tone_map`` scales after resizing.
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


def to_srgb(im: Image.Image, icc: bytes | None) -> tuple[Image.Image, Image.Image | None]:
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
