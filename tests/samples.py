"""Images made on the spot for tests: deterministic, no downloads."""

from __future__ import annotations

import base64
import functools
import io

import numpy as np
from PIL import Image, ImageDraw


def photo(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A photo-like picture: a colour gradient, shapes and grain, different for every seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0, 255, 3)
    tilt = rng.uniform(-0.4, 0.4, (3, 2))
    channels = [base[c] + tilt[c, 0] * x * 640 / w + tilt[c, 1] * y * 480 / h for c in range(3)]
    pixels = np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        x1, y1 = x0 + rng.uniform(w / 20, w / 3), y0 + rng.uniform(h / 20, h / 3)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        else:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
    grain = rng.normal(0, 6, (h, w, 3))
    pixels = np.clip(np.asarray(image, np.float32) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def jpeg(seed: int, size: tuple[int, int] = (640, 480), quality: int = 90) -> bytes:
    return encode(photo(seed, size), "JPEG", quality=quality)


def resized_copy(data: bytes, factor: float = 0.5, quality: int = 60) -> bytes:
    """The same picture made smaller and re-compressed: what a near-duplicate looks like."""
    image = Image.open(io.BytesIO(data))
    small = image.resize((int(image.width * factor), int(image.height * factor)), Image.LANCZOS)
    return encode(small, "JPEG", quality=quality)


# --- files for the ingest and metadata tests ------------------------------------------------


def halves(size: tuple[int, int] = (80, 60), first="red", second="blue") -> Image.Image:
    """Left half `first`, right half `second`: which way up a rendition is shows at a glance."""
    image = Image.new("RGB", size, first)
    image.paste(second, (size[0] // 2, 0, size[0], size[1]))
    return image


def camera_exif(
    orientation: int = 1,
    base: dict | None = None,
    sub: dict | None = None,
    gps: dict | None = None,
) -> Image.Exif:
    """EXIF as a phone or camera writes it, GPS and a MakerNote included.

    `base` (IFD0), `sub` (the Exif IFD) and `gps` update the defaults by ExifTags.Base or
    ExifTags.GPS name; a value of None removes that tag.
    """
    from PIL import ExifTags
    from PIL.TiffImagePlugin import IFDRational

    overrides = (base or {}, sub or {}, gps or {})
    base = {
        "Make": "Canon",
        "Model": "Canon EOS R5",
        "Orientation": orientation,
        "Software": "Firmware 1.8.1\x00\x00",
    }
    sub = {
        "DateTimeOriginal": "2023:07:14 10:22:31",
        "OffsetTimeOriginal": "+02:00",
        "LensModel": "RF24-105mm F4 L IS USM",
        "ExposureTime": IFDRational(1, 250),
        "FNumber": IFDRational(4, 1),
        "ISOSpeedRatings": 100,
        "FocalLength": IFDRational(50, 1),
        "MakerNote": b"\x00\x01vendor-private\xff",
        "UserComment": b"ASCII\x00\x00\x00private note",
        "BodySerialNumber": "0123456789",
    }
    gps = {
        "GPSLatitudeRef": "S",
        "GPSLatitude": (IFDRational(33, 1), IFDRational(51, 1), IFDRational(5412, 100)),
        "GPSLongitudeRef": "E",
        "GPSLongitude": (IFDRational(151, 1), IFDRational(12, 1), IFDRational(36, 1)),
        "GPSAltitudeRef": b"\x00",
        "GPSAltitude": IFDRational(125, 10),
    }
    for group, changes in zip((base, sub, gps), overrides, strict=True):
        for name, value in changes.items():
            if value is None:
                group.pop(name, None)
            else:
                group[name] = value
    exif = Image.Exif()
    for name, value in base.items():
        exif[ExifTags.Base[name]] = value
    exif_ifd = exif.get_ifd(ExifTags.IFD.Exif)
    for name, value in sub.items():
        exif_ifd[ExifTags.Base[name]] = value
    gps_ifd = exif.get_ifd(ExifTags.IFD.GPSInfo)
    for name, value in gps.items():
        gps_ifd[ExifTags.GPS[name]] = value
    return exif


def camera_jpeg(
    orientation: int = 6, size: tuple[int, int] = (80, 60), exif: Image.Exif | None = None
) -> bytes:
    """A JPEG whose stored pixels are red | blue, with camera EXIF (GPS included), an XMP
    packet with a location and an ICC profile: everything a rendition must not carry."""
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
        b'xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="33,51.902S"/>'
        b"</rdf:RDF></x:xmpmeta>"
    )
    return encode(
        halves(size),
        "JPEG",
        quality=95,
        exif=exif if exif is not None else camera_exif(orientation),
        icc_profile=icc,
        xmp=xmp,
    )


def padded(data: bytes, total: int) -> bytes:
    """The same image made exactly `total` bytes long with trailing bytes decoders ignore."""
    assert len(data) <= total
    return data + b"\x00" * (total - len(data))


def animation(fmt: str, frames: int, size: tuple[int, int] = (16, 16)) -> bytes:
    """An animated GIF, WebP or PNG (or a multi-page TIFF) with `frames` distinct frames."""
    images = [
        Image.new("RGB", size, (i * 37 % 256, i * 91 % 256, i * 13 % 256)) for i in range(frames)
    ]
    return encode(images[0], fmt, save_all=True, append_images=images[1:], duration=40, loop=0)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG that declares `width` x `height` RGB pixels: a bomb's header,
    followed by a compressed run of zeros (a few KB that would inflate to gigabytes)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (4 * 1024 * 1024), 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def gif_header(width: int, height: int) -> bytes:
    """A tiny GIF whose screen and only frame declare `width` x `height` pixels."""
    import struct

    return (
        b"GIF89a"
        + struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # global colour table of 2
        + b"\x00\x00\x00\xff\xff\xff"
        + b","
        + struct.pack("<HHHHB", 0, 0, width, height, 0)
        + b"\x02\x02\x44\x01\x00"  # LZW: min code size 2, one sub-block
        + b";"
    )


def psd(size: tuple[int, int] = (4, 3)) -> bytes:
    """A minimal, valid Photoshop document (Pillow can read it; uploads must not)."""
    import struct

    w, h = size
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, h, w, 8, 3)
    sections = struct.pack(">I", 0) * 3  # colour mode data, image resources, layers
    return header + sections + struct.pack(">H", 0) + bytes(3 * w * h)


def svg() -> bytes:
    return (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" '
        b'height="10"><rect width="10" height="10" fill="red"/></svg>'
    )


@functools.cache
def png_with_compressed_chunk(kind: bytes = b"zTXt", inflated: int = 100 * 1024 * 1024) -> bytes:
    """A small, valid PNG with a `zTXt` or `iCCP` chunk before its pixels that inflates to
    `inflated` bytes (about 100 KB that expands to 100 MB by default): Pillow refuses such a
    chunk with a ValueError while it opens the file."""
    import zlib

    packer = zlib.compressobj(9)
    block = b"\x00" * (1024 * 1024)
    compressed = b"".join(packer.compress(block) for _ in range(inflated // len(block)))
    compressed += packer.flush()
    name = b"Comment" if kind == b"zTXt" else b"icc"
    chunk = _png_chunk(kind, name + b"\x00\x00" + compressed)
    png = encode(photo(1, (64, 48)), "PNG")
    header_end = 8 + 25  # the signature and the IHDR chunk
    return png[:header_end] + chunk + png[header_end:]


def mutations(data: bytes, count: int, seed: int = 0) -> list[bytes]:
    """`count` copies of `data`, each with a few bytes overwritten at random (deterministic):
    the damaged and hostile files a decoder meets in the wild."""
    import random

    rng = random.Random(seed)
    damaged = []
    for _ in range(count):
        copy = bytearray(data)
        for _ in range(rng.choice((1, 2, 4, 8))):
            copy[rng.randrange(len(copy))] = rng.randrange(256)
        damaged.append(bytes(copy))
    return damaged


def jpeg_claiming(size: tuple[int, int]) -> bytes:
    """A whole 16x16 JPEG whose frame header claims `size`: under 1 KB that Pillow decodes
    without complaint (libjpeg fills the missing blocks with grey and only warns)."""
    import struct

    data = bytearray(encode(Image.new("RGB", (16, 16), "red"), "JPEG", quality=90))
    frame = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, frame + 5, size[1], size[0])
    return bytes(data)


def progressive_jpeg_of_scans(scans: int, side: int = 1024) -> bytes:
    """A valid grey progressive JPEG of `side` x `side` pixels (a multiple of 128) and one DC
    scan followed by `scans - 1` AC scans of nothing but end-of-band runs: about 10 bytes a
    scan, and each one a walk over every block for the decoder."""
    import struct

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload

    def entropy(bits: str) -> bytes:  # padded with ones, 0xFF stuffed
        bits += "1" * (-len(bits) % 8)
        out = bytearray()
        for at in range(0, len(bits), 8):
            out.append(int(bits[at : at + 8], 2))
            if out[-1] == 0xFF:
                out.append(0)
        return bytes(out)

    blocks = (side // 8) ** 2
    assert side % 128 == 0, "whole runs of 2^14 blocks"
    data = b"\xff\xd8" + segment(0xDB, b"\x00" + b"\x01" * 64)
    data += segment(0xC2, struct.pack(">BHHB", 8, side, side, 1) + b"\x01\x11\x00")
    # One DC code (category 0) and one AC code (EOB14: a run of 2^14 + 14 bits of blocks).
    data += segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")
    data += segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\xe0")
    data += segment(0xDA, b"\x01\x01\x00\x00\x00\x00") + entropy("0" * blocks)
    ac = entropy(("0" + "0" * 14) * (blocks // 2**14))
    data += (segment(0xDA, b"\x01\x01\x00\x01\x3f\x00") + ac) * (scans - 1)
    return data + b"\xff\xd9"


# A flat grey 4000x4000 JPEG in arithmetic coding (libjpeg-turbo's `cjpeg -arithmetic`, which
# Pillow cannot write): 189 bytes for 16 M pixels, and valid.
ARITHMETIC_JPEG_4000 = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wCDEAMgAiYCWAK8AlgB9AMgArwCigK8A4QDUgMgA7YEsAfQBRQEsARMBEwE"
    "sAmSBtYHOgWqB9ALVAn2C+oLuAsiCfYK8Aq+DIAOEBH4DzwMgA1IEP4Negq+CvAPoBVKD9IQ/hKOEyQUHhRQFB4M"
    "HA8KFhIXohXgE4gXcBH4E7oUHhNW/8kACwgPoA+gAQERAP/MAAYAEBAF/9oACAEBAAA/AB63gP/Z"
)


def most_compressible(fmt: str, size: tuple[int, int] = (4000, 4000)) -> bytes:
    """A flat image in the tightest valid encoding Pillow writes for `fmt`: the smallest
    file a real image of `size` pixels can be."""
    flat_grey = Image.new("L", size, 128)
    black_and_white = Image.new("1", size, 0)
    if fmt == "JPEG":
        return encode(flat_grey, "JPEG", quality=1, optimize=True)
    if fmt == "PNG":
        return encode(black_and_white, "PNG", compress_level=9)
    if fmt == "GIF":
        return encode(black_and_white, "GIF")
    if fmt == "WEBP":
        return encode(flat_grey.convert("RGB"), "WEBP", lossless=True)
    if fmt == "TIFF":
        return encode(black_and_white, "TIFF", compression="group4")
    if fmt == "BMP":
        return encode(black_and_white, "BMP")
    if fmt == "AVIF":
        return encode(flat_grey.convert("RGB"), "AVIF", quality=1, speed=10)
    raise ValueError(fmt)
