"""Editing images (filename, tags, custom metadata), tags at upload, and finding by tag or text."""

from __future__ import annotations

import io

import pytest

from tests import samples


@pytest.fixture
def image(team_a, upload):
    return upload(team_a, [(samples.jpeg(1), "beach.jpg")]).json["items"][0]


def patch(client, team, image_id, body, key=None):
    return client.patch(f"/api/v1/images/{image_id}", json=body, headers=team.headers(key))


def test_patch_edits_filename_tags_and_custom_metadata(client, team_a, image):
    response = patch(
        client,
        team_a,
        image["id"],
        {
            "filename": "Beach\u202e gpj.exe",
            "tags": ["Summer", " summer ", "Sea  Side"],
            "metadata": {"custom": {"photographer": "Ann", "rating": 4}},
        },
    )
    assert response.status_code == 200, response.json
    body = response.json
    assert body["filename"] == "Beach gpj.exe"  # the bidi override is gone
    assert body["tags"] == ["sea side", "summer"]
    assert body["metadata"]["custom"] == {"photographer": "Ann", "rating": 4}
    again = client.get(f"/api/v1/images/{image['id']}", headers=team_a.headers()).json
    assert again["tags"] == ["sea side", "summer"] and again["filename"] == "Beach gpj.exe"
    cleared = patch(client, team_a, image["id"], {"tags": []}).json
    assert cleared["tags"] == [] and cleared["metadata"]["custom"] == {
        "photographer": "Ann",
        "rating": 4,
    }


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"team_id": "00000000-0000-0000-0000-000000000000"}, 400),
        ({"id": "00000000-0000-0000-0000-000000000000"}, 400),
        ({"sha256": "0" * 64}, 400),
        ({"status": "ready"}, 400),
        ({"width": 1}, 400),
        ({"filename": "ok.jpg", "status": "error"}, 400),
        ({"metadata": {"exif": {}}}, 400),
        ({"metadata": {"colors": ["#000000"]}}, 400),
        ({"metadata": "custom"}, 400),
        ({}, 400),
        (["filename"], 400),
        ({"filename": ""}, 422),
        # Wrong types are 400s naming the field; the domain's rules on values are 422s.
        ({"filename": 12}, 400),
        ({"tags": "a" * 65}, 422),
        ({"tags": [f"t{n}" for n in range(51)]}, 422),
        ({"tags": [1, 2]}, 400),
        ({"tags": ["bell\u0007"]}, 422),
        ({"metadata": {"custom": ["not", "an", "object"]}}, 400),
        ({"metadata": {"custom": {"big": "x" * 17000}}}, 422),
        ({"collection_id": "00000000-0000-0000-0000-000000000000"}, 404),  # not the team's
        ({"collection_id": "not-an-id"}, 400),
        ({"collection_id": 5}, 400),
    ],
)
def test_patch_refuses_bad_input_and_changes_nothing(client, team_a, image, body, status):
    response = patch(client, team_a, image["id"], body)
    assert response.status_code == status, response.json
    assert response.json["error"]["message"]
    after = client.get(f"/api/v1/images/{image['id']}", headers=team_a.headers()).json
    assert (
        after["filename"] == "beach.jpg"
        and after["tags"] == []
        and after["status"] == image["status"]
    )
    assert after["sha256"] == image["sha256"] and after["metadata"]["custom"] == {}


def test_patch_needs_the_write_scope(client, team_a, image):
    response = patch(client, team_a, image["id"], {"filename": "x.jpg"}, key=team_a.read_key)
    assert response.status_code == 403


def test_patch_is_audited(client, team_a, image):
    patch(client, team_a, image["id"], {"tags": ["a"]})
    events = client.get("/api/v1/audit?action=image.edit", headers=team_a.headers()).json["items"]
    assert [(e["target_id"], e["details"]["fields"]) for e in events] == [(image["id"], ["tags"])]


def test_tags_at_upload_and_filters(client, team_a, team_b, upload):
    tagged = client.post(
        "/api/v1/images",
        data={"file": (io.BytesIO(samples.jpeg(2)), "dog.jpg"), "tags": "Pets, Dogs,pets"},
        headers=team_a.headers(),
        content_type="multipart/form-data",
    ).json["items"][0]
    assert tagged["tags"] == ["dogs", "pets"]
    upload(team_a, [(samples.jpeg(3), "Cat_100%.jpg")])
    upload(team_b, [(samples.jpeg(4), "dog-of-b.jpg")])
    client.post(
        "/api/v1/images",
        data={"file": (io.BytesIO(samples.jpeg(5)), "b.jpg"), "tags": "pets"},
        headers=team_b.headers(),
        content_type="multipart/form-data",
    )

    def names(**params):
        response = client.get("/api/v1/images", query_string=params, headers=team_a.headers())
        assert response.status_code == 200, response.json
        return sorted(i["filename"] for i in response.json["items"])

    assert names(tag="PETS") == ["dog.jpg"]
    assert names(tag="nothing") == []
    assert names(q="DOG") == ["dog.jpg"]  # by filename, not team B's
    assert names(q="pets") == ["dog.jpg"]  # by tag
    assert names(q="100%") == ["Cat_100%.jpg"]  # by its words: punctuation separates them
    assert names(q="_") == []  # no word to search for (tests/test_text_search.py)
    assert client.get("/api/v1/images?q=%20", headers=team_a.headers()).status_code == 400


def test_exact_reupload_with_tags_creates_nothing(client, team_a, upload):
    first = upload(team_a, [(samples.jpeg(6), "one.jpg")]).json["items"][0]
    again = client.post(
        "/api/v1/images",
        data={"file": (io.BytesIO(samples.jpeg(6)), "two.jpg"), "tags": "new"},
        headers=team_a.headers(),
        content_type="multipart/form-data",
    ).json["items"][0]
    assert again["id"] == first["id"] and again["existing"] is True and again["tags"] == []
