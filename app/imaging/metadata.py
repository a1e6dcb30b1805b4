"""What an image says about itself: a JSON-safe EXIF summary, and its dominant colours."""

from __future__ import annotations

import json
import logging
import math
import re
import unicodedata
from datetime import datetime
from typing import Any

import numpy as np
from PIL import ExifTags
from PIL import Image as PILImage

log = logging.getLogger(__name__)

_TAG = ExifTags.Base
_GPS = ExifTags.GPS
ORIENTATION = _TAG.Orientation

# Kept verbatim-ish under "rest": what photographers look at. Serial numbers, owner names,
# MakerNote, thumbnails and anything binary are left out on purpose.
_REST_TAGS = [
    _TAG.ExposureTime,
    _TAG.FNumber,
    _TAG.ISOSpeedRatings,
    _TAG.FocalLength,
    _TAG.FocalLengthIn35mmFilm,
    _TAG.ExposureProgram,
    _TAG.ExposureBiasValue,
    _TAG.ExposureMode,
    _TAG.MeteringMode,
    _TAG.Flash,
    _TAG.WhiteBalance,
    _TAG.LightSource,
    _TAG.SceneCaptureType,
    _TAG.DigitalZoomRatio,
    _TAG.SubjectDistance,
    _TAG.ShutterSpeedValue,
    _TAG.ApertureValue,
    _TAG.MaxApertureValue,
    _TAG.BrightnessValue,
    _TAG.Contrast,
    _TAG.Saturation,
    _TAG.Sharpness,
    _TAG.ColorSpace,
    _TAG.LensMake,
    _TAG.LensSpecification,
    _TAG.Software,
    _TAG.Artist,
    _TAG.Copyright,
    _TAG.ImageDescription,
]
MAX_TEXT = 256  # characters per string value
MAX_REST_BYTES = 4096
MAX_EXIF_BYTES = 8192


def read_exif(image: PILImage.Image) -> PILImage.Exif:
    try:
        return image.getexif()
    except Exception:  # metadata is best effort; a broken EXIF block does not spoil the image
        log.debug("unreadable EXIF", exc_info=True)
        return PILImage.Exif()


def exif_metadata(exif: PILImage.Exif | None) -> dict[str, Any]:
    """A small, JSON-safe summary of EXIF: camera, lens, taken_at, orientation, gps, rest."""
    if not exif:
        return {}
    try:
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        gps_ifd = exif.get_ifd(ExifTags.IFD.GPSInfo)
    except Exception:
        log.debug("unreadable EXIF sub-IFD", exc_info=True)
        sub, gps_ifd = {}, {}
    tags = {**dict(exif), **sub}
    out: dict[str, Any] = {}
    make, model = _text(tags.get(_TAG.Make)), _text(tags.get(_TAG.Model))
    if make or model:
        out["camera"] = _camera(make, model)
        if make:
            out["make"] = make
        if model:
            out["model"] = model
    if lens := _text(tags.get(_TAG.LensModel)):
        out["lens"] = lens
    if taken_at := _taken_at(tags):
        out["taken_at"] = taken_at
    orientation = tags.get(_TAG.Orientation)
    if isinstance(orientation, int) and 1 <= orientation <= 8:
        out["orientation"] = orientation
    if gps := _gps(gps_ifd):
        out["gps"] = gps
    if rest := _rest(tags):
        out["rest"] = rest
    if len(json.dumps(out)) > MAX_EXIF_BYTES:  # only absurdly long strings could get here
        out.pop("rest", None)
    return out


def _camera(make: str | None, model: str | None) -> str:
    if make and model:
        # "Canon" + "Canon EOS R5", "NIKON CORPORATION" + "NIKON D850": do not repeat the brand.
        if model.lower().startswith(make.split()[0].lower()):
            return model
        return f"{make} {model}"
    return make or model or ""


def _taken_at(tags: dict[int, Any]) -> str | None:
    for when, offset, subsec in (
        (_TAG.DateTimeOriginal, _TAG.OffsetTimeOriginal, _TAG.SubsecTimeOriginal),
        (_TAG.DateTimeDigitized, _TAG.OffsetTimeDigitized, _TAG.SubsecTimeDigitized),
        (_TAG.DateTime, _TAG.OffsetTime, _TAG.SubsecTime),
    ):
        text = _text(tags.get(when))
        if not text:
            continue
        try:
            moment = datetime.strptime(text[:19].replace("-", ":"), "%Y:%m:%d %H:%M:%S")
        except ValueError:
            continue  # "0000:00:00 00:00:00" and other placeholders
        fraction = _text(tags.get(subsec)) or ""
        if fraction.isdigit():
            moment = moment.replace(microsecond=int(fraction[:6].ljust(6, "0")))
        result = moment.isoformat()
        zone = _text(tags.get(offset)) or ""
        if re.fullmatch(r"[+-](0\d|1[0-4]):[0-5]\d", zone):
            result += zone
        return result  # without an offset EXIF time is local time, and ISO 8601 says so
    return None


