"""The Search-by-image and Duplicates pages."""

from __future__ import annotations

import io
import re

import pytest
from markupsafe import escape
from sqlalchemy import func, select

from app.extensions import db
from app.models import DuplicateDecision, Image
from app.tenancy import unscoped
from tests import samples

HOSTILE = "<img src=x onerror=alert(1)>"
HX_INJECTION = '" hx-get="/settings/keys" hx-trigger="load'


def _stored(app) -> int:
    with app.app_context(), unscoped():
        return db.session.scalar(select(func.count(Image.id)))


def _pair(upload, team, seed=1, names=("photo.jpg", "copy.jpg")):
    original = samples.jpeg(seed)
    return [
        item["id"]
        for item in upload(
            team, [(original, names[0]), (samples.resized_copy(original), names[1])]
        ).json["items"]
    ]


# --- search by image ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
def test_search_by_file_shows_the_closest_images_and_stores_nothing(
    app, team_a, team_b, upload, run_jobs, person, role
):
    ids = _pair(upload, team_a, names=(HOSTILE + ".jpg", HX_INJECTION + ".jpg"))
    upload(team_a, [(samples.jpeg(7), "other.jpg")])
    upload(team_b, [(samples.jpeg(1), "theirs.jpg")])
    run_jobs()
    stored = _stored(app)
    client = person(team_a, role).client
    page = client.get("/search")
    assert page.status_code == 200 and 'name="file"' in page.get_data(as_text=True)

    query = samples.resized_copy(samples.jpeg(1), factor=0.7)
    answer = client.post(
        "/search",
        data={"file": (io.BytesIO(query), "query.jpg")},
        headers={"HX-Request": "true"},
        content_type="multipart/form-data",
    )
    body = answer.get_data(as_text=True)
    assert (
        answer.status_code == 200 and "<html" not in body and "HX-Request" in answer.headers["Vary"]
    )
    found = re.findall(r'data-image-id="([0-9a-f-]{36})"', body)
    assert set(found[:2]) == set(ids) and len(found) == 3  # team B's copy is not among them
    scores = [float(s) for s in re.findall(r'data-score="([0-9.]+)"', body)]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    assert "theirs.jpg" not in body
    assert HOSTILE not in body and 'hx-get="/settings/keys"' not in body
    assert str(escape(HOSTILE)) in body
    assert _stored(app) == stored


def test_search_without_javascript_answers_the_whole_page(app, team_a, upload, run_jobs, person):
    _pair(upload, team_a)
    run_jobs()
    client = person(team_a, "viewer").client
    answer = client.post(
        "/search",
        data={"file": (io.BytesIO(samples.jpeg(1)), "q.jpg")},
        content_type="multipart/form-data",
    )
    body = answer.get_data(as_text=True)
    assert answer.status_code == 200 and "<html" in body and "photo.jpg" in body


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        ({}, 422, "Choose or drop an image"),
        ({"file": (io.BytesIO(b"not an image at all"), "x.jpg")}, None, ""),
        ({"file": (io.BytesIO(samples.jpeg(1)), "x.jpg"), "embedder": "nope"}, 400, "unknown"),
    ],
)
def test_search_refusals_are_shown(app, team_a, person, data, status, message):
    client = person(team_a, "member").client
    answer = client.post(
        "/search", data=data, headers={"HX-Request": "1"}, content_type="multipart/form-data"
    )
    body = answer.get_data(as_text=True)
    assert answer.status_code >= 400 and 'class="flash error"' in body
    if status:
        assert answer.status_code == status and message in body
    assert _stored(app) == 0


# --- duplicates --------------------------------------------------------------------------------


def _group_ids(page: str) -> list[str]:
    return re.findall(r'data-group-id="([^"]+)"', page)


def test_duplicates_page_shows_groups_with_the_keeper_marked(
    app, team_a, team_b, upload, run_jobs, person
):
    photo, copy = _pair(upload, team_a, names=(HOSTILE + ".jpg", "copy.jpg"))
    _pair(upload, team_b, seed=2)
    run_jobs()
    member = person(team_a, "member").client
    page = member.get("/duplicates")
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and "HX-Request" in page.headers["Vary"]
    (group_id,) = _group_ids(body)
    # The larger original is the suggested keeper, and ticked to keep.
    keeper = re.search(r'class="tile keeper" data-image-id="([^"]+)"', body).group(1)
    assert keeper == photo and "Suggested keeper" in body
    keep_boxes = dict(re.findall(r'name="keep" value="([^"]+)"[^>]*?(checked)?>', body))
    assert keep_boxes == {photo: "checked", copy: ""}
    assert HOSTILE not in body and str(escape(HOSTILE)) in body

    viewer = person(team_a, "viewer").client
    seen = viewer.get("/duplicates").get_data(as_text=True)
    assert _group_ids(seen) == [group_id] and 'name="keep"' not in seen
    assert (
        viewer.post(f"/duplicates/{group_id}/resolve", data={"action": "dismiss"}).status_code
        == 403
    )
    assert viewer.post("/duplicates/resolve", data={"group_ids": [group_id]}).status_code == 403

    exact = member.get("/duplicates?tier=exact", headers={"HX-Request": "1"}).get_data(True)
    assert "No duplicate groups in this tier" in exact and "<html" not in exact


