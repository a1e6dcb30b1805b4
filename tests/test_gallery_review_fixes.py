"""Defects a review of the gallery found: the poller's answer with a "more" sentinel and its
lost images, the bulk bar's counts, labels beyond ASCII, the image page's collection picker,
and numbers in the address that are not plain digits."""

from __future__ import annotations

import io
import re
import uuid

import pytest

from app.extensions import db
from app.models import Label
from app.services import collections
from app.services.audit import Actor
from app.services.ingest import Incoming, ingest
from app.tenancy import team_scope
from tests import samples

SYSTEM = Actor.system()
counter = iter(range(1000, 100_000))


@pytest.fixture
def admin(person, team_a):
    return person(team_a, "admin")


def add_images(app, team, count: int, collection_id=None) -> list[uuid.UUID]:
    """`count` small images of the team, committed, each different."""
    with app.app_context(), team_scope(team.id):
        files = [
            Incoming(io.BytesIO(samples.jpeg(seed, size=(64, 48))), f"{seed}.jpg")
            for seed in (next(counter) for _ in range(count))
        ]
        results = ingest(team.id, files, actor=SYSTEM, collection_id=collection_id)
        return [result.image.id for result in results]


def create_collection(app, team, name: str) -> uuid.UUID:
    with app.app_context():
        return collections.create_collection(team.id, name, actor=SYSTEM).collection.id


def poller_url(html: str) -> str:
    poller = re.search(r'<li class="poller"[^>]*>', html, re.S).group(0)
    return re.search(r'hx-get="([^"]+)"', poller).group(1).replace("&amp;", "&")


def tile_ids(html: str) -> list[str]:
    return re.findall(r'<li class="tile" id="image-([0-9a-f-]{36})"', html)


HTMX = {"HX-Request": "true"}


# --- the poller ------------------------------------------------------------------------------


def test_the_fresh_answer_never_carries_the_grids_more_sentinel(app, admin, team_a):
    add_images(app, team_a, 61)  # more than a page
    page = admin.client.get("/").get_data(as_text=True)
    assert 'class="more"' in page  # the grid's own, at its end
    fresh_url = poller_url(page)
    # The answer replaces the poller, the grid's first child: a sentinel there would load the
    # second page above the first.
    nothing_new = admin.client.get(fresh_url, headers=HTMX).get_data(as_text=True)
    assert 'class="more"' not in nothing_new and tile_ids(nothing_new) == []
    (arrived,) = add_images(app, team_a, 1)
    fresh = admin.client.get(fresh_url, headers=HTMX).get_data(as_text=True)
    assert tile_ids(fresh) == [str(arrived)] and 'class="more"' not in fresh


def test_the_poller_skips_no_image_when_more_than_a_page_arrives(app, admin, team_a, monkeypatch):
    add_images(app, team_a, 1)
    fresh_url = poller_url(admin.client.get("/").get_data(as_text=True))
    arrived = add_images(app, team_a, 65)  # more than a page (60) between two polls
    fresh = admin.client.get(fresh_url, headers=HTMX)
    body = fresh.get_data(as_text=True)
    assert "HX-Refresh" not in fresh.headers
    assert tile_ids(body) == [str(i) for i in reversed(arrived)]  # all of them, newest first
    # And the poller goes on from the newest: none comes twice.
    again = admin.client.get(poller_url(body), headers=HTMX).get_data(as_text=True)
    assert tile_ids(again) == []

    # More than one answer places: the page loads again rather than skip any.
    monkeypatch.setattr("app.gallery.routes.FRESH_LIMIT", 10)
    add_images(app, team_a, 11)
    too_many = admin.client.get(poller_url(body), headers=HTMX)
    assert too_many.status_code == 200 and too_many.headers["HX-Refresh"] == "true"
    assert tile_ids(too_many.get_data(as_text=True)) == []


def test_the_poller_of_an_empty_gallery_shows_the_first_images(app, admin, team_a):
    fresh_url = poller_url(admin.client.get("/").get_data(as_text=True))
    arrived = add_images(app, team_a, 2)
    body = admin.client.get(fresh_url, headers=HTMX).get_data(as_text=True)
    assert tile_ids(body) == [str(i) for i in reversed(arrived)]
    assert tile_ids(admin.client.get(poller_url(body), headers=HTMX).get_data(as_text=True)) == []


# --- the bulk bar -------------------------------------------------------------------------------


