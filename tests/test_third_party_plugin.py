"""A third-party plugin package, installed beside Likeness, is found and used end to end.

The package is tests/example_plugin (`likeness-example-plugin`, installed by `make test`); it
registers the `greythumb` embedder under the `likeness.embedders` entry point.
"""

from __future__ import annotations

import pytest
from likeness_example_plugin import GreyThumbnailEmbedder

from app.extensions import db
from app.models import Embedding
from app.plugins import discover, load_class
from app.runtime import plugins
from tests import samples

EMBEDDERS = ["phash", "color", "greythumb"]


@pytest.fixture
def config_overrides():
    # Unlike every other test module, look beyond the built-ins.
    return {"EMBEDDERS": EMBEDDERS, "PLUGINS_BUILTIN_ONLY": False}


def test_the_example_is_found_through_its_entry_point():
    entry_point = discover("embedders")["greythumb"]
    assert entry_point.value == "likeness_example_plugin:GreyThumbnailEmbedder"
    assert entry_point.dist.name == "likeness-example-plugin"
    assert load_class("embedders", entry_point) is GreyThumbnailEmbedder
    # Tests that keep to the built-ins never see it.
    assert "greythumb" not in discover("embedders", builtin_only=True)


def test_an_app_configured_with_the_example_uses_it_end_to_end(
    app, client, team_a, upload, run_jobs
):
    with app.app_context():
        assert list(plugins().embedders) == EMBEDDERS
        assert isinstance(plugins().embedders["greythumb"], GreyThumbnailEmbedder)
    original = samples.jpeg(1, size=(320, 240))
    files = [
        (original, "original.jpg"),
        (samples.jpeg(2, size=(320, 240)), "other.jpg"),
        (samples.resized_copy(original), "copy.jpg"),
        (samples.jpeg(3, size=(240, 320)), "third.jpg"),
    ]
    response = upload(team_a, files)
    assert response.status_code == 201, response.json
    ids = [item["id"] for item in response.json["items"]]
    run_jobs()

    response = client.get(
        f"/api/v1/images/{ids[0]}/similar?embedder=greythumb&k=5", headers=team_a.headers()
    )
    assert response.status_code == 200, response.json
    body = response.json
    assert body["embedder"] == "greythumb"
    assert body["index"]["version"] is not None and body["index"]["fresh"] is True
    found = [item["image"]["id"] for item in body["items"]]
    assert sorted(found) == sorted(ids[1:])
    assert found[0] == ids[2]  # the resized copy looks most alike
    distances = [item["distance"] for item in body["items"]]
    assert distances == sorted(distances) and distances[0] < distances[1]

    with app.app_context():
        stored = db.session.query(Embedding).filter_by(embedder="greythumb").all()
        assert sorted(str(e.image_id) for e in stored) == sorted(ids)
        assert {e.version for e in stored} == {GreyThumbnailEmbedder.version}
        assert {len(e.vector) for e in stored} == {64 * 4}  # 8x8 float32
