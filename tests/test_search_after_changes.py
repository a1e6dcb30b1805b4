"""Search while the library changes under its index: images deleted before the rebuild, an
index plugin changed in the configuration, an image embedded again since the build."""

from __future__ import annotations

import uuid

import pytest
from PIL import Image as PILImage

from app import create_app
from app.services import indexing
from app.tenancy import unscoped
from tests import samples
from tests.conftest import make_config
from tests.test_search_file import embed_again_like, search_by


def red_and_blue(blue_columns: int) -> bytes:
    """A red square with `blue_columns` blue columns: the more, the farther (by colour) from
    all red, evenly."""
    image = PILImage.new("RGB", (64, 64), (255, 0, 0))
    if blue_columns:
        image.paste((0, 0, 255), (0, 0, blue_columns, 64))
    return samples.encode(image, "PNG")


class TestTopKWhenTheIndexWindowWasDeleted:
    @pytest.fixture
    def config_overrides(self):
        return {"EMBEDDER_INDEXES": {"color": "exact"}}  # deterministic neighbours

    def test_an_image_the_index_was_not_asked_for_is_not_passed_over_for_a_farther_one(
        self, app, client, team_a, upload, run_jobs
    ):
        """The index is first asked for k + 16 neighbours. When all of them were deleted (no
        rebuild has run yet) and the delta offers a ready image farther away, the nearest
        ready image of the index, just past that window, must still win."""
        items = upload(team_a, [(red_and_blue(n), f"{n}.png") for n in range(1, 19)]).json
        ids = [item["id"] for item in items["items"]]
        run_jobs()  # processed and indexed
        app.config.update(INDEX_QUIET_SECONDS=3600, INDEX_REBUILD_MIN_DELTA=10_000)
        far = upload(team_a, [(red_and_blue(48), "far.png")]).json["items"][0]["id"]
        run_jobs()  # processed; stays in the delta
        for gone in ids[:17]:  # the k + 16 nearest of the index; its rebuild waits in the queue
            response = client.delete(f"/api/v1/images/{gone}", headers=team_a.headers())
            assert response.status_code == 204

        body = search_by(client, team_a, red_and_blue(0), k="1", embedder="color").json
        assert body["index"]["version"] is not None and not body["index"]["fresh"]
        assert [m["image"]["id"] for m in body["items"]] == [ids[17]], far


def test_an_index_built_by_another_index_plugin_is_not_loaded_with_the_configured_one(
    app, app_env, team_a, upload, run_jobs
):
    """EMBEDDER_INDEXES (or VECTOR_INDEX) changed on a deployment with indexes: the builds made
    by the previous index plugin cannot be read by the new one. Searches answer exactly until
    the sweep has the index rebuilt with the configured plugin, rather than failing."""
    items = upload(team_a, [(red_and_blue(n), f"{n}.png") for n in range(4)]).json["items"]
    run_jobs()
    with app.app_context():
        annoy_build = indexing.current_build(team_a.id, "color")
        assert annoy_build.index_kind == "annoy"

    switched = create_app(make_config(app_env, EMBEDDER_INDEXES={"color": "exact"}))
    client = switched.test_client()
    response = client.get(
        f"/api/v1/images/{items[0]['id']}/similar?k=5&embedder=color", headers=team_a.headers()
    )
    assert response.status_code == 200, response.data[:300]
    assert [m["image"]["id"] for m in response.json["items"]] == [i["id"] for i in items[1:]]
    assert response.json["index"] == {"version": None, "fresh": False}
    body = search_by(client, team_a, red_and_blue(0), k="5", embedder="color").json
    assert [m["image"]["id"] for m in body["items"]] == [i["id"] for i in items]

    with switched.app_context():
        assert (team_a.id, "color") in indexing.indexes_behind()  # the sweep asks for a build
        rebuilt = indexing.build_index(team_a.id, "color")
        assert rebuilt.index_kind == "exact" and rebuilt.version == annoy_build.version + 1
    response = client.get(
        f"/api/v1/images/{items[0]['id']}/similar?k=5&embedder=color", headers=team_a.headers()
    )
    assert response.json["index"] == {"version": rebuilt.version, "fresh": True}
    assert [m["image"]["id"] for m in response.json["items"]] == [i["id"] for i in items[1:]]


def test_an_image_embedded_again_since_the_build_is_searched_by_its_new_vector_only(
    app, client, team_a, upload, run_jobs
):
    """The index holds an image's old vector, the delta its new one (embedded again, as two
    racing jobs or a runtime of other rounding do): the old vector must not rank it."""
    query = red_and_blue(0)
    items = upload(team_a, [(query, "c.png"), (red_and_blue(20), "b.png")]).json["items"]
    c_id, b_id = (uuid.UUID(item["id"]) for item in items)
    run_jobs()  # indexed, c's vector at distance 0 from the query
    with app.app_context(), unscoped():
        assert indexing.current_build(team_a.id, "color").item_count == 2
    embed_again_like(app, c_id, b_id, "color")
    body = search_by(client, team_a, query, k="5", embedder="color").json
    assert body["index"]["version"] is not None and not body["index"]["fresh"]
    scores = {m["image"]["filename"]: round(m["score"], 4) for m in body["items"]}
    assert len(body["items"]) == 2
    assert scores["c.png"] == scores["b.png"] < 0.99
