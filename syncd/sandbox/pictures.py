"""Deterministic pictures that look like what a CRM holds, generated (never downloaded).

``make_picture(kind, seed)`` returns the encoded bytes of one picture; the same ``(kind, seed)`` always
gives the same bytes (cached). The content is text-free portrait/logo-like art: a two-colour gradient
with a few shapes, varied by the seed in size, aspect ratio and colours.

Kinds (``PICTURE_KINDS``):
    jpeg_small          200–800 px RGB JPEG, portrait/square/landscape
    jpeg_12mp           4000×3000 RGB JPEG (a camera photo; slow to make, ~0.5 s, so generate lazily)
    jpeg_exif_rotated   stored sideways with EXIF Orientation 6 or 8; upright only once EXIF is applied.
                        The upright picture has a pure red band across its top (``RED_BAND_FRACTION`` of
                        the height) and no red anywhere else, so a test can tell upright from not.
    jpeg_cmyk           CMYK JPEG (Adobe marker, inverted CMYK as Photoshop writes it)
    png_alpha           RGBA PNG with fully transparent background and semi-transparent shapes
    png_16bit           16-bit greyscale PNG (mode I;16) with a full 0..65535 ramp
    gif_palette         palette GIF with a transparency index
    gif_animated        3–5 frame animated GIF; the first frame differs from the others
    webp                lossy RGB WebP
    jpeg_gps_exif       JPEG with camera EXIF, a GPS IFD, an XMP packet and a JPEG comment
    broken_truncated    a JPEG cut off part-way through its scan data
    broken_html         an HTML error page, as a misconfigured proxy or CDN would serve instead

``photo_jpeg(...)`` makes a camera-style JPEG of any size and orientation (benchmarks use it).
"""

from __future__ import annotations

import functools
import io
import random
import zlib
from collections.abc import Callable

from PIL import Image, ImageDraw

PICTURE_KINDS: tuple[str, ...] = (
    "jpeg_small",
    "jpeg_12mp",
    "jpeg_exif_rotated",
    "jpeg_cmyk",
    "png_alpha",
    "png_16bit",
    "gif_palette",
    "gif_animated",
    "webp",
    "jpeg_gps_exif",
    "broken_truncated",
    "broken_html",
)

#: Kinds whose bytes are not a decodable picture (the normalizer must reject them).
BROKEN_KINDS: frozenset[str] = frozenset({"broken_truncated", "broken_html"})

#: Share of the upright height covered by the red band of ``jpeg_exif_rotated`` / ``photo_jpeg``.
RED_BAND_FRACTION = 0.15
RED = (220, 20, 20)

_Rgb = tuple[int, int, int]

_EXIF_ORIENTATION = 0x0112
# Orientation → transpose that turns the upright picture into the stored one (inverse of exif_transpose).
_STORE_TRANSPOSE: dict[int, Image.Transpose | None] = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _rng(kind: str, seed: int) -> random.Random:
    """A generator that depends only on (kind, seed), stable across processes (no ``hash()``)."""
    return random.Random(zlib.crc32(kind.encode()) * 1_000_003 + seed)


def _colour(rng: random.Random, *, avoid_red: bool = False) -> _Rgb:
    while True:
        c = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        # "Not red": red must not dominate both other channels by much (keeps the band unique).
        if not avoid_red or c[0] < max(c[1], c[2]) + 40:
            return c


def _size(rng: random.Random, lo: int, hi: int) -> tuple[int, int]:
    """A seeded size with the long side in [lo, hi] and a portrait, square or landscape aspect."""
    long_side = rng.randint(lo, hi)
    aspect = rng.choice((3 / 4, 4 / 5, 1.0, 1.0, 4 / 3, 3 / 2, 16 / 9))
    if aspect >= 1:
        return long_side, max(1, round(long_side / aspect))
    return max(1, round(long_side * aspect)), long_side


