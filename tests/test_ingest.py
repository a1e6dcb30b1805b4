"""Upload validation, as a client meets it: what is refused, with which status, and that a
refusal leaves nothing behind."""

from __future__ import annotations

import io
import os
import tempfile
import time

import pytest
from PIL import Image as PILImage
from PIL import ImageFile, features

from app.errors import ServiceError
from app.extensions import db
from app.imaging.validate import InvalidImage, TooLarge, UnsupportedMediaType
from app.models import Image
from app.services.images import clean_filename
from app.services.ingest import validate
from app.views import http_status
from tests import samples

MB = 1024 * 1024
ONE_MB_LIMIT = {"MAX_UPLOAD_MB": 1, "MAX_CONTENT_LENGTH": MB + 64 * 1024}


def post(client, team, content: bytes, filename: str, content_type: str | None = None):
    part = (
        (io.BytesIO(content), filename, content_type)
        if content_type
        else (
            io.BytesIO(content),
            filename,
        )
    )
    return client.post(
        "/api/v1/images",
        data={"file": [part]},
        headers=team.headers(),
        content_type="multipart/form-data",
    )


def assert_refused(response, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.json
    error = response.json["error"]
    assert error["code"] == code
    for word in words:
        assert word in error["message"], error["message"]


def stored_files(instance_path) -> list:
    storage = instance_path / "storage"
    return [p for p in storage.rglob("*") if p.is_file()] if storage.exists() else []


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Point the process's temp folder (werkzeug spools uploads there) at an empty folder."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


class CountingStream(io.RawIOBase):
    """A request body of `size` bytes that counts what the server read."""

    def __init__(self, size: int):
        self.size, self.read_bytes = size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = int(min(len(buffer), self.size - self.read_bytes))
        buffer[:n] = b"x" * n
        self.read_bytes += n
        return n


# --- size --------------------------------------------------------------------------------------


@pytest.mark.parametrize("config_overrides", [ONE_MB_LIMIT])
def test_a_file_of_exactly_the_limit_is_accepted_and_one_byte_more_is_413(
    app, client, team_a, instance_path
):
    at_limit = samples.padded(samples.jpeg(1), MB)
    accepted = post(client, team_a, at_limit, "at-limit.jpg")
    assert accepted.status_code == 201
    assert accepted.json["items"][0]["size_bytes"] == MB

    over = samples.padded(samples.jpeg(2), MB + 1)
    assert_refused(post(client, team_a, over, "over.jpg"), 413, "too_large", "1 MB")
    with app.app_context():
        assert db.session.query(Image).count() == 1


@pytest.mark.parametrize("config_overrides", [ONE_MB_LIMIT])
def test_a_body_over_max_content_length_is_refused_before_it_is_read(app, client, team_a):
    body = CountingStream(app.config["MAX_CONTENT_LENGTH"] + 1)
    response = client.post(
        "/api/v1/images",
        content_type="multipart/form-data; boundary=x",
        headers=team_a.headers(),
        environ_overrides={"wsgi.input": body, "CONTENT_LENGTH": str(body.size)},
    )
    assert_refused(response, 413, "too_large")
    assert body.read_bytes == 0


@pytest.mark.parametrize("config_overrides", [ONE_MB_LIMIT])
def test_a_chunked_body_without_content_length_is_cut_off_at_the_limit(app, client, team_a):
    # What a WSGI server that de-chunks (werkzeug's, gunicorn) hands the app: no
    # Content-Length, and wsgi.input_terminated to say the stream ends by itself.
    # Far longer than the limit (endless, in effect: a server without the bound reads it all).
    body = CountingStream(8 * app.config["MAX_CONTENT_LENGTH"])
    response = client.post(
        "/api/v1/images",
        content_type="multipart/form-data; boundary=x",
        headers={**team_a.headers(), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input": body, "wsgi.input_terminated": True},
    )
    assert_refused(response, 413, "too_large")
    assert body.read_bytes <= app.config["MAX_CONTENT_LENGTH"] + MB


def test_a_body_without_length_from_a_server_that_does_not_terminate_it_is_never_read(
    client, team_a
):
    body = CountingStream(1024 * MB)
    response = client.post(
        "/api/v1/images",
        content_type="multipart/form-data; boundary=x",
        headers={**team_a.headers(), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input": body},
    )
    assert_refused(response, 400, "bad_request", "file")
    assert body.read_bytes == 0


# --- format by content ---------------------------------------------------------------------


def test_the_format_comes_from_the_content_not_the_name_or_declared_type(client, team_a):
    png = samples.encode(samples.photo(1, (64, 48)), "PNG")
    response = post(client, team_a, png, "holiday.jpg", "image/jpeg")
    assert response.status_code == 201
    item = response.json["items"][0]
    assert item["content_type"] == "image/png"
    assert item["filename"] == "holiday.jpg"
    original = client.get(item["urls"]["original"], headers=team_a.headers())
    assert original.headers["Content-Type"] == "image/png"
    assert original.data == png

    jpeg = samples.jpeg(2, (64, 48))
    item = post(client, team_a, jpeg, "scan.png", "image/png").json["items"][0]
    assert item["content_type"] == "image/jpeg"


def _eps() -> bytes:
    return samples.encode(samples.halves(), "EPS")


def _pdf() -> bytes:
    return samples.encode(samples.halves(), "PDF")


def _ico() -> bytes:
    return samples.encode(samples.halves((32, 32)), "ICO")


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (samples.svg, "an SVG drawing"),
        (_eps, "EPS"),
        (samples.psd, "Photoshop"),
        (_pdf, "PDF"),
        (_ico, "icon"),
        (lambda: b"hello, not an image", "not an image"),
    ],
)
def test_other_formats_named_jpg_are_415_with_a_message_that_says_what_they_are(
    app, client, team_a, instance_path, make, named
):
    response = post(client, team_a, make(), "photo.jpg", "image/jpeg")
    assert_refused(response, 415, "unsupported_media_type", named, "JPEG", "PNG")
    with app.app_context():
        assert db.session.query(Image).count() == 0
    assert stored_files(instance_path) == []


def test_the_photoshop_sample_is_a_real_psd_that_pillow_could_read():
    # So the 415 above is policy, not a parse failure of a broken file.
    image = PILImage.open(io.BytesIO(samples.psd()))
    image.load()
    assert image.format == "PSD"


def test_a_jpeg_with_a_multi_picture_extension_is_a_jpeg(client, team_a):
    # Most phone photos carry an MP extension (Pillow calls them MPO).
    data = samples.encode(
        samples.halves((64, 48)), "MPO", save_all=True, append_images=[samples.halves((32, 24))]
    )
    assert PILImage.open(io.BytesIO(data)).format == "MPO"
    item = post(client, team_a, data, "phone.jpg").json["items"][0]
    assert (item["content_type"], item["width"], item["height"]) == ("image/jpeg", 64, 48)


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF decoder")
def test_avif_is_accepted_when_pillow_can_decode_it(client, team_a):
    data = samples.encode(samples.photo(3, (64, 48)), "AVIF")
    item = post(client, team_a, data, "x.avif").json["items"][0]
    assert item["content_type"] == "image/avif"


def test_a_zero_byte_file_is_no_image_with_a_clear_message(client, team_a):
    assert_refused(post(client, team_a, b"", "empty.jpg"), 422, "invalid_image", "empty")


# --- decompression bombs -------------------------------------------------------------------


@pytest.fixture
def decodes(monkeypatch):
    """Records every pixel decode Pillow starts."""
    calls = []
    real_load = ImageFile.ImageFile.load

    def load(self):
        calls.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return calls


@pytest.mark.parametrize(
    "bomb",
    [
        samples.png_header(100_000, 100_000),  # 10 G pixels: Pillow's own DecompressionBombError
        samples.gif_header(65_535, 65_535),
        # 120 M pixels: over MAX_IMAGE_PIXELS (100 M) but under twice it, where Pillow only warns
        samples.png_header(12_000, 10_000),
    ],
    ids=["png-10G", "gif-4G", "png-120M-warning-zone"],
)
def test_a_decompression_bomb_is_422_quickly_without_decoding(client, team_a, decodes, bomb):
    assert len(bomb) < 10_000
    started = time.perf_counter()
    response = post(client, team_a, bomb, "bomb.png")
    elapsed = time.perf_counter() - started
    assert_refused(response, 422, "invalid_image", "pixels")
    assert decodes == []
    assert elapsed < 1.0


def test_a_jpeg_of_thousands_of_scans_is_422_without_decoding(client, team_a, decodes):
    """Each scan walks every block again: 2,000 tiny scans over 100 M pixels, in a file of
    600 KB, were 18 s of the upload's time and 40 s of a worker's (thousands more: minutes)."""
    bomb = samples.progressive_jpeg_of_scans(2_000, side=9_984)
    assert len(bomb) < 1_000_000
    started = time.perf_counter()
    response = post(client, team_a, bomb, "scans.jpg")
    assert_refused(response, 422, "invalid_image", "more than 100 scans")
    assert decodes == []
    assert time.perf_counter() - started < 2.0


def test_a_jpeg_of_as_many_scans_as_allowed_is_taken(client, team_a, run_jobs):
    assert post(client, team_a, samples.progressive_jpeg_of_scans(101), "a.jpg").status_code == 422
    item = post(client, team_a, samples.progressive_jpeg_of_scans(100), "b.jpg").json["items"][0]
    run_jobs()
    answer = client.get(f"/api/v1/images/{item['id']}", headers=team_a.headers())
    assert answer.json["status"] == "ready" and answer.json["width"] == 1024
    # What encoders make: baseline, progressive (10 scans), with EXIF and its thumbnail.
    for data in (PROGRESSIVE, samples.camera_jpeg(), samples.jpeg(9)):
        assert post(client, team_a, data, "ordinary.jpg").status_code == 201


@pytest.mark.parametrize("config_overrides", [{"MAX_IMAGE_PIXELS": 10_000}])
def test_the_pixel_limit_is_exact(client, team_a):
    assert post(client, team_a, samples.jpeg(4, (100, 100)), "a.jpg").status_code == 201
    too_many = post(client, team_a, samples.jpeg(5, (101, 100)), "b.jpg")
    assert_refused(too_many, 422, "invalid_image", "too many pixels")


# --- damaged files -------------------------------------------------------------------------


def _cut(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


BIG_JPEG = samples.jpeg(6, (1600, 1200))
PROGRESSIVE = samples.encode(samples.photo(7, (1600, 1200)), "JPEG", progressive=True)
PNG = samples.encode(samples.photo(8, (400, 300)), "PNG")


@pytest.mark.parametrize(
    "data",
    [
        _cut(BIG_JPEG, 0.5),
        _cut(BIG_JPEG, 0.98),
        BIG_JPEG[:-2],  # just the end-of-image marker missing
        _cut(PROGRESSIVE, 0.9),
        _cut(PNG, 0.5),
        _cut(PNG, 0.97),
        _cut(samples.animation("GIF", 5, (64, 64)), 0.8),  # a later frame cut short
    ],
    ids=["jpeg-50%", "jpeg-98%", "jpeg-no-eoi", "progressive-90%", "png-50%", "png-97%", "gif"],
)
def test_a_truncated_image_is_422(app, client, team_a, instance_path, data):
    # Thumbnails come from a reduced-scale decode; it still reads the whole stream.
    assert_refused(post(client, team_a, data, "cut.jpg"), 422, "invalid_image")
    with app.app_context():
        assert db.session.query(Image).count() == 0
    assert stored_files(instance_path) == []


@pytest.mark.parametrize("chunk", [b"zTXt", b"iCCP"])
def test_a_png_whose_text_or_colour_profile_inflates_too_far_is_422(
    app, client, team_a, instance_path, chunk
):
    # ~100 KB that a text or ICC chunk inflates to 100 MB: Pillow refuses it with a ValueError.
    data = samples.png_with_compressed_chunk(chunk)
    assert len(data) < 120_000
    assert_refused(post(client, team_a, data, "chunk.png"), 422, "invalid_image")
    with app.app_context():
        assert db.session.query(Image).count() == 0
    assert stored_files(instance_path) == []


DAMAGEABLE = {
    "jpeg": samples.camera_jpeg(size=(48, 32)),
    "png": samples.encode(samples.photo(3, (48, 32)), "PNG"),
    "gif": samples.animation("GIF", 3),
    "webp": samples.animation("WEBP", 3),
    "apng": samples.animation("PNG", 3),
    "tiff": samples.animation("TIFF", 3),
    "bmp": samples.encode(samples.photo(3, (48, 32)), "BMP"),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on the damage it skips
@pytest.mark.parametrize("fmt", list(DAMAGEABLE))
def test_a_damaged_file_is_refused_never_an_error(app, fmt):
    # Whatever Pillow raises on bytes it cannot make sense of (OSError, TypeError, IndexError,
    # ValueError, ...) means the upload is not a valid image: a 4xx, not a 500.
    with app.app_context():
        for data in samples.mutations(DAMAGEABLE[fmt], 150, seed=len(fmt)):
            try:
                validate(io.BytesIO(data))
            except ServiceError as exc:
                assert http_status(exc) in (400, 413, 415, 422)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_damaged_file_is_422_through_the_api(client, team_a):
    # A TIFF whose frame has no dimensions: Pillow raises TypeError("Missing dimensions").
    damaged = next(
        data
        for data in samples.mutations(DAMAGEABLE["tiff"], 400, seed=4)
        if _raises(data, TypeError)
    )
    assert_refused(post(client, team_a, damaged, "damaged.tiff"), 422, "invalid_image")


def _raises(data: bytes, error: type[Exception]) -> bool:
    try:
        with PILImage.open(io.BytesIO(data)) as picture:
            for frame in range(getattr(picture, "n_frames", 1)):
                picture.seek(frame)
                picture.load()
    except error:
        return True
    except Exception:
        return False
    return False


def test_a_whole_large_jpeg_is_accepted(client, team_a):
    assert post(client, team_a, BIG_JPEG, "whole.jpg").status_code == 201


# --- files too small for what their header claims ----------------------------------------


@pytest.mark.parametrize("size", [(10_000, 9_000), (4000, 3000)], ids=["90MP", "12MP"])
def test_a_jpeg_too_small_for_the_pixels_its_header_claims_is_422(app, client, team_a, size):
    forged = samples.jpeg_claiming(size)
    assert len(forged) < 1000
    response = post(client, team_a, forged, "forged.jpg")
    assert_refused(response, 422, "invalid_image", "too small", f"{size[0]}x{size[1]}")
    with app.app_context():
        assert db.session.query(Image).count() == 0


def test_a_jpeg_cut_to_its_header_and_closed_with_an_end_marker_is_422(client, team_a):
    # libjpeg decodes the missing blocks as grey and only warns, so the size of the data is
    # what gives it away: a cut that leaves more than the floor is not detectable this way.
    cut = BIG_JPEG[:1000] + b"\xff\xd9"
    assert_refused(post(client, team_a, cut, "cut.jpg"), 422, "invalid_image", "too small")


FLAT_FORMATS = ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"] + (
    ["AVIF"] if features.check("avif") else []
)


@pytest.mark.parametrize("fmt", FLAT_FORMATS)
def test_the_most_compressible_real_images_are_accepted(app, fmt):
    # A flat 16 M pixel image in the tightest encoding: the floor sits well below it.
    with app.app_context():
        assert validate(io.BytesIO(samples.most_compressible(fmt))).analysis.width == 4000


def test_an_arithmetic_coded_jpeg_has_its_own_floor(app):
    with app.app_context():
        valid = validate(io.BytesIO(samples.ARITHMETIC_JPEG_4000))
    assert len(samples.ARITHMETIC_JPEG_4000) < 200 and valid.analysis.width == 4000


def test_photos_are_far_above_the_floor(app):
    from bench._photos import photo_jpeg

    with app.app_context():
        validate(io.BytesIO(photo_jpeg(1, (1200, 900), quality=30)))
        validate(io.BytesIO(samples.jpeg(2, (1600, 1200), quality=5)))


# --- animations ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG", "TIFF"])
def test_an_animation_of_up_to_max_frames_is_accepted_and_one_more_is_422(client, team_a, fmt):
    # MAX_ANIMATION_FRAMES defaults to 100.
    ok = post(client, team_a, samples.animation(fmt, 100), f"ok.{fmt.lower()}")
    assert ok.status_code == 201, ok.json
    assert ok.json["items"][0]["content_type"] == f"image/{fmt.lower()}"
    refused = post(client, team_a, samples.animation(fmt, 101), f"long.{fmt.lower()}")
    assert_refused(refused, 422, "invalid_image", "frames", "101", "100")


@pytest.mark.parametrize("config_overrides", [{"MAX_ANIMATION_PIXELS": 64 * 64 * 10}])
def test_an_animation_too_large_to_decode_in_all_is_422(client, team_a):
    assert post(client, team_a, samples.animation("GIF", 10, (64, 64)), "a.gif").status_code == 201
    refused = post(client, team_a, samples.animation("GIF", 11, (64, 64)), "b.gif")
    assert_refused(refused, 422, "invalid_image", "too large to decode")


# --- file names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("invoice\u202egpj.exe", "invoicegpj.exe"),  # RIGHT-TO-LEFT OVERRIDE
        ("a\u202db\u202ac\u2066d\u2067e\u2068f\u2069.jpg", "abcdef.jpg"),  # overrides, isolates
        ("\u200etab\u200f\u061c\u200b\ufeff.png", "tab.png"),  # marks, zero-width, BOM
        ("cafe\u0301.jpg", "caf\u00e9.jpg"),  # NFD in, NFC out
        ("cafe\u200b\u0301.jpg", "caf\u00e9.jpg"),  # composable once the ZWSP is gone
        ("C:\\Users\\me\\Pictures\\cat.jpg", "cat.jpg"),
        ("\x00\x07\x1b[31m\x85red.jpg", "[31mred.jpg"),  # C0 and C1 controls
        ("\u202e\u200b", "untitled"),
        ("", "untitled"),
        ("x" * 300 + ".jpeg", "x" * 250 + ".jpeg"),
        ("é" * 300, "é" * 255),
    ],
)
def test_display_filenames_are_normalised(given, shown):
    assert clean_filename(given) == shown
    assert len(clean_filename(given)) <= 255


