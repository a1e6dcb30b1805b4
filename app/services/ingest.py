"""Getting an image in: validate, store the original and a thumbnail, write the row, queue work."""

from __future__ import annotations

import hashlib
import io
import logging
import unicodedata
import uuid
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from flask import current_app
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app import queue
from app.extensions import db
from app.models import Image
from app.runtime import storage
from app.services import ServiceError

log = logging.getLogger(__name__)

# Pillow format name -> the content type we store and serve.
ALLOWED_FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
}
THUMBNAIL_CONTENT_TYPE = "image/webp"
_CHUNK = 1024 * 1024


class UnsupportedMediaType(ServiceError):
    code, status = "unsupported_media_type", 415


class InvalidImage(ServiceError):
    code, status = "invalid_image", 422


class TooLarge(ServiceError):
    code, status = "too_large", 413


@dataclass
class IngestResult:
    image: Image
    existing: bool


def clean_filename(name: str | None) -> str:
    """A display name: NFC, no control or format (bidi) characters, at most 255 characters."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]  # a client's full path: keep the base name
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return name[:255] or "untitled"


def _hash_and_size(stream: BinaryIO) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    stream.seek(0)
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    stream.seek(0)
    return digest.hexdigest(), size


def _decode(stream: BinaryIO) -> tuple[PILImage.Image, str]:
    """Open and fully decode the image, refusing what is not an allowed, whole, sane image."""
    try:
        with warnings.catch_warnings():
            # Pillow warns between MAX_IMAGE_PIXELS and twice that; a bomb either way.
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            image = PILImage.open(stream)
            fmt = image.format
            if fmt not in ALLOWED_FORMATS:
                raise UnsupportedMediaType(
                    f"{fmt or 'this'} files are not accepted; send one of "
                    f"{', '.join(sorted(ALLOWED_FORMATS))}"
                )
            image.load()
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise InvalidImage(f"the image has too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedMediaType(
            f"not an image file; send one of {', '.join(sorted(ALLOWED_FORMATS))}"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(f"the image is damaged or truncated: {exc}") from exc
    return image, fmt


def make_thumbnail(image: PILImage.Image, size: int) -> bytes:
    """A small WebP rendition, upright, with no metadata carried over."""
    thumb = ImageOps.exif_transpose(image)
    if thumb.mode not in ("RGB", "RGBA"):
        thumb = thumb.convert(
            "RGBA" if "A" in thumb.getbands() or "transparency" in thumb.info else "RGB"
        )
    thumb.thumbnail((size, size), PILImage.Resampling.LANCZOS, reducing_gap=3.0)
    out = io.BytesIO()
    thumb.save(out, "WEBP", quality=80, method=4)
    return out.getvalue()


def _existing(team_id: uuid.UUID, sha256: str) -> Image | None:
    return db.session.scalar(select(Image).where(Image.team_id == team_id, Image.sha256 == sha256))


def ingest(
    team_id: uuid.UUID,
    stream: BinaryIO,
    filename: str | None,
    *,
    user_id: uuid.UUID | None = None,
    key_id: uuid.UUID | None = None,
) -> IngestResult:
    """Validate and store one upload; an exact re-upload returns the existing image.

    Nothing is left behind on refusal: objects are written only after validation and removed
    again if the row cannot be committed.
    """
    sha256, size = _hash_and_size(stream)
    if size == 0:
        raise ServiceError("the file is empty")
    if size > current_app.config["MAX_UPLOAD_MB"] * 1024 * 1024:
        raise TooLarge(f"the file is larger than {current_app.config['MAX_UPLOAD_MB']} MB")
    if existing := _existing(team_id, sha256):
        return IngestResult(existing, True)

    image, fmt = _decode(stream)
    thumbnail = make_thumbnail(image, current_app.config["THUMBNAIL_SIZE"])
    width, height = (image.height, image.width) if _rotated(image) else image.size

    image_id = uuid.uuid4()
    prefix = f"teams/{team_id}/images/{image_id}"
    row = Image(
        id=image_id,
        team_id=team_id,
        uploaded_by_user_id=user_id,
        uploaded_by_key_id=key_id,
        filename=clean_filename(filename),
        content_type=ALLOWED_FORMATS[fmt],
        size_bytes=size,
        width=width,
        height=height,
        sha256=sha256,
        status="pending",
        storage_key=f"{prefix}/original",
        thumbnail_key=f"{prefix}/thumbnail.webp",
        meta={"exif": {}, "colors": [], "custom": {}},
    )
    written: list[str] = []
    try:
        stream.seek(0)
        storage().save(row.storage_key, stream, row.content_type)
        written.append(row.storage_key)
        storage().save(row.thumbnail_key, io.BytesIO(thumbnail), THUMBNAIL_CONTENT_TYPE)
        written.append(row.thumbnail_key)
        db.session.add(row)
        db.session.commit()
    except IntegrityError:
        # The same bytes arrived concurrently and the other upload won: one row, no orphans.
        db.session.rollback()
        _remove(written)
        existing = _existing(team_id, sha256)
        if existing is None:
            raise
        return IngestResult(existing, True)
    except BaseException:
        db.session.rollback()
        _remove(written)
        raise
    queue.enqueue_process_image(row.id)
    return IngestResult(row, False)


def _rotated(image: PILImage.Image) -> bool:
    # EXIF orientations 5-8 swap width and height.
    return image.getexif().get(0x0112, 1) in (5, 6, 7, 8)


def _remove(keys: list[str]) -> None:
    for key in keys:
        try:
            storage().delete(key)
        except Exception:  # cleanup must not hide the original error
            log.exception("could not remove %s after a failed upload", key)
