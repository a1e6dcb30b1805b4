"""On-demand versions of an image (another format, quality or width), made once and kept.

Making one decodes and re-encodes in a web process, so it is bounded three ways: the pixels of
the result (RENDITION_MAX_PIXELS), how many are kept per image (RENDITIONS_PER_IMAGE, the
oldest evicted), and how many are made at once across every web process (RENDITION_SLOTS,
slots in Redis): when all are busy the answer is 503 with Retry-After, so the web workers stay
free for everything else.
"""

from __future__ import annotations

import contextlib
import io
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import redis
from flask import current_app
from PIL import Image as PILImage
from redis.exceptions import LockError
from sqlalchemy import select

from app.errors import Invalid, NotFound, Unavailable
from app.extensions import db, redis_connection
from app.imaging.validate import open_working
from app.models import Image
from app.runtime import delete_objects, storage
from app.services.transaction import unit_of_work

log = logging.getLogger(__name__)

FORMATS = {
    "jpeg": ("JPEG", "image/jpeg"),
    "webp": ("WEBP", "image/webp"),
    "png": ("PNG", "image/png"),
}
WIDTHS = (160, 320, 640, 1024, 1280, 1920, 2560)
DEFAULT_QUALITY = 82


class Busy(Unavailable):
    """Every rendition slot is taken: ask again shortly."""

    retry_after = 5


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
        raise Invalid(f"format must be one of {', '.join(FORMATS)}")
    if quality is not None and (fmt or "") == "png":
        raise Invalid("quality applies to jpeg and webp, not png")
    if width is not None and width not in WIDTHS:
        raise Invalid(f"width must be one of {', '.join(map(str, WIDTHS))}")


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
    _check_result_size(image, variant, fmt, width)
    with _slot():
        if not storage().exists(key):  # made by another request while this one waited
            _make(image, variant, pil_format, quality, width, key, content_type)
    return rendition


# The longest side each format's encoder takes (libwebp: 16383; libjpeg: 65500).
MAX_SIDE = {"webp": 16_383, "jpeg": 65_500, "png": 2**31 - 1}


def _check_result_size(image: Image, variant: str, fmt: str, width: int | None) -> None:
    """Refuse, before decoding anything, a result larger than RENDITION_MAX_PIXELS, or longer
    on a side than its format can be."""
    limit = current_app.config["RENDITION_MAX_PIXELS"]
    if variant != "original":
        return  # the thumbnail and preview are small by construction
    scale = min(1.0, width / image.width) if width else 1.0
    result = round(image.width * scale), round(image.height * scale)
    if max(result) > MAX_SIDE[fmt]:
        raise Invalid(
            f"a {fmt} version of this image would be {result[0]}x{result[1]} pixels; {fmt} "
            f"takes at most {MAX_SIDE[fmt]:,} on a side: ask for format=png, or a smaller width"
        )
    pixels = result[0] * result[1]
    if pixels > limit:
        raise Invalid(
            f"a version of this image at {'width ' + str(width) if width else 'full size'} "
            f"would have {pixels:,} pixels; versions are made up to {limit:,}: ask for a "
            "smaller width, or for the original as it is (no format, quality or width)"
        )


def _make(
    image: Image,
    variant: str,
    pil_format: str,
    quality: int | None,
    width: int | None,
    key: str,
    content_type: str,
) -> None:
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
    del picture
    out.seek(0)
    storage().save(key, out, content_type)
    evicted = _remember(image.id, key)
    if evicted is None:  # deleted while the version was made: its delete could not know of it
        delete_objects([key], of="a version of a deleted image")
        raise NotFound("the image was deleted")
    # An orphan file is harmless: the row no longer names it.
    delete_objects(evicted, of="an evicted rendition")


def _remember(image_id, key: str) -> list[str] | None:
    """Note the key on the image (under a row lock), so deleting the image deletes it too;
    keep the newest RENDITIONS_PER_IMAGE and return the keys evicted. None if the image is
    gone."""
    keep = current_app.config["RENDITIONS_PER_IMAGE"]
    with unit_of_work():
        row = db.session.scalar(select(Image).where(Image.id == image_id).with_for_update())
        if row is None:
            return None
        keys = [k for k in (row.meta or {}).get("renditions", []) if k != key] + [key]
        evicted, keys = keys[:-keep], keys[-keep:]
        row.meta = {**(row.meta or {}), "renditions": keys}
    return evicted


@contextlib.contextmanager
def _slot() -> Iterator[None]:
    """Hold one of RENDITION_SLOTS slots shared by every web process, or raise Busy.

    A slot is a Redis lock that expires after RENDITION_SLOT_SECONDS, so a process that dies
    while holding one frees it then."""
    config = current_app.config
    connection = redis_connection.client
    held = None
    try:
        for number in range(config["RENDITION_SLOTS"]):
            lock = connection.lock(
                f"likeness:rendition-slot:{number}",
                timeout=config["RENDITION_SLOT_SECONDS"],
                blocking=False,
            )
            if lock.acquire(token=uuid.uuid4().hex):
                held = lock
                break
    except redis.RedisError as exc:
        log.warning("rendition slots unavailable: %s", exc)
        raise Busy("new versions of images cannot be made just now; try again shortly") from None
    if held is None:
        raise Busy("every slot for making versions of images is busy; try again in a few seconds")
    try:
        yield
    finally:
        with contextlib.suppress(LockError, redis.RedisError):  # expired, or Redis went away
            held.release()
