"""What a picture must become: :class:`PictureProfile` (the config's ``picture:`` settings, validated)
and :class:`NormalizedPicture` (what the normalizer hands back)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

from syncd.errors import ConfigError

NORMALIZER_VERSION: Final = 2  # 2: BICUBIC final resample

#: Formats ``sniff_format`` recognises, which are also the Pillow plugin names used to open them.
KNOWN_FORMATS: Final = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")
OUTPUT_FORMATS: Final = ("JPEG", "PNG")

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
