"""A team of 100,000 images seeded straight into the database (rows, tags, labels,
collections, embeddings), as the benchmarks of search through the application need: bulk
inserts, not 100,000 uploads. The text index's triggers run as they would for uploads."""

from __future__ import annotations

import os
import random
import uuid
from datetime import timedelta

import numpy as np
from sqlalchemy import insert

from app.extensions import db
from app.models import Collection, Embedding, Image, ImageTag, Label, Tag, utcnow
from app.services import accounts, keys

# Words a library's file names, tags, labels and collections are made of: a few common ones
# and a long tail, as people name things.
PLACES = ["beach", "harbour", "alps", "paris", "kitchen", "garden", "office", "studio", "forest"]
THINGS = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "ru", "ti", "vo", "zu") for b in range(40)]
LABELS = [f"class{n:03d} thing{n:03d}" for n in range(1000)]  # ImageNet-like: 1,000 names


def seed_team(app, n: int, *, vectors: dict[str, np.ndarray] | None = None, seed: int = 0):
    """A team with `n` ready images, tags, labels, collections and the given embeddings
    ({embedder: (n, width) vectors}); returns (team_id, API key with read scope, image ids)."""
    rng = random.Random(seed)
    with app.app_context():
        team = accounts.create_team(f"Bench {uuid.uuid4().hex[:6]}")
        db.session.commit()
        team_id = team.id
        _, key = keys.create_key(team, "bench", ["read"])
        db.session.commit()
        collections = [
            dict(id=uuid.uuid4(), team_id=team_id, name=f"{place.title()} {year}",
                 name_key=f"{place} {year}", description="", created_at=utcnow(),
                 updated_at=utcnow())
            for place in PLACES for year in range(2019, 2025)
        ]  # fmt: skip
        db.session.execute(insert(Collection), collections)
        tags = [dict(team_id=team_id, name=name) for name in THINGS]
        db.session.execute(insert(Tag), tags)
        tag_ids = [t.id for t in db.session.scalars(db.select(Tag).where(Tag.team_id == team_id))]
        start = utcnow() - timedelta(days=365)
        ids = [uuid.uuid4() for _ in range(n)]
        for first in range(0, n, 5000):
            chunk = range(first, min(first + 5000, n))
            images, image_tags, labels, embeddings = [], [], [], []
            for i in chunk:
                name = f"{rng.choice(PLACES)}_{rng.choice(THINGS)}_IMG_{i:06d}.jpg"
                in_collection = rng.random() < 0.3
                images.append(
                    dict(id=ids[i], team_id=team_id, filename=name, content_type="image/jpeg",
                         size_bytes=1000, width=640, height=480, sha256=f"{i:064x}",
                         status="ready", storage_key=f"o/{i}", thumbnail_key=f"t/{i}",
                         preview_key=f"p/{i}",
                         collection_id=rng.choice(collections)["id"] if in_collection else None,
                         meta={}, created_at=start + timedelta(seconds=i))
                )  # fmt: skip
                for tag_id in rng.sample(tag_ids, rng.choice((0, 1, 1, 2, 3))):
                    image_tags.append(dict(image_id=ids[i], tag_id=tag_id))
                for rank, label in enumerate(rng.sample(LABELS, rng.choice((1, 2, 3)))):
                    labels.append(dict(team_id=team_id, image_id=ids[i], embedder="cnn",
                                       name=label, score=0.9 - rank / 10))  # fmt: skip
                for embedder, matrix in (vectors or {}).items():
                    plugin = app.extensions["likeness"].plugins.embedders[embedder]
                    embeddings.append(
                        dict(team_id=team_id, image_id=ids[i], embedder=embedder,
                             version=plugin.version, vector=plugin.codec.to_bytes(matrix[i]),
                             created_at=start)
                    )  # fmt: skip
            db.session.execute(insert(Image), images)
            if image_tags:
                db.session.execute(insert(ImageTag), image_tags)
            db.session.execute(insert(Label), labels)
            if embeddings:
                db.session.execute(insert(Embedding), embeddings)
            db.session.commit()
        if db.engine.dialect.name == "sqlite":
            db.session.execute(db.text("ANALYZE"))
        else:
            db.session.execute(db.text("ANALYZE"))
        db.session.commit()
    return team_id, key, ids


def database_size(app) -> str:
    with app.app_context():
        url = db.engine.url
        if url.get_backend_name() == "sqlite":
            return f"{os.path.getsize(url.database) / 2**20:,.0f} MiB"
        size = db.session.execute(db.text("SELECT pg_database_size(current_database())"))
        return f"{size.scalar_one() / 2**20:,.0f} MiB"