def _gps(ifd: dict[int, Any]) -> dict[str, float] | None:
    lat = _degrees(ifd.get(_GPS.GPSLatitude), ifd.get(_GPS.GPSLatitudeRef), "S")
    lon = _degrees(ifd.get(_GPS.GPSLongitude), ifd.get(_GPS.GPSLongitudeRef), "W")
    if lat is None or lon is None or abs(lat) > 90 or abs(lon) > 180:
        return None
    gps = {"lat": round(lat, 6), "lon": round(lon, 6)}
    altitude = _number(ifd.get(_GPS.GPSAltitude))
    if altitude is not None:
        ref = ifd.get(_GPS.GPSAltitudeRef)
        below = ref in (1, b"\x01") or (isinstance(ref, bytes) and ref[:1] == b"\x01")
        gps["alt"] = round(-altitude if below else altitude, 2)
    return gps


def _degrees(value: Any, ref: Any, negative: str) -> float | None:
    if not isinstance(value, tuple) or not 1 <= len(value) <= 3:
        return None
    parts = [_number(v) for v in value]
    if any(p is None for p in parts):
        return None
    degrees = sum(p / 60**i for i, p in enumerate(parts))
    ref = ref.decode("ascii", "ignore") if isinstance(ref, bytes) else ref
    return -degrees if isinstance(ref, str) and ref.strip().upper() == negative else degrees


def _rest(tags: dict[int, Any]) -> dict[str, Any]:
    rest: dict[str, Any] = {}
    size = 2
    for tag in _REST_TAGS:
        value = _json_value(tags.get(tag))
        if value is None or value == "" or value == []:
            continue
        entry = len(json.dumps({tag.name: value})) - 1
        if size + entry > MAX_REST_BYTES:
            continue
        rest[tag.name] = value
        size += entry
    return rest


def _json_value(value: Any) -> Any:
    """Numbers, text and short lists of them; bytes and anything else are dropped."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, tuple | list):
        items = [_json_value(v) for v in value[:16]]
        return [v for v in items if v is not None] or None
    return _number(value)


def _number(value: Any) -> float | int | None:
    """A finite number from an int, float or EXIF rational (IFDRational); None otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    if not math.isfinite(number):
        return None
    return int(number) if number.is_integer() and abs(number) < 2**53 else round(number, 6)


def _text(value: Any) -> str | None:
    """A clean display string: no NULs, control or surrogate characters, at most MAX_TEXT."""
    if isinstance(value, bytes):
        return None
    if not isinstance(value, str):
        return None
    value = "".join(ch for ch in value if unicodedata.category(ch) not in ("Cc", "Cs", "Co"))
    return value.strip()[:MAX_TEXT] or None


def dominant_colors(image: PILImage.Image, count: int = 5) -> list[tuple[str, float]]:
    """Up to `count` (hex colour, share of opaque pixels), most dominant first.

    Median cut refined by k-means over a copy at most 48 pixels wide (about 2,000 pixels is
    plenty for colours that cover a visible share), then clusters closer than a just-visible
    difference merged, so one colour with grain is not reported twice.
    """
    small = image.copy()
    small.thumbnail((48, 48), PILImage.Resampling.BOX)
    pixels = np.asarray(small.convert("RGBA")).reshape(-1, 4)
    pixels = pixels[pixels[:, 3] >= 128, :3]
    if not len(pixels):
        return []
    strip = PILImage.fromarray(np.ascontiguousarray(pixels.reshape(1, -1, 3)), "RGB")
    quantised = strip.quantize(
        count + 3,
        method=PILImage.Quantize.MEDIANCUT,
        kmeans=len(pixels) // 200 + 1,  # iterate until under 0.5% of pixels change cluster
        dither=PILImage.Dither.NONE,
    )
    palette = np.array(quantised.getpalette()[: 3 * 256], dtype=np.float64).reshape(-1, 3)
    clusters = sorted(
        ([float(n), palette[i]] for n, i in quantised.getcolors() or []), key=lambda c: -c[0]
    )
    merged: list[list] = []
    for weight, colour in clusters:
        for other in merged:
            if np.linalg.norm(other[1] - colour) < 24:
                total = other[0] + weight
                other[1] = (other[1] * other[0] + colour * weight) / total
                other[0] = total
                break
        else:
            merged.append([weight, colour])
    merged.sort(key=lambda c: -c[0])
    total = float(len(pixels))
    return [
        ("#" + "".join(f"{round(v):02x}" for v in colour), round(weight / total, 4))
        for weight, colour in merged[:count]
    ]
