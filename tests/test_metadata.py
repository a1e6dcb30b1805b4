"""What an upload records about an image (EXIF, colours) and what its renditions look like."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from PIL import ExifTags
from PIL import Image as PILImage
from PIL.TiffImagePlugin import IFDRational

from app.imaging import metadata, validate
from tests import samples


def upload_one(upload, team, data: bytes, name: str = "photo.jpg") -> dict:
    response = upload(team, [(data, name)])
    assert response.status_code == 201, response.json
    return response.json["items"][0]


def fetch(client, team, item: dict, variant: str) -> PILImage.Image:
    response = client.get(item["urls"][variant], headers=team.headers())
    assert response.status_code == 200
    return PILImage.open(io.BytesIO(response.data))


# --- EXIF ----------------------------------------------------------------------------------


def test_camera_exif_is_summarised_in_the_image_metadata(client, team_a, upload):
    item = upload_one(upload, team_a, samples.camera_jpeg(orientation=6, size=(80, 60)))
    metadata = item["metadata"]
    assert set(metadata) == {"exif", "colors", "custom"}
    assert metadata["custom"] == {}
    exif = metadata["exif"]
    assert exif["camera"] == "Canon EOS R5"  # the brand is not repeated
    assert (exif["make"], exif["model"]) == ("Canon", "Canon EOS R5")
    assert exif["lens"] == "RF24-105mm F4 L IS USM"
    assert exif["taken_at"] == "2023-07-14T10:22:31+02:00"
    assert exif["orientation"] == 6
    assert exif["gps"] == {"lat": -33.865033, "lon": 151.21, "alt": 12.5}
    rest = exif["rest"]
    assert rest["ExposureTime"] == 0.004 and rest["FNumber"] == 4
    assert rest["ISOSpeedRatings"] == 100 and rest["FocalLength"] == 50
    assert rest["Software"] == "Firmware 1.8.1"  # NULs gone
    # Vendor blobs, binary comments and serial numbers are not kept.
    for key in ("MakerNote", "UserComment", "BodySerialNumber"):
        assert key not in rest
    # Width and height are as the picture is seen: orientation 6 turns 80x60 on its side.
    assert (item["width"], item["height"]) == (60, 80)
    # The same metadata comes back on a later read.
    again = client.get(f"/api/v1/images/{item['id']}", headers=team_a.headers()).json
    assert again["metadata"] == metadata


def test_an_image_without_exif_has_empty_exif(upload, team_a):
    item = upload_one(upload, team_a, samples.encode(samples.halves(), "PNG"), "x.png")
    assert item["metadata"]["exif"] == {}


@pytest.mark.parametrize(
    ("sub", "base", "taken_at"),
    [
        ({"OffsetTimeOriginal": None}, {}, "2023-07-14T10:22:31"),  # local time, no zone
        ({"SubsecTimeOriginal": "25"}, {}, "2023-07-14T10:22:31.250000+02:00"),
        (
            {"DateTimeOriginal": "0000:00:00 00:00:00", "OffsetTimeOriginal": None},
            {"DateTime": "2020:01:02 03:04:05"},
            "2020-01-02T03:04:05",
        ),
        ({"DateTimeOriginal": "garbage"}, {}, None),
    ],
)
def test_taken_at_is_iso_8601(upload, team_a, sub, base, taken_at):
    exif = samples.camera_exif(1, base=base, sub=sub)
    item = upload_one(upload, team_a, samples.camera_jpeg(exif=exif))
    assert item["metadata"]["exif"].get("taken_at") == taken_at


@pytest.mark.parametrize(
    ("gps", "expected"),
    [
        (
            {"GPSLatitudeRef": "N", "GPSLongitudeRef": "W", "GPSAltitudeRef": b"\x01"},
            {"lat": 33.865033, "lon": -151.21, "alt": -12.5},  # below sea level
        ),
        ({"GPSAltitude": None, "GPSAltitudeRef": None}, {"lat": -33.865033, "lon": 151.21}),
        ({"GPSLatitude": (IFDRational(1, 0), IFDRational(0, 1), IFDRational(0, 1))}, None),
        ({"GPSLatitude": (IFDRational(95, 1), IFDRational(0, 1), IFDRational(0, 1))}, None),
    ],
)
def test_gps_is_decimal_degrees_with_altitude_when_present(upload, team_a, gps, expected):
    exif = samples.camera_exif(1, gps=gps)
    item = upload_one(upload, team_a, samples.camera_jpeg(exif=exif))
    assert item["metadata"]["exif"].get("gps") == expected


def test_exif_is_capped_json_safe_text(upload, team_a):
    long_text = "x\x00" * 5000
    base = {name: long_text for name in ("Software", "Artist", "Copyright", "ImageDescription")}
    base["Model"] = "bad\x1b[2J" + "m" * 1000
    exif = samples.camera_exif(1, base=base, sub={"LensMake": long_text})
    item = upload_one(upload, team_a, samples.camera_jpeg(exif=exif))
    exif_json = item["metadata"]["exif"]
    encoded = json.dumps(exif_json, ensure_ascii=False)
    assert len(encoded.encode()) <= 8192
    assert "\x00" not in encoded and "\x1b" not in encoded
    assert all(len(v) <= 256 for v in exif_json["rest"].values() if isinstance(v, str))
    assert exif_json["model"] == "bad[2J" + "m" * 250


def test_exif_rationals_become_numbers_and_bytes_are_dropped():
    exif = samples.camera_exif(
        1,
        sub={
            "ExposureBiasValue": IFDRational(-2, 3),
            "FocalLength": IFDRational(1, 0),  # a zero denominator is no value
            "LensSpecification": tuple(IFDRational(n, 1) for n in (24, 105, 4, 4)),
        },
        base={"Copyright": "\x00\x01(c) me\x00"},
    )
    parsed = PILImage.open(io.BytesIO(samples.camera_jpeg(exif=exif))).getexif()
    parsed[ExifTags.Base.Artist] = b"\xff\xfe binary"  # as an UNDEFINED-typed tag reads back
    rest = metadata.exif_metadata(parsed)["rest"]
    assert rest["ExposureBiasValue"] == -0.666667
    assert rest["LensSpecification"] == [24, 105, 4, 4]
    assert rest["Copyright"] == "(c) me"
    assert "FocalLength" not in rest and "Artist" not in rest
    json.dumps(rest, allow_nan=False)


# --- colours -------------------------------------------------------------------------------


def test_dominant_colours_are_hex_strings_most_dominant_first(upload, team_a):
    rng = np.random.default_rng(0)
    pixels = np.zeros((240, 320, 3), np.float32)
    pixels[:, :192] = (200, 30, 30)  # 60% red
    pixels[:, 192:288] = (30, 40, 200)  # 30% blue
    pixels[:, 288:] = (40, 180, 50)  # 10% green
    pixels += rng.normal(0, 10, pixels.shape)  # grain: still three colours, not six
    image = PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    colors = upload_one(upload, team_a, samples.encode(image, "PNG"), "c.png")["metadata"]["colors"]
    assert 3 <= len(colors) <= 5
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colors)
    rgb = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in colors]

    def near(colour, target):
        return sum((a - b) ** 2 for a, b in zip(colour, target, strict=True)) ** 0.5 < 40

    assert near(rgb[0], (200, 30, 30))
    assert near(rgb[1], (30, 40, 200))
    assert near(rgb[2], (40, 180, 50))


def test_dominant_colour_shares_ignore_transparent_pixels():
    image = PILImage.new("RGBA", (100, 100), (0, 255, 0, 0))  # invisible green
    image.paste((255, 0, 0, 255), (0, 0, 30, 100))
    colors = metadata.dominant_colors(image)
    assert colors == [("#ff0000", 1.0)]
    assert metadata.dominant_colors(PILImage.new("RGBA", (10, 10))) == []


# --- renditions ----------------------------------------------------------------------------


def assert_upright_and_bare(rendition: PILImage.Image) -> None:
    """Red on top, blue at the bottom (red | blue stored with orientation 6), no metadata."""
    rgb = rendition.convert("RGB")
    top = rgb.getpixel((rgb.width // 2, rgb.height // 8))
    bottom = rgb.getpixel((rgb.width // 2, rgb.height * 7 // 8))
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
    assert dict(rendition.getexif()) == {}
    for key in ("exif", "xmp", "XML:com.adobe.xmp", "icc_profile"):
        assert not rendition.info.get(key), key


def test_renditions_are_upright_and_carry_no_exif_gps_xmp_or_icc(client, team_a, upload, run_jobs):
    data = samples.camera_jpeg(orientation=6, size=(1600, 1200))
    source = PILImage.open(io.BytesIO(data))
    assert source.getexif().get_ifd(0x8825) and source.info.get("xmp")  # the input has them
    item = upload_one(upload, team_a, data)

    thumbnail = fetch(client, team_a, item, "thumbnail")
    assert thumbnail.format == "WEBP" and thumbnail.size == (240, 320)
    assert_upright_and_bare(thumbnail)

    run_jobs()
    preview = fetch(client, team_a, item, "preview")
    assert preview.format == "WEBP" and preview.size == (960, 1280)
    assert_upright_and_bare(preview)


def test_a_jpeg_is_decoded_at_a_reduced_scale_for_the_thumbnail():
    data = samples.jpeg(1, (2560, 1920))
    found = validate.analyse(io.BytesIO(data), validate.Limits(max_bytes=len(data)))
    # 1/4 scale (640x480) is the smallest DCT scale that still covers a 320px thumbnail.
    assert found.working.size == (640, 480)
    assert (found.width, found.height) == (2560, 1920)
    assert PILImage.open(io.BytesIO(found.thumbnail)).size == (320, 240)


def test_an_animated_gif_thumbnail_is_its_first_frame(client, team_a, upload):
    frames = [PILImage.new("RGB", (40, 40), c) for c in ("red", "blue", "blue")]
    data = samples.encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    item = upload_one(upload, team_a, data, "a.gif")
    assert (item["content_type"], item["width"], item["height"]) == ("image/gif", 40, 40)
    pixel = fetch(client, team_a, item, "thumbnail").convert("RGB").getpixel((20, 20))
    assert pixel[0] > 200 and pixel[2] < 60


def test_a_16_bit_image_keeps_its_tones(client, team_a, upload):
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (64, 1))
    data = samples.encode(PILImage.fromarray(ramp), "PNG")
    item = upload_one(upload, team_a, data, "deep.png")
    thumbnail = np.asarray(fetch(client, team_a, item, "thumbnail").convert("L"), np.float32)
    assert 100 < thumbnail.mean() < 155  # a ramp from black to white, not clipped to white
    assert thumbnail[:, :10].mean() < 40


def test_transparency_survives_in_the_thumbnail(client, team_a, upload):
    image = PILImage.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, 32, 64))
    item = upload_one(upload, team_a, samples.encode(image, "PNG"), "t.png")
    thumbnail = fetch(client, team_a, item, "thumbnail")
    assert thumbnail.mode == "RGBA"
    assert thumbnail.getpixel((60, 32))[3] == 0 and thumbnail.getpixel((4, 32))[3] == 255
