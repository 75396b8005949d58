"""What untrusted bytes are, from their first and last bytes alone: the picture format by magic bytes,
what a non-picture looks like (for the error message), and whether a picture was cut short."""

from __future__ import annotations

from typing import Final

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


def describe_unknown(data: bytes) -> str:
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


def lacks_end_marker(fmt: str, data: bytes) -> bool:
    """Whether a picture that failed to decode is missing its format's end marker (cut short)."""
    tail = data[-64:]
    if fmt == "PNG":
        return b"IEND" not in tail
    if fmt == "JPEG":
        return b"\xff\xd9" not in data[-1024:]
    if fmt == "GIF":
        return not data.rstrip(b"\x00").endswith(b"\x3b")
    return False
