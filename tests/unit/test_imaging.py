"""The picture normalizer, one behaviour per test, plus the sandbox picture generator it is fed with."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import subprocess
import sys
import zlib

import pytest
from PIL import Image, ImageChops, ImageCms, ImageDraw, ImageFile, ImageOps, ImageStat, JpegImagePlugin
from PIL.JpegImagePlugin import JpegImageFile

from syncd.errors import ConfigError, ImageError
from syncd.imaging import (
    NORMALIZER_VERSION,
    NormalizedPicture,
    PictureProfile,
    normalize,
    sniff_format,
)
from syncd.sandbox.pictures import BROKEN_KINDS, PICTURE_KINDS, RED, make_picture, photo_jpeg
from tests.support.pictures_corpus import (
    BAND_RED,
    FIELD_GREY,
    MARK_BLUE,
    animated_gif,
    animated_webp,
    cmyk_icc_free_jpeg,
    encode,
    grey16_png,
    jpeg_markers,
    oriented_jpeg,
    png_file,
    rgb48_png,
    rgba_png,
    scene,
)

PROFILE = PictureProfile()
Rgb = tuple[float, float, float]


def run(data: bytes, profile: PictureProfile = PROFILE) -> tuple[NormalizedPicture, Image.Image]:
    out = normalize(data, profile)
    im = Image.open(io.BytesIO(out.data))
    im.load()
    assert (im.width, im.height) == (out.width, out.height)
    return out, im


def mean(im: Image.Image, box: tuple[float, float, float, float]) -> Rgb:
    """Mean colour of ``box`` given as fractions of the picture (left, top, right, bottom)."""
    w, h = im.size
    crop = im.convert("RGB").crop(
        (round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h))
    )
    r, g, b = ImageStat.Stat(crop).mean
    return r, g, b


def close(actual: Rgb, expected: tuple[int, int, int], tolerance: float = 12) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def is_red(c: Rgb) -> bool:
    return c[0] > 180 and c[1] < 70 and c[2] < 70


# --- orientation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_exif_rotated_photo_arrives_upright(seed: int) -> None:
    data = make_picture("jpeg_exif_rotated", seed)
    stored = Image.open(io.BytesIO(data))
    assert stored.getexif()[0x0112] in (6, 8)
    out, im = run(data)
    # The upright picture is the stored one turned a quarter: its aspect ratio is the stored one inverted.
    assert abs(out.width / out.height - stored.height / stored.width) < 0.01
    assert is_red(mean(im, (0.05, 0.0, 0.95, 0.10))), "red band must be at the top"
    for edge in ((0, 0.9, 1, 1), (0, 0.25, 0.05, 0.75), (0.95, 0.25, 1, 0.75)):
        assert not is_red(mean(im, edge)), f"no red band at {edge}"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied(orientation: int) -> None:
    _, im = run(oriented_jpeg(orientation))
    assert im.size == (240, 320)
    assert close(mean(im, (0.1, 0.02, 0.9, 0.15)), BAND_RED, 20), "red band at the top"
    assert close(mean(im, (0.02, 0.22, 0.2, 0.35)), MARK_BLUE, 20), "blue mark at the top left"
    assert close(mean(im, (0.8, 0.22, 0.98, 0.35)), FIELD_GREY, 20), "nothing at the top right"


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP"])
def test_exif_orientation_of_other_formats_is_applied(fmt: str) -> None:
    _, im = run(oriented_jpeg(6, fmt=fmt))
    assert im.size == (240, 320)
    assert close(mean(im, (0.1, 0.02, 0.9, 0.15)), BAND_RED, 5)
    assert close(mean(im, (0.02, 0.22, 0.2, 0.35)), MARK_BLUE, 5)


def test_12mp_rotated_phone_photo_arrives_upright_and_fits() -> None:
    data = photo_jpeg(3000, 4000, 1, orientation=6)  # stored 4000×3000 landscape
    out, im = run(data)
    assert (out.width, out.height) == (375, 500)
    assert is_red(mean(im, (0.05, 0.0, 0.95, 0.12)))
    assert not is_red(mean(im, (0.05, 0.88, 0.95, 1.0)))


def test_invalid_exif_orientation_is_ignored() -> None:
    exif = Image.Exif()
    exif[0x0112] = 9
    out, _ = run(encode(Image.new("RGB", (300, 200), "red"), "JPEG", exif=exif))
    assert (out.width, out.height) == (300, 200)


# --- geometry -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((4000, 3000), (500, 375)),
        ((3000, 4000), (375, 500)),
        ((1000, 1000), (500, 500)),
        ((1234, 567), (500, 230)),
        ((501, 500), (500, 499)),
        ((10000, 10), (500, 1)),
        ((640, 480), (500, 375)),
    ],
)
def test_output_fits_box_and_keeps_aspect(size: tuple[int, int], expected: tuple[int, int]) -> None:
    data = encode(scene((size[0] // 4 or 1, size[1] // 4 or 1)).resize(size), "JPEG")
    out, im = run(data)
    assert (out.width, out.height) == expected
    assert out.width <= 500 and out.height <= 500
    assert im.size == expected


def test_output_fits_a_non_square_box() -> None:
    profile = PictureProfile(max_width=300, max_height=100)
    out, _ = run(encode(scene((400, 400)), "PNG"), profile)
    assert (out.width, out.height) == (100, 100)
    out, _ = run(encode(scene((900, 200)), "PNG"), profile)
    assert (out.width, out.height) == (300, 67)


def test_small_picture_is_not_upscaled() -> None:
    out, _ = run(encode(scene((200, 150)), "JPEG"))
    assert (out.width, out.height) == (200, 150)


def test_large_jpeg_is_decoded_at_reduced_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """The speed trick: a 12 MP JPEG is never decoded at full size (DCT scaling via draft())."""
    decoded: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> object:
        if isinstance(self, JpegImageFile):
            decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    out, _ = run(make_picture("jpeg_12mp", 1))
    assert (out.width, out.height) == (500, 375)
    assert decoded and all(w * h <= 1000 * 750 for w, h in decoded), decoded


def test_downscaled_output_is_close_to_a_full_quality_reference() -> None:
    data = photo_jpeg(2400, 1800, 4, orientation=8)
    out, im = run(data, PictureProfile(format="PNG", max_bytes=10_000_000))  # PNG: no JPEG loss in the way
    ref = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    ref = ref.resize((out.width, out.height), Image.Resampling.LANCZOS)
    mad = sum(ImageStat.Stat(ImageChops.difference(im.convert("RGB"), ref)).mean) / 3
    assert mad < 1.5, f"mean absolute difference {mad:.2f} vs a full decode + Lanczos"


# --- colour -------------------------------------------------------------------------------------------


def test_cmyk_becomes_rgb_with_right_colours() -> None:
    out, im = run(cmyk_icc_free_jpeg())
    assert im.mode == "RGB" and out.source_format == "JPEG"
    assert close(mean(im, (0.1, 0.1, 0.4, 0.4)), (255, 0, 0), 15)
    assert close(mean(im, (0.6, 0.1, 0.9, 0.4)), (0, 255, 0), 15)
    assert close(mean(im, (0.1, 0.6, 0.4, 0.9)), (0, 0, 255), 15)
    assert close(mean(im, (0.6, 0.6, 0.9, 0.9)), (255, 255, 255), 15)


def test_cmyk_tiff_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (100, 100), (0, 255, 255, 0))
    _, im = run(encode(cmyk, "TIFF"))
    assert im.mode == "RGB" and close(mean(im, (0.2, 0.2, 0.8, 0.8)), (255, 0, 0), 10)


def test_alpha_is_flattened_on_background() -> None:
    _, im = run(rgba_png(), PictureProfile.from_config({"background": "#00ff00"}))
    assert im.mode == "RGB"
    assert close(mean(im, (0.05, 0.05, 0.35, 0.3)), (0, 255, 0)), "transparent → background"
    assert close(mean(im, (0.7, 0.05, 0.95, 0.3)), (0, 0, 255)), "opaque stays"
    half = mean(im, (0.43, 0.45, 0.48, 0.55))  # 50 % red over green
    assert close(half, (128, 128, 0), 20), half


def test_palette_transparency_is_flattened_on_background() -> None:
    im = Image.new("P", (80, 60), 1)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    ImageDraw.Draw(im).rectangle((0, 0, 39, 59), fill=0)
    for fmt in ("GIF", "PNG"):
        _, out = run(encode(im, fmt, transparency=0), PictureProfile(background=(10, 200, 30)))
        assert close(mean(out, (0.05, 0.1, 0.4, 0.9)), (10, 200, 30)), fmt
        assert close(mean(out, (0.6, 0.1, 0.95, 0.9)), (0, 0, 255)), fmt


def test_palette_png_with_partial_alpha_is_blended_on_background() -> None:
    im = Image.new("P", (60, 40), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    ImageDraw.Draw(im).rectangle((30, 0, 59, 39), fill=1)
    data = encode(im, "PNG", transparency=bytes([128, 255]))  # red at 50 %, blue opaque
    assert isinstance(Image.open(io.BytesIO(data)).info["transparency"], bytes)
    _, out = run(data, PictureProfile.from_config({"background": "#00ff00"}))
    assert close(mean(out, (0.05, 0.1, 0.4, 0.9)), (128, 127, 0), 8)
    assert close(mean(out, (0.6, 0.1, 0.95, 0.9)), (0, 0, 255), 8)
    _, png = run(data, PictureProfile(format="PNG"))
    assert png.mode == "RGBA" and png.getpixel((5, 5)) == (255, 0, 0, 128)


@pytest.mark.parametrize(("value16", "value8"), [(0, 0), (16384, 64), (32768, 128), (65535, 255)])
def test_16bit_png_is_scaled_not_clipped(value16: int, value8: int) -> None:
    data = grey16_png(value16)
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    _, im = run(data)
    assert close(mean(im, (0, 0, 1, 1)), (value8, value8, value8), 2)


def test_48bit_rgb_png_is_scaled_not_clipped() -> None:
    _, im = run(rgb48_png((65535, 32768, 0)))
    assert close(mean(im, (0, 0, 1, 1)), (255, 128, 0), 3)


def test_32bit_and_float_tiff_keep_their_tones() -> None:
    ramp = Image.linear_gradient("L")  # 0 at the top, 255 at the bottom
    floats = ramp.convert("F").point(lambda v: v / 255)  # 0.0 .. 1.0
    for values in (ramp.convert("I"), ramp.convert("I").point(lambda v: v * 257), floats):
        _, im = run(encode(values, "TIFF"))
        assert mean(im, (0, 0, 1, 0.05))[0] < 12 and mean(im, (0, 0.95, 1, 1))[0] > 243


def test_grey_jpeg_becomes_rgb() -> None:
    _out, im = run(encode(Image.new("L", (50, 50), 77), "JPEG"))
    assert im.mode == "RGB" and close(mean(im, (0, 0, 1, 1)), (77, 77, 77), 2)


def test_srgb_icc_profile_is_applied_and_not_embedded() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out, im = run(encode(Image.new("RGB", (64, 64), (200, 100, 50)), "JPEG", icc_profile=icc))
    assert close(mean(im, (0, 0, 1, 1)), (200, 100, 50), 4)
    assert "icc_profile" not in im.info
    assert all(marker != 0xE2 for marker, _ in jpeg_markers(out.data))


def test_cmyk_jpeg_with_icc_profile_is_colour_managed() -> None:
    pyvips = pytest.importorskip("pyvips", reason="a CMYK ICC profile comes from libvips (bench extra)")
    cmyk_icc = pyvips.Image.profile_load("cmyk")  # libvips' built-in CMYK profile
    cmyk_profile = ImageCms.ImageCmsProfile(io.BytesIO(cmyk_icc))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    cmyk = ImageCms.profileToProfile(
        Image.new("RGB", (64, 64), (200, 30, 30)), srgb, cmyk_profile, outputMode="CMYK"
    )
    assert isinstance(cmyk, Image.Image)
    _, im = run(encode(cmyk, "JPEG", quality=95, icc_profile=cmyk_icc))
    assert close(mean(im, (0.2, 0.2, 0.8, 0.8)), (200, 30, 30), 20)
    assert "icc_profile" not in im.info


def test_corrupt_icc_profile_is_ignored() -> None:
    _, im = run(encode(Image.new("RGB", (64, 64), (200, 100, 50)), "JPEG", icc_profile=b"\x00junk" * 100))
    assert close(mean(im, (0, 0, 1, 1)), (200, 100, 50), 4)


# --- metadata and frames ------------------------------------------------------------------------------


def test_gps_and_exif_are_stripped() -> None:
    data = make_picture("jpeg_gps_exif", 3)
    src = Image.open(io.BytesIO(data))
    assert src.getexif().get_ifd(0x8825) and "xmp" in src.info and "comment" in src.info  # the premise
    out, im = run(data)
    markers = [m for m, _ in jpeg_markers(out.data)]
    assert markers[0] == 0xE0  # JFIF only
    assert not [m for m in markers if 0xE1 <= m <= 0xEF or m == 0xFE], [hex(m) for m in markers]
    assert not im.getexif()
    assert not {"exif", "xmp", "comment", "icc_profile"} & set(im.info)
    for needle in (b"Exif", b"xmpmeta", b"sandbox office", b"Canon", b"NIKON", b"Apple", b"samsung"):
        assert needle not in out.data


def test_png_output_has_no_metadata_chunks() -> None:
    data = oriented_jpeg(6, fmt="PNG")
    out = normalize(data, PictureProfile(format="PNG"))
    chunks, i = [], 8
    while i < len(out.data):
        length = struct.unpack(">I", out.data[i : i + 4])[0]
        chunks.append(out.data[i + 4 : i + 8])
        i += 12 + length
    assert set(chunks) <= {b"IHDR", b"IDAT", b"IEND"}, chunks


def test_animated_gif_uses_first_frame() -> None:
    data = animated_gif(("red", "lime", "blue"))
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    _, im = run(data)
    assert close(mean(im, (0, 0, 1, 1)), (255, 0, 0), 10)


def test_animated_webp_uses_first_frame() -> None:
    _, im = run(animated_webp(("blue", "red", "lime")))
    assert close(mean(im, (0, 0, 1, 1)), (0, 0, 255), 10)


# --- encoding -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(set(PICTURE_KINDS) - BROKEN_KINDS))
def test_same_input_gives_identical_bytes(kind: str) -> None:
    data = make_picture(kind, 5)
    assert normalize(data, PROFILE).data == normalize(bytes(data), PictureProfile()).data


def test_output_bytes_are_identical_across_processes() -> None:
    here = hashlib.sha256(normalize(make_picture("jpeg_exif_rotated", 2), PROFILE).data).hexdigest()
    code = (
        "import hashlib; from syncd.imaging import normalize, PictureProfile;"
        "from syncd.sandbox.pictures import make_picture;"
        "data = normalize(make_picture('jpeg_exif_rotated', 2), PictureProfile()).data;"
        "print(hashlib.sha256(data).hexdigest())"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert there.stdout.strip() == here


def noisy_png(size: tuple[int, int] = (1000, 1000)) -> bytes:
    rgb = Image.frombytes("RGB", size, random.Random(7).randbytes(size[0] * size[1] * 3))
    return encode(rgb, "PNG", compress_level=1)


def test_max_bytes_is_respected_by_lowering_quality_first() -> None:
    data = noisy_png()
    full = normalize(data, PictureProfile(max_bytes=10_000_000))
    limit = len(full.data) * 3 // 4
    out, _im = run(data, PictureProfile(max_bytes=limit))
    assert len(out.data) <= limit
    assert (out.width, out.height) == (500, 500), "quality is stepped down before the picture shrinks"


def test_max_bytes_is_respected_by_shrinking_when_quality_is_not_enough() -> None:
    out, _im = run(noisy_png(), PictureProfile(max_bytes=30_000))
    assert len(out.data) <= 30_000
    assert out.width < 500 and out.width == out.height


def test_unreachable_max_bytes_is_an_image_error() -> None:
    with pytest.raises(ImageError, match="max_bytes"):
        normalize(noisy_png((200, 200)), PictureProfile(max_bytes=300))


def test_png_output_keeps_alpha() -> None:
    out, im = run(rgba_png(), PictureProfile(format="PNG"))
    assert out.content_type == "image/png" and im.format == "PNG" and im.mode == "RGBA"
    assert im.getchannel("A").getpixel((5, 5)) == 0
    assert im.getpixel((im.width - 5, 5)) == (0, 0, 255, 255)


def test_png_output_of_opaque_picture_has_no_alpha_channel() -> None:
    _out, im = run(encode(scene((100, 80)).convert("RGBA"), "PNG"), PictureProfile(format="PNG"))
    assert im.mode == "RGB"


def test_jpeg_output_is_baseline_rgb_with_420_subsampling() -> None:
    out, im = run(make_picture("jpeg_small", 1))
    assert out.content_type == "image/jpeg" and im.mode == "RGB"
    markers = [m for m, _ in jpeg_markers(out.data)]
    assert 0xC0 in markers and 0xC2 not in markers  # baseline, not progressive
    assert JpegImagePlugin.get_sampling(im) == 2  # 4:2:0


# --- rejections ---------------------------------------------------------------------------------------


def test_empty_input_is_rejected() -> None:
    with pytest.raises(ImageError, match="empty"):
        normalize(b"", PROFILE)


def test_html_error_page_is_rejected_as_html() -> None:
    with pytest.raises(ImageError, match="not an image: looks like HTML"):
        normalize(make_picture("broken_html", 1), PROFILE)


@pytest.mark.parametrize(
    ("data", "looks_like"),
    [
        (b"%PDF-1.7\n...", "PDF"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIC"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", "AVIF"),
        (b'{"error": "not found"}', "JSON"),
        (b"PK\x03\x04\x14\x00", "ZIP"),
    ],
)
def test_unknown_format_error_names_what_it_looks_like(data: bytes, looks_like: str) -> None:
    with pytest.raises(ImageError, match=f"not an image: looks like .*{looks_like}"):
        normalize(data, PROFILE)


def test_format_outside_the_allow_list_is_rejected() -> None:
    data = encode(Image.new("RGB", (10, 10)), "TIFF")
    with pytest.raises(ImageError, match="TIFF pictures are not allowed"):
        normalize(data, PictureProfile(allowed_formats=("JPEG", "PNG")))


def test_input_over_max_input_bytes_is_rejected() -> None:
    with pytest.raises(ImageError, match="max_input_bytes"):
        normalize(make_picture("jpeg_small", 1), PictureProfile(max_input_bytes=1000))


def test_truncated_picture_is_reported_as_truncated() -> None:
    with pytest.raises(ImageError, match="truncated JPEG"):
        normalize(make_picture("broken_truncated", 1), PROFILE)


def test_decompression_bomb_is_rejected_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[object] = []
    real_load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> object:
        loads.append(self)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    bomb = png_file(30000, 30000, zlib.compress(bytes(10_000)), colour_type=6)
    with pytest.raises(ImageError, match="too many pixels"):
        normalize(bomb, PROFILE)
    below_pillow_limit = png_file(8000, 8000, zlib.compress(bytes(10_000)))
    with pytest.raises(ImageError, match="max_input_pixels"):
        normalize(below_pillow_limit, PROFILE)
    assert loads == []


def test_pixel_limit_comes_from_the_profile() -> None:
    data = encode(Image.new("RGB", (1000, 1000)), "PNG")
    normalize(data, PROFILE)
    with pytest.raises(ImageError, match="1000×1000"):
        normalize(data, PictureProfile(max_input_pixels=999_999))


def test_absurd_dimensions_are_rejected() -> None:
    with pytest.raises(ImageError, match="absurd dimensions 100000×1"):
        normalize(png_file(100000, 1, zlib.compress(bytes(300001))), PROFILE)


# --- sniffing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"])
def test_sniff_recognises_each_supported_format(fmt: str) -> None:
    assert sniff_format(encode(Image.new("RGB", (8, 8)), fmt)) == fmt


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<html>",
        b"BMx",
        b"BM" + bytes(20),
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"GIF90a",
        b"\xff\xd8",
        b"%PDF-",
    ],
)
def test_sniff_returns_none_for_non_pictures(data: bytes) -> None:
    assert sniff_format(data) is None


def test_sniff_recognises_big_endian_tiff() -> None:
    assert sniff_format(b"MM\x00*\x00\x00\x00\x08") == "TIFF"


# --- profile ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"max_width": 400},
        {"max_height": 400},
        {"format": "PNG"},
        {"quality": 80},
        {"background": (0, 0, 0)},
        {"max_bytes": 500_000},
    ],
)
def test_profile_cache_key_changes_with_every_output_setting(change: dict[str, object]) -> None:
    assert PictureProfile.from_config(change).cache_key() != PROFILE.cache_key()


def test_profile_cache_key_is_stable_and_names_the_normalizer_version() -> None:
    assert PictureProfile().cache_key() == PROFILE.cache_key()
    assert PictureProfile.from_config({"background": "#FFFFFF"}).cache_key() == PROFILE.cache_key()
    assert f"n{NORMALIZER_VERSION}:" in PROFILE.cache_key()
    assert (
        PictureProfile(max_input_pixels=1000).cache_key() == PROFILE.cache_key()
    )  # limits: no output effect


def test_profile_background_accepts_hex_strings() -> None:
    assert PictureProfile.from_config({"background": "#102030"}).background == (16, 32, 48)
    assert PictureProfile.from_config({"background": "fff"}).background == (255, 255, 255)
    assert PictureProfile.from_config({"background": "#000"}).background == (0, 0, 0)


def test_profile_from_config_reads_the_config_file_shape() -> None:
    profile = PictureProfile.from_config(
        {"max_width": 300, "max_height": 200, "format": "png", "allowed_formats": ["jpeg", "png"]}
    )
    assert (profile.max_width, profile.max_height, profile.format) == (300, 200, "PNG")
    assert profile.allowed_formats == ("JPEG", "PNG")


@pytest.mark.parametrize(
    "config",
    [
        {"background": "#12345"},
        {"background": "white"},
        {"format": "GIF"},
        {"quality": 0},
        {"quality": 100},
        {"max_width": 0},
        {"max_bytes": -1},
        {"allowed_formats": ["JPEG", "HEIC"]},
        {"max_witdh": 500},
    ],
)
def test_profile_rejects_bad_settings_with_a_config_error(config: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        PictureProfile.from_config(config)


# --- the sandbox picture generator --------------------------------------------------------------------

_EXPECTED_KINDS = {
    "jpeg_small": ("JPEG", "RGB"),
    "jpeg_12mp": ("JPEG", "RGB"),
    "jpeg_exif_rotated": ("JPEG", "RGB"),
    "jpeg_cmyk": ("JPEG", "CMYK"),
    "png_alpha": ("PNG", "RGBA"),
    "png_16bit": ("PNG", "I;16"),
    "gif_palette": ("GIF", "P"),
    "gif_animated": ("GIF", "P"),
    "webp": ("WEBP", "RGB"),
    "jpeg_gps_exif": ("JPEG", "RGB"),
}


@pytest.mark.parametrize("kind", sorted(_EXPECTED_KINDS))
def test_sandbox_picture_kinds_are_what_they_claim(kind: str) -> None:
    data = make_picture(kind, 1)
    im = Image.open(io.BytesIO(data))
    assert (im.format, im.mode) == _EXPECTED_KINDS[kind]
    if kind == "jpeg_12mp":
        assert im.size == (4000, 3000)
    elif kind == "gif_animated":
        assert getattr(im, "n_frames", 1) >= 3
    elif kind == "gif_palette":
        assert "transparency" in im.info
    elif kind == "png_alpha":
        assert im.getchannel("A").getextrema() == (0, 255)
    elif kind == "jpeg_small":
        assert 200 <= max(im.size) <= 800


def test_sandbox_pictures_are_deterministic_and_vary_by_seed() -> None:
    for kind in PICTURE_KINDS:
        if kind != "jpeg_12mp":
            assert make_picture(kind, 3) is make_picture(kind, 3)  # cached
            make_picture.cache_clear()
    sizes = {Image.open(io.BytesIO(make_picture("jpeg_small", seed))).size for seed in range(8)}
    assert len(sizes) > 4
    code = (
        "import sys; from syncd.sandbox.pictures import make_picture;"
        "sys.stdout.buffer.write(make_picture('{}', 4))"
    )
    for kind in ("jpeg_small", "png_16bit", "gif_animated"):
        there = subprocess.run([sys.executable, "-c", code.format(kind)], capture_output=True, check=True)
        assert there.stdout == make_picture(kind, 4), kind


def test_sandbox_broken_kinds_are_rejected_and_others_normalize() -> None:
    for kind in PICTURE_KINDS:
        if kind in BROKEN_KINDS:
            with pytest.raises(ImageError):
                normalize(make_picture(kind, 1), PROFILE)
        else:
            assert normalize(make_picture(kind, 1), PROFILE).width <= 500


def test_sandbox_red_band_is_red() -> None:
    upright = Image.open(io.BytesIO(photo_jpeg(200, 300, 0, texture=False)))
    assert close(mean(upright, (0.1, 0.01, 0.9, 0.1)), RED, 10)


def test_unknown_sandbox_kind_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown picture kind"):
        make_picture("jpeg_huge", 1)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # not relied upon
def test_pillow_pixel_limit_applies_even_when_the_profile_allows_more() -> None:
    over_pillow_limit = png_file(9500, 9500, zlib.compress(bytes(10_000)))  # 90.25 M > 89.48 M pixels
    with pytest.raises(ImageError, match=r"too many pixels .* > Pillow's Image.MAX_IMAGE_PIXELS=89,478,485"):
        normalize(over_pillow_limit, PictureProfile(max_input_pixels=100_000_000))


# --- the source thumbnail (status page's before/after) --------------------------------------------


THUMB = PictureProfile(max_width=96, max_height=96, format="JPEG", quality=70)


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_source_thumbnail_comes_from_the_same_decode_upright_and_small(orientation: int) -> None:
    data = oriented_jpeg(orientation, 480, 640)
    decodes = []
    original = ImageFile.ImageFile.load

    def counting_load(image: ImageFile.ImageFile) -> object:
        if getattr(image, "tile", None):
            decodes.append(image.format)
        return original(image)

    ImageFile.ImageFile.load = counting_load  # type: ignore[method-assign,assignment]
    try:
        out = normalize(data, PictureProfile(), THUMB)
    finally:
        ImageFile.ImageFile.load = original  # type: ignore[method-assign]
    assert decodes == ["JPEG"], "one decode for the picture and its thumbnail"
    assert out.source_thumbnail is not None
    thumb = Image.open(io.BytesIO(out.source_thumbnail))
    assert thumb.format == "JPEG" and thumb.size == (72, 96)
    assert close(mean(thumb, (0.1, 0.02, 0.9, 0.15)), BAND_RED, 25), "red band at the top"
    assert close(mean(thumb, (0.02, 0.22, 0.2, 0.35)), MARK_BLUE, 25), "blue mark at the top left"
    assert normalize(data, PictureProfile()).source_thumbnail is None
    assert normalize(data, PictureProfile(), THUMB).data == out.data, "the output does not change"


def test_source_thumbnail_of_a_transparent_png_is_flattened_for_jpeg() -> None:
    out = normalize(rgba_png((240, 160)), PictureProfile(format="PNG"), THUMB)
    assert out.source_thumbnail is not None
    thumb = Image.open(io.BytesIO(out.source_thumbnail))
    assert thumb.mode == "RGB" and thumb.size == (96, 64)
    assert close(mean(thumb, (0.05, 0.05, 0.35, 0.3)), (255, 255, 255)), "transparent → white"
    assert close(mean(thumb, (0.7, 0.05, 0.95, 0.3)), (0, 0, 255)), "opaque stays"
