"""Seed one team with many ready images fast: bulk rows, stored files, embeddings, built indexes.

Not 10,000 uploads: each image is a small generated JPEG (distinct bytes, so distinct sha256)
whose original, thumbnail and preview are written straight into local storage, whose phash
and colour vectors come from the real embedders in batches, and whose rows go in with bulk
INSERTs. The indexes are then built as the worker builds them. What the app sees afterwards is
what it would see after the same images were uploaded and processed.

    DATABASE_URL=... REDIS_URL=... STORAGE_ROOT=... SECRET_KEY=... \\
        .venv/bin/python bench/seed.py --images 10000 --team load

Prints the team's slug and a full API key (read, write, admin) as the last line:
`<slug> <key>`; `--ids-file` writes the image ids. Local storage only (STORAGE_BACKEND=local).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import time
import uuid
from datetime import timedelta

import numpy as np
from PIL import Image as PILImage

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app import create_app  # noqa: E402
from app.extensions import db  # noqa: E402
from app.imaging.render import encode_webp  # noqa: E402
from app.models import Embedding, Image, utcnow  # noqa: E402
from app.runtime import plugins  # noqa: E402
from app.services import accounts, indexing, keys  # noqa: E402

BATCH = 500


def picture(rng: np.random.Generator, size=(96, 72)) -> PILImage.Image:
    """A small photo-like picture: a gradient between two random colours, a block and grain."""
    width, height = size
    start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, width)[None, :, None]
    pixels = start + (end - start) * ramp
    pixels = np.repeat(pixels, height, axis=0)
    x, y = rng.integers(0, width // 2), rng.integers(0, height // 2)
    pixels[y : y + height // 3, x : x + width // 3] = rng.integers(0, 256, 3)
    pixels += rng.normal(0, 6, pixels.shape)
    return PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def write(root: str, key: str, data: bytes) -> None:
    path = os.path.join(root, *key.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)


def seed(app, count: int, team_name: str, seed_value: int = 1) -> tuple[str, str, list[str]]:
    """Create the team and its `count` ready images; returns (slug, full API key, image ids)."""
    rng = np.random.default_rng(seed_value)
    root = app.config["STORAGE_ROOT"]
    with app.app_context():
        team = accounts.create_team(team_name)
        _, key = keys.create_key(team, "load", ["read", "write", "admin"])
        db.session.commit()
        team_id, slug = team.id, team.slug
        embedders = plugins().embedders
        now = utcnow()
        made = 0
        image_ids = []
        while made < count:
            size = min(BATCH, count - made)
            pictures = [picture(rng) for _ in range(size)]
            images, embeddings = [], []
            for offset, pixels in enumerate(pictures):
                image_id = uuid.uuid4()
                prefix = f"teams/{team_id}/images/{image_id}"
                original = io.BytesIO()
                pixels.save(original, "JPEG", quality=85)
                data = original.getvalue()
                webp = encode_webp(pixels, quality=80, method=0)
                write(root, f"{prefix}/original", data)
                write(root, f"{prefix}/thumbnail.webp", webp)
                write(root, f"{prefix}/preview.webp", webp)
                created = now - timedelta(seconds=count - made - offset)
                images.append(
                    {
                        "id": image_id,
                        "team_id": team_id,
                        "filename": f"seed-{made + offset:05d}.jpg",
                        "content_type": "image/jpeg",
                        "size_bytes": len(data),
                        "width": pixels.width,
                        "height": pixels.height,
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "status": "ready",
                        "storage_key": f"{prefix}/original",
                        "thumbnail_key": f"{prefix}/thumbnail.webp",
                        "preview_key": f"{prefix}/preview.webp",
                        "meta": {"exif": {}, "colors": [], "custom": {}},
                        "created_at": created,
                        "processed_at": created,
                    }
                )
            for name, embedder in embedders.items():
                vectors, _ = embedder.embed_and_label(pictures)
                for row, vector in zip(images, vectors, strict=True):
                    embeddings.append(
                        {
                            "team_id": team_id,
                            "image_id": row["id"],
                            "embedder": name,
                            "version": embedder.version,
                            "vector": embedder.codec.to_bytes(vector),
                        }
                    )
            image_ids += [str(row["id"]) for row in images]
            db.session.execute(db.insert(Image), images)
            db.session.execute(db.insert(Embedding), embeddings)
            db.session.commit()
            made += size
            print(f"  {made}/{count} images", file=sys.stderr, flush=True)
        for name in embedders:
            build = indexing.build_index(team_id, name, wait=True)
            print(
                f"  {name} index: version {build.version}, {build.item_count} items",
                file=sys.stderr,
            )
    return slug, key, image_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--team", default="Load")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ids-file", help="write the image ids there, one a line")
    args = parser.parse_args()
    started = time.monotonic()
    slug, key, image_ids = seed(create_app(), args.images, args.team, args.seed)
    if args.ids_file:
        with open(args.ids_file, "w") as out:
            out.write("\n".join(image_ids) + "\n")
    print(f"seeded {args.images} images in {time.monotonic() - started:.1f} s", file=sys.stderr)
    print(slug, key)


if __name__ == "__main__":
    main()