def test_a_filename_with_bidi_overrides_is_shown_cleaned_through_the_api(client, team_a):
    item = post(client, team_a, samples.jpeg(9), "invoice\u202egpj.exe\u2066.jpg").json["items"][0]
    assert item["filename"] == "invoicegpj.exe.jpg"


# --- nothing left behind -------------------------------------------------------------------

REFUSED = [
    (samples.padded(samples.jpeg(10), MB + 1), 413),
    (samples.svg(), 415),
    (b"", 422),
    (samples.png_header(100_000, 100_000), 422),
    (_cut(BIG_JPEG, 0.5), 422),
    (samples.animation("GIF", 101), 422),
]


@pytest.mark.parametrize("config_overrides", [ONE_MB_LIMIT])
@pytest.mark.parametrize(("data", "status"), REFUSED, ids=[str(s) for _, s in REFUSED])
def test_a_refused_upload_leaves_no_row_object_or_temporary_file(
    app, client, team_a, instance_path, private_tmp, data, status
):
    # A valid image in the same request would be stored first; it must go too.
    good = (io.BytesIO(samples.jpeg(11, (200, 150))), "good.jpg")
    response = client.post(
        "/api/v1/images",
        data={"file": [good, (io.BytesIO(data), "bad.jpg")]},
        headers=team_a.headers(),
        content_type="multipart/form-data",
    )
    assert response.status_code == status
    with app.app_context():
        assert db.session.query(Image).count() == 0
    assert stored_files(instance_path) == []
    assert os.listdir(private_tmp) == []


# --- one validation for every path ---------------------------------------------------------


@pytest.mark.parametrize("config_overrides", [ONE_MB_LIMIT])
@pytest.mark.parametrize(
    ("data", "error"),
    [
        (samples.padded(samples.jpeg(12), MB + 1), TooLarge),
        (samples.psd(), UnsupportedMediaType),
        (b"", InvalidImage),
        (samples.gif_header(65_535, 65_535), InvalidImage),
        (_cut(PNG, 0.5), InvalidImage),
        (samples.animation("WEBP", 101), InvalidImage),
    ],
)
def test_validate_applies_the_same_rules_to_other_paths(app, data, error):
    # URL imports and direct uploads call validate() on what they fetched or received.
    with app.app_context(), pytest.raises(error):
        validate(io.BytesIO(data))


def test_validate_describes_a_valid_image(app):
    with app.app_context():
        valid = validate(io.BytesIO(samples.camera_jpeg(orientation=6, size=(80, 60))))
    assert valid.size > 0 and len(valid.sha256) == 64
    assert (valid.analysis.content_type, valid.analysis.width, valid.analysis.height) == (
        "image/jpeg",
        60,
        80,
    )
