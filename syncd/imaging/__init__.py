"""The picture normalizer: untrusted source bytes in, one small, clean, deterministic picture out.

The package's interface is what the rest of syncd uses; its modules, in the order of the pipeline
(:mod:`~syncd.imaging.normalizer` describes it step by step):

``profile``     :class:`PictureProfile` (what a target picture must look like) and
                :class:`NormalizedPicture` (the result); ``NORMALIZER_VERSION``.
``sniff``       :func:`sniff_format`: the format by magic bytes; what a non-picture looks like.
``memory``      :func:`decode_estimate`: the memory a decode will take, from the header alone.
``geometry``    fitting into the box, EXIF orientation, the target size in stored orientation.
``colour``      modes made resizable, tone mapping of 16-bit/float samples, ICC → sRGB.
``encoding``    fixed encoder settings, quality steps and shrinking until ``max_bytes`` fits.
``normalizer``  :func:`normalize`: the pipeline itself, and the one place errors are worded.
"""

from __future__ import annotations

from syncd.imaging.encoding import QUALITY_STEPS
from syncd.imaging.memory import decode_estimate
from syncd.imaging.normalizer import normalize
from syncd.imaging.profile import (
    KNOWN_FORMATS,
    NORMALIZER_VERSION,
    OUTPUT_FORMATS,
    NormalizedPicture,
    PictureProfile,
)
from syncd.imaging.sniff import sniff_format

__all__ = [
    "KNOWN_FORMATS",
    "NORMALIZER_VERSION",
    "OUTPUT_FORMATS",
    "QUALITY_STEPS",
    "NormalizedPicture",
    "PictureProfile",
    "decode_estimate",
    "normalize",
    "sniff_format",
]
