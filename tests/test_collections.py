"""Collections, at the services the API will call: a team's named sets of images, an image in
at most one, names unique in the team whatever their case, deleted only when empty, and any id
the team does not have refused with nothing changed."""

from __future__ import annotations

import contextlib
import io
import threading
import uuid

import pytest
from sqlalchemy import delete, event, select, update
from sqlalchemy.exc import IntegrityError

from app.errors import Conflict, Invalid, NotFound, ValidationFailed
from app.extensions import db
from app.models import AuditEvent, Collection, Image, Team
from app.services import collections, images
from app.services.audit import Actor
from app.services.ingest import Incoming, ingest
from app.tenancy import team_scope, unscoped
from tests import samples
from tests.conftest import recorded_statements

ALICE = Actor("user", "alice@a.example")


@contextlib.contextmanager
def acting_for(app, team):
    """A request's view: one application context, confined to the team."""
    with app.app_context(), team_scope(team.id):
        yield


def add_photos(team, *seeds: int, collection_id=None) -> list[uuid.UUID]:
    files = [
        Incoming(io.BytesIO(samples.jpeg(seed, size=(64, 48))), f"{seed}.jpg") for seed in seeds
    ]
    results = ingest(team.id, files, actor=ALICE, collection_id=collection_id)
    return [result.image.id for result in results]


def create(team, name: str, description: str | None = None) -> Collection:
    return collections.create_collection(team.id, name, description, actor=ALICE).collection


def committed_collections(image_ids) -> dict[uuid.UUID, uuid.UUID | None]:
    """Where each image is, as another connection reads it: committed rows only."""
    with db.engine.connect() as conn:
        rows = conn.execute(select(Image.id, Image.collection_id).where(Image.id.in_(image_ids)))
        return dict(rows.all())


def committed_names(team) -> list[str]:
    with db.engine.connect() as conn:
        query = select(Collection.name).where(Collection.team_id == team.id)
        return sorted(conn.scalars(query))


def events(team, prefix: str = "collection.") -> list[tuple]:
    with unscoped():
        rows = db.session.execute(
            select(AuditEvent.action, AuditEvent.actor, AuditEvent.target, AuditEvent.details)
            .where(AuditEvent.team_id == team.id, AuditEvent.action.startswith(prefix))
            .order_by(AuditEvent.id)
        )
        return [tuple(row) for row in rows]


# --- names -------------------------------------------------------------------------------------


def test_a_name_is_one_whatever_its_case_spacing_or_width(app, team_a, team_b):
    with acting_for(app, team_a):
        made = collections.create_collection(team_a.id, "  Summer \t 2024 ", actor=ALICE)
        assert (made.collection.name, made.image_count) == ("Summer 2024", 0)
        for same in ("summer 2024", "SUMMER  2024", "Ｓｕｍｍｅｒ 2024", "Sum\u200bmer 2024"):
            with pytest.raises(Conflict, match="already has a collection named 'Summer 2024'"):
                collections.create_collection(team_a.id, same, actor=ALICE)
        assert committed_names(team_a) == ["Summer 2024"]
    with acting_for(app, team_b):  # names are the team's own
        assert create(team_b, "summer 2024").name == "summer 2024"


def test_names_and_descriptions_are_bounded_and_cleaned(app, team_a):
    with acting_for(app, team_a):
        for bad in ("", "   ", "\u200b", None, 7, "x" * 101):
            with pytest.raises(ValidationFailed):
                collections.create_collection(team_a.id, bad, actor=ALICE)
        with pytest.raises(ValidationFailed, match="at most 2000"):
            collections.create_collection(team_a.id, "Long", "d" * 2001, actor=ALICE)
        with pytest.raises(ValidationFailed, match="description"):
            collections.create_collection(team_a.id, "Typed", ["not", "text"], actor=ALICE)
        assert committed_names(team_a) == []

        longest = create(team_a, "n" * 100, "d" * 2000)
        assert (len(longest.name), len(longest.description)) == (100, 2000)
        # A bidi override could make a name read as another; an emoji's joiner is kept.
        shown = create(
            team_a, "\u202etxt.exe \U0001f469\u200d\U0001f4bb Work", " line 1\r\nline 2 "
        )
        assert shown.name == "txt.exe \U0001f469\u200d\U0001f4bb Work"
        assert shown.description == "line 1\nline 2"
        assert create(team_a, "No description").description == ""


