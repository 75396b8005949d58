"""Hostile and awkward picture inputs, crafted in code, for any test that needs them.

``hostile_corpus()`` is the public entry point (the end-to-end resilience test uploads it into the
sandbox): a list of ``(name, bytes, expect)`` where ``expect`` is ``"ok"`` (the normalizer must produce
a correct picture) or ``"error"`` (it must raise ``ImageError`` with a clear message).
``hostile_cases()`` is the same corpus with the expected message fragment and a lazy builder, so a
test can parametrize by name without building every input at collection time.

Import it as ``from pictures_corpus import hostile_corpus`` (``tests/`` has no ``__init__.py``, so pytest
puts ``tests/`` on ``sys.path``).

The builders are also reusable on their own: ``png_file`` / ``png_chunk`` write PNGs by hand (for
headers that lie), ``jpeg_with_sof_size`` patches a JPEG's frame header, ``jpeg_markers`` lists the
segments of a JPEG (to prove metadata is gone), ``oriented_jpeg`` makes a picture whose upright
orientation is recognisable from its pixels.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageCms, ImageDraw

from syncd.sandbox.pictures import make_picture, photo_jpeg

Expect = Literal["ok", "error"]

# --- building blocks ----------------------------------------------------------------------------------


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_file(
    width: int,
    height: int,
    idat: bytes,
    *,
    bit_depth: int = 8,
    colour_type: int = 2,
    extra_chunks: tuple[bytes, ...] = (),
) -> bytes:
    """A PNG with the given header and an IDAT payload taken as is (it need not match the header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + b"".join(extra_chunks)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def compressed_zeros(n_bytes: int) -> bytes:
    """A zlib stream that inflates to ``n_bytes`` zero bytes (~1000:1), built in milliseconds.

    One megabyte of zeros is deflated once, ending in a full flush (which resets the history), so the
    same compressed block can simply be repeated; then a final block for the rest and the checksum.
    """
    block = 1 << 20
    c = zlib.compressobj(9)
    first = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    header, body = first[:2], first[2:]
    whole, rest = divmod(n_bytes, block)
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = raw.compress(bytes(rest)) + raw.flush()
    adler, zeros = 1, bytes(block)
    for _ in range(whole):
        adler = zlib.adler32(zeros, adler)
    adler = zlib.adler32(bytes(rest), adler)
    return header + body * whole + tail + struct.pack(">I", adler)


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    """``im`` saved as ``fmt`` with Pillow, as bytes."""
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def jpeg_markers(data: bytes) -> list[tuple[int, bytes]]:
    """The segments of a JPEG up to the first scan: ``(marker, first bytes of payload)``.

    APP1 with ``Exif``/XMP, APP2 ``ICC_PROFILE`` and COM (0xFE) are what metadata looks like.
    """
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    i, found = 2, []
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError(f"bad JPEG marker at {i}")
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        found.append((marker, data[i + 4 : i + 4 + min(length - 2, 32)]))
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        i += 2 + length
    return found


def jpeg_with_sof_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a baseline or progressive JPEG) with its frame header claiming another size."""
    for sof in (b"\xff\xc0", b"\xff\xc2"):
        i = data.find(sof)
        if i >= 0:
            patched = bytearray(data)
            patched[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(patched)
    raise ValueError("no SOF0/SOF2 segment")


def scene(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """An RGB test picture with detail (noise and shapes), deterministic for the seed."""
    rng = random.Random(seed)
    n = size[0] * size[1]
    # Seeded noise (Image.effect_noise uses C rand(), whose state depends on earlier calls).
    im = Image.frombytes("RGB", size, rng.randbytes(3 * n)).point(lambda v: v // 2 + 64)
    draw = ImageDraw.Draw(im)
    w, h = size
    for _ in range(6):
        x, y = rng.randrange(w), rng.randrange(h)
        draw.ellipse((x, y, x + w // 3, y + h // 3), fill=(rng.randrange(256), rng.randrange(256), 90))
    return im


#: Upright marker colours of ``oriented_jpeg``.
BAND_RED = (230, 0, 0)
MARK_BLUE = (0, 0, 230)
FIELD_GREY = (150, 150, 150)

_STORED_AS: dict[int, Image.Transpose | None] = {  # upright → stored (inverse of the EXIF transpose)
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def oriented_picture(width: int = 240, height: int = 320) -> Image.Image:
    """Upright test picture: red band across the top fifth, a blue square at the left under the band."""
    im = Image.new("RGB", (width, height), FIELD_GREY)
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, 0, width - 1, height // 5 - 1), fill=BAND_RED)
    draw.rectangle((0, height // 5, width // 4, height // 5 + width // 4), fill=MARK_BLUE)
    return im


def oriented_jpeg(orientation: int, width: int = 240, height: int = 320, fmt: str = "JPEG") -> bytes:
    """``oriented_picture`` stored so that only EXIF ``orientation`` makes it upright again."""
    im = oriented_picture(width, height)
    transpose = _STORED_AS[orientation]
    if transpose is not None:
        im = im.transpose(transpose)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))


def cmyk_icc_free_jpeg() -> bytes:
    """A CMYK JPEG (Pillow writes Adobe-inverted CMYK) with pure red, green, blue and white quarters."""
    im = Image.new("CMYK", (200, 200))
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, 0, 99, 99), fill=(0, 255, 255, 0))  # red
    draw.rectangle((100, 0, 199, 99), fill=(255, 0, 255, 0))  # green
    draw.rectangle((0, 100, 99, 199), fill=(255, 255, 0, 0))  # blue
    draw.rectangle((100, 100, 199, 199), fill=(0, 0, 0, 0))  # white
    return encode(im, "JPEG", quality=95)


def grey16_png(value: int, size: tuple[int, int] = (64, 64)) -> bytes:
    """A 16-bit greyscale PNG filled with ``value`` (0..65535)."""
    rows = b"".join(b"\x00" + struct.pack(">H", value) * size[0] for _ in range(size[1]))
    return png_file(size[0], size[1], zlib.compress(rows), bit_depth=16, colour_type=0)


def rgb48_png(rgb: tuple[int, int, int], size: tuple[int, int] = (64, 32)) -> bytes:
    """A 16-bit-per-channel RGB PNG filled with ``rgb`` (each 0..65535), written by hand."""
    rows = b"".join(b"\x00" + struct.pack(">HHH", *rgb) * size[0] for _ in range(size[1]))
    return png_file(size[0], size[1], zlib.compress(rows), bit_depth=16, colour_type=2)


def animated_gif(
    colours: tuple[str, ...] = ("red", "lime", "blue"), size: tuple[int, int] = (60, 40)
) -> bytes:
    """An animated GIF whose frames are solid ``colours``, first frame first."""
    frames = [Image.new("RGB", size, c).convert("P") for c in colours]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def animated_webp(
    colours: tuple[str, ...] = ("red", "lime", "blue"), size: tuple[int, int] = (60, 40)
) -> bytes:
    """An animated WebP whose frames are solid ``colours``."""
    frames = [Image.new("RGB", size, c) for c in colours]
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)


def rgba_png(size: tuple[int, int] = (120, 80)) -> bytes:
    """Left half transparent, right half opaque blue, a half-transparent red square in the middle."""
    im = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(im)
    w, h = size
    draw.rectangle((w // 2, 0, w - 1, h - 1), fill=(0, 0, 255, 255))
    draw.rectangle((w // 2 - 10, h // 2 - 10, w // 2 + 9, h // 2 + 9), fill=(255, 0, 0, 128))
    return encode(im, "PNG")


# --- the hostile corpus -------------------------------------------------------------------------------


def _noise_jpeg(**params: object) -> bytes:
    return encode(scene((320, 240), 7), "JPEG", quality=90, **params)


def _truncated_png() -> bytes:
    data = encode(scene((200, 150), 3), "PNG")
    return data[: len(data) // 2]


def _bad_crc_png() -> bytes:
    data = bytearray(encode(scene((60, 40), 4), "PNG"))
    data[data.find(b"IDAT") + 10] ^= 0xFF  # inside IDAT's payload: its CRC no longer matches
    return bytes(data)


def _ztxt_bomb_png() -> bytes:
    bomb = png_chunk(b"zTXt", b"Comment\x00\x00" + compressed_zeros(64 << 20))
    return png_file(10, 10, zlib.compress(bytes(31 * 10)), extra_chunks=(bomb,))


def _bad_huffman_jpeg() -> bytes:
    data = bytearray(_noise_jpeg())
    i = data.find(b"\xff\xc4")
    data[i + 5 : i + 21] = bytes([255] * 16)  # code counts summing to 4080: "bogus Huffman table"
    return bytes(data)


def _corrupt_scan_jpeg() -> bytes:
    data = bytearray(_noise_jpeg())
    rng = random.Random(5)
    start = data.find(b"\xff\xda") + 20
    for k in range(start, len(data) - 2, 11):
        data[k] = rng.randrange(255)  # never 0xFF, so no fake markers
    return bytes(data)


def _garbage_after_soi() -> bytes:
    return b"\xff\xd8\xff" + random.Random(9).randbytes(2000)


def _icc_jpeg(icc: bytes) -> bytes:
    return encode(scene((200, 150), 11), "JPEG", quality=90, icc_profile=icc)


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _corrupt_icc() -> bytes:
    good = bytearray(_srgb_icc())
    good[128:200] = b"\xab" * 72  # wreck the tag table
    return b"\x00\x00\x02\x00junk" + bytes(good[8:600])


def _huge_exif_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription: 60 KB of EXIF
    exif[0x0112] = 1
    return encode(scene((200, 150), 12), "JPEG", exif=exif)


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return encode(scene((200, 150), 13), "JPEG", exif=exif)


def _garbage_exif_jpeg() -> bytes:
    data = encode(scene((200, 150), 14), "JPEG")
    payload = b"Exif\x00\x00" + b"MM\x00*" + random.Random(3).randbytes(4000)
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + app1 + data[2:]


def _gif_with_transparency() -> bytes:
    im = scene((100, 80), 15).quantize(16)
    ImageDraw.Draw(im).rectangle((0, 0, 30, 30), fill=15)
    return encode(im, "GIF", transparency=15)


def _palette_trns_png() -> bytes:
    im = scene((100, 80), 16).quantize(16)
    ImageDraw.Draw(im).rectangle((0, 0, 30, 30), fill=15)
    return encode(im, "PNG", transparency=15)


def _many_frame_gif() -> bytes:
    frames = [Image.new("P", (50, 50), i % 200) for i in range(200)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=20)


def _webp_alpha() -> bytes:
    return encode(Image.open(io.BytesIO(rgba_png())), "WEBP", quality=80)


def _png_exif_rotated() -> bytes:
    return oriented_jpeg(6, fmt="PNG")


def _tiff_claims(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (10, 10), "red"), "TIFF"))
    im = Image.open(io.BytesIO(bytes(data)))
    offset = getattr(im, "tag_v2")._offset  # noqa: B009 - first IFD offset
    count = struct.unpack("<H", data[offset : offset + 2])[0]
    for n in range(count):
        entry = offset + 2 + 12 * n
        tag, typ = struct.unpack("<HH", data[entry : entry + 4])
        if tag in (256, 257):
            value = width if tag == 256 else height
            data[entry + 8 : entry + 12] = (
                struct.pack("<I", value) if typ == 4 else struct.pack("<HH", value & 0xFFFF, 0)
            )
    return bytes(data)


def _bmp_claims(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (10, 10), "red"), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def _gif_claims(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("P", (10, 10)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def _webp_claims_16384() -> bytes:
    data = bytearray(encode(Image.new("RGB", (10, 10), "red"), "WEBP", lossless=True))
    sig = data.find(b"VP8L") + 8  # 0x2f signature, then 14-bit width-1 and height-1
    bits = int.from_bytes(data[sig + 1 : sig + 5], "little")
    bits = (bits & ~((1 << 28) - 1)) | 16383 | (16383 << 14)
    data[sig + 1 : sig + 5] = bits.to_bytes(4, "little")
    return bytes(data)


def _mpo() -> bytes:
    """A camera "multi-picture" JPEG (MPO): two pictures in one file, e.g. a stereo pair."""
    left, right = scene((400, 300), 26), scene((400, 300), 27)
    return encode(left, "MPO", save_all=True, append_images=[right])


def _apng() -> bytes:
    frames = [scene((120, 90), 28 + i) for i in range(3)]
    return encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)


_PDF = b"""%PDF-1.4
1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj
2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj
trailer << /Root 1 0 R >>
%%EOF
"""
_SVG = b"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">
  <circle cx="50" cy="50" r="40" fill="red"/>
</svg>
"""
_JSON = b'{"error": {"code": "BadRequest", "message": "Image not found for person 42"}}'
_SOAP = (
    b'<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<soap:Body><soap:Fault><faultstring>Ticket expired</faultstring></soap:Fault></soap:Body>"
    b"</soap:Envelope>"
)


