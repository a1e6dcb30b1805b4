"""On-demand file versions: format, quality and width from an allowed set, made once, kept."""

from __future__ import annotations

import io
import logging
import threading
import uuid

import pytest
from PIL import Image as PILImage

from tests import samples


@pytest.fixture
def image(team_a, upload, run_jobs):
    item = upload(team_a, [(samples.jpeg(1, size=(1600, 1200)), "big.jpg")]).json["items"][0]
    run_jobs()
    return item


def get(client, team, image_id, query):
    return client.get(f"/api/v1/images/{image_id}/file?{query}", headers=team.headers())


@pytest.mark.parametrize(
    ("query", "fmt", "size"),
    [
        ("format=jpeg&width=640", "JPEG", (640, 480)),
        ("format=webp&quality=50&width=320", "WEBP", (320, 240)),
        ("format=png&width=160", "PNG", (160, 120)),
        ("width=2560", "WEBP", (1600, 1200)),  # never upscaled
        ("variant=preview&format=jpeg", "JPEG", (1280, 960)),
        ("variant=thumbnail&format=png", "PNG", (320, 240)),
    ],
)
def test_versions_have_the_asked_format_and_size(client, team_a, image, query, fmt, size):
    response = get(client, team_a, image["id"], query)
    assert response.status_code == 200, response.json
    picture = PILImage.open(io.BytesIO(response.data))
    assert picture.format == fmt and picture.size == size
    assert response.mimetype == f"image/{fmt.lower()}"
    assert not picture.getexif()


def test_quality_changes_the_bytes_and_versions_are_kept(client, team_a, image, instance_path):
    low = get(client, team_a, image["id"], "format=jpeg&quality=10&width=1024")
    high = get(client, team_a, image["id"], "format=jpeg&quality=95&width=1024")
    assert len(low.data) < len(high.data)
    stored = sorted(p.name for p in (instance_path / "storage").rglob("renditions/*"))
    assert stored == ["original-w1024-q10.jpeg", "original-w1024-q95.jpeg"]
    again = get(client, team_a, image["id"], "format=jpeg&quality=10&width=1024")
    assert again.data == low.data
    cached = client.get(
        f"/api/v1/images/{image['id']}/file?format=jpeg&quality=10&width=1024",
        headers={**team_a.headers(), "If-None-Match": low.headers["ETag"]},
    )
    assert cached.status_code == 304
    client.delete(f"/api/v1/images/{image['id']}", headers=team_a.headers())
    left = [p for p in (instance_path / "storage").rglob("*") if p.is_file()]
    assert [p for p in left if image["id"] in str(p)] == []  # versions went with the image


@pytest.mark.parametrize(
    "query",
    [
        "format=gif",
        "format=svg",
        "quality=0",
        "quality=96",
        "quality=high",
        "width=333",
        "width=-1",
        "format=png&quality=50",
        "variant=raw",
        "size=10",
    ],
)
def test_bad_version_parameters_are_400(client, team_a, image, query, instance_path):
    response = get(client, team_a, image["id"], query)
    assert response.status_code == 400 and response.json["error"]["code"] == "bad_request"
    assert not list((instance_path / "storage").rglob("renditions/*"))


def test_exif_orientation_and_gps_do_not_leak_into_versions(client, team_a, upload, run_jobs):
    picture = PILImage.new("RGB", (200, 100), "red")
    picture.paste(PILImage.new("RGB", (100, 100), "blue"), (100, 0))
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}
    out = io.BytesIO()
    picture.save(out, "JPEG", exif=exif, quality=95)
    item = upload(team_a, [(out.getvalue(), "rotated.jpg")]).json["items"][0]
    run_jobs()
    version = PILImage.open(
        io.BytesIO(get(client, team_a, item["id"], "format=png&width=160").data)
    )
    assert version.size == (100, 200) and not version.getexif()
    top, bottom = version.getpixel((50, 20)), version.getpixel((50, 180))
    assert top[2] < 100 < top[0] and bottom[2] > 100 > bottom[0]  # upright: red above blue


def test_stored_files_are_served_sandboxed_and_unsniffed(client, team_a, image, person):
    viewer = person(team_a, "viewer")
    responses = [
        get(client, team_a, image["id"], "variant=original"),
        get(client, team_a, image["id"], "variant=thumbnail"),
        get(client, team_a, image["id"], "variant=preview"),
        get(client, team_a, image["id"], "format=png&width=160"),
        viewer.client.get(f"/images/{image['id']}/thumbnail"),
    ]
    for response in responses:
        assert response.status_code == 200
        assert response.headers["Content-Security-Policy"] == "sandbox"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.mimetype.startswith("image/")
        assert not response.headers.get("Content-Disposition", "").startswith("attachment")


