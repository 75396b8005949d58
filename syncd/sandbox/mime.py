"""The one MIME sniffer both emulators use: the image type a picture's leading magic bytes announce."""

from __future__ import annotations


def sniff_mime(data: bytes) -> str | None:
    """The MIME type the bytes' magic number says, or None when it names no known picture format."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if data.startswith(b"BM"):
        return "image/bmp"
    return None
