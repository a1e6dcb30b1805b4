"""The Collections pages: list, create, rename, describe, delete (only when empty), and moving
images in and out from the gallery grid."""

from __future__ import annotations

import re

import pytest
from markupsafe import escape

from tests import samples

HOSTILE = "<img src=x onerror=alert(1)>"
HX_INJECTION = '" hx-get="/settings/keys" hx-trigger="load'


def _images(upload, team, count=2) -> list[str]:
    files = [(samples.jpeg(10 + n), f"pic{n}.jpg") for n in range(count)]
    return [item["id"] for item in upload(team, files).json["items"]]


def _create(client, name, description="") -> str:
    response = client.post("/collections", data={"name": name, "description": description})
    assert response.status_code == 302, response.data
    page = client.get("/collections").get_data(as_text=True)
    link = re.search(r'href="/collections/([0-9a-f-]{36})">' + re.escape(str(escape(name))), page)
    assert link, page
    return link.group(1)


def test_list_page_and_fragment_show_collections_with_counts(app, team_a, person, upload):
    editor = person(team_a, "member").client
    empty = editor.get("/collections")
    assert empty.status_code == 200 and "HX-Request" in empty.headers["Vary"]
    assert "No collections yet" in empty.get_data(as_text=True)
    collection_id = _create(editor, "Summer", "beach days")
    image_ids = _images(upload, team_a)
    moved = editor.post(
        "/collections/move",
        data={"image_ids": image_ids, "collection_id": collection_id, "action": "add"},
    )
    assert moved.status_code == 302
    fragment = editor.get("/collections", headers={"HX-Request": "true"})
    body = fragment.get_data(as_text=True)
    assert "<html" not in body and "Summer" in body and "beach days" in body
    assert re.search(r"<td data-count>2</td>", body)


def test_create_by_htmx_answers_the_fragment_and_refuses_a_taken_name(app, team_a, person):
    editor = person(team_a, "admin").client
    created = editor.post("/collections", data={"name": "Trips"}, headers={"HX-Request": "true"})
    assert created.status_code == 200 and "Collection “Trips” created." in created.get_data(True)
    taken = editor.post("/collections", data={"name": " trips "}, headers={"HX-Request": "true"})
    assert taken.status_code == 409
    assert "already has a collection named" in taken.get_data(as_text=True)
    blank = editor.post("/collections", data={"name": "  "})
    assert blank.status_code in (400, 422) and "<html" in blank.get_data(as_text=True)


def test_viewers_see_collections_but_cannot_change_them(app, team_a, person, upload):
    admin = person(team_a, "admin").client
    collection_id = _create(admin, "Shared")
    image_ids = _images(upload, team_a, 1)
    viewer = person(team_a, "viewer").client
    listing = viewer.get("/collections").get_data(as_text=True)
    assert "Shared" in listing and "Create collection" not in listing
    page = viewer.get(f"/collections/{collection_id}").get_data(as_text=True)
    assert "Rename" not in page and "remove-form" not in page
    gallery = viewer.get("/").get_data(as_text=True)
    assert "bulk-form" not in gallery
    for path, data in [
        ("/collections", {"name": "Mine"}),
        (f"/collections/{collection_id}", {"name": "Renamed"}),
        (f"/collections/{collection_id}/delete", {}),
        (f"/collections/{collection_id}/images/remove", {"image_ids": image_ids}),
        ("/collections/move", {"image_ids": image_ids, "collection_id": collection_id}),
    ]:
        assert viewer.post(path, data=data).status_code == 403, path
    assert "Shared" in admin.get("/collections").get_data(as_text=True)


def test_images_move_in_from_the_grid_and_out_from_the_collection_page(app, team_a, person, upload):
    editor = person(team_a, "member").client
    first = _create(editor, "First")
    second = _create(editor, "Second")
    image_ids = _images(upload, team_a, 3)
    gallery = editor.get("/").get_data(as_text=True)
    assert 'id="bulk-form"' in gallery
    for image_id in image_ids:
        assert f'name="image_ids" value="{image_id}" form="bulk-form"' in gallery

    added = editor.post(
        "/collections/move",
        data={"image_ids": image_ids, "collection_id": first, "action": "add"},
        headers={"HX-Request": "true"},
    )
    assert added.status_code == 200
    assert "3 images now in “First” (3 in it)." in added.get_data(as_text=True)
    # An image is in one collection at most: adding it to another moves it.
    editor.post("/collections/move", data={"image_ids": image_ids[:1], "collection_id": second})
    page = editor.get(f"/collections/{first}").get_data(as_text=True)
    assert "2 images" in page
    assert image_ids[1] in page and image_ids[2] in page and image_ids[0] not in page

    removed = editor.post(
        f"/collections/{first}/images/remove",
        data={"image_ids": [image_ids[1]]},
        headers={"HX-Request": "true"},
    )
    assert removed.status_code == 200 and "<html" not in removed.get_data(as_text=True)
    assert "1 image<" in removed.get_data(as_text=True)
    taken_out = editor.post(
        "/collections/move",
        data={"image_ids": [image_ids[2]], "collection_id": first, "action": "remove"},
    )
    assert taken_out.status_code == 302
    assert "This collection is empty" in editor.get(f"/collections/{first}").get_data(True)


def test_bulk_bar_says_what_is_missing(app, team_a, person, upload):
    editor = person(team_a, "member").client
    collection_id = _create(editor, "Box")
    nothing = editor.post(
        "/collections/move", data={"collection_id": collection_id}, headers={"HX-Request": "1"}
    )
    assert nothing.status_code == 422 and "Select one or more images" in nothing.get_data(True)
    image_ids = _images(upload, team_a, 1)
    nowhere = editor.post(
        "/collections/move", data={"image_ids": image_ids}, headers={"HX-Request": "1"}
    )
    assert nowhere.status_code == 422 and "Choose a collection" in nowhere.get_data(True)


