"""POST /api/v1/search: search by an image that is not stored, checked like an upload."""

from __future__ import annotations

import io
import os
import tempfile

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditEvent, Embedding, Image, Label
from app.services import search
from app.tenancy import unscoped
from tests import samples
from tests.cnn import jpeg_of, photograph, requires_cnn


def search_by(client, team, content: bytes, filename: str = "query.jpg", key=None, **fields):
    data = {"file": (io.BytesIO(content), filename), **fields}
    return client.post(
        "/api/v1/search",
        data=data,
        headers=team.headers(key),
        content_type="multipart/form-data",
    )


def embed_again_like(app, image_id, other_id, embedder: str) -> None:
    """The image embedded again (a new row, as after a version bump or a job run twice), with
    another image's vector: a change the search must see without a rebuild."""
    with app.app_context(), unscoped():
        vector = db.session.scalar(
            select(Embedding.vector).where(
                Embedding.image_id == other_id, Embedding.embedder == embedder
            )
        )
        old = db.session.scalar(
            select(Embedding).where(Embedding.image_id == image_id, Embedding.embedder == embedder)
        )
        db.session.delete(old)
        db.session.flush()
        db.session.add(
            Embedding(
                team_id=old.team_id,
                image_id=image_id,
                embedder=embedder,
                version=old.version,
                vector=vector,
            )
        )
        db.session.commit()


@pytest.fixture
def library(team_a, upload, run_jobs):
    """Three processed images of team A: the original the tests look for, and two others."""
    items = upload(
        team_a,
        [
            (samples.jpeg(21), "original.jpg"),
            (samples.jpeg(22), "other.jpg"),
            (samples.jpeg(23), "third.jpg"),
        ],
    ).json["items"]
    run_jobs()
    return {item["filename"]: item["id"] for item in items}


def database_rows(app) -> tuple[int, int, int, int]:
    with app.app_context(), unscoped():
        return tuple(
            db.session.scalar(select(func.count()).select_from(model))
            for model in (Image, Embedding, Label, AuditEvent)
        )


def stored_files(instance_path) -> set[str]:
    return {str(p) for p in (instance_path / "storage").rglob("*") if p.is_file()}


@pytest.mark.parametrize("embedder", [None, "color", "phash"])
def test_a_resized_copy_finds_its_original_first_and_leaves_nothing(
    app, client, team_a, library, instance_path, tmp_path, monkeypatch, embedder
):
    query = samples.resized_copy(samples.jpeg(21), factor=0.4, quality=50)
    # A file big enough that werkzeug spools it to a temporary file, not only memory.
    query = samples.padded(query, 2 * 1024 * 1024)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    rows, files = database_rows(app), stored_files(instance_path)

    fields = {"k": "2"} if embedder is None else {"k": "2", "embedder": embedder}
    response = search_by(client, team_a, query, **fields)

    assert response.status_code == 200, response.json
    body = response.json
    assert body["embedder"] == (embedder or "color")  # the best enabled without cnn
    assert [m["image"]["id"] for m in body["items"]][:1] == [library["original.jpg"]]
    assert len(body["items"]) == 2
    best, second = body["items"]
    assert best["score"] > 0.9 and best["score"] > second["score"]
    assert 0 <= second["score"] <= 1 and best["distance"] <= second["distance"]
    assert set(best) == {"image", "distance", "score"}
    assert best["image"]["filename"] == "original.jpg" and best["image"]["status"] == "ready"
    assert set(body["index"]) == {"version", "fresh"}
    # Nothing stays: no row, no stored object, no temporary file.
    assert database_rows(app) == rows
    assert stored_files(instance_path) == files
    assert os.listdir(temp) == []


def test_search_answers_like_similar(client, team_a, library):
    """The same shape as /similar, and the same neighbours for a stored image's own bytes."""
    similar = client.get(
        f"/api/v1/images/{library['original.jpg']}/similar?k=5", headers=team_a.headers()
    ).json
    found = search_by(client, team_a, samples.jpeg(21), k="5").json
    assert set(found) == set(similar)
    # Its own bytes find the stored original at distance ~0, then the rest as /similar does.
    assert found["items"][0]["image"]["id"] == library["original.jpg"]
    assert found["items"][0]["score"] > 0.99
    assert [m["image"]["id"] for m in found["items"][1:]] == [
        m["image"]["id"] for m in similar["items"]
    ]


def test_a_viewer_key_can_search(client, team_a, library):
    response = search_by(client, team_a, samples.jpeg(21), key=team_a.read_key)
    assert response.status_code == 200
    assert response.json["items"][0]["image"]["id"] == library["original.jpg"]


def test_an_empty_team_finds_nothing(client, team_a):
    response = search_by(client, team_a, samples.jpeg(3))
    assert response.status_code == 200
    assert response.json["items"] == []
    assert response.json["index"] == {"version": None, "fresh": False}