def _scene(rng: random.Random, size: tuple[int, int], *, avoid_red: bool = False) -> Image.Image:
    """RGB art: a diagonal two-colour gradient, a head-and-shoulders silhouette and a few shapes."""
    w, h = size
    a, b = _colour(rng, avoid_red=avoid_red), _colour(rng, avoid_red=avoid_red)
    mask = Image.linear_gradient("L").rotate(rng.choice((0, 30, 45, 90, 135)), expand=False)
    mask = mask.resize(size, Image.Resampling.BILINEAR)
    img = Image.composite(Image.new("RGB", size, a), Image.new("RGB", size, b), mask)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(2, 5)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randint(w // 10 + 1, w // 2 + 2), y0 + rng.randint(h // 10 + 1, h // 2 + 2)
        shape = rng.choice(("ellipse", "rectangle", "polygon"))
        fill = _colour(rng, avoid_red=avoid_red)
        if shape == "ellipse":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif shape == "rectangle":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=fill)
    # A "person": head and shoulders, centred low.
    skin = _colour(rng, avoid_red=avoid_red)
    draw.ellipse((w * 0.35, h * 0.25, w * 0.65, h * 0.6), fill=skin)
    draw.ellipse((w * 0.15, h * 0.62, w * 0.85, h * 1.3), fill=_colour(rng, avoid_red=avoid_red))
    return img