def test_a_stored_file_of_another_type_is_a_download(app, client, team_a, image):
    from app.extensions import db
    from app.models import Image
    from app.tenancy import unscoped

    with app.app_context(), unscoped():  # a row from before validation, or edited by hand
        db.session.get(Image, uuid.UUID(image["id"])).content_type = "text/html"
        db.session.commit()
    response = get(client, team_a, image["id"], "variant=original")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert response.headers["Content-Security-Policy"] == "sandbox"


def test_a_file_missing_from_storage_is_a_clear_404_and_the_log_names_it(
    app, client, team_a, image, person, instance_path, caplog
):
    """A row whose object was lost (deleted behind the app's back, a restore that missed it):
    the client gets a plain answer, not a 500, and the operator's log says which object."""
    originals = [p for p in (instance_path / "storage").rglob("original*") if image["id"] in str(p)]
    thumbnails = [p for p in (instance_path / "storage").rglob("thumb*") if image["id"] in str(p)]
    assert len(originals) == 1 and len(thumbnails) == 1
    originals[0].unlink()
    thumbnails[0].unlink()
    viewer = person(team_a, "viewer")
    with caplog.at_level(logging.ERROR):
        answers = [
            get(client, team_a, image["id"], "variant=original"),
            get(client, team_a, image["id"], "variant=thumbnail"),
            get(client, team_a, image["id"], "format=png&width=160"),  # made from the original
        ]
        page = viewer.client.get(f"/images/{image['id']}/thumbnail")
    for answer in answers:
        assert answer.status_code == 404, answer.data
        assert answer.json["error"]["code"] == "not_found"
        assert "stored file is missing" in answer.json["error"]["message"]
    assert page.status_code == 404 and b"stored file is missing" in page.data
    missing = [r.getMessage() for r in caplog.records if "stored object missing" in r.getMessage()]
    original_key = str(originals[0].relative_to(instance_path / "storage"))
    assert len(missing) == 4 and original_key in missing[0]
    # What is still stored is served as before.
    assert get(client, team_a, image["id"], "variant=preview").status_code == 200


@pytest.mark.parametrize(
    ("size", "refused", "taken"),
    [((20_000, 50), "webp", "jpeg"), ((70_000, 5), "jpeg", "png")],
    ids=["wider-than-webp", "wider-than-jpeg"],
)
def test_a_version_longer_than_its_format_allows_is_400_with_a_way_out(
    app, client, team_a, upload, run_jobs, size, refused, taken
):
    """libwebp takes at most 16,383 pixels a side and libjpeg 65,500: far fewer pixels than
    RENDITION_MAX_PIXELS, but the encoder refused (a 500)."""
    data = samples.encode(PILImage.new("RGB", size, "teal"), "PNG")
    item = upload(team_a, [(data, "panorama.png")]).json["items"][0]
    run_jobs()
    response = get(client, team_a, item["id"], f"format={refused}")
    assert response.status_code == 400, response.json
    message = response.json["error"]["message"]
    assert f"{size[0]}x{size[1]}" in message and "format=png" in message
    made = get(client, team_a, item["id"], f"format={taken}")
    assert made.status_code == 200
    assert PILImage.open(io.BytesIO(made.data)).size == size


def test_an_image_deleted_while_its_version_is_made_is_404_and_leaves_no_file(
    app, client, team_a, image, instance_path, monkeypatch
):
    """The delete, from another request, commits while the version is being saved: it cannot
    know of the new file, so the request that made it removes it."""
    from app.services import renditions
    from tests.killed_writers import overtaken_on_first_save

    def delete_from_another_request():
        answer = []
        other = threading.Thread(
            target=lambda: answer.append(
                app.test_client().delete(f"/api/v1/images/{image['id']}", headers=team_a.headers())
            )
        )
        other.start()
        other.join(60)
        return answer[0]

    deleting, deleted = overtaken_on_first_save(renditions.storage, delete_from_another_request)
    monkeypatch.setattr(renditions, "storage", deleting)
    response = get(client, team_a, image["id"], "format=png&width=160")
    monkeypatch.undo()
    assert deleted[0].status_code == 204
    assert response.status_code == 404 and response.json["error"]["code"] == "not_found"
    left = [p for p in (instance_path / "storage").rglob("*") if p.is_file()]
    assert [p for p in left if image["id"] in str(p)] == []


