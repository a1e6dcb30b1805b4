"""The image endpoints, as a client sees them."""

from __future__ import annotations

import io
import uuid

import pytest

from app.extensions import db
from app.imaging.validate import accepted_formats
from app.models import Embedding, Image
from tests import samples


def test_upload_returns_the_image_pending(client, team_a, upload):
    data = samples.jpeg(1)
    response = upload(team_a, [(data, "beach.jpg")])
    assert response.status_code == 201
    (item,) = response.json["items"]
    assert item["filename"] == "beach.jpg"
    assert item["content_type"] == "image/jpeg"
    assert (item["width"], item["height"]) == (640, 480)
    assert item["size_bytes"] == len(data)
    assert item["status"] == "pending"
    assert item["uploaded_by"] == "api-key:full"
    assert "existing" not in item
    uuid.UUID(item["id"])
    original = client.get(item["urls"]["original"], headers=team_a.headers())
    assert original.status_code == 200
    assert original.data == data
    assert original.headers["Content-Type"] == "image/jpeg"
    thumbnail = client.get(item["urls"]["thumbnail"], headers=team_a.headers())
    assert thumbnail.status_code == 200
    assert thumbnail.headers["Content-Type"] == "image/webp"
    assert thumbnail.data[:4] == b"RIFF"


def test_upload_several_files_at_once(client, team_a, upload):
    response = upload(team_a, [(samples.jpeg(1), "a.jpg"), (samples.jpeg(2), "b.jpg")])
    assert response.status_code == 201
    assert [i["filename"] for i in response.json["items"]] == ["a.jpg", "b.jpg"]


def test_exact_reupload_returns_existing_and_creates_nothing(app, client, team_a, upload):
    data = samples.jpeg(3)
    first = upload(team_a, [(data, "one.jpg")]).json["items"][0]
    again = upload(team_a, [(data, "renamed.jpg")])
    assert again.status_code == 201
    item = again.json["items"][0]
    assert item["id"] == first["id"] and item["existing"] is True
    assert item["filename"] == "one.jpg"
    with app.app_context():
        assert db.session.query(Image).count() == 1


def test_same_bytes_in_another_team_is_a_new_image(client, team_a, team_b, upload):
    data = samples.jpeg(4)
    a = upload(team_a, [(data, "x.jpg")]).json["items"][0]
    b = upload(team_b, [(data, "x.jpg")]).json["items"][0]
    assert a["id"] != b["id"] and "existing" not in b


@pytest.mark.parametrize(
    ("content", "filename", "status", "code"),
    [
        (b"%PDF-1.4 not an image at all", "doc.pdf", 415, "unsupported_media_type"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "logo.svg", 415, "unsupported_media_type"),
        (b"hello", "fake.jpg", 415, "unsupported_media_type"),
        (b"", "empty.png", 422, "invalid_image"),
        (samples.jpeg(5)[:3000], "truncated.jpg", 422, "invalid_image"),
    ],
)
def test_bad_files_are_refused_and_leave_nothing(
    app, client, team_a, upload, instance_path, content, filename, status, code
):
    response = upload(team_a, [(content, filename)])
    assert response.status_code == status
    assert response.json["error"]["code"] == code
    assert response.json["error"]["message"]
    with app.app_context():
        assert db.session.query(Image).count() == 0
    storage = instance_path / "storage"
    assert not storage.exists() or not any(p.is_file() for p in storage.rglob("*"))


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"hello", "this file is not an image in an accepted format"),
        (b"%PDF-1.4 not an image at all", "a PDF document is not accepted"),
    ],
)
def test_a_refused_file_is_named_plainly(client, team_a, upload, content, said):
    message = upload(team_a, [(content, "upload.jpg")]).json["error"]["message"]
    assert message == f"{said}; send one of {accepted_formats()}"


def test_a_bad_file_in_a_batch_leaves_none_of_the_batch(app, client, team_a, upload, instance_path):
    response = upload(team_a, [(samples.jpeg(6), "good.jpg"), (b"junk", "bad.jpg")])
    assert response.status_code == 415
    with app.app_context():
        assert db.session.query(Image).count() == 0
    assert not any(p.is_file() for p in (instance_path / "storage").rglob("*"))


