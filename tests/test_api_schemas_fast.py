"""The hot path's plain documents equal what the schemas answer, for the same images.

/similar and POST /search build their answer with `similar_document` (marshmallow costs more
than the rest of the request); `SimilarSchema` and `ImageSchema` stay the one description of
it. These tests dump the same results both ways, over images that differ in everything an
image shows: tags, labels, uploader (key, person, none), collection, metadata, status, error.
"""

from __future__ import annotations

import dataclasses
import io
import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import joinedload

from app.api.schemas import (
    ImageSchema,
    ImageUrlTemplates,
    SimilarSchema,
    image_document,
    similar_document,
)
from app.extensions import db
from app.models import Image, Label
from app.services import collections
from app.services.audit import Actor
from app.services.ingest import Incoming, ingest
from app.services.search import similar_images
from app.tenancy import team_scope
from tests import samples


def _varied_images(app, client, team, person, run_jobs) -> list[str]:
    """Six images of the team, each unlike the others in what an image shows; their ids."""
    files = [(io.BytesIO(samples.jpeg(700 + i, size=(64, 48))), f"v{i}.jpg") for i in range(6)]
    response = client.post(
        "/api/v1/images",
        data={"file": files[:4], "tags": "summer, beach,Été"},
        headers=team.headers(),
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.json
    by_key = [uuid.UUID(item["id"]) for item in response.json["items"]]
    member = person(team, "member")
    with app.app_context(), team_scope(team.id):
        by_person = [
            result.image.id
            for result in ingest(
                team.id,
                [Incoming(io.BytesIO(samples.jpeg(800 + i, size=(64, 48))), f"p{i}.png")
                 for i in range(2)],
                actor=Actor.system("test"),
                user_id=member.user_id,
            )
        ]  # fmt: skip
    run_jobs()
    with app.app_context(), team_scope(team.id):
        collection = collections.create_collection(team.id, "Trips", actor=Actor.system("test"))
        db.session.add_all(
            [
                Label(team_id=team.id, image_id=by_key[0], embedder="cnn", name="seashore",
                      score=0.81),
                Label(team_id=team.id, image_id=by_key[0], embedder="cnn", name="dock", score=0.5),
            ]
        )  # fmt: skip
        db.session.execute(
            update(Image)
            .where(Image.id == by_key[1])
            .values(
                collection_id=collection.collection.id,
                meta={"exif": {"Make": "X"}, "colors": ["#aabbcc"], "custom": {"n": [1, None]}},
            )
        )
        db.session.execute(update(Image).where(Image.id == by_key[2]).values(meta=None))
        db.session.execute(
            update(Image)
            .where(Image.id == by_key[3])
            .values(status="failed", error="could not decode")
        )
        db.session.execute(
            update(Image)
            .where(Image.id == by_person[1])
            .values(uploaded_by_user_id=None, uploaded_by_key_id=None)
        )
        db.session.commit()
    return [str(i) for i in by_key + by_person]


def test_image_document_equals_the_image_schema(app, client, team_a, person, run_jobs):
    ids = _varied_images(app, client, team_a, person, run_jobs)
    context = app.test_request_context(base_url="https://likeness.example:8443/sub")
    with context, team_scope(team_a.id):
        images = db.session.scalars(
            select(Image)
            .where(Image.id.in_([uuid.UUID(i) for i in ids]))
            .options(joinedload(Image.tags), joinedload(Image.labels))
        ).unique()
        urls = ImageUrlTemplates()
        compared = 0
        for image in images:
            assert image_document(image, urls) == ImageSchema().dump(image)
            compared += 1
    assert compared == len(ids) == 6


def _with_orm_images(result):
    """The same search result with each match's image read as the ORM `Image` (relationships
    and all), which the schemas describe, in place of the plain row searches read."""
    return dataclasses.replace(
        result,
        matches=[
            dataclasses.replace(match, image=db.session.get(Image, match.image.id))
            for match in result.matches
        ],
    )


def test_similar_document_equals_the_similar_schema(app, client, team_a, person, run_jobs):
    ids = _varied_images(app, client, team_a, person, run_jobs)
    with app.test_request_context(), team_scope(team_a.id):
        result = similar_images(db.session.get(Image, uuid.UUID(ids[0])), 10, "color")
        assert len(result.matches) == 4  # the failed image is not searched, the query not shown
        assert similar_document(result) == SimilarSchema().dump(_with_orm_images(result))


def test_the_similar_endpoint_answers_the_schema_document(app, client, team_a, person, run_jobs):
    ids = _varied_images(app, client, team_a, person, run_jobs)
    answered = client.get(f"/api/v1/images/{ids[1]}/similar?k=10", headers=team_a.headers())
    assert answered.status_code == 200, answered.json
    with app.test_request_context(), team_scope(team_a.id):
        result = similar_images(db.session.get(Image, uuid.UUID(ids[1])), 10, None)
        assert answered.json == SimilarSchema().dump(_with_orm_images(result))
    assert {m["image"]["id"] for m in answered.json["items"]} == set(ids) - {ids[1], ids[3]}
    # Each match, read as a plain row, shows what the image's own page (read as an ORM
    # object, with its relationships) shows.
    for match in answered.json["items"]:
        alone = client.get(f"/api/v1/images/{match['image']['id']}", headers=team_a.headers())
        assert match["image"] == alone.json
