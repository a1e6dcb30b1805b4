"""Library data under concurrent requests: tag edits, a collection renamed while deleted,
duplicate resolutions racing deletions and each other. Each request is held at a chosen
statement until the other has read or written, as two web processes would interleave."""

from __future__ import annotations

import contextlib
import threading
import uuid

import pytest
from sqlalchemy import delete, event, select
from sqlalchemy.exc import OperationalError

from app.extensions import db
from app.models import Collection, DuplicateDecision, Image, Tag
from app.tenancy import unscoped
from tests import samples


def add_images(upload, team, *seeds: int) -> list[str]:
    response = upload(team, [(samples.jpeg(seed, size=(64, 48)), f"{seed}.jpg") for seed in seeds])
    assert response.status_code == 201, response.json
    return [item["id"] for item in response.json["items"]]


@contextlib.contextmanager
def held_at(app, prefix: str, parties: int = 2, *, anywhere: bool = False):
    """Hold the first statement starting with `prefix` (holding it, `anywhere`) of each of
    `parties` requests until all reach one: they all read what they decide on before any of
    them writes. Not for long: a request that waits for another's lock (SQLite's writer, a
    row's) goes on alone after a second, as it would when the app serializes them."""
    barrier = threading.Barrier(parties, timeout=1)
    arrived: list[int] = []

    def hold(conn, cursor, statement, parameters, context, executemany):
        matches = (prefix in statement) if anywhere else statement.startswith(prefix)
        if matches and threading.get_ident() not in arrived and len(arrived) < parties:
            arrived.append(threading.get_ident())
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", hold)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", hold)


def in_parallel(*calls) -> list:
    """Run each call in a thread of its own; their results (or exceptions), in order."""
    results: list = [None] * len(calls)

    def run(n, call):
        try:
            results[n] = call()
        except Exception as exc:  # noqa: BLE001 - shown by the caller's assertions
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n, c)) for n, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


# --- tags ----------------------------------------------------------------------------------------


def test_two_edits_creating_one_new_tag_at_once_both_succeed(app, team_a, upload):
    """Two PATCHes tag two images with a tag the team does not have yet: both found it
    missing, both insert it. The second is not a 500: it uses the tag the first made."""
    first, second = add_images(upload, team_a, 1, 2)

    def tag(image_id):
        return lambda: app.test_client().patch(
            f"/api/v1/images/{image_id}", json={"tags": ["Sunset"]}, headers=team_a.headers()
        )

    with held_at(app, "INSERT INTO tag "):
        responses = in_parallel(tag(first), tag(second))
    assert [r.status_code for r in responses] == [200, 200], [r.json for r in responses]
    assert [r.json["tags"] for r in responses] == [["sunset"], ["sunset"]]
    with app.app_context(), unscoped():
        assert db.session.scalars(select(Tag.name).where(Tag.team_id == team_a.id)).all() == [
            "sunset"
        ]


def patch(app, team, image_id, body):
    return lambda: app.test_client().patch(
        f"/api/v1/images/{image_id}", json=body, headers=team.headers()
    )


def tags_of(app, team, image_id) -> list[str]:
    response = app.test_client().get(f"/api/v1/images/{image_id}", headers=team.headers())
    return response.json["tags"]


def test_two_edits_of_one_images_tags_at_once_are_not_a_500(app, team_a, upload):
    """Both read the image untagged, both add the one tag: the second must not insert the
    image's tag again (a 500 on the primary key)."""
    [image] = add_images(upload, team_a, 1)
    assert patch(app, team_a, image, {"tags": ["old"]})().status_code == 200
    assert patch(app, team_a, image, {"tags": []})().status_code == 200
    with held_at(app, "FROM tag, image_tag", anywhere=True):  # the image's tags, read
        responses = in_parallel(
            patch(app, team_a, image, {"tags": ["old"]}),
            patch(app, team_a, image, {"tags": ["old"]}),
        )
    assert [r.status_code for r in responses] == [200, 200], [r.json for r in responses]
    assert tags_of(app, team_a, image) == ["old"]


def test_two_edits_of_one_images_tags_at_once_leave_one_of_them_not_a_mix(app, team_a, upload):
    """PATCH tags replaces them: after two at once the image has one request's tags, not
    the union of both (which neither asked for)."""
    image, other = add_images(upload, team_a, 1, 2)
    assert patch(app, team_a, other, {"tags": ["green", "yellow"]})().status_code == 200
    assert patch(app, team_a, image, {"tags": ["red", "blue"]})().status_code == 200
    with held_at(app, "FROM tag, image_tag", anywhere=True):
        responses = in_parallel(
            patch(app, team_a, image, {"tags": ["red", "green"]}),
            patch(app, team_a, image, {"tags": ["red", "yellow"]}),
        )
    assert [r.status_code for r in responses] == [200, 200], [r.json for r in responses]
    assert tags_of(app, team_a, image) in (["green", "red"], ["red", "yellow"])