BAD_FILES = {
    "not an image": (b"%PDF-1.4 not an image at all", "doc.pdf"),
    "svg": (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "logo.svg"),
    "empty": (b"", "empty.jpg"),
    "truncated": (samples.jpeg(5)[:3000], "truncated.jpg"),
    "bomb": (samples.png_header(20_000, 20_000), "bomb.png"),
    "too many frames": (samples.animation("GIF", 120), "long.gif"),
    "too large": (samples.padded(samples.jpeg(6), 1024 * 1024 + 1), "big.jpg"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_refused_as_an_upload_is(app, client, team_a, upload, instance_path, case):
    app.config["MAX_UPLOAD_MB"] = 1
    content, filename = BAD_FILES[case]
    searched = search_by(client, team_a, content, filename)
    uploaded = upload(team_a, [(content, filename)])
    assert searched.status_code == uploaded.status_code >= 400, (case, searched.json)
    assert searched.json == uploaded.json
    assert searched.status_code != 500
    with app.app_context():
        assert db.session.query(Image).count() == 0
    assert stored_files(instance_path) == set()


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({}, "file"),
        ({"image": (io.BytesIO(samples.jpeg(1)), "a.jpg")}, "image"),
        ({"file": (io.BytesIO(samples.jpeg(1)), "a.jpg"), "team_id": "x"}, "team_id"),
        (
            {
                "file": [
                    (io.BytesIO(samples.jpeg(1)), "a.jpg"),
                    (io.BytesIO(samples.jpeg(2)), "b.jpg"),
                ]
            },
            "one",
        ),
        ({"file": (io.BytesIO(samples.jpeg(1)), "a.jpg"), "k": "0"}, "k"),
        ({"file": (io.BytesIO(samples.jpeg(1)), "a.jpg"), "k": "101"}, "k"),
        ({"file": (io.BytesIO(samples.jpeg(1)), "a.jpg"), "k": "two"}, "k"),
        ({"file": (io.BytesIO(samples.jpeg(1)), "a.jpg"), "embedder": "nope"}, "nope"),
    ],
)
def test_a_malformed_request_is_a_400(client, team_a, data, said):
    response = client.post(
        "/api/v1/search", data=data, headers=team_a.headers(), content_type="multipart/form-data"
    )
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "bad_request"
    assert said in response.json["error"]["message"]


def test_an_unknown_embedder_is_refused_before_the_file_is_read(app, team_a):
    class Unreadable(io.BytesIO):
        def read(self, *args):
            raise AssertionError("the file was read")

    from app.errors import Invalid
    from app.tenancy import team_scope

    with app.test_request_context("/"), team_scope(team_a.id), pytest.raises(Invalid) as refused:
        search.search_by_file(team_a.id, Unreadable(b"x"), 5, "nope")
    assert "enabled: phash, color" in str(refused.value)


def test_search_needs_a_key(client):
    response = client.post("/api/v1/search", data={"file": (io.BytesIO(samples.jpeg(1)), "a")})
    assert response.status_code == 401


def test_transparent_and_odd_images_can_be_searched(client, team_a, library):
    """What processing accepts, search accepts: a PNG with transparency, a 16-bit greyscale
    PNG, an animated GIF (its first frame)."""
    from PIL import Image as PILImage

    rgba = PILImage.new("RGBA", (64, 48), (200, 30, 30, 128))
    grey16 = PILImage.new("I;16", (64, 48), 40000)
    for content in (
        samples.encode(rgba, "PNG"),
        samples.encode(grey16, "PNG"),
        samples.animation("GIF", 3),
    ):
        response = search_by(client, team_a, content, "q.png")
        assert response.status_code == 200, response.json
        assert len(response.json["items"]) == 3


class TestTheDeltaReadOnce:
    """Searches keep the delta (embeddings above the index's watermark) they read, and read
    only what came since; an image embedded again replaces its vector."""

    @pytest.fixture
    def config_overrides(self):
        # No build ever: every embedding stays in the delta.
        return {"INDEX_REBUILD_MIN_DELTA": 10_000, "INDEX_QUIET_SECONDS": 3600}

    def test_new_and_re_embedded_images_are_searched_by_their_current_vectors(
        self, app, client, team_a, upload, run_jobs
    ):
        query = samples.jpeg(33)
        upload(team_a, [(query, "c.jpg"), (samples.jpeg(31), "a.jpg")])
        run_jobs()

        def ranked():
            body = search_by(client, team_a, query, k="5", embedder="color").json
            assert body["index"]["version"] is None
            return [(m["image"]["filename"], round(m["score"], 4)) for m in body["items"]]

        assert [name for name, _ in ranked()] == ["c.jpg", "a.jpg"]
        upload(team_a, [(samples.jpeg(32), "b.jpg")])
        run_jobs()
        assert sorted(name for name, _ in ranked()) == ["a.jpg", "b.jpg", "c.jpg"]  # appended

        # c.jpg embedded again (as after a version bump), now with b.jpg's vector. (Not the
        # newest row: SQLite gives a new row the id of a deleted last row, which no watermark
        # can tell from the old one.)
        with app.app_context(), unscoped():
            rows = {
                image.filename: image.id
                for image in db.session.scalars(select(Image).where(Image.team_id == team_a.id))
            }
        embed_again_like(app, rows["c.jpg"], rows["b.jpg"], "color")
        scores = dict(ranked())
        assert scores["c.jpg"] == scores["b.jpg"] < 0.99


@requires_cnn
class TestWithTheCnn:
    @pytest.fixture
    def config_overrides(self):
        return {"EMBEDDERS": ["phash", "color", "cnn"]}

    def test_the_cnn_is_the_default_and_loads_once_per_process(
        self, client, team_a, upload, run_jobs
    ):
        import plugins.embed_cnn as embed_cnn

        coffee, cat = photograph("coffee"), photograph("chelsea")
        stored = upload(team_a, [(jpeg_of(coffee), "cup.jpg"), (jpeg_of(cat), "cat.jpg")])
        run_jobs()  # a worker in this process: the network is loaded here now
        loaded = dict(embed_cnn._networks)
        assert loaded  # processing loaded it
        smaller = coffee.resize((200, 133))
        for _ in range(2):
            body = search_by(client, team_a, jpeg_of(smaller, 60), k="2").json
            assert body["embedder"] == "cnn"
            assert body["items"][0]["image"]["id"] == stored.json["items"][0]["id"]
            assert body["items"][0]["score"] > body["items"][1]["score"]
        assert embed_cnn._networks == loaded  # the same network objects, not loaded again
