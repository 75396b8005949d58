"""SuperOffice emulator, picture rendering for ``GET …/Image?w=&h=&type=&ifBlank=`` (runs in a worker thread):
scaling and format conversion, the transparent pixel and the generated no-photo placeholders.
"""

from __future__ import annotations

import functools
import io

from PIL import Image, ImageDraw

# -- image rendering (runs in a worker thread) ---------------------------------------------------
_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif"}
IF_BLANK = ("Default", "ClearPixel", "SrNoPhoto", "SrNoPhotoWithBorder", "Null", "GenericFileIcon")


class ImageRenderError(Exception):
    """The stored bytes are not a picture Pillow can scale (SuperOffice answers 500)."""


def _to_8bit(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    return im


def render_image(data: bytes, w: int | None, h: int | None, fmt: str | None) -> tuple[bytes, str]:
    """Scale to fit ``w``×``h`` (either may be None: keep the aspect; upscaling allowed) and encode as
    ``fmt`` (JPEG/PNG/GIF; default: the stored format when it is one of those, else PNG).
    SuperOffice does not document its scaling; fitting inside the box is inferred."""
    try:
        with Image.open(io.BytesIO(data)) as src:
            src_fmt = (src.format or "").upper()
            out_fmt = fmt or (src_fmt if src_fmt in _FORMATS else "PNG")
            sw, sh = src.size
            if w and h:
                scale = min(w / sw, h / sh)
            elif w:
                scale = w / sw
            elif h:
                scale = h / sh
            else:
                scale = 1.0
            tw, th = max(1, round(sw * scale)), max(1, round(sh * scale))
            if src_fmt == "JPEG" and scale < 1:
                src.draft(src.mode, (tw, th))
            im = _to_8bit(src.convert() if src.mode == "P" else src)
            im.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRenderError(str(exc)) from exc
    if im.mode == "CMYK":
        im = im.convert("RGB")
    if im.size != (tw, th):
        im = im.resize((tw, th), Image.Resampling.LANCZOS, reducing_gap=3.0)
    has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
    if out_fmt == "JPEG":
        if has_alpha:
            rgba = im.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            im = flat
        elif im.mode not in ("RGB", "L"):
            im = im.convert("RGB")
    elif im.mode not in ("RGB", "RGBA", "L", "LA", "P", "1"):
        im = im.convert("RGBA" if has_alpha else "RGB")
    buf = io.BytesIO()
    im.save(buf, format=out_fmt, **({"quality": 90} if out_fmt == "JPEG" else {}))
    return buf.getvalue(), _FORMATS[out_fmt]


@functools.cache
def clear_pixel_png() -> bytes:
    """The 1×1 fully transparent PNG ``ifBlank=ClearPixel`` answers with."""
    buf = io.BytesIO()
    Image.new("RGBA", (1, 1), (0, 0, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


@functools.lru_cache(maxsize=8)
def placeholder_png(variant: str) -> bytes:
    """A generated stand-in for SuperOffice's no-photo / generic-file pictures (128×128 PNG)."""
    size = 128
    im = Image.new("RGB", (size, size), (232, 234, 237))
    d = ImageDraw.Draw(im)
    grey = (160, 166, 173)
    if variant == "GenericFileIcon":
        d.polygon([(36, 20), (78, 20), (96, 38), (96, 108), (36, 108)], fill=(255, 255, 255), outline=grey)
        d.polygon([(78, 20), (78, 38), (96, 38)], fill=grey)
        for y in (54, 66, 78, 90):
            d.line([(46, y), (86, y)], fill=grey, width=3)
    else:
        d.ellipse([44, 22, 84, 62], fill=grey)  # head
        d.pieslice([20, 66, 108, 154], 180, 360, fill=grey)  # shoulders
        if variant == "SrNoPhotoWithBorder":
            d.rectangle([0, 0, size - 1, size - 1], outline=(96, 102, 110), width=4)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()
