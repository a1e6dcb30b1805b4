"""Renditions: smaller copies of an upright RGB(A) image, written without any metadata."""

from __future__ import annotations

import io

from PIL import Image as PILImage


def make_rendition(image: PILImage.Image, size: int) -> PILImage.Image:
    """A new image that fits in size x size (never enlarged), without the original's metadata.
    The input is already upright and RGB(A); it is not copied at full size."""
    scale = min(1.0, size / max(image.size))
    target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if target == image.size:
        rendition = image.copy()
    else:
        rendition = image.resize(target, PILImage.Resampling.LANCZOS, reducing_gap=3.0)
    rendition.info.clear()  # nothing of the original's metadata travels further
    return rendition


def encode_webp(image: PILImage.Image, quality: int, method: int = 4) -> bytes:
    """WebP bytes with no EXIF, XMP or ICC profile: Pillow writes only what it is given."""
    out = io.BytesIO()
    image.save(out, "WEBP", quality=quality, method=method, exif=b"", xmp=b"", icc_profile=None)
    return out.getvalue()