@pytest.mark.parametrize("config_overrides", [{"DUPLICATE_REPORT_INLINE_IMAGES": 1}])
def test_a_large_teams_similar_report_shows_once_a_worker_has_made_it(
    app, team_a, upload, run_jobs, person, config_overrides
):
    _pair(upload, team_a)
    run_jobs()
    member = person(team_a, "member").client
    page = member.get("/duplicates?tier=similar")
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and "Preparing this team's similar report" in body
    assert 'hx-trigger="every 5s"' in body and _group_ids(body) == []  # it asks again itself

    run_jobs()  # the worker makes the report
    again = member.get("/duplicates?tier=similar", headers={"HX-Request": "1"}).get_data(True)
    assert "Preparing" not in again and "hx-trigger" not in again.split("<article")[0]
    assert len(_group_ids(again)) == 1


def test_keep_one_delete_the_other(app, team_a, upload, run_jobs, person):
    photo, copy = _pair(upload, team_a)
    run_jobs()
    member = person(team_a, "member").client
    (group_id,) = _group_ids(member.get("/duplicates").get_data(as_text=True))
    # Keep the copy this time, not the suggestion.
    answer = member.post(
        f"/duplicates/{group_id}/resolve",
        data={"action": "resolve", "members": [photo, copy], "keep": [copy]},
        headers={"HX-Request": "1"},
    )
    body = answer.get_data(as_text=True)
    assert answer.status_code == 200 and "Kept 1, deleted 1." in body
    assert "No duplicate groups in this tier" in body
    with app.app_context(), unscoped():
        assert db.session.scalars(select(Image.filename)).all() == ["copy.jpg"]
    again = member.post(
        f"/duplicates/{group_id}/resolve",
        data={"action": "resolve", "members": [photo, copy], "keep": [copy]},
    )
    # Resolved already: the group is gone (404 when its first image went, else 409).
    assert again.status_code in (404, 409)
    assert _stored(app) == 1


def test_keeping_nothing_is_refused_and_deletes_nothing(app, team_a, upload, run_jobs, person):
    photo, copy = _pair(upload, team_a)
    run_jobs()
    member = person(team_a, "member").client
    (group_id,) = _group_ids(member.get("/duplicates").get_data(as_text=True))
    answer = member.post(
        f"/duplicates/{group_id}/resolve",
        data={"action": "resolve", "members": [photo, copy]},
        headers={"HX-Request": "1"},
    )
    assert answer.status_code == 400 and "keep at least one image" in answer.get_data(True)
    assert _stored(app) == 2


def test_not_duplicates_is_remembered(app, team_a, upload, run_jobs, person):
    _pair(upload, team_a)
    run_jobs()
    member = person(team_a, "member").client
    (group_id,) = _group_ids(member.get("/duplicates").get_data(as_text=True))
    answer = member.post(f"/duplicates/{group_id}/resolve", data={"action": "dismiss"})
    assert answer.status_code == 302
    page = member.get("/duplicates").get_data(as_text=True)
    assert "2 images marked as not duplicates." in page and _group_ids(page) == []
    with app.app_context(), unscoped():
        assert db.session.scalar(select(func.count(DuplicateDecision.id))) == 1
    assert _stored(app) == 2


def test_many_groups_resolved_at_once_keeping_the_suggested_images(
    app, team_a, upload, run_jobs, person
):
    first = _pair(upload, team_a, seed=1, names=("a.jpg", "a-copy.jpg"))
    second = _pair(upload, team_a, seed=2, names=("b.jpg", "b-copy.jpg"))
    third = _pair(upload, team_a, seed=3, names=("c.jpg", "c-copy.jpg"))
    run_jobs()
    member = person(team_a, "member").client
    page = member.get("/duplicates").get_data(as_text=True)
    members = {
        chunk.split('"', 1)[0]: set(re.findall(r'data-image-id="([0-9a-f-]{36})"', chunk))
        for chunk in page.split('data-group-id="')[1:]
    }
    assert sorted(members.values(), key=sorted) == sorted(
        [set(first), set(second), set(third)], key=sorted
    )
    untouched = next(g for g, ids in members.items() if ids == set(third))
    chosen = [g for g in members if g != untouched]
    answer = member.post(
        "/duplicates/resolve",
        data={"group_ids": chosen, "action": "keep-suggested"},
        headers={"HX-Request": "1"},
    )
    body = answer.get_data(as_text=True)
    assert answer.status_code == 200 and "2 groups resolved keeping the suggested image." in body
    assert _group_ids(body) == [untouched]
    with app.app_context(), unscoped():
        left = set(db.session.scalars(select(Image.filename)))
    # The originals are larger than their copies: the suggested keepers.
    assert left == {"a.jpg", "b.jpg", "c.jpg", "c-copy.jpg"}
    nothing = member.post("/duplicates/resolve", data={}, headers={"HX-Request": "1"})
    assert nothing.status_code == 422 and "Tick the groups" in nothing.get_data(True)


def test_another_teams_group_is_not_found(app, team_a, team_b, upload, run_jobs, person):
    _pair(upload, team_a)
    run_jobs()
    owner = person(team_a, "admin").client
    (group_id,) = _group_ids(owner.get("/duplicates").get_data(as_text=True))
    intruder = person(team_b, "admin").client
    assert _group_ids(intruder.get("/duplicates").get_data(as_text=True)) == []
    assert (
        intruder.post(f"/duplicates/{group_id}/resolve", data={"action": "dismiss"}).status_code
        == 404
    )
    bulk = intruder.post(
        "/duplicates/resolve", data={"group_ids": [group_id]}, headers={"HX-Request": "1"}
    )
    assert bulk.status_code == 409 and "no such duplicate group" in bulk.get_data(as_text=True)
    assert _stored(app) == 2 and _group_ids(owner.get("/duplicates").get_data(True)) == [group_id]