@dataclass(frozen=True)
class HostileCase:
    """One crafted input: what it is called, what must happen, and how to build it."""

    name: str
    expect: Expect
    message: str  # for "error": a fragment the ImageError message must contain (case-insensitive)
    build: Callable[[], bytes]


def _cases() -> tuple[HostileCase, ...]:
    ok: Expect = "ok"
    err: Expect = "error"

    def c(name: str, expect: Expect, build: Callable[[], bytes], message: str = "") -> HostileCase:
        return HostileCase(name, expect, message, build)

    return (
        # not pictures at all
        c("zero_bytes", err, lambda: b"", "empty"),
        c("html_error_page", err, lambda: make_picture("broken_html", 1), "HTML"),
        c("json_error_body", err, lambda: _JSON, "JSON"),
        c("soap_fault_xml", err, lambda: _SOAP, "XML"),
        c("svg_text", err, lambda: _SVG, "SVG"),
        c("pdf_bytes", err, lambda: _PDF, "PDF"),
        c("heic_ftyp", err, lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "HEIC"),
        c("plain_text", err, lambda: b"Access denied\r\n", "text"),
        c(
            "unknown_binary",
            err,
            lambda: random.Random(1).randbytes(3000).replace(b"\xff", b"\x00"),
            "unknown",
        ),
        # cut short or damaged
        c("truncated_jpeg", err, lambda: make_picture("broken_truncated", 1), "truncated"),
        c("truncated_png", err, _truncated_png, "truncated"),
        c("truncated_gif", err, lambda: encode(scene((100, 80), 2).convert("P"), "GIF")[:700], "truncated"),
        c("png_bad_crc", err, _bad_crc_png, "corrupt PNG"),
        c("png_ztxt_bomb", err, _ztxt_bomb_png, "PNG"),
        c("jpeg_bad_huffman_table", err, _bad_huffman_jpeg, "corrupt JPEG"),
        c("jpeg_garbage_after_soi", err, _garbage_after_soi, "JPEG"),
        c("jpeg_corrupt_scan_data", err, _corrupt_scan_jpeg, "corrupt JPEG"),
        # headers that lie about the size (decompression bombs) or are absurd
        c(
            "png_bomb_30000x30000_tiny",
            err,
            lambda: png_file(30000, 30000, zlib.compress(bytes(1000))),
            "pixels",
        ),
        c(
            "png_zip_bomb_30000x30000_rgba",
            err,
            lambda: png_file(30000, 30000, compressed_zeros(256 << 20), colour_type=6),
            "pixels",
        ),
        c(
            "png_over_pixel_limit_7072x7072",
            err,
            lambda: png_file(7072, 7072, zlib.compress(bytes(7073))),
            "max_input_pixels",
        ),
        c(
            # Under Pillow's own MAX_IMAGE_PIXELS (89 M): only the profile's limit stops this one, and the
            # IDAT really inflates to the full 256 MB, so decoding it would show in peak memory.
            "png_zip_bomb_8000x8000_rgba_full_idat",
            err,
            lambda: png_file(8000, 8000, compressed_zeros(8000 * (1 + 8000 * 4)), colour_type=6),
            "max_input_pixels",
        ),
        c("png_zip_bomb_idat_within_limits", ok, lambda: png_file(2000, 2000, compressed_zeros(100 << 20))),
        c("png_absurd_100000x1", err, lambda: png_file(100000, 1, zlib.compress(bytes(300001))), "absurd"),
        c("png_zero_width", err, lambda: png_file(0, 10, zlib.compress(b"")), "PNG"),
        c(
            "jpeg_sof_claims_65000x65000",
            err,
            lambda: jpeg_with_sof_size(_noise_jpeg(), 65000, 65000),
            "pixels",
        ),
        c("jpeg_sof_claims_7000x7000", ok, lambda: jpeg_with_sof_size(_noise_jpeg(), 7000, 7000)),
        c("gif_screen_65535x65535", err, lambda: _gif_claims(65535, 65535), "pixels"),
        c("webp_canvas_16384x16384", err, _webp_claims_16384, "pixels"),
        c("tiff_claims_100000x100000", err, lambda: _tiff_claims(100000, 100000), "pixels"),
        c("bmp_claims_100000x100000", err, lambda: _bmp_claims(100000, 100000), "pixels"),
        # colour: ICC, CMYK, 16-bit, palettes, alpha, odd modes
        c("jpeg_corrupt_icc", ok, lambda: _icc_jpeg(_corrupt_icc())),
        c("jpeg_srgb_icc", ok, lambda: _icc_jpeg(_srgb_icc())),
        c("jpeg_cmyk", ok, cmyk_icc_free_jpeg),
        c("jpeg_cmyk_sandbox", ok, lambda: make_picture("jpeg_cmyk", 2)),
        c("tiff_cmyk", ok, lambda: encode(scene((120, 90), 21).convert("CMYK"), "TIFF")),
        c("png_16bit_grey", ok, lambda: grey16_png(32768)),
        c("png_48bit_rgb", ok, lambda: rgb48_png((65535, 32768, 0))),
        c("png_palette_trns", ok, _palette_trns_png),
        c("png_la", ok, lambda: encode(Image.new("LA", (80, 60), (100, 128)), "PNG")),
        c("png_bilevel", ok, lambda: encode(scene((90, 70), 22).convert("1"), "PNG")),
        c("tiff_mode_i_32bit", ok, lambda: encode(Image.linear_gradient("L").convert("I"), "TIFF")),
        c("tiff_mode_f_float", ok, lambda: encode(Image.linear_gradient("L").convert("F"), "TIFF")),
        c("jpeg_grey", ok, lambda: encode(scene((160, 120), 23).convert("L"), "JPEG")),
        c("gif_transparency", ok, _gif_with_transparency),
        c("gif_animated", ok, animated_gif),
        c("gif_200_frames", ok, _many_frame_gif),
        c("webp_animated", ok, animated_webp),
        c("webp_alpha", ok, _webp_alpha),
        # metadata
        c("jpeg_huge_exif_60kb", ok, _huge_exif_jpeg),
        c("jpeg_exif_orientation_9", ok, lambda: _exif_orientation(9)),
        c("jpeg_exif_garbage", ok, _garbage_exif_jpeg),
        c("jpeg_gps_xmp_comment", ok, lambda: make_picture("jpeg_gps_exif", 3)),
        c("png_exif_orientation_6", ok, _png_exif_rotated),
        # geometry and encodings
        c("png_1x1", ok, lambda: encode(Image.new("RGB", (1, 1), "red"), "PNG")),
        c("jpeg_1x1", ok, lambda: encode(Image.new("RGB", (1, 1), "red"), "JPEG")),
        c("png_10000x10", ok, lambda: encode(Image.new("RGB", (10000, 10), "red"), "PNG")),
        c("png_10x10000", ok, lambda: encode(Image.new("RGB", (10, 10000), "blue"), "PNG")),
        c("tiff_rgb", ok, lambda: encode(scene((300, 200), 24), "TIFF", compression="tiff_lzw")),
        c("bmp_rgb", ok, lambda: encode(scene((300, 200), 25), "BMP")),
        c("jpeg_progressive", ok, lambda: _noise_jpeg(progressive=True)),
        c("jpeg_restart_markers", ok, lambda: _noise_jpeg(restart_marker_rows=1)),
        c("jpeg_12mp_exif_rotated", ok, lambda: photo_jpeg(3000, 4000, 1, orientation=6)),
        c("jpeg_mpo_two_pictures", ok, _mpo),
        c("png_animated_apng", ok, _apng),
    )


def hostile_cases() -> tuple[HostileCase, ...]:
    """The corpus with expectations and lazy builders (names are unique)."""
    return _cases()


@functools.lru_cache(maxsize=1)
def _built() -> tuple[tuple[str, bytes, str], ...]:
    return tuple((case.name, case.build(), case.expect) for case in _cases())


def hostile_corpus() -> list[tuple[str, bytes, str]]:
    """Every crafted input as ``(name, bytes, "ok" | "error")``; deterministic, built once per process."""
    return list(_built())
