"""Upload → a real worker process → index → similar, as the README promises."""

from __future__ import annotations

import pytest

from tests import samples

pytestmark = pytest.mark.slow


def test_worker_process_makes_images_ready_and_similar_finds_the_copy(
    client, team_a, upload, run_worker_process
):
    original = samples.jpeg(101, size=(1600, 1200))
    copy = samples.resized_copy(original, factor=0.4, quality=55)
    other = samples.jpeg(102, size=(1600, 1200))
    items = upload(team_a, [(original, "original.jpg"), (copy, "copy.jpg"), (other, "other.jpg")])
    ids = [i["id"] for i in items.json["items"]]

    run_worker_process()

    for image_id in ids:
        image = client.get(f"/api/v1/images/{image_id}", headers=team_a.headers()).json
        assert image["status"] == "ready", image
    for embedder in ("color", "phash"):
        response = client.get(
            f"/api/v1/images/{ids[0]}/similar?embedder={embedder}", headers=team_a.headers()
        )
        assert response.status_code == 200
        body = response.json
        assert body["embedder"] == embedder
        assert [m["image"]["id"] for m in body["items"]] == [ids[1], ids[2]]
        first, second = body["items"]
        assert first["distance"] < second["distance"]
        assert first["score"] > second["score"]
        # The worker built an index that holds all three images (more than one version if
        # the debounce window turned while it worked).
        assert body["index"]["version"] >= 1 and body["index"]["fresh"] is True


def test_image_processed_after_the_build_is_found_before_any_rebuild(
    app, client, runner, team_a, upload, run_jobs, pinned_clock
):
    base = [samples.jpeg(200 + i) for i in range(4)]
    upload(team_a, [(data, f"{i}.jpg") for i, data in enumerate(base)])
    run_jobs()  # processes the four and runs the index builds they asked for
    result = runner.invoke(args=["index", "rebuild", "--team", team_a.team.slug])
    assert result.exit_code == 0, result.output
    # The uploads' requests all fall in one debounce window (the clock is pinned): they made
    # one build each, version 1, and the CLI's rebuild is version 2.
    versions = dict(part.split("=v") for part in result.output.strip().splitlines()[-1].split())
    assert versions == {"phash": "2", "color": "2"}
    rebuilt = 2

    copy = upload(team_a, [(samples.resized_copy(base[2]), "late-copy.jpg")]).json["items"][0]
    with app.app_context():
        from app.jobs import process_image

        process_image(copy["id"])  # processed, but no index build has run since
    query = client.get(f"/api/v1/images/{copy['id']}/similar?k=1", headers=team_a.headers()).json
    assert query["index"]["fresh"] is False
    assert query["index"]["version"] == rebuilt  # the copy came after the CLI's rebuild

    response = client.get("/api/v1/images?limit=200", headers=team_a.headers()).json["items"]
    target = next(i for i in response if i["filename"] == "2.jpg")
    found = client.get(f"/api/v1/images/{target['id']}/similar?k=1", headers=team_a.headers()).json
    assert [m["image"]["id"] for m in found["items"]] == [copy["id"]]
    assert found["index"]["fresh"] is False
