"""Is this file one whole, allowed, sane image? Format by content, size, pixels, frames, a full
decode; and what it is: dimensions, EXIF summary, dominant colours, a thumbnail.

Pure functions over a seekable binary stream; nothing here knows about Flask, the database or
storage. `measure` and `analyse` together are the whole upload validation (see ingest).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError, features

from app.errors import InvalidImage, ServiceError, TooLarge, UnsupportedMediaType
from app.imaging.metadata import ORIENTATION, dominant_colors, exif_metadata, read_exif
from app.imaging.render import encode_webp, make_rendition

log = logging.getLogger(__name__)

# Pillow format name -> the content type we store and serve. Only these decoders ever run on an
# upload (Image.open(formats=...)), so a file Pillow could read but we do not accept (EPS, PSD,
# ICO, ...) never reaches its parser.
ALLOWED_FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
}
if features.check("avif"):  # Pillow >= 11.2 built with libavif
    ALLOWED_FORMATS["AVIF"] = "image/avif"
try:  # optional: HEIC from phones, only when the deployment installed pillow-heif
    import pillow_heif  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    pass
else:  # pragma: no cover
    pillow_heif.register_heif_opener()
    ALLOWED_FORMATS["HEIF"] = "image/heic"

# Formats whose header states the frame count; the others are counted while decoding.
_DECLARED_FRAMES = {"PNG", "WEBP", "AVIF", "HEIF"}
# What a refused upload most likely is, by its first bytes, for a message a person can act on.
_SIGNATURES = [
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    (b"%PDF", "a PDF document"),
    (b"%!PS", "a PostScript/EPS file"),
    (b"\xc5\xd0\xd3\xc6", "a PostScript/EPS file"),
    (b"8BPS", "a Photoshop document"),
    (b"\x00\x00\x01\x00", "an icon file"),
    (b"PK\x03\x04", "a ZIP archive"),
]
_SVG = re.compile(rb"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*(<!DOCTYPE svg|<svg)", re.I | re.S)
_BOMB = (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning)
# The fewest bytes per pixel a whole file of each format can take: a quarter (or less) of the
# most compressible encodings measured (flat images of 4000x4000 to 10000x10000, the tightest
# settings; tests/samples.py most_compressible), and at most half of what the format's coding
# can reach in theory. A file below it cannot hold the pixels its header claims: truncated
# (libjpeg fills a JPEG cut off before a marker with grey, silently) or forged to make every
# later decode expensive.
_MIN_BYTES_PER_PIXEL = {
    "JPEG": 0.001,  # Huffman: >= 1 bit per 8x8 block (0.00195); flat grey measured 0.0039
    "PNG": 0.00006,  # deflate inflates at most 1032:1, 1-bit rows: 0.000121; measured 0.000126
    "GIF": 0.0001,  # 12-bit LZW codes of at most ~4096 pixels: 0.00037; measured 0.00086
    "WEBP": 0.00001,  # lossless, measured 0.000039 at 8000x8000 and 10000x10000
    "TIFF": 0.000015,  # CCITT group 4, 1-bit, measured 0.000061
    "BMP": 0.002,  # RLE runs of 255 pixels in 2 bytes: 0.0078
    "AVIF": 0.000004,  # measured 0.0000167 at 8000x8000
    "HEIF": 0.000004,  # HEVC codes a flat frame about as tightly as AV1
}
# Arithmetic-coded JPEG (SOF9-SOF15, rare but decodable) adapts to nearly nothing on a flat
# image: measured 0.0000118 (libjpeg-turbo's cjpeg -arithmetic, flat grey 4000x4000).
_MIN_BYTES_PER_PIXEL_ARITHMETIC_JPEG = 0.000003
_ARITHMETIC_SOF = {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What an upload may be; ingest builds it from configuration."""

    max_bytes: int
    max_pixels: int = 100_000_000
    max_frames: int = 100
    max_animation_pixels: int = 400_000_000
    thumbnail_size: int = 320


@dataclass
class Analysis:
    """What `analyse` learned about one valid image."""

    format: str
    content_type: str
    width: int  # upright: EXIF orientation applied
    height: int
    frames: int
    exif: dict[str, Any]
    colors: list[tuple[str, float]]  # up to five (hex, share of pixels), most dominant first
    thumbnail: bytes  # WebP, upright, no metadata
    working: PILImage.Image = field(repr=False)  # frame 0, upright, at least thumbnail-sized


def accepted_formats() -> str:
    return ", ".join(sorted(ALLOWED_FORMATS))