def test_decompression_bomb_is_refused(client, team_a, upload, app):
    app.config["MAX_IMAGE_PIXELS"] = 10_000
    from PIL import Image as PILImage

    PILImage.MAX_IMAGE_PIXELS = 10_000
    try:
        response = upload(team_a, [(samples.jpeg(7, size=(200, 150)), "bomb.jpg")])
    finally:
        PILImage.MAX_IMAGE_PIXELS = app.config["MAX_IMAGE_PIXELS"] = 100_000_000
    assert response.status_code == 422
    assert response.json["error"]["code"] == "invalid_image"
    assert "pixels" in response.json["error"]["message"]


def test_upload_without_file_part(client, team_a):
    response = client.post("/api/v1/images", data={}, headers=team_a.headers())
    assert response.status_code == 400
    assert "file" in response.json["error"]["message"]


def test_unknown_form_fields_are_refused(client, team_a):
    data = {"file": (io.BytesIO(samples.jpeg(8)), "a.jpg"), "team_id": str(uuid.uuid4())}
    response = client.post("/api/v1/images", data=data, headers=team_a.headers())
    assert response.status_code == 400
    assert "team_id" in response.json["error"]["message"]


def test_filename_is_cleaned_for_display(client, team_a, upload):
    nasty = "../../home/me/evil\u202egnp.exe\x00\x07.jpg"
    item = upload(team_a, [(samples.jpeg(9), nasty)]).json["items"][0]
    assert item["filename"] == "evilgnp.exe.jpg"


def test_read_only_key_cannot_upload_or_delete(client, team_a, upload):
    response = upload(team_a, [(samples.jpeg(10), "a.jpg")], key=team_a.read_key)
    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"
    assert "write" in response.json["error"]["message"]


def test_list_paginates_with_cursor(client, team_a, upload):
    ids = [
        upload(team_a, [(samples.jpeg(20 + i), f"{i}.jpg")]).json["items"][0]["id"]
        for i in range(5)
    ]
    seen, cursor = [], None
    while True:
        url = "/api/v1/images?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=team_a.headers()).json
        assert len(page["items"]) <= 2
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, each once


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "limit=%2010",
        "limit=",
        "cursor=garbage",
        "cursor=W10",
        "status=bogus",
        "colour=red",
    ],
)
def test_list_refuses_bad_parameters(client, team_a, query):
    response = client.get(f"/api/v1/images?{query}", headers=team_a.headers())
    assert response.status_code == 400
    assert response.json["error"]["code"] == "bad_request"


def test_list_filters_by_status(client, team_a, upload, run_jobs):
    upload(team_a, [(samples.jpeg(30), "a.jpg")])
    assert (
        len(client.get("/api/v1/images?status=pending", headers=team_a.headers()).json["items"])
        == 1
    )
    run_jobs()
    assert client.get("/api/v1/images?status=pending", headers=team_a.headers()).json["items"] == []
    assert (
        len(client.get("/api/v1/images?status=ready", headers=team_a.headers()).json["items"]) == 1
    )


def test_delete_removes_row_files_embeddings_and_search_hits(
    app, client, team_a, upload, run_jobs, instance_path
):
    original = samples.jpeg(40)
    a, b = upload(team_a, [(original, "a.jpg"), (samples.resized_copy(original), "b.jpg")]).json[
        "items"
    ]
    run_jobs()
    similar = client.get(f"/api/v1/images/{a['id']}/similar", headers=team_a.headers()).json
    assert [m["image"]["id"] for m in similar["items"]] == [b["id"]]

    assert client.delete(f"/api/v1/images/{b['id']}", headers=team_a.headers()).status_code == 204
    assert client.get(f"/api/v1/images/{b['id']}", headers=team_a.headers()).status_code == 404
    assert client.get(b["urls"]["original"], headers=team_a.headers()).status_code == 404
    similar = client.get(f"/api/v1/images/{a['id']}/similar", headers=team_a.headers()).json
    assert similar["items"] == []
    with app.app_context():
        assert db.session.query(Embedding).filter_by(image_id=uuid.UUID(b["id"])).count() == 0
    assert not (instance_path / "storage" / "teams" / str(team_a.id) / "images" / b["id"]).exists()