def test_two_creates_of_one_name_at_once_make_one_collection_and_one_conflict(app, team_a):
    both_checked = threading.Barrier(2, timeout=30)

    def hold_insert(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO collection "):
            both_checked.wait()  # both requests found the name free before either inserts

    outcomes: list[str] = []

    def create_in_a_request(name: str) -> None:
        try:
            with acting_for(app, team_a):
                collections.create_collection(team_a.id, name, actor=ALICE)
            outcomes.append("created")
        except Conflict as exc:
            outcomes.append(exc.message)
        except Exception as exc:  # noqa: BLE001 - shown by the assertion below
            outcomes.append(repr(exc))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", hold_insert)
    try:
        requests = [
            threading.Thread(target=create_in_a_request, args=(n,)) for n in ("Trip", "trip")
        ]
        for request in requests:
            request.start()
        for request in requests:
            request.join(60)
    finally:
        event.remove(engine, "before_cursor_execute", hold_insert)
    assert sorted(outcomes)[0] == "created", outcomes
    assert sorted(outcomes)[1].startswith("the team already has a collection named "), outcomes
    with app.app_context():
        assert len(committed_names(team_a)) == 1
        assert [e[0] for e in events(team_a)] == ["collection.create"]


# --- create, read, update ----------------------------------------------------------------------


def test_create_get_and_list_with_image_counts(app, team_a):
    with acting_for(app, team_a):
        trip = collections.create_collection(team_a.id, "Trip", "Lisbon, May", actor=ALICE)
        add_photos(team_a, 1, 2, collection_id=trip.collection.id)
        add_photos(team_a, 3)  # in no collection
        got = collections.get_collection(str(trip.collection.id))
        assert (got.collection.name, got.collection.description, got.image_count) == (
            "Trip",
            "Lisbon, May",
            2,
        )
        assert got.collection.created_at == got.collection.updated_at
        assert events(team_a) == [
            ("collection.create", "alice@a.example", "Trip", {}),
        ]
        for unknown in (str(uuid.uuid4()), "not-an-id", ""):
            with pytest.raises(NotFound, match="no such collection"):
                collections.get_collection(unknown)


def test_the_list_pages_by_name_whatever_the_case_counting_in_one_statement(app, team_a):
    with acting_for(app, team_a):
        made = {name: create(team_a, name).id for name in ("beta", "Alpha", "gamma", "Delta")}
        add_photos(team_a, 1, 2, 3, collection_id=made["gamma"])
        add_photos(team_a, 4, collection_id=made["Alpha"])

        statements, stop = recorded_statements(app)
        first, cursor = collections.list_collections(2)
        stop()
        assert len(statements) == 1  # the page and every count of it
        second, end = collections.list_collections(2, cursor)
        assert end is None
        listed = [(info.collection.name, info.image_count) for info in first + second]
        assert listed == [("Alpha", 1), ("beta", 0), ("Delta", 0), ("gamma", 3)]

        statements, stop = recorded_statements(app)
        whole, end = collections.list_collections(50)
        stop()
        assert len(statements) == 1 and end is None and len(whole) == 4

        for bad in ("x", "a" * 5000, "WyJhIl0"):  # WyJhIl0 is ["a"]: a list, not a position
            with pytest.raises(Invalid, match="cursor"):
                collections.list_collections(2, bad)


def test_rename_and_describe(app, team_a):
    with acting_for(app, team_a):
        trip = create(team_a, "trip")
        create(team_a, "Holiday")
        created_at = trip.created_at
        renamed = collections.update_collection(
            str(trip.id), {"name": " Trip ", "description": "Lisbon"}, actor=ALICE
        )
        assert (renamed.collection.name, renamed.collection.description) == ("Trip", "Lisbon")
        assert renamed.collection.updated_at > created_at

        with pytest.raises(Conflict, match="'Holiday'"):
            collections.update_collection(trip.id, {"name": "HOLIDAY"}, actor=ALICE)
        with pytest.raises(Invalid, match="team_id cannot be changed"):
            collections.update_collection(trip.id, {"team_id": "x"}, actor=ALICE)
        with pytest.raises(ValidationFailed):
            collections.update_collection(trip.id, {"name": ""}, actor=ALICE)
        with pytest.raises(NotFound):
            collections.update_collection(uuid.uuid4(), {"name": "x"}, actor=ALICE)
        # The same values again change nothing and record nothing.
        collections.update_collection(
            trip.id, {"name": "Trip", "description": "Lisbon"}, actor=ALICE
        )
        assert committed_names(team_a) == ["Holiday", "Trip"]
        assert events(team_a)[2:] == [
            (
                "collection.update",
                "alice@a.example",
                "Trip",
                {"fields": ["name", "description"], "previous_name": "trip"},
            )
        ]


# --- delete ------------------------------------------------------------------------------------


def test_a_collection_is_deleted_only_when_empty(app, team_a):
    with acting_for(app, team_a):
        trip = create(team_a, "Trip")
        photos = add_photos(team_a, 1, 2, collection_id=trip.id)
        with pytest.raises(Conflict, match="'Trip' still holds 2 images"):
            collections.delete_collection(trip.id, actor=ALICE)
        assert committed_names(team_a) == ["Trip"]
        assert set(committed_collections(photos).values()) == {trip.id}

        collections.remove_images(trip.id, [str(p) for p in photos], actor=ALICE)
        collections.delete_collection(str(trip.id), actor=ALICE)
        assert committed_names(team_a) == []
        assert committed_collections(photos) == {p: None for p in photos}  # images stay
        assert events(team_a)[-1] == ("collection.delete", "alice@a.example", "Trip", {})
        with pytest.raises(NotFound):
            collections.delete_collection(trip.id, actor=ALICE)


def test_an_image_added_while_the_delete_runs_keeps_the_collection(app, team_a):
    """The delete counted no image, then one arrived before its DELETE: the database refuses."""
    with acting_for(app, team_a):
        trip = create(team_a, "Trip")
        [photo] = add_photos(team_a, 1)
        engine, armed = db.engine, []

        def add_after_the_count(conn, cursor, statement, parameters, context, executemany):
            if armed and "count(image.id)" in statement:
                armed.clear()
                with engine.connect() as other:  # another request, committed in between
                    other.execute(
                        update(Image).where(Image.id == photo).values(collection_id=trip.id)
                    )
                    other.commit()

        event.listen(engine, "after_cursor_execute", add_after_the_count)
        try:
            armed.append(True)
            with pytest.raises(Conflict, match="'Trip' still holds images"):
                collections.delete_collection(trip.id, actor=ALICE)
        finally:
            event.remove(engine, "after_cursor_execute", add_after_the_count)
        assert not armed  # the image did arrive in between
        assert committed_names(team_a) == ["Trip"]
        assert committed_collections([photo]) == {photo: trip.id}
        assert [e[0] for e in events(team_a)] == ["collection.create"]


def test_the_database_holds_the_rules_whatever_a_service_does(app, team_a, team_b):
    with acting_for(app, team_a):
        trip_id = create(team_a, "Trip").id
        add_photos(team_a, 1, collection_id=trip_id)
    with app.app_context(), unscoped():
        with pytest.raises(IntegrityError):  # not empty
            db.session.execute(delete(Collection).where(Collection.id == trip_id))
            db.session.flush()
        db.session.rollback()
        with pytest.raises(IntegrityError):  # one name, whatever the spelling: the key is one
            db.session.add(Collection(team_id=team_a.id, name="TRIP", name_key="trip"))
            db.session.flush()
        db.session.rollback()
        [b_photo] = add_photos(team_b, 2)
        with pytest.raises(IntegrityError):  # another team's collection
            db.session.execute(
                update(Image).where(Image.id == b_photo).values(collection_id=trip_id)
            )
            db.session.flush()
        db.session.rollback()
        # A team goes with its collections and their images, whichever its cascades reach first.
        db.session.execute(delete(Team).where(Team.id == team_a.id))
        db.session.commit()
        assert db.session.scalars(select(Collection.name)).all() == []
        assert db.session.scalars(select(Image.team_id)).all() == [team_b.id]


# --- adding and removing images ----------------------------------------------------------------


def test_adding_an_image_in_another_collection_moves_it(app, team_a):
    with acting_for(app, team_a):
        trip, best = create(team_a, "Trip"), create(team_a, "Best of")
        one, two, three = add_photos(team_a, 1, 2, 3)
        collections.add_images(trip.id, [str(one), str(two)], actor=ALICE)

        moved = collections.add_images(str(best.id), [str(two), str(three)], actor=ALICE)
        assert moved.image_count == 2
        assert collections.get_collection(trip.id).image_count == 1
        assert committed_collections([one, two, three]) == {
            one: trip.id,
            two: best.id,
            three: best.id,
        }
        # Already there: nothing changes and nothing is recorded.
        again = collections.add_images(best.id, [str(two).upper(), str(two)], actor=ALICE)
        assert again.image_count == 2
        assert events(team_a)[2:] == [
            (
                "collection.add_images",
                "alice@a.example",
                "Trip",
                {"image_ids": [str(one), str(two)], "moved_from": {}},
            ),
            (
                "collection.add_images",
                "alice@a.example",
                "Best of",
                {"image_ids": [str(two), str(three)], "moved_from": {str(trip.id): [str(two)]}},
            ),
        ]


def test_removing_takes_images_out_and_leaves_the_others_as_they_are(app, team_a):
    with acting_for(app, team_a):
        trip, best = create(team_a, "Trip"), create(team_a, "Best of")
        one, two = add_photos(team_a, 1, 2, collection_id=trip.id)
        elsewhere, loose = add_photos(team_a, 3, collection_id=best.id) + add_photos(team_a, 4)

        asked = [str(one), str(elsewhere), str(loose)]
        left = collections.remove_images(trip.id, asked, actor=ALICE)
        assert left.image_count == 1
        assert committed_collections([one, two, elsewhere, loose]) == {
            one: None,
            two: trip.id,
            elsewhere: best.id,  # not in this collection: left where it is
            loose: None,
        }
        collections.remove_images(trip.id, asked, actor=ALICE)  # again: harmless
        assert events(team_a)[2:] == [
            ("collection.remove_images", "alice@a.example", "Trip", {"image_ids": [str(one)]})
        ]


@pytest.mark.parametrize("change", [collections.add_images, collections.remove_images])
def test_any_id_the_team_does_not_have_changes_nothing(app, team_a, team_b, change):
    with acting_for(app, team_b):
        [theirs] = add_photos(team_b, 9)
    with acting_for(app, team_a):
        trip, best = create(team_a, "Trip"), create(team_a, "Best of")
        mine = add_photos(team_a, 1, 2, collection_id=best.id)
        in_trip = add_photos(team_a, 3, collection_id=trip.id)
        before = committed_collections(mine + in_trip)
        missing = str(uuid.uuid4())
        asked = [str(mine[0]), missing, str(in_trip[0]), "nope", str(theirs), str(mine[1])]
        with pytest.raises(NotFound) as refused:
            change(trip.id, asked, actor=ALICE)
        assert refused.value.message == f"no such images: {missing}, nope, {theirs}"
        with pytest.raises(NotFound, match="no such collection"):
            change(uuid.uuid4(), [str(mine[0])], actor=ALICE)
        assert committed_collections(mine + in_trip) == before
        assert [e[0] for e in events(team_a)] == ["collection.create"] * 2


@pytest.mark.parametrize("change", [collections.add_images, collections.remove_images])
def test_image_ids_is_a_bounded_list_of_ids(app, team_a, change):
    with acting_for(app, team_a):
        trip = create(team_a, "Trip")
        for bad in ("abc", None, [1], [], ["x"] * 1001, {"id": "x"}):
            with pytest.raises(ValidationFailed, match="image"):
                change(trip.id, bad, actor=ALICE)


# --- images: editing and listing -----------------------------------------------------------------


def test_editing_an_image_sets_moves_and_clears_its_collection(app, team_a):
    with acting_for(app, team_a):
        trip, best = create(team_a, "Trip"), create(team_a, "Best of")
        [photo] = add_photos(team_a, 1)
        image = db.session.get(Image, photo)
        assert images.edit_image(image, {"collection_id": str(trip.id)}, actor=ALICE) == [
            "collection_id"
        ]
        images.edit_image(image, {"collection_id": str(best.id), "filename": "b.jpg"}, actor=ALICE)
        assert committed_collections([photo]) == {photo: best.id}
        with pytest.raises(NotFound, match="no such collection"):
            images.edit_image(
                image, {"collection_id": str(uuid.uuid4()), "filename": "c.jpg"}, actor=ALICE
            )
        with pytest.raises(ValidationFailed, match="collection_id"):
            images.edit_image(image, {"collection_id": 5}, actor=ALICE)
        image = db.session.get(Image, photo)
        assert (image.filename, image.collection_id) == ("b.jpg", best.id)  # nothing changed
        images.edit_image(image, {"collection_id": None}, actor=ALICE)
        assert committed_collections([photo]) == {photo: None}
        edits = [(e[0], e[3]) for e in events(team_a, "image.edit")]
        assert edits == [
            (
                "image.edit",
                {"fields": ["collection_id"], "collection": {"from": None, "to": str(trip.id)}},
            ),
            (
                "image.edit",
                {
                    "fields": ["filename", "collection_id"],
                    "collection": {"from": str(trip.id), "to": str(best.id)},
                },
            ),
            (
                "image.edit",
                {"fields": ["collection_id"], "collection": {"from": str(best.id), "to": None}},
            ),
        ]


def test_the_image_list_filters_by_collection(app, team_a):
    with acting_for(app, team_a):
        trip = create(team_a, "Trip")
        first, second, third = add_photos(team_a, 1, 2, 3, collection_id=trip.id)
        add_photos(team_a, 4)
        page, cursor = images.list_images(2, collection_id=str(trip.id))
        rest, end = images.list_images(2, cursor, collection_id=str(trip.id))
        assert {i.id for i in page + rest} == {first, second, third} and end is None
        assert all(i.collection_id == trip.id for i in page + rest)
        for unknown in (str(uuid.uuid4()), "nope"):
            with pytest.raises(NotFound, match="no such collection"):
                images.list_images(2, collection_id=unknown)


# --- isolation ---------------------------------------------------------------------------------


def test_another_teams_collection_is_not_found_everywhere(app, team_a, team_b):
    with acting_for(app, team_a):
        secret_id = create(team_a, "Secret").id
        a_photos = add_photos(team_a, 1, collection_id=secret_id)
        before = committed_collections(a_photos), committed_names(team_a), events(team_a, "")
    with acting_for(app, team_b):
        mine = create(team_b, "Mine")
        [b_photo] = add_photos(team_b, 2)
        b_image = db.session.get(Image, b_photo)
        assert [i.collection.name for i in collections.list_collections(50)[0]] == ["Mine"]
        other = str(secret_id)
        refusals = [
            lambda: collections.get_collection(other),
            lambda: collections.update_collection(other, {"name": "Mine now"}, actor=ALICE),
            lambda: collections.delete_collection(other, actor=ALICE),
            lambda: collections.add_images(other, [str(b_photo)], actor=ALICE),
            lambda: collections.remove_images(other, [str(a_photos[0])], actor=ALICE),
            lambda: collections.add_images(mine.id, [str(a_photos[0])], actor=ALICE),
            lambda: images.edit_image(b_image, {"collection_id": other}, actor=ALICE),
            lambda: images.list_images(10, collection_id=other),
            lambda: add_photos(team_b, 3, collection_id=other),
        ]
        for refusal in refusals:
            with pytest.raises(NotFound) as refused:
                refusal()
            assert "Secret" not in refused.value.message
        assert collections.get_collection(mine.id).image_count == 0
    with acting_for(app, team_a):
        assert (committed_collections(a_photos), committed_names(team_a), events(team_a, "")) == (
            before
        )
