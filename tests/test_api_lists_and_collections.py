"""Lists page by cursor with a fixed cost per page, and `collection_id` is taken wherever API.md
says: upload, direct upload, import, edit, and as a list filter."""

from __future__ import annotations

import io
import uuid

import pytest

from app.services import collections
from app.services.audit import Actor
from app.tenancy import team_scope
from tests import samples
from tests.conftest import recorded_statements

ALICE = Actor("user", "alice@a.example")


def make_collection(app, team, name: str) -> str:
    with app.app_context(), team_scope(team.id):
        return str(collections.create_collection(team.id, name, actor=ALICE).collection.id)


def walk(client, team, path: str, limit: int, between=None) -> list[str]:
    """Every id of a list, page by page; `between(n)` runs after page n."""
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        page = client.get(path, query_string=query, headers=team.headers())
        assert page.status_code == 200, page.json
        seen += [
            item.get("id") or item.get("user_id") or item.get("url") for item in page.json["items"]
        ]
        cursor = page.json["next_cursor"]
        pages += 1
        if between:
            between(pages)
        if cursor is None:
            return seen


def test_walking_images_while_uploads_continue_returns_each_once(client, team_a, upload):
    before = [
        upload(team_a, [(samples.jpeg(n), f"{n}.jpg")]).json["items"][0]["id"] for n in range(9)
    ]
    during = []

    def upload_more(page: int) -> None:
        if page <= 3:
            made = upload(team_a, [(samples.jpeg(100 + page), f"new{page}.jpg")])
            during.append(made.json["items"][0]["id"])

    seen = walk(client, team_a, "/api/v1/images", 2, between=upload_more)
    assert len(seen) == len(set(seen))  # nothing twice
    assert set(before) <= set(seen)  # nothing that was there all along is missed
    assert not set(during) & set(seen)  # newer than the walk's start: on a fresh first page
    assert len(during) == 3


def test_every_list_walks_to_the_end_each_item_once(app, client, team_a, upload, person):
    for n in range(5):
        upload(team_a, [(samples.jpeg(n), f"{n}.jpg")])
        person(team_a, "member")
        client.post(
            "/api/v1/keys", json={"name": f"k{n}", "scopes": ["read"]}, headers=team_a.headers()
        )
        client.post(
            "/api/v1/imports",
            json={"urls": [f"http://example.com/{n}.jpg"]},
            headers=team_a.headers(),
        )
    batch = client.post(
        "/api/v1/imports",
        json={"urls": [f"http://example.com/x{n}.jpg" for n in range(7)]},
        headers=team_a.headers(),
    ).json
    for path, expected in [
        ("/api/v1/images", 5),
        ("/api/v1/keys", 7),
        ("/api/v1/members", 5),
        ("/api/v1/imports", 6),
        (f"/api/v1/imports/{batch['id']}", 7),
        ("/api/v1/audit", None),
    ]:
        seen = walk(client, team_a, path, 2)
        whole = walk(client, team_a, path, 200)  # one page
        assert seen == whole and len(seen) == len(set(seen)), path
        assert expected is None or len(seen) == expected, path


LIST_PATHS = [
    "/api/v1/images",
    "/api/v1/keys",
    "/api/v1/members",
    "/api/v1/audit",
    "/api/v1/imports",
]


@pytest.mark.parametrize("path", LIST_PATHS + ["import items"])
def test_a_list_page_costs_a_fixed_number_of_statements(app, client, team_a, upload, person, path):
    """The statements of a page do not grow with the page's length (no query per item)."""
    batch = client.post(
        "/api/v1/imports",
        json={"urls": [f"http://example.com/{n}.jpg" for n in range(12)]},
        headers=team_a.headers(),
    ).json
    if path == "import items":
        path = f"/api/v1/imports/{batch['id']}"
    for n in range(12):
        upload(team_a, [(samples.jpeg(n), f"{n}.jpg")])
        person(team_a, "member")
        client.post(
            "/api/v1/keys", json={"name": f"k{n}", "scopes": "read-only"}, headers=team_a.headers()
        )
        client.post(
            "/api/v1/imports", json={"urls": ["http://example.com/a.jpg"]}, headers=team_a.headers()
        )

    def statements_for(limit: int) -> int:
        statements, stop = recorded_statements(app)
        try:
            page = client.get(path, query_string={"limit": str(limit)}, headers=team_a.headers())
        finally:
            stop()
        assert page.status_code == 200 and len(page.json["items"]) == limit
        return len(statements)

    assert statements_for(2) == statements_for(10)


