"""Embedding ids only grow: an index build's watermark and the web processes' delta caches
trust that every row above a seen id is new. SQLite hands out the largest id + 1 unless the
table says AUTOINCREMENT, so deleting the newest image would give its ids to the next one."""

import uuid

from sqlalchemy import func, select

from app.extensions import db
from app.models import Embedding
from tests import samples


def newest_embedding_id(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.max(Embedding.id)))


def test_the_newest_images_ids_are_never_handed_out_again(app, client, team_a, upload, run_jobs):
    first = upload(team_a, [(samples.jpeg(1, (64, 48)), "first.jpg")]).json["items"][0]
    newest = upload(team_a, [(samples.jpeg(2, (64, 48)), "newest.jpg")]).json["items"][0]
    run_jobs()
    highest = newest_embedding_id(app)
    assert highest is not None

    # Deleting the newest image removes the rows with the highest ids ...
    assert (
        client.delete(f"/api/v1/images/{newest['id']}", headers=team_a.headers()).status_code == 204
    )
    assert newest_embedding_id(app) < highest
    # ... and the next image's vectors still get ids above every id ever handed out.
    upload(team_a, [(samples.jpeg(3, (64, 48)), "next.jpg")])
    run_jobs()
    with app.app_context():
        ids = db.session.scalars(
            select(Embedding.id).where(Embedding.image_id != uuid.UUID(first["id"]))
        ).all()
    assert ids and min(ids) > highest