# --- bounds on what a web process makes ----------------------------------------------------


def stored_versions(instance_path) -> list[str]:
    return sorted(p.name for p in (instance_path / "storage").rglob("renditions/*"))


def test_a_full_size_version_of_a_36_mp_image_is_refused_with_a_way_out(
    client, team_a, upload, instance_path
):
    big = samples.encode(samples.halves((7000, 5200)), "JPEG", quality=90)
    item = upload(team_a, [(big, "big.jpg")]).json["items"][0]
    response = get(client, team_a, item["id"], "format=png")
    assert response.status_code == 400 and response.json["error"]["code"] == "bad_request"
    message = response.json["error"]["message"]
    assert "36,400,000 pixels" in message and "smaller width" in message and "original" in message
    assert stored_versions(instance_path) == []
    assert get(client, team_a, item["id"], "format=png&width=2560").status_code == 200
    assert get(client, team_a, item["id"], "variant=original").data == big


@pytest.mark.parametrize("config_overrides", [{"RENDITION_MAX_PIXELS": 1_000_000}])
def test_the_pixel_cap_is_configurable(client, team_a, image, instance_path):
    # The image is 1600x1200: 1024 wide is 786,432 pixels, 1280 wide is 1,228,800.
    assert get(client, team_a, image["id"], "format=jpeg&width=1024").status_code == 200
    refused = get(client, team_a, image["id"], "format=jpeg&width=1280")
    assert refused.status_code == 400 and "1,228,800" in refused.json["error"]["message"]
    assert get(client, team_a, image["id"], "variant=preview&format=png").status_code == 200
    assert stored_versions(instance_path) == [
        "original-w1024-q82.jpeg",
        "preview-wfull-qlossless.png",
    ]


@pytest.mark.parametrize("config_overrides", [{"RENDITIONS_PER_IMAGE": 3}])
def test_only_the_newest_versions_are_kept_per_image(app, client, team_a, image, instance_path):
    for quality in (10, 20, 30, 40, 50):
        assert get(client, team_a, image["id"], f"quality={quality}&width=160").status_code == 200
    assert stored_versions(instance_path) == [
        "original-w160-q30.webp",
        "original-w160-q40.webp",
        "original-w160-q50.webp",
    ]
    again = get(client, team_a, image["id"], "quality=10&width=160")  # made again on demand
    assert again.status_code == 200 and PILImage.open(io.BytesIO(again.data)).width == 160
    assert stored_versions(instance_path) == [
        "original-w160-q10.webp",
        "original-w160-q40.webp",
        "original-w160-q50.webp",
    ]
    client.delete(f"/api/v1/images/{image['id']}", headers=team_a.headers())
    assert stored_versions(instance_path) == []


def test_when_every_slot_is_busy_a_new_version_is_503_and_kept_ones_are_served(
    client, team_a, image, instance_path, redis_client
):
    kept = get(client, team_a, image["id"], "format=jpeg&width=320")
    assert kept.status_code == 200
    # Another web process is making a version (RENDITION_SLOTS defaults to 1).
    redis_client.set("likeness:rendition-slot:0", "another-process", ex=60)
    busy = get(client, team_a, image["id"], "format=jpeg&width=640")
    assert busy.status_code == 503 and busy.json["error"]["code"] == "unavailable"
    assert int(busy.headers["Retry-After"]) > 0
    assert get(client, team_a, image["id"], "format=jpeg&width=320").data == kept.data
    assert stored_versions(instance_path) == ["original-w320-q82.jpeg"]
    redis_client.delete("likeness:rendition-slot:0")  # that process finished
    assert get(client, team_a, image["id"], "format=jpeg&width=640").status_code == 200
    assert redis_client.keys("likeness:rendition-slot:*") == []  # released after use


@pytest.mark.parametrize("config_overrides", [{"RENDITION_SLOTS": 2}])
def test_more_slots_allow_more_versions_at_once(client, team_a, image, redis_client):
    redis_client.set("likeness:rendition-slot:0", "another-process", ex=60)
    assert get(client, team_a, image["id"], "format=jpeg&width=640").status_code == 200


@pytest.mark.parametrize("config_overrides", [{"REDIS_URL": "redis://127.0.0.1:1/0"}])
def test_without_redis_new_versions_are_503_and_originals_are_served(client, team_a, upload):
    data = samples.jpeg(3, (320, 240))
    item = upload(team_a, [(data, "a.jpg")]).json["items"][0]
    response = get(client, team_a, item["id"], "format=png&width=160")
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert get(client, team_a, item["id"], "variant=original").data == data