# -- collection_id -------------------------------------------------------------------------------


def test_upload_puts_images_in_a_collection_and_the_list_filters_by_it(app, client, team_a, upload):
    trip = make_collection(app, team_a, "Trip")
    response = client.post(
        "/api/v1/images",
        data={"file": [(io.BytesIO(samples.jpeg(1)), "a.jpg")], "collection_id": trip},
        headers=team_a.headers(),
        content_type="multipart/form-data",
    )
    assert response.status_code == 201
    image = response.json["items"][0]
    assert image["collection_id"] == trip
    upload(team_a, [(samples.jpeg(2), "loose.jpg")])
    listed = client.get(f"/api/v1/images?collection_id={trip}", headers=team_a.headers()).json
    assert [i["id"] for i in listed["items"]] == [image["id"]]


def test_patch_moves_an_image_between_collections_and_out(app, client, team_a, upload):
    trip, best = make_collection(app, team_a, "Trip"), make_collection(app, team_a, "Best")
    image = upload(team_a, [(samples.jpeg(1), "a.jpg")]).json["items"][0]
    path = f"/api/v1/images/{image['id']}"
    for target in (trip, best, None):
        moved = client.patch(path, json={"collection_id": target}, headers=team_a.headers())
        assert moved.status_code == 200 and moved.json["collection_id"] == target
        assert client.get(path, headers=team_a.headers()).json["collection_id"] == target


def test_direct_upload_and_import_take_a_collection(app, client, team_a):
    trip = make_collection(app, team_a, "Trip")
    direct = client.post(
        "/api/v1/uploads",
        json={
            "filename": "d.jpg",
            "content_type": "image/jpeg",
            "size_bytes": 10,
            "collection_id": trip,
        },
        headers=team_a.headers(),
    )
    assert direct.status_code == 201
    started = client.post(
        "/api/v1/imports",
        json={"urls": ["http://example.com/a.jpg"], "collection_id": trip},
        headers=team_a.headers(),
    )
    assert started.status_code == 202 and started.json["collection_id"] == trip
    csv_started = client.post(
        "/api/v1/imports",
        data={
            "file": (io.BytesIO(b"url\nhttp://example.com/b.jpg\n"), "l.csv"),
            "collection_id": trip,
        },
        headers=team_a.headers(),
        content_type="multipart/form-data",
    )
    assert csv_started.status_code == 202 and csv_started.json["collection_id"] == trip


@pytest.mark.parametrize("whose", ["unknown", "another team's"])
def test_a_collection_not_of_the_team_is_404_everywhere_and_nothing_is_made(
    app, client, team_a, team_b, upload, whose
):
    collection_id = (
        make_collection(app, team_b, "Theirs") if whose != "unknown" else str(uuid.uuid4())
    )
    image = upload(team_a, [(samples.jpeg(1), "a.jpg")]).json["items"][0]
    attempts = [
        client.post(
            "/api/v1/images",
            data={"file": [(io.BytesIO(samples.jpeg(2)), "b.jpg")], "collection_id": collection_id},
            headers=team_a.headers(),
            content_type="multipart/form-data",
        ),
        client.post(
            "/api/v1/uploads",
            json={
                "filename": "d.jpg",
                "content_type": "image/jpeg",
                "size_bytes": 10,
                "collection_id": collection_id,
            },
            headers=team_a.headers(),
        ),
        client.post(
            "/api/v1/imports",
            json={"urls": ["http://example.com/a.jpg"], "collection_id": collection_id},
            headers=team_a.headers(),
        ),
        client.patch(
            f"/api/v1/images/{image['id']}",
            json={"collection_id": collection_id, "filename": "renamed.jpg"},
            headers=team_a.headers(),
        ),
        client.get(f"/api/v1/images?collection_id={collection_id}", headers=team_a.headers()),
    ]
    for response in attempts:
        assert response.status_code == 404, response.json
        assert response.json["error"]["code"] == "not_found"
    listed = client.get("/api/v1/images", headers=team_a.headers()).json["items"]
    assert [(i["id"], i["filename"], i["collection_id"]) for i in listed] == [
        (image["id"], "a.jpg", None)
    ]
    assert client.get("/api/v1/imports", headers=team_a.headers()).json["items"] == []