def test_the_bulk_bar_counts_the_images_that_moved_not_those_ticked(app, admin, team_a, client):
    box = create_collection(app, team_a, "C")
    one, two, three = (str(i) for i in add_images(app, team_a, 3))

    def move(action: str, image_ids: list[str]) -> str:
        data = {"image_ids": image_ids, "collection_id": str(box), "action": action}
        response = admin.client.post("/collections/move", data=data, headers=HTMX)
        assert response.status_code == 200
        return response.get_data(as_text=True)

    assert "1 image now in “C” (1 in it)." in move("add", [one])
    # One already there, one asked for twice.
    assert "1 image now in “C” (2 in it)." in move("add", [one, two, two])
    assert "2 images taken out of “C” (0 in it)." in move("remove", [one, two, three])
    move("add", [one])
    assert "1 image taken out of “C” (0 in it)." in move("remove", [one, two, three])

    # The API answers the collection as before, without the count of changes.
    added = client.post(
        f"/api/v1/collections/{box}/images", json={"image_ids": [one]}, headers=team_a.headers()
    )
    assert added.status_code == 200
    assert set(added.json) == {
        "id",
        "name",
        "description",
        "image_count",
        "created_at",
        "updated_at",
    }
    assert added.json["image_count"] == 1


def test_collection_services_say_how_many_images_changed(app, team_a):
    box = create_collection(app, team_a, "Box")
    other = create_collection(app, team_a, "Other")
    one, two = (str(i) for i in add_images(app, team_a, 2))
    with app.app_context(), team_scope(team_a.id):
        assert collections.add_images(box, [one, one.upper()], actor=SYSTEM).changed == 1
        assert collections.add_images(box, [one, two], actor=SYSTEM).changed == 1
        moved = collections.add_images(other, [two], actor=SYSTEM)  # from Box: moved
        assert (moved.changed, moved.image_count) == (1, 1)
        left = collections.remove_images(box, [one, two], actor=SYSTEM)
        assert (left.changed, left.image_count) == (1, 0)
        assert collections.remove_images(box, [one, two], actor=SYSTEM).changed == 0


# --- labels ---------------------------------------------------------------------------------------


def test_the_label_filter_finds_the_labels_the_picker_offers(app, admin, team_a):
    names = ["Éclair", "Straße", "ÅNGSTRÖM", "Pine"]
    image_ids = add_images(app, team_a, len(names))
    with app.app_context():
        for image_id, name in zip(image_ids, names, strict=True):
            db.session.add(
                Label(team_id=team_a.id, image_id=image_id, embedder="cnn", name=name, score=0.9)
            )
        db.session.commit()
    page = admin.client.get("/").get_data(as_text=True)
    picker = re.search(r'<select name="label">(.*?)</select>', page, re.S).group(1)
    offered = re.findall(r"<option\s*(?:selected)?>([^<]+)</option>", picker)  # not "Any"
    assert sorted(offered) == sorted(names)
    for image_id, name in zip(image_ids, names, strict=True):
        found = admin.client.get("/", query_string={"label": name}).get_data(as_text=True)
        assert tile_ids(found) == [str(image_id)], name
    # ASCII letters still match in any case.
    found = admin.client.get("/", query_string={"label": "pINE"}).get_data(as_text=True)
    assert tile_ids(found) == [str(image_ids[-1])]
    nothing = admin.client.get("/", query_string={"label": "Strasse"}).get_data(as_text=True)
    assert tile_ids(nothing) == []


# --- the image page's collection picker -----------------------------------------------------------


def selected_option(html: str) -> tuple[str, str] | None:
    picker = re.search(r'<select name="collection">(.*?)</select>', html, re.S).group(1)
    found = re.search(r'<option value="([^"]*)" selected>([^<]*)</option>', picker)
    return found.groups() if found else None


def test_the_image_page_picker_always_offers_the_images_collection(app, admin, team_a, monkeypatch):
    monkeypatch.setattr("app.gallery.routes.PICKER_SIZE", 2)
    for name in ("Alpha", "Beta"):
        create_collection(app, team_a, name)
    last = create_collection(app, team_a, "Zulu")  # beyond the first two by name
    (image_id,) = add_images(app, team_a, 1, collection_id=last)

    page = admin.client.get(f"/images/{image_id}").get_data(as_text=True)
    assert selected_option(page) == (str(last), "Zulu")
    assert page.count("<option value=") == 4  # None, Alpha, Beta, Zulu: not twice
    # Moving it there again from the page's own form keeps it there, and the fragment says so.
    moved = admin.client.post(
        f"/images/{image_id}/collection", data={"collection": str(last)}, headers=HTMX
    )
    assert moved.status_code == 200
    assert selected_option(moved.get_data(as_text=True)) == (str(last), "Zulu")


# --- numbers in the address ---------------------------------------------------------------------


@pytest.mark.parametrize("quality", ["\u00b2", "\u0663", "9" * 5000, "", "0", "96"])
def test_a_download_quality_that_is_no_plain_number_in_range_is_400(app, admin, team_a, quality):
    """'²' and '٣' are digits to str.isdigit: int() refuses the first (it answered 500) and
    reads the second as 3; 5,000 digits are more than int() reads."""
    (image_id,) = add_images(app, team_a, 1)
    response = admin.client.get(f"/images/{image_id}/download?format=jpeg&quality={quality}")
    assert response.status_code == 400
    assert b"quality is a whole number from 1 to 95" in response.data
