"""Nearest-neighbour search: the current index, plus an exact scan of what came after it."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

import numpy as np
from sqlalchemy import bindparam, literal, null, select, union_all

from app.errors import Conflict, Invalid
from app.extensions import db
from app.imaging.render import make_rendition
from app.imaging.validate import open_working
from app.models import (
    ApiKey,
    Embedding,
    Image,
    ImageTag,
    IndexBuild,
    Label,
    Tag,
    User,
    key_uploader,
)
from app.plugin_api import ExactScan, similarity
from app.runtime import Delta, delta_cache, index_cache, plugins
from app.services import ingest, processing
from app.services.indexing import current_build, embeddings_query, load_vectors, serving_build
from app.tenancy import current_team_id

MAX_K = 100


@dataclass
class Match:
    image: ImageView
    distance: float
    score: float


@dataclass
class SearchResult:
    embedder: str
    matches: list[Match]
    index_version: int | None
    fresh: bool  # True when the index holds every embedding (no exact scan was needed)


# "More like this" without an embedder named: the best enabled of these, in this order.
PREFERRED_EMBEDDERS = ("cnn", "color")


def resolve_embedder(name: str | None) -> str:
    """The embedder a search uses: the one named, or the best enabled one."""
    enabled = plugins().embedders
    if name is None:
        preferred = [n for n in PREFERRED_EMBEDDERS if n in enabled]
        # Else prefer an embedder that describes content over the near-duplicate hash.
        content = [n for n, e in enabled.items() if e.metric != "hamming"]
        return (preferred + content + list(enabled))[0]
    if name not in enabled:
        raise Invalid(f"unknown embedder {name!r}; enabled: {', '.join(enabled)}")
    return name


def nearest(
    team_id: uuid.UUID,
    embedder: str,
    vector: np.ndarray,
    k: int,
    exclude: set[uuid.UUID] = frozenset(),
    embedder_version: str | None = None,
    serving: IndexBuild | None = None,
) -> SearchResult:
    """The k ready images of one team nearest to `vector`, nearest first: the newest index of
    the vector's embedder version (by default the current one), plus the rest exactly.

    `serving` is that index's build when the caller has already looked it up. The matches
    are `ImageView`s, read as plain rows."""
    plugin = plugins().embedders[embedder]
    version = embedder_version or plugin.version
    if serving is not None and serving.embedder_version == version:
        build = serving
    else:
        build = current_build(team_id, embedder, version)
    index = None
    watermark = 0
    if build is not None:
        index, watermark = index_cache().get(build), build.watermark

    delta = _delta(team_id, embedder, version, watermark)
    # An image embedded again since the build is in both: its vector in the delta replaces the
    # one the index holds.
    replaced = set(delta.ids) if index is not None else set()

    # Ask the index and the delta for extra: excluded, deleted and not-ready images are dropped
    # below, and if too many were, ask again for more.
    want = k + len(exclude) + 16
    while True:
        hits = index.query(vector, want) if index is not None else []
        found = {image_id: d for image_id, d in hits if image_id not in replaced}
        positions, distances = delta.scan.nearest(vector, want)
        for position, distance in zip(positions, distances, strict=True):
            image_id = delta.ids[position]
            found[image_id] = float(distance)
        ranked = sorted((d, uuid.UUID(i)) for i, d in found.items())
        candidates = [image_id for _, image_id in ranked if image_id not in exclude]
        # The k nearest candidates that are ready, under the team criteria: another team's ids
        # never come back, nor deleted or not-ready images. What each match shows comes in a
        # fixed number of statements for any k.
        images = (
            {str(i): image for i, image in _image_views(candidates, k).items()}
            if candidates
            else {}
        )
        if len(hits) < want and len(positions) < want:
            break  # both gave all they hold
        # A source that gave all it was asked for may hold nearer images than the farthest it
        # gave: only matches up to that distance are sure to beat what it holds beyond.
        bound = min(
            hits[-1][1] if len(hits) >= want else math.inf,
            float(distances[-1]) if len(positions) >= want else math.inf,
        )
        if sum(found[i] <= bound for i in images) >= k:
            break
        want *= 4

    matches = [
        Match(images[i], d, similarity(plugin.metric, d, plugin.dimensions))
        for d, i in sorted((d, i) for i, d in found.items() if i in images)
    ]
    return SearchResult(
        embedder=embedder,
        matches=matches,
        index_version=build.version if build else None,
        fresh=build is not None and not delta.ids,
    )


@dataclass(frozen=True, slots=True)
class ImageView:
    """What an image shows in a search answer, read as plain rows: the API's searches answer
    from these (ORM objects with their tags and labels cost more than the rest of the search).
    The attributes are those of `Image` that `image_document` reads."""

    id: uuid.UUID
    filename: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    sha256: str
    status: str
    error: str | None
    collection_id: uuid.UUID | None
    meta: dict | None
    created_at: datetime
    uploaded_by: str | None
    tag_names: list[str]
    label_scores: list[tuple[str, float]]


_VIEW_COLUMNS = (
    Image.id,
    Image.filename,
    Image.content_type,
    Image.size_bytes,
    Image.width,
    Image.height,
    Image.sha256,
    Image.status,
    Image.error,
    Image.collection_id,
    Image.meta,
    Image.created_at,
)


# Built once, with the ids bound at execution (`expanding`): building the statements and
# checking each id cost more than running them.
_ids = bindparam("ids", expanding=True)
_READY_VIEWS = (
    select(*_VIEW_COLUMNS, User.email, ApiKey.name)
    .outerjoin(User, User.id == Image.uploaded_by_user_id)
    .outerjoin(ApiKey, ApiKey.id == Image.uploaded_by_key_id)
    .where(Image.id.in_(_ids), Image.status == "ready")
)
_TAGS_AND_LABELS = union_all(
    select(ImageTag.image_id, literal(0).label("kind"), Tag.name, null().label("score"))
    .join(Tag, Tag.id == ImageTag.tag_id)
    .where(ImageTag.image_id.in_(_ids)),
    select(Label.image_id, literal(1), Label.name, Label.score).where(Label.image_id.in_(_ids)),
).subquery()
# Tags by name, labels by score then name: as the relationships of `Image` order them.
_VIEW_TAGS_AND_LABELS = select(_TAGS_AND_LABELS).order_by(
    _TAGS_AND_LABELS.c.kind, _TAGS_AND_LABELS.c.score.desc(), _TAGS_AND_LABELS.c.name
)


def _image_views(candidates: list[uuid.UUID], k: int) -> dict[uuid.UUID, ImageView]:
    """The first k of `candidates` that are ready (under the team criteria), as `ImageView`s:
    the ready candidates as rows with their uploader's email or key name (ranked here: a few
    dozen rows), then the tags and the labels of the k shown, in one statement. A fixed number
    of statements for any k."""
    rows = db.session.execute(_READY_VIEWS, {"ids": candidates}).all()
    ready = {row.id: row for row in rows}
    chosen = [image_id for image_id in candidates if image_id in ready][:k]
    if not chosen:
        return {}
    tags: dict[uuid.UUID, list[str]] = {image_id: [] for image_id in chosen}
    labels: dict[uuid.UUID, list[tuple[str, float]]] = {image_id: [] for image_id in chosen}
    for image_id, kind, name, score in db.session.execute(_VIEW_TAGS_AND_LABELS, {"ids": chosen}):
        if kind == 0:
            tags[image_id].append(name)
        else:
            labels[image_id].append((name, score))
    views = {}
    for image_id in chosen:
        row = ready[image_id]
        email, key_name = row[-2], row[-1]
        uploaded_by = email if email is not None else key_uploader(key_name)
        views[image_id] = ImageView(
            *row[: len(_VIEW_COLUMNS)], uploaded_by, tags[image_id], labels[image_id]
        )
    return views


def _delta(team_id: uuid.UUID, embedder: str, version: str, watermark: int) -> Delta:
    """The embeddings above the watermark, laid out for the exact scan: what this process
    read at the previous search, plus the rows that came since (usually none, one indexed
    query). An image embedded again since (its new row replaces the one held) reads the whole
    delta again; deleted images need nothing, the search drops them with the rows it loads."""
    codec = plugins().embedders[embedder].codec
    key = (version, watermark)
    held = delta_cache().get(team_id, embedder)
    if held is not None and held.key != key:
        held = None  # a new build, or another embedder version, since
    after = held.last_id if held is not None else watermark
    rows = db.session.execute(
        embeddings_query(team_id, embedder, after_id=after, version=version)
    ).all()
    if held is not None and not rows:
        return held
    ids, vectors, last_id = load_vectors(rows, embedder)
    if held is not None:
        if not set(ids).isdisjoint(held.ids):
            delta_cache().put(team_id, embedder, _empty_delta(codec, key))
            return _delta(team_id, embedder, version, watermark)
        ids, vectors = held.ids + ids, np.concatenate([held.vectors, vectors])
    # Laid out once, as the exact index lays out its rows (a copy: `vectors` is kept as stored).
    delta = Delta(key, max(last_id, after), ids, vectors, ExactScan.of_vectors(codec, vectors))
    delta_cache().put(team_id, embedder, delta)
    return delta


def _empty_delta(codec, key: tuple[str, int]) -> Delta:
    """A delta holding nothing above the watermark, so the next read starts from it."""
    empty = codec.stack([])
    return Delta(key, key[1], [], empty, ExactScan.of_vectors(codec, empty))


def similar_images(image: Image, k: int, embedder: str | None = None) -> SearchResult:
    """Images of the same team most like this one."""
    embedder = resolve_embedder(embedder)
    stored = db.session.execute(
        select(Embedding.version, Embedding.vector).where(
            Embedding.image_id == image.id, Embedding.embedder == embedder
        )
    ).all()
    return _similar(image, embedder, stored, k)


def similar_to(image_id: str, k: int, embedder: str | None = None) -> SearchResult | None:
    """`similar_images` of the team's image with this id, read with its vectors in one
    statement (a round trip less on the API's busiest search), its matches as `ImageView`s;
    None when the team has no such image (bad ids included)."""
    try:
        image_id = uuid.UUID(image_id)
    except ValueError:
        return None
    # Under the team criteria, on the image and on the joined embeddings alike.
    rows = db.session.execute(
        select(Image, Embedding.embedder, Embedding.version, Embedding.vector)
        .outerjoin(Embedding, Embedding.image_id == Image.id)
        .where(Image.id == image_id)
    ).all()
    if not rows or rows[0][0].team_id != current_team_id():
        return None
    embedder = resolve_embedder(embedder)  # after the 404, as for every id route
    stored = [(version, data) for _, name, version, data in rows if name == embedder]
    return _similar(rows[0][0], embedder, stored, k)


def _similar(image: Image, embedder: str, rows: list, k: int) -> SearchResult:
    """The search of `similar_images`, given the image's (version, vector bytes) rows."""
    codec = plugins().embedders[embedder].codec
    stored = {}
    for version, data in rows:
        try:
            stored[version] = codec.from_bytes(data)
        except ValueError:  # a version of another width: its index cannot be read any more
            continue
    # While the index of a new embedder version is being made, the old version's index serves
    # (with this image's old vector); images embedded only since are searched exactly.
    serving = serving_build(image.team_id, embedder)
    version = plugins().embedders[embedder].version
    if serving is not None and serving.embedder_version in stored:
        version = serving.embedder_version
    if version not in stored:
        raise Conflict(f"the image is {image.status}, not yet processed by {embedder}")
    return nearest(
        image.team_id,
        embedder,
        stored[version],
        k,
        exclude={image.id},
        embedder_version=version,
        serving=serving,
    )


def search_by_file(
    team_id: uuid.UUID,
    stream: BinaryIO,
    k: int,
    embedder: str | None = None,
) -> SearchResult:
    """Images of the team most like an image that is not stored: the file is checked exactly
    like an upload (size, content type, pixel and frame limits, a full decode), embedded here
    as processing would embed it, and searched like /similar. Nothing is written: no row, no
    stored object, and no file beyond the stream the caller owns.

    Raises what an upload raises for a bad file, and Invalid for an unknown embedder."""
    embedder = resolve_embedder(embedder)  # before any work on the file
    plugin = plugins().embedders[embedder]
    with ingest.seekable(stream) as source:
        ingest.validate(source)
        # Decoded again at the size processing decodes originals to, then reduced to the same
        # preview: the query vector is comparable with every stored one. The cnn network is
        # loaded by the plugin on its first use in this process, once.
        working = open_working(source, processing.working_size())
    pixels = processing.embedder_pixels(make_rendition(working, processing.PREVIEW_SIZE))
    vector = plugin.embed_batch([pixels])[0]
    return nearest(team_id, embedder, vector, k)