# --- duplicate resolution ------------------------------------------------------------------------


@contextlib.contextmanager
def after_first(app, marker: str, action):
    """`action(connection)` run and committed on another connection, as another request,
    just after the first statement holding `marker` ran. Where the database holds row locks
    (PostgreSQL) the request's locks may keep it waiting: it gives up after a second, and
    `outcome` says which happened ("done" or "blocked")."""
    with app.app_context():
        engine = db.engine
    outcome: list[str] = []

    def run(conn, cursor, statement, parameters, context, executemany):
        if not outcome and marker in statement:
            outcome.append("running")
            with engine.connect() as other:
                if other.dialect.name == "postgresql":
                    other.exec_driver_sql("SET lock_timeout = '1s'")
                try:
                    action(other)
                    other.commit()
                    outcome[0] = "done"
                except OperationalError:
                    other.rollback()
                    outcome[0] = "blocked"

    event.listen(engine, "after_cursor_execute", run)
    try:
        yield outcome
    finally:
        event.remove(engine, "after_cursor_execute", run)


@pytest.fixture
def near_pair(app, team_a, upload, run_jobs):
    """Two processed copies of one picture: one group of the near tier, and its members."""
    original = samples.jpeg(14)
    response = upload(team_a, [(original, "a.jpg"), (samples.resized_copy(original), "b.jpg")])
    assert response.status_code == 201, response.json
    run_jobs()
    listed = app.test_client().get("/api/v1/duplicates", headers=team_a.headers()).json
    (group,) = listed["groups"]
    return group["id"], [image["id"] for image in group["images"]]


@contextlib.contextmanager
def deleted_after(app, marker: str, image_id: str):
    """Another request deletes the image just after the first statement holding `marker`
    ran (and commits before the request that ran it writes anything, unless a lock keeps
    it out)."""

    def delete_it(other):
        other.execute(delete(Image).where(Image.id == uuid.UUID(image_id)))

    with after_first(app, marker, delete_it) as outcome:
        yield outcome


@pytest.mark.parametrize("tagged", [False, True], ids=["untagged", "tagged"])
def test_a_kept_image_deleted_while_its_group_is_resolved_deletes_nothing(
    app, team_a, near_pair, tagged
):
    """The request keeps one image and deletes the other; meanwhile another request deletes
    the one it keeps. Resolving must not go on deleting the other (the picture would be gone
    altogether) nor fail with a 500: the group changed, a Conflict."""
    group_id, (keep, doomed) = near_pair
    client = app.test_client()
    if tagged:
        response = client.patch(
            f"/api/v1/images/{doomed}", json={"tags": ["sea"]}, headers=team_a.headers()
        )
        assert response.status_code == 200
    # Once the resolution found the group unchanged, as it reads the images' tags to merge.
    with deleted_after(app, "FROM tag, image_tag", keep) as outcome:
        response = client.post(
            f"/api/v1/duplicates/{group_id}/resolve",
            json={"keep": [keep], "delete": [doomed]},
            headers=team_a.headers(),
        )
    if outcome == ["blocked"]:  # PostgreSQL: the resolution holds the rows; it goes first
        assert response.status_code == 200, response.json
        return
    assert outcome == ["done"]
    assert response.status_code == 409, response.json
    assert client.get(f"/api/v1/images/{doomed}", headers=team_a.headers()).status_code == 200


# --- collections ---------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [{"name": "Renamed"}, {"description": "Now described"}])
def test_a_collection_deleted_while_it_is_renamed_is_a_404_not_a_500(app, team_a, body):
    client = app.test_client()
    made = client.post("/api/v1/collections", json={"name": "Trip"}, headers=team_a.headers())
    collection_id = made.json["id"]

    def delete_it(other):
        other.execute(delete(Collection).where(Collection.id == uuid.UUID(collection_id)))

    with after_first(app, "FROM collection", delete_it) as outcome:
        response = client.patch(
            f"/api/v1/collections/{collection_id}", json=body, headers=team_a.headers()
        )
    if outcome == ["blocked"]:  # PostgreSQL: the rename holds the row; it goes first
        assert response.status_code == 200, response.json
        return
    assert outcome == ["done"]
    assert response.status_code == 404, response.json


def test_two_not_duplicates_of_one_group_at_once_are_one_decision_and_one_conflict(
    app, team_a, near_pair
):
    group_id, _ = near_pair

    def dismiss():
        return app.test_client().post(
            f"/api/v1/duplicates/{group_id}/resolve",
            json={"not_duplicates": True},
            headers=team_a.headers(),
        )

    with held_at(app, "FROM duplicate_decision", anywhere=True):
        responses = in_parallel(dismiss, dismiss)
    assert sorted(r.status_code for r in responses) == [200, 409], [r.json for r in responses]
    with app.app_context(), unscoped():
        assert len(db.session.scalars(select(DuplicateDecision.id)).all()) == 1