def measure(stream: BinaryIO, max_bytes: int) -> tuple[str, int]:
    """sha256 and size of the whole stream, refusing an empty one or one over `max_bytes`.

    Reads at most `max_bytes + 1` bytes, so a stream of any length is refused in bounded time.
    """
    digest, size = hashlib.sha256(), 0
    stream.seek(0)
    while chunk := stream.read(min(_CHUNK, max_bytes + 1 - size)):
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"the file is larger than {_megabytes(max_bytes)}")
        digest.update(chunk)
    stream.seek(0)
    if size == 0:
        raise InvalidImage("the file is empty (0 bytes): no image; send the image's contents")
    return digest.hexdigest(), size


def analyse(stream: BinaryIO, limits: Limits) -> Analysis:
    """Check that the stream is one whole, allowed, sane image and describe it.

    The format comes from the content alone. Dimensions and frame counts are checked from the
    header before any pixel is decoded; then every frame is decoded once (JPEGs at a reduced DCT
    scale, which still reads the whole entropy-coded stream, so truncation is caught).
    """
    with warnings.catch_warnings(), _unreadable_is_invalid():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that (also for a GIF frame or a
        # TIFF tile): a bomb either way.
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        return _analyse(stream, limits)


@contextlib.contextmanager
def _unreadable_is_invalid() -> Iterator[None]:
    """Whatever Pillow raises while it parses or decodes untrusted bytes means the file is not
    a valid image: a 422, never a 500.

    Pillow parses lazily (opening, EXIF, frame counts, seeking, loading all read the file) and
    its plugins raise almost anything on hostile input: ValueError for a text chunk that
    inflates too far, OSError, TypeError, IndexError, SyntaxError, struct.error... so the whole
    analysis is covered, not a list of calls and exception types. MemoryError is left alone:
    it says more about the server at that moment than about the file.
    """
    try:
        yield
    except ServiceError:
        raise
    except _BOMB as exc:
        raise InvalidImage(f"the image has too many pixels: {exc}") from exc
    except MemoryError:
        raise
    except Exception as exc:
        # Logged with its traceback: should this ever be a bug of ours, it shows up.
        log.info("refused an image that could not be read", exc_info=True)
        detail = str(exc) or type(exc).__name__
        raise InvalidImage(f"the image is damaged or malformed: {detail}"[:500]) from exc


def _analyse(stream: BinaryIO, limits: Limits) -> Analysis:
    image = open_image(stream)
    fmt = _format(image)
    full_size = image.size
    pixels = full_size[0] * full_size[1]
    if pixels > limits.max_pixels:
        raise InvalidImage(
            f"the image has too many pixels ({full_size[0]}x{full_size[1]} = {pixels:,}; "
            f"the limit is {limits.max_pixels:,})"
        )
    _check_data_can_hold(stream, fmt, full_size)
    if fmt in _DECLARED_FRAMES:
        frames = getattr(image, "n_frames", 1)
        _check_frames(frames, frames * pixels, limits)

    side = limits.thumbnail_size
    working = _decode_first_frame(image, (side, side))
    exif = exif_metadata(read_exif(image))
    frames = 1
    # An MPO is a JPEG followed by helper pictures (depth maps, previews): only the first counts.
    if getattr(image, "is_animated", False) and image.format != "MPO":
        if working is image:
            working = image.copy()  # keep frame 0 while the others are decoded
        frames = _decode_other_frames(image, limits)

    orientation = exif.get("orientation", 1)
    width, height = full_size[::-1] if orientation in (5, 6, 7, 8) else full_size
    thumb = make_rendition(working, side)
    return Analysis(
        format=fmt,
        content_type=ALLOWED_FORMATS[fmt],
        width=width,
        height=height,
        frames=frames,
        exif=exif,
        colors=dominant_colors(thumb),
        # method 2: half the encoding time of 4 for files ~5% larger, on the upload's clock.
        thumbnail=encode_webp(thumb, quality=80, method=2),
        working=working,
    )


def open_image(stream: BinaryIO) -> PILImage.ImageFile.ImageFile:
    """Identify the stream by content among the allowed formats; no pixel is decoded yet."""
    stream.seek(0)
    try:
        return PILImage.open(stream, formats=list(ALLOWED_FORMATS))
    except _BOMB as exc:
        raise InvalidImage(f"the image has too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        stream.seek(0)
        kind = _sniff(stream.read(512))
        if kind in ALLOWED_FORMATS:
            raise InvalidImage(f"the {kind} file is damaged: its header cannot be read") from exc
        what = (
            f"{kind} is not accepted" if kind else "this file is not an image in an accepted format"
        )
        message = f"{what}; send one of {accepted_formats()}"
        raise UnsupportedMediaType(message) from exc


def open_working(stream: BinaryIO, side: int) -> PILImage.Image:
    """Frame 0, decoded no smaller than `side` on its short edge where the format allows
    (JPEG DCT scaling), upright, in RGB or RGBA. For the worker: no limits are checked."""
    with _unreadable_is_invalid():
        return _decode_first_frame(open_image(stream), (side, side))


def pixel_digest(stream: BinaryIO) -> str:
    """sha256 of frame 0's decoded pixels at full size, upright, with its dimensions: the same
    for the same picture in different bytes (metadata stripped or edited, re-saved losslessly,
    another lossless format), different as soon as one pixel differs. An alpha channel that is
    opaque everywhere counts as none. For the worker: no limits are checked."""
    with _unreadable_is_invalid():
        image = open_image(stream)
        image.load()  # the whole image: a reduced JPEG decode could hide a changed detail
        if read_exif(image).get(ORIENTATION, 1) in range(2, 9):
            image = ImageOps.exif_transpose(image)
        image = _normalise_mode(image)
        if image.mode == "RGBA" and image.getchannel("A").getextrema() == (255, 255):
            image = image.convert("RGB")
        digest = hashlib.sha256(f"{image.mode} {image.width}x{image.height}\n".encode())
        band = max(1, _CHUNK * 8 // max(1, image.width * len(image.getbands())))
        for top in range(0, image.height, band):  # a band of rows at a time: no full copy
            digest.update(
                image.crop((0, top, image.width, min(image.height, top + band))).tobytes()
            )
        return digest.hexdigest()


def _format(image: PILImage.Image) -> str:
    # Pillow reports JPEGs carrying an MP extension (most phone photos) as "MPO".
    return "JPEG" if image.format == "MPO" else image.format


def _sniff(head: bytes) -> str | None:
    head = head.removeprefix(b"\xef\xbb\xbf")
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            return kind
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif", b"ftyphevc"):
        return "a HEIC/AVIF image (this server has no decoder for it)"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if _SVG.match(head):
        return "an SVG drawing"
    return None


def _check_frames(frames: int, total_pixels: int, limits: Limits) -> None:
    if frames > limits.max_frames:
        raise InvalidImage(
            f"the animation has too many frames ({frames}; the limit is {limits.max_frames})"
        )
    if total_pixels > limits.max_animation_pixels:
        raise InvalidImage(
            f"the animation is too large to decode ({frames} frames, {total_pixels:,} pixels "
            f"in all; the limit is {limits.max_animation_pixels:,})"
        )


def _check_data_can_hold(stream: BinaryIO, fmt: str, size: tuple[int, int]) -> None:
    """Refuse a file too small to hold the pixels its header claims (see _MIN_BYTES_PER_PIXEL),
    and a JPEG of more scans than any encoder makes (see MAX_JPEG_SCANS)."""
    position = stream.tell()
    file_size = stream.seek(0, io.SEEK_END)
    floor = _MIN_BYTES_PER_PIXEL.get(fmt, 0.0)
    if fmt == "JPEG" and _jpeg_frame_marker(stream) in _ARITHMETIC_SOF:
        floor = _MIN_BYTES_PER_PIXEL_ARITHMETIC_JPEG
    if fmt == "JPEG" and (scans := _jpeg_scan_count(stream, MAX_JPEG_SCANS)) > MAX_JPEG_SCANS:
        raise InvalidImage(
            f"the JPEG has more than {MAX_JPEG_SCANS} scans ({scans} counted so far); encoders "
            "make about 10: re-save it as a baseline or ordinary progressive JPEG"
        )
    stream.seek(position)
    need = math.ceil(size[0] * size[1] * floor)
    if file_size < need:
        raise InvalidImage(
            f"the {fmt} file is {file_size:,} bytes, too small to hold the {size[0]}x{size[1]} "
            f"pixels its header claims (that takes at least {need:,} bytes): it is truncated "
            "or its header is wrong"
        )


def _jpeg_frame_marker(stream: BinaryIO) -> int | None:
    """The JPEG's start-of-frame marker (0xC0-0xCF but DHT, JPG, DAC), or None if not found
    among the first segments. Pillow reads it but does not say which one it was."""
    stream.seek(2)  # past SOI
    for _ in range(256):  # APPn, COM, DQT, DHT... come first; a real file has a dozen
        head = stream.read(2)
        for _ in range(16):  # fill bytes (0xFF) may pad a marker
            if head[1:] != b"\xff":
                break
            head = head[1:] + stream.read(1)
        if len(head) < 2 or head[0] != 0xFF:
            return None
        if 0xC0 <= head[1] <= 0xCF and head[1] not in (0xC4, 0xC8, 0xCC):
            return head[1]
        length = stream.read(2)
        if len(length) < 2:
            return None
        stream.seek(int.from_bytes(length, "big") - 2, io.SEEK_CUR)
    return None


def _jpeg_scan_count(stream: BinaryIO, limit: int) -> int:
    """How many scans (SOS segments) the first picture of a JPEG has, counted up to `limit` + 1.

    Segments are walked by their lengths; a scan's entropy-coded data runs to the next marker,
    a 0xFF followed by neither 0x00 (a stuffed 0xFF), a restart marker (0xD0-0xD7) nor fill."""
    stream.seek(2)  # past SOI
    scans, data = 0, b""
    while scans <= limit:
        head = stream.read(2)
        while head[1:] == b"\xff":  # fill bytes may pad a marker
            head = head[1:] + stream.read(1)
        if len(head) < 2 or head[0] != 0xFF or head[1] == 0xD9:  # end, EOI, or not a marker
            return scans
        length = stream.read(2)
        if len(length) < 2:
            return scans
        stream.seek(int.from_bytes(length, "big") - 2, io.SEEK_CUR)
        if head[1] != 0xDA:
            continue
        scans += 1
        while True:  # the scan's data, a chunk at a time, to the marker that ends it
            data = stream.read(_CHUNK)
            if not data:
                return scans
            found = _END_OF_SCAN.search(data)
            if found:
                stream.seek(found.start() - len(data), io.SEEK_CUR)
                break
            if data.endswith(b"\xff"):  # a marker may straddle two chunks
                stream.seek(-1, io.SEEK_CUR)
                if len(data) == 1:
                    return scans
    return scans


# A marker after entropy-coded data: 0xFF, then a byte that is not 0x00, 0xD0-0xD7 or 0xFF.
_END_OF_SCAN = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
# Each scan of a progressive JPEG walks the whole image again: a file of thousands of tiny
# scans (a few hundred KB) kept a decoder busy for minutes. Encoders make about ten (libjpeg's
# progressive script: 10; mozjpeg's optimised ones: under 20).
MAX_JPEG_SCANS = 100


def _decode_first_frame(image: PILImage.ImageFile.ImageFile, size: tuple[int, int]):
    """Frame 0, upright, RGB(A). Copies are made only where needed: this can be 100 M pixels."""
    try:
        if _format(image) == "JPEG":
            # DCT scaling (1/2, 1/4, 1/8) to the smallest size still >= `size`: most of the
            # decoding work disappears, but every byte of the entropy-coded data is still read.
            image.draft(None, size)
        image.load()
        if read_exif(image).get(ORIENTATION, 1) in range(2, 9):
            image = ImageOps.exif_transpose(image)
        return _normalise_mode(image)
    except _BOMB as exc:
        raise InvalidImage(f"the image has too many pixels: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(f"the image is damaged or truncated: {exc}") from exc


def _decode_other_frames(image: PILImage.ImageFile.ImageFile, limits: Limits) -> int:
    """Decode frames 1..n once, counting them; refuse as soon as a limit is passed."""
    frames, decoded = 1, image.width * image.height
    while True:
        try:
            image.seek(frames)
        except EOFError:
            return frames
        except _BOMB as exc:
            raise InvalidImage(f"frame {frames + 1} has too many pixels: {exc}") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise InvalidImage(f"frame {frames + 1} is damaged: {exc}") from exc
        frames += 1
        decoded += image.width * image.height
        _check_frames(frames, decoded, limits)
        try:
            image.load()
        except _BOMB as exc:
            raise InvalidImage(f"frame {frames} has too many pixels: {exc}") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise InvalidImage(f"frame {frames} is damaged or truncated: {exc}") from exc


def _normalise_mode(image: PILImage.Image) -> PILImage.Image:
    """RGB, or RGBA where the image has transparency; 16-bit and float images scaled to 8."""
    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float32)
        if values.size and values.max() > 255:
            values = values / 257.0  # 16-bit samples
        image = PILImage.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    try:
        return image.convert("RGBA" if has_alpha else "RGB")
    except ValueError as exc:
        raise InvalidImage(f"the image's colour mode {image.mode} is not supported") from exc


def _megabytes(size: int) -> str:
    mb = size / (1024 * 1024)
    return f"{mb:g} MB" if mb >= 1 else f"{size:,} bytes"
