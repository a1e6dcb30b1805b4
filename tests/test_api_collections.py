"""Collections through the API, with two teams: the contract of API.md and its rules (a name
unique in the team, deleted only when empty, an image in at most one, any id the team lacks a
404 with nothing changed), audit events for every change, and paging."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import Image
from tests import samples
from tests.conftest import recorded_statements

API = "/api/v1"


@pytest.fixture
def api(app, client):
    """Send a request as a team; returns the response."""

    def send(team, method: str, path: str, json=None, key: str | None = None, **kwargs):
        return client.open(
            f"{API}{path}", method=method, json=json, headers=team.headers(key), **kwargs
        )

    send.app = app
    return send


@pytest.fixture
def photos(upload):
    """Upload `count` images as a team; returns their ids."""

    def make(team, count: int, first_seed: int = 0) -> list[str]:
        files = [
            (samples.jpeg(seed, size=(64, 48)), f"{seed}.jpg")
            for seed in range(first_seed, first_seed + count)
        ]
        response = upload(team, files)
        assert response.status_code == 201, response.data
        return [item["id"] for item in response.json["items"]]

    return make


def create(api, team, name: str, description: str | None = None) -> dict:
    body = {"name": name} if description is None else {"name": name, "description": description}
    response = api(team, "POST", "/collections", body)
    assert response.status_code == 201, response.data
    return response.json


def image_collection(api, team, image_id: str) -> str | None:
    """The collection an image is in, as committed (the images' own endpoints are another
    face of the same column)."""
    with api.app.app_context(), db.engine.connect() as conn:
        found = conn.scalar(select(Image.collection_id).where(Image.id == uuid.UUID(image_id)))
    return str(found) if found else None


def audit_actions(api, team, family: str = "collection") -> list[dict]:
    events = api(team, "GET", f"/audit?action={family}&limit=200").json["items"]
    return list(reversed(events))  # oldest first


def state(api, team) -> list[tuple]:
    """Every collection of the team with its count and images, as the API shows them."""
    listed = api(team, "GET", "/collections?limit=200").json["items"]
    images = api(team, "GET", "/images?limit=200").json["items"]
    return sorted(
        (c["id"], c["name"], c["description"], c["image_count"]) for c in listed
    ) + sorted((i["id"], image_collection(api, team, i["id"])) for i in images)


def test_create_get_update_delete(api, team_a):
    made = create(api, team_a, "Summer 2026", "The beach week")
    assert set(made) == {"id", "name", "description", "image_count", "created_at", "updated_at"}
    assert made["name"] == "Summer 2026" and made["description"] == "The beach week"
    assert made["image_count"] == 0 and made["created_at"].endswith("Z")
    uuid.UUID(made["id"])

    path = f"/collections/{made['id']}"
    assert api(team_a, "GET", path).json == made
    renamed = api(team_a, "PATCH", path, {"name": "Summer 2026 (beach)"})
    assert renamed.status_code == 200
    assert renamed.json["name"] == "Summer 2026 (beach)"
    assert renamed.json["description"] == "The beach week"
    described = api(team_a, "PATCH", path, {"description": None}).json
    assert described["description"] == "" and described["name"] == "Summer 2026 (beach)"

    deleted = api(team_a, "DELETE", path)
    assert deleted.status_code == 204 and deleted.data == b""
    assert api(team_a, "GET", path).status_code == 404
    assert api(team_a, "DELETE", path).status_code == 404

    actions = [(e["action"], e["target"]) for e in audit_actions(api, team_a)]
    assert actions == [
        ("collection.create", "Summer 2026"),
        ("collection.update", "Summer 2026 (beach)"),
        ("collection.update", "Summer 2026 (beach)"),
        ("collection.delete", "Summer 2026 (beach)"),
    ]
    assert all(e["actor"].startswith("key ") for e in audit_actions(api, team_a))


def test_a_name_the_team_has_is_a_conflict_in_any_case_or_spacing(api, team_a, team_b):
    first = create(api, team_a, "Summer")
    for taken in ("Summer", "  summer ", "SUMMER", "ＳＵＭＭＥＲ"):
        response = api(team_a, "POST", "/collections", {"name": taken})
        assert response.status_code == 409, taken
        assert response.json["error"]["code"] == "conflict"
        assert "Summer" in response.json["error"]["message"]
    other = create(api, team_a, "Winter")
    renamed = api(team_a, "PATCH", f"/collections/{other['id']}", {"name": "summer"})
    assert renamed.status_code == 409 and renamed.json["error"]["code"] == "conflict"
    # Another team has names of its own.
    assert create(api, team_b, "Summer")["id"] != first["id"]
    assert [c["name"] for c in api(team_a, "GET", "/collections").json["items"]] == [
        "Summer",
        "Winter",
    ]
    # A change of case alone is a rename, not a conflict with itself.
    assert api(team_a, "PATCH", f"/collections/{first['id']}", {"name": "summer"}).json["name"] == (
        "summer"
    )
    assert [e["action"] for e in audit_actions(api, team_a)] == [
        "collection.create",
        "collection.create",
        "collection.update",
    ]


def test_a_collection_is_deleted_only_when_empty(api, team_a, photos):
    collection = create(api, team_a, "Keep")
    image_ids = photos(team_a, 2)
    path = f"/collections/{collection['id']}"
    api(team_a, "POST", f"{path}/images", {"image_ids": image_ids})
    refused = api(team_a, "DELETE", path)
    assert refused.status_code == 409 and refused.json["error"]["code"] == "conflict"
    assert "2 images" in refused.json["error"]["message"]
    assert api(team_a, "GET", path).json["image_count"] == 2

    api(team_a, "DELETE", f"{path}/images", {"image_ids": image_ids})
    assert api(team_a, "DELETE", path).status_code == 204
    assert [image_collection(api, team_a, i) for i in image_ids] == [None, None]
    assert [e["action"] for e in audit_actions(api, team_a)] == [
        "collection.create",
        "collection.add_images",
        "collection.remove_images",
        "collection.delete",
    ]


def test_an_image_is_in_at_most_one_collection(api, team_a, photos):
    beach, city = create(api, team_a, "Beach"), create(api, team_a, "City")
    first, second = photos(team_a, 2)
    added = api(
        team_a, "POST", f"/collections/{beach['id']}/images", {"image_ids": [first, second]}
    )
    assert added.status_code == 200 and added.json["image_count"] == 2
    assert added.json["id"] == beach["id"]

    moved = api(team_a, "POST", f"/collections/{city['id']}/images", {"image_ids": [first]})
    assert moved.json["image_count"] == 1
    assert api(team_a, "GET", f"/collections/{beach['id']}").json["image_count"] == 1
    assert image_collection(api, team_a, first) == city["id"]
    assert image_collection(api, team_a, second) == beach["id"]

    # Adding again changes nothing and records nothing.
    again = api(team_a, "POST", f"/collections/{city['id']}/images", {"image_ids": [first]})
    assert again.status_code == 200 and again.json["image_count"] == 1
    # Removing an image that is in another collection leaves it there.
    kept = api(team_a, "DELETE", f"/collections/{city['id']}/images", {"image_ids": [second]})
    assert kept.status_code == 200 and kept.json["image_count"] == 1
    assert image_collection(api, team_a, second) == beach["id"]

    events = audit_actions(api, team_a)
    assert [e["action"] for e in events] == [
        "collection.create",
        "collection.create",
        "collection.add_images",
        "collection.add_images",
    ]
    assert events[-1]["details"]["moved_from"] == {beach["id"]: [first]}


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_any_id_the_team_lacks_is_404_and_changes_nothing(api, team_a, team_b, photos, method):
    mine = create(api, team_a, "Mine")
    theirs = create(api, team_b, "Theirs")
    own_images = photos(team_a, 2)
    their_image = photos(team_b, 1, first_seed=10)[0]
    api(team_a, "POST", f"/collections/{mine['id']}/images", {"image_ids": own_images[:1]})
    before_a, before_b = state(api, team_a), state(api, team_b)
    events_before = len(audit_actions(api, team_a))

    unknown = str(uuid.uuid4())
    for collection_id, image_ids in [
        (mine["id"], [own_images[1], their_image]),  # another team's image among own ones
        (mine["id"], [own_images[0], unknown]),
        (theirs["id"], own_images),  # another team's collection
        (unknown, own_images),
        ("not-an-id", own_images),
    ]:
        path = f"/collections/{collection_id}/images"
        response = api(team_a, method, path, {"image_ids": image_ids})
        assert response.status_code == 404, (collection_id, image_ids, response.data)
        assert response.json["error"]["code"] == "not_found"
        assert "Theirs" not in response.get_data(as_text=True)

    for method_, path, body in [
        ("GET", f"/collections/{theirs['id']}", None),
        ("PATCH", f"/collections/{theirs['id']}", {"name": "Taken over"}),
        ("DELETE", f"/collections/{theirs['id']}", None),
    ]:
        response = api(team_a, method_, path, body)
        assert response.status_code == 404 and "Theirs" not in response.get_data(as_text=True)

    assert state(api, team_a) == before_a and state(api, team_b) == before_b
    assert len(audit_actions(api, team_a)) == events_before
    assert [e["action"] for e in audit_actions(api, team_b)] == ["collection.create"]
    assert "Mine" not in api(team_b, "GET", "/collections").get_data(as_text=True)


@pytest.mark.parametrize(
    "method, path, body, field",
    [
        ("POST", "/collections", {}, "name"),
        ("POST", "/collections", {"name": 7}, "name"),
        ("POST", "/collections", {"name": "x", "colour": "red"}, "colour"),
        ("POST", "/collections", {"name": "x", "description": ["a"]}, "description"),
        ("POST", "/collections", {"name": "x" * 10_000}, "name"),
        ("PATCH", "/collections/{id}", {"team_id": str(uuid.uuid4())}, "team_id"),
        ("PATCH", "/collections/{id}", {"name": None}, "name"),
        ("POST", "/collections/{id}/images", {}, "image_ids"),
        ("POST", "/collections/{id}/images", {"image_ids": []}, "image_ids"),
        ("POST", "/collections/{id}/images", {"image_ids": "abc"}, "image_ids"),
        ("POST", "/collections/{id}/images", {"image_ids": ["nope"]}, "image_ids"),
        ("DELETE", "/collections/{id}/images", {"image_ids": [1]}, "image_ids"),
        ("GET", "/collections?limit=0", None, "limit"),
        ("GET", "/collections?limit=201", None, "limit"),
        ("GET", "/collections?limit=5x", None, "limit"),
        ("GET", "/collections?sort=name", None, "sort"),
    ],
)
def test_invalid_input_is_400_naming_the_field(api, team_a, method, path, body, field):
    collection = create(api, team_a, "Target")
    before = state(api, team_a)
    response = api(team_a, method, path.replace("{id}", collection["id"]), body)
    assert response.status_code == 400, response.data
    assert response.json["error"]["code"] == "bad_request"
    assert field in response.json["error"]["message"]
    assert state(api, team_a) == before


@pytest.mark.parametrize("name", ["", "   ", "\u200b\u200b", "x" * 101])
def test_names_the_service_refuses_are_422(api, team_a, name):
    response = api(team_a, "POST", "/collections", {"name": name})
    assert response.status_code in (400, 422), response.data
    assert response.json["error"]["code"] in ("bad_request", "validation_error")
    assert api(team_a, "GET", "/collections").json["items"] == []


def test_a_tampered_cursor_is_400(api, team_a):
    for cursor in ("garbage", "eyJ4IjoxfQ", "W10", "x" * 5000):
        response = api(team_a, "GET", f"/collections?cursor={cursor}")
        assert response.status_code == 400, cursor
        assert response.json["error"]["code"] == "bad_request"


def test_the_list_pages_by_name_with_counts_in_a_fixed_number_of_statements(
    app, api, team_a, team_b, photos
):
    names = [f"Album {n:02d}" for n in range(7)]
    made = {name: create(api, team_a, name) for name in reversed(names)}
    create(api, team_b, "Album 00b")
    image_ids = photos(team_a, 3)
    api(team_a, "POST", f"/collections/{made['Album 03']['id']}/images", {"image_ids": image_ids})

    seen, cursor, statement_counts = [], None, []
    while True:
        query = "/collections?limit=3" + (f"&cursor={cursor}" if cursor else "")
        statements, stop = recorded_statements(app)
        page = api(team_a, "GET", query)
        stop()
        assert page.status_code == 200
        statement_counts.append(len(statements))
        seen += [(c["name"], c["image_count"]) for c in page.json["items"]]
        cursor = page.json["next_cursor"]
        if cursor is None:
            break
    assert [name for name, _ in seen] == names
    assert dict(seen)["Album 03"] == 3 and sum(count for _, count in seen) == 3
    assert len(set(statement_counts)) == 1, statement_counts


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "/collections", {"name": "x"}),
        ("PATCH", "/collections/{id}", {"name": "y"}),
        ("DELETE", "/collections/{id}", None),
        ("POST", "/collections/{id}/images", {"image_ids": ["{image}"]}),
        ("DELETE", "/collections/{id}/images", {"image_ids": ["{image}"]}),
    ],
)
def test_changes_need_the_write_scope(api, team_a, photos, method, path, body):
    collection = create(api, team_a, "Read only")
    image = photos(team_a, 1)[0]
    if body and "image_ids" in body:
        body = {"image_ids": [image]}
    before = state(api, team_a)
    response = api(team_a, method, path.replace("{id}", collection["id"]), body, team_a.read_key)
    assert response.status_code == 403
    assert "write" in response.json["error"]["message"]
    assert state(api, team_a) == before
    assert api(team_a, "GET", "/collections", key=team_a.read_key).status_code == 200


def test_a_patch_without_changes_changes_nothing(api, team_a):
    collection = create(api, team_a, "Same")
    for body in (None, {}, {"name": "Same"}):
        response = api(team_a, "PATCH", f"/collections/{collection['id']}", body)
        assert response.status_code == 200 and response.json == collection
    assert [e["action"] for e in audit_actions(api, team_a)] == ["collection.create"]