def test_rename_and_describe(app, team_a, person):
    editor = person(team_a, "member").client
    collection_id = _create(editor, "Old name")
    renamed = editor.post(
        f"/collections/{collection_id}",
        data={"name": "New name", "description": "what it holds"},
        headers={"HX-Request": "true"},
    )
    body = renamed.get_data(as_text=True)
    assert renamed.status_code == 200 and "Saved “New name”." in body and "what it holds" in body
    _create(editor, "Other")
    clash = editor.post(f"/collections/{collection_id}", data={"name": "OTHER"})
    assert clash.status_code == 409 and "already has a collection named" in clash.get_data(True)


def test_delete_is_refused_while_the_collection_holds_images(app, team_a, person, upload):
    editor = person(team_a, "member").client
    collection_id = _create(editor, "Busy")
    image_ids = _images(upload, team_a, 1)
    editor.post("/collections/move", data={"image_ids": image_ids, "collection_id": collection_id})
    refused = editor.post(f"/collections/{collection_id}/delete", headers={"HX-Request": "1"})
    assert refused.status_code == 409
    assert "still holds 1 image; move or remove them" in refused.get_data(as_text=True)
    assert editor.get(f"/collections/{collection_id}").status_code == 200
    editor.post(f"/collections/{collection_id}/images/remove", data={"image_ids": image_ids})
    deleted = editor.post(f"/collections/{collection_id}/delete", headers={"HX-Request": "1"})
    assert deleted.status_code == 204 and deleted.headers["HX-Redirect"] == "/collections"
    assert editor.get(f"/collections/{collection_id}").status_code == 404


def test_another_teams_collection_and_images_are_not_found(app, team_a, team_b, person, upload):
    owner = person(team_a, "admin").client
    theirs = _create(owner, "Private")
    their_images = _images(upload, team_a, 1)
    intruder = person(team_b, "admin").client
    mine = _create(intruder, "Mine")
    my_images = _images(upload, team_b, 1)
    assert intruder.get(f"/collections/{theirs}").status_code == 404
    moved = intruder.post(
        "/collections/move", data={"image_ids": my_images, "collection_id": theirs}
    )
    assert moved.status_code == 302
    stolen = intruder.post(
        "/collections/move",
        data={"image_ids": their_images, "collection_id": mine},
        headers={"HX-Request": "1"},
    )
    assert stolen.status_code == 404 and "no such image" in stolen.get_data(as_text=True)
    assert "Private" not in intruder.get("/collections").get_data(as_text=True)
    assert "0 images" in owner.get(f"/collections/{theirs}").get_data(as_text=True)
    assert "0 images" in intruder.get(f"/collections/{mine}").get_data(as_text=True)


@pytest.mark.parametrize("name", [HOSTILE, HX_INJECTION])
def test_hostile_collection_names_are_escaped_everywhere(app, team_a, person, upload, name):
    editor = person(team_a, "member").client
    collection_id = _create(editor, name, description=name)
    _images(upload, team_a, 1)
    pages = [
        editor.get("/collections"),
        editor.get(f"/collections/{collection_id}"),
        editor.get("/"),
        editor.post(
            "/collections/move",
            data={"image_ids": _images(upload, team_a, 1), "collection_id": collection_id},
            headers={"HX-Request": "1"},
        ),
    ]
    for page in pages:
        body = page.get_data(as_text=True)
        assert name not in body
        assert "onerror=alert" not in body.replace("onerror=alert(1)&gt;", "")
        assert 'hx-get="/settings/keys"' not in body
        assert str(escape(name)) in body


def test_a_collections_grid_scrolls_on_by_fragments(app, team_a, person, upload, monkeypatch):
    monkeypatch.setattr("app.gallery.collections.PAGE_SIZE", 1)
    editor = person(team_a, "member").client
    collection_id = _create(editor, "Long")
    first, second = _images(upload, team_a, 2)
    editor.post(
        "/collections/move", data={"image_ids": [first, second], "collection_id": collection_id}
    )
    page = editor.get(f"/collections/{collection_id}").get_data(as_text=True)
    assert page.count('class="tile"') == 1
    more = re.search(r'<li class="more" hx-get="([^"]+)"', page).group(1).replace("&amp;", "&")
    rest = editor.get(more, headers={"HX-Request": "true"})
    body = rest.get_data(as_text=True)
    assert rest.status_code == 200 and "<html" not in body and "HX-Request" in rest.headers["Vary"]
    assert body.count('class="tile"') == 1 and 'class="more"' not in body
    assert {first, second} == set(re.findall(r'id="image-([0-9a-f-]{36})"', page + body))


def test_the_collections_page_pages_past_a_hundred(app, team_a, person):
    from app.services import collections
    from app.services.audit import SYSTEM

    with app.app_context():
        for n in range(101):
            collections.create_collection(team_a.id, f"Album {n:03d}", actor=SYSTEM)
    viewer = person(team_a, "viewer").client
    first = viewer.get("/collections").get_data(as_text=True)
    assert first.count("Album ") == 100 and "Album 099" in first and "Album 100" not in first
    more = re.search(r'href="(/collections\?cursor=[^"]+)"', first).group(1)
    rest = viewer.get(more.replace("&amp;", "&")).get_data(as_text=True)
    assert "Album 100" in rest and "Album 099" not in rest and "More collections" not in rest
    assert viewer.get("/collections?cursor=garbage").status_code == 400