def _texture(img: Image.Image, rng: random.Random, strength: float) -> Image.Image:
    """Blend in sensor-like noise so JPEG sizes resemble real photos.

    The noise comes from ``rng``: ``Image.effect_noise`` draws from C ``rand()``, whose state depends on
    every earlier call in the process, so it would make the bytes depend on call order.
    """
    size = (max(1, img.width // 2), max(1, img.height // 2))
    noise = Image.frombytes("L", size, rng.randbytes(size[0] * size[1]))
    noise = noise.resize(img.size, Image.Resampling.NEAREST).convert("RGB")
    return Image.blend(img, noise, strength)


def _upright_with_band(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    img = _scene(rng, size, avoid_red=True)
    band = max(1, round(size[1] * RED_BAND_FRACTION))
    ImageDraw.Draw(img).rectangle((0, 0, size[0] - 1, band - 1), fill=RED)
    return img


def _camera_exif(rng: random.Random, orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = rng.choice(("Canon", "NIKON CORPORATION", "Apple", "samsung"))  # Make
    exif[0x0110] = rng.choice(("EOS 5D Mark IV", "D750", "iPhone 12", "SM-G991B"))  # Model
    exif[0x0131] = "SandboxCam 1.0"  # Software
    exif[0x0132] = f"2023:{rng.randint(1, 12):02d}:{rng.randint(1, 28):02d} 10:11:12"  # DateTime
    exif[_EXIF_ORIENTATION] = orientation
    return exif


def _jpeg(img: Image.Image, **params: object) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", **params)
    return out.getvalue()


def photo_jpeg(
    width: int, height: int, seed: int = 0, *, orientation: int = 1, quality: int = 90, texture: bool = True
) -> bytes:
    """A camera-style JPEG whose *upright* size is ``width``×``height``, stored for EXIF ``orientation``.

    The upright picture has a red band across the top (``RED_BAND_FRACTION``) and no red elsewhere.
    """
    rng = _rng(f"photo{orientation}", seed)
    # Draw at a quarter of the size (fast), then scale up and add noise for realistic JPEG entropy.
    small = _upright_with_band(rng, (max(1, width // 4), max(1, height // 4)))
    img = small.resize((width, height), Image.Resampling.BILINEAR)
    band = max(1, round(height * RED_BAND_FRACTION))
    ImageDraw.Draw(img).rectangle((0, 0, width - 1, band - 1), fill=RED)  # crisp edge after upscaling
    if texture:
        img = _texture(img, rng, 0.06)
    transpose = _STORE_TRANSPOSE[orientation]
    if transpose is not None:
        img = img.transpose(transpose)
    return _jpeg(img, quality=quality, exif=_camera_exif(rng, orientation))


def _jpeg_small(rng: random.Random) -> bytes:
    return _jpeg(_scene(rng, _size(rng, 200, 800)), quality=rng.choice((80, 85, 90, 95)))


def _jpeg_12mp(rng: random.Random) -> bytes:
    return photo_jpeg(4000, 3000, rng.randrange(1 << 30), orientation=1)


def _jpeg_exif_rotated(rng: random.Random) -> bytes:
    w, h = _size(rng, 400, 1200)
    upright = _upright_with_band(rng, (w, h))
    orientation = rng.choice((6, 8))
    stored = upright.transpose(_STORE_TRANSPOSE[orientation] or Image.Transpose.ROTATE_90)
    return _jpeg(stored, quality=90, exif=_camera_exif(rng, orientation))


def _jpeg_cmyk(rng: random.Random) -> bytes:
    return _jpeg(_scene(rng, _size(rng, 200, 600)).convert("CMYK"), quality=90)


def _png_alpha(rng: random.Random) -> bytes:
    size = _size(rng, 200, 600)
    img = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    w, h = size
    draw.ellipse((w * 0.1, h * 0.1, w * 0.9, h * 0.9), fill=(*_colour(rng), 255))
    draw.rectangle((w * 0.3, h * 0.3, w * 0.7, h * 0.7), fill=(*_colour(rng), 128))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def _png_16bit(rng: random.Random) -> bytes:
    w, h = _size(rng, 200, 600)
    ramp = Image.linear_gradient("L").resize((w, h), Image.Resampling.BILINEAR)
    img = ramp.convert("I").point(lambda v: v * 257)  # 0..255 → 0..65535
    ImageDraw.Draw(img).ellipse((w * 0.3, h * 0.3, w * 0.7, h * 0.7), fill=rng.randrange(65536))
    out = io.BytesIO()
    img.convert("I;16").save(out, "PNG")
    return out.getvalue()


def _palette(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    return _scene(rng, size).quantize(colors=rng.choice((16, 32, 64)), dither=Image.Dither.NONE)


def _gif_palette(rng: random.Random) -> bytes:
    img = _palette(rng, _size(rng, 100, 400))
    w, h = img.size
    transparent = 255
    ImageDraw.Draw(img).rectangle((0, 0, w // 4, h // 4), fill=transparent)
    out = io.BytesIO()
    img.save(out, "GIF", transparency=transparent)
    return out.getvalue()


def _gif_animated(rng: random.Random) -> bytes:
    size = _size(rng, 100, 300)
    frames = [_palette(rng, size) for _ in range(rng.randint(3, 5))]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    return out.getvalue()


def _webp(rng: random.Random) -> bytes:
    out = io.BytesIO()
    _scene(rng, _size(rng, 200, 800)).save(out, "WEBP", quality=80, method=0)
    return out.getvalue()


def _jpeg_gps_exif(rng: random.Random) -> bytes:
    exif = _camera_exif(rng)
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"  # GPSLatitudeRef
    gps[2] = (59.0, float(rng.randint(0, 59)), round(rng.random() * 60, 2))  # GPSLatitude
    gps[3] = "E"
    gps[4] = (10.0, float(rng.randint(0, 59)), round(rng.random() * 60, 2))
    camera = exif.get_ifd(0x8769)
    camera[0x9003] = "2023:06:01 12:00:00"  # DateTimeOriginal
    camera[0xA434] = "EF24-70mm f/2.8L II USM"  # LensModel
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="Sandbox Photographer"/>'
        b"</rdf:RDF></x:xmpmeta>"
    )
    img = _scene(rng, _size(rng, 200, 800))
    return _jpeg(img, quality=88, exif=exif, xmp=xmp, comment=b"taken at the sandbox office")


def _broken_truncated(rng: random.Random) -> bytes:
    data = _jpeg_small(rng)
    return data[: len(data) * rng.randint(40, 70) // 100]


def _broken_html(rng: random.Random) -> bytes:
    code, reason = rng.choice(((502, "Bad Gateway"), (503, "Service Unavailable"), (403, "Forbidden")))
    return (
        f"<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\n"
        f"<body><h1>{reason}</h1><p>The proxy server received an invalid response.</p>"
        f"<hr><address>nginx</address></body></html>\n"
    ).encode()


_MAKERS: dict[str, Callable[[random.Random], bytes]] = {
    "jpeg_small": _jpeg_small,
    "jpeg_12mp": _jpeg_12mp,
    "jpeg_exif_rotated": _jpeg_exif_rotated,
    "jpeg_cmyk": _jpeg_cmyk,
    "png_alpha": _png_alpha,
    "png_16bit": _png_16bit,
    "gif_palette": _gif_palette,
    "gif_animated": _gif_animated,
    "webp": _webp,
    "jpeg_gps_exif": _jpeg_gps_exif,
    "broken_truncated": _broken_truncated,
    "broken_html": _broken_html,
}
if set(_MAKERS) != set(PICTURE_KINDS):  # pragma: no cover - guards edits to the two tables
    raise RuntimeError("PICTURE_KINDS and _MAKERS disagree")


@functools.lru_cache(maxsize=256)
def make_picture(kind: str, seed: int) -> bytes:
    """The bytes of picture ``kind`` for ``seed``; identical for identical arguments, in any process."""
    try:
        maker = _MAKERS[kind]
    except KeyError:
        raise ValueError(f"unknown picture kind {kind!r}; known: {', '.join(PICTURE_KINDS)}") from None
    return maker(_rng(kind, seed))
