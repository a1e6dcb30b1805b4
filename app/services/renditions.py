"""On-demand versions of an image (another format, quality or width), made once and kept."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image as PILImage
from sqlalchemy import select

from app.extensions import db
from app.models import Image
from app.runtime import storage
from app.services import NotFound, ServiceError
from app.services.imaging import open_working

FORMATS = {
    "jpeg": ("JPEG", "image/jpeg"),
    "webp": ("WEBP", "image/webp"),
    "png": ("PNG", "image/png"),
}
WIDTHS = (160, 320, 640, 1024, 1280, 1920, 2560)
DEFAULT_QUALITY = 82


@dataclass(frozen=True)
class Rendition:
    key: str
    content_type: str
    filename: str


def source_key(image: Image, variant: str) -> str:
    key = {
        "original": image.storage_key,
        "thumbnail": image.thumbnail_key,
        "preview": image.preview_key,
    }[variant]
    if key is None:
        raise NotFound(f"the {variant} is not ready yet (the image is {image.status})")
    return key


def check_request(fmt: str | None, quality: int | None, width: int | None) -> None:
    if fmt is not None and fmt not in FORMATS:
        raise ServiceError(f"format must be one of {', '.join(FORMATS)}")
    if quality is not None and (fmt or "") == "png":
        raise ServiceError("quality applies to jpeg and webp, not png")
    if width is not None and width not in WIDTHS:
        raise ServiceError(f"width must be one of {', '.join(map(str, WIDTHS))}")


def derived(
    image: Image, variant: str, fmt: str | None, quality: int | None, width: int | None
) -> Rendition:
    """The stored rendition for these parameters, made from `variant` on first request."""
    check_request(fmt, quality, width)
    fmt = fmt or "webp"
    pil_format, content_type = FORMATS[fmt]
    quality = None if fmt == "png" else (quality or DEFAULT_QUALITY)
    name = f"{variant}-w{width or 'full'}-q{quality or 'lossless'}.{fmt}"
    key = f"teams/{image.team_id}/images/{image.id}/renditions/{name}"
    stem = image.filename.rsplit(".", 1)[0] or "image"
    rendition = Rendition(key, content_type, f"{stem}-{name}")
    if storage().exists(key):
        return rendition

    with storage().open(source_key(image, variant)) as source:
        picture = open_working(source, width or max(image.width, image.height))
    if width and picture.width > width:  # never upscaled
        picture.thumbnail((width, picture.height), PILImage.Resampling.LANCZOS, reducing_gap=3.0)
    picture.info.clear()
    if pil_format == "JPEG" and picture.mode != "RGB":
        picture = picture.convert("RGB")
    out = io.BytesIO()
    options = {"quality": quality} if quality else {"optimize": True}
    if pil_format == "JPEG":
        options.update(optimize=True, progressive=True)
    # Nothing of the original's metadata (EXIF with GPS, XMP, ICC) is written.
    picture.save(out, pil_format, exif=b"", **options)
    out.seek(0)
    storage().save(key, out, content_type)
    _remember(image.id, key)
    return rendition


def _remember(image_id, key: str) -> None:
    """Note the key on the image (under a row lock), so deleting the image deletes it too."""
    row = db.session.scalar(select(Image).where(Image.id == image_id).with_for_update())
    keys = list((row.meta or {}).get("renditions", []))
    if key not in keys:
        row.meta = {**(row.meta or {}), "renditions": [*keys, key]}
        db.session.commit()