def test_file_variants(client, team_a, upload, run_jobs):
    item = upload(team_a, [(samples.jpeg(50, size=(2000, 1500)), "big.jpg")]).json["items"][0]
    preview = client.get(item["urls"]["preview"], headers=team_a.headers())
    assert preview.status_code == 404  # the worker has not made it yet
    assert "not ready" in preview.json["error"]["message"]
    run_jobs()
    from PIL import Image as PILImage

    preview = client.get(item["urls"]["preview"], headers=team_a.headers())
    assert preview.status_code == 200
    assert max(PILImage.open(io.BytesIO(preview.data)).size) == 1280
    thumbnail = client.get(item["urls"]["thumbnail"], headers=team_a.headers())
    assert max(PILImage.open(io.BytesIO(thumbnail.data)).size) == 320
    bad = client.get(f"/api/v1/images/{item['id']}/file?variant=huge", headers=team_a.headers())
    assert bad.status_code == 400


def test_unknown_routes_and_methods_answer_json(client, team_a):
    missing = client.get("/api/v1/nothing-here", headers=team_a.headers())
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"
    wrong = client.put("/api/v1/images", headers=team_a.headers())
    assert wrong.status_code == 405 and wrong.json["error"]["code"] == "method_not_allowed"
    assert "GET" in wrong.headers["Allow"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/images//similar",  # what `images/$ID/similar` becomes when ID is empty
        "/api/v1/images//file",
        "/api/v1/images/{id}//file",
        "/api/v1//images",
        "/api//v1/team",
        "/api/v1/images/",
        "/api/v1/images/{id}/",
        "/api/v1/images/{id}/similar/",
        "/api/v1/team/",
        "/api/v1/",
        "/api/v1",
        "/api/v2/images",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_malformed_api_paths_answer_json_404_never_a_redirect(client, team_a, upload, path, method):
    image_id = upload(team_a, [(samples.jpeg(9), "a.jpg")]).json["items"][0]["id"]
    response = client.open(path.format(id=image_id), method=method, headers=team_a.headers())
    assert response.status_code == 404, (response.status_code, response.data[:200])
    assert response.content_type == "application/json"
    assert "Location" not in response.headers
    assert response.json["error"]["code"] == "not_found"
    assert set(response.json) == {"error"} and set(response.json["error"]) == {"code", "message"}
    if "//" in path:
        assert "is an id missing?" in response.json["error"]["message"]


def test_a_routing_redirect_under_the_api_is_a_json_404(app, client, team_a):
    # A rule ending in a slash makes Werkzeug redirect the path without it, by itself.
    app.add_url_rule("/api/v1/probe/", "probe", lambda: {"probe": True})
    assert client.get("/api/v1/probe/", headers=team_a.headers()).json == {"probe": True}
    response = client.get("/api/v1/probe", headers=team_a.headers())
    assert response.status_code == 404 and response.content_type == "application/json"
    assert response.json["error"]["code"] == "not_found"


@pytest.mark.parametrize("image_id", ["not-a-uuid", str(uuid.uuid4()), "../../etc/passwd"])
@pytest.mark.parametrize("suffix", ["", "/file", "/similar"])
def test_unknown_ids_are_404(client, team_a, image_id, suffix):
    response = client.get(f"/api/v1/images/{image_id}{suffix}", headers=team_a.headers())
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_similar_before_processing_is_a_conflict(client, team_a, upload):
    item = upload(team_a, [(samples.jpeg(60), "a.jpg")]).json["items"][0]
    response = client.get(f"/api/v1/images/{item['id']}/similar", headers=team_a.headers())
    assert response.status_code == 409
    assert "pending" in response.json["error"]["message"]


@pytest.mark.parametrize("query", ["k=0", "k=101", "k=x", "embedder=nope", "q=1"])
def test_similar_refuses_bad_parameters(client, team_a, upload, run_jobs, query):
    item = upload(team_a, [(samples.jpeg(61), "a.jpg")]).json["items"][0]
    run_jobs()
    response = client.get(f"/api/v1/images/{item['id']}/similar?{query}", headers=team_a.headers())
    assert response.status_code == 400
