"""Duplicate review: groups of a team's images that show the same picture, and resolving them.

Three tiers, strictest first:
- `exact`: the same decoded pixels in different bytes (`Image.pixel_sha256`, written by
  processing; identical bytes are refused at upload already);
- `near`: perceptual hashes (`phash`) at most `threshold` bits apart;
- `similar`: vectors of the best enabled content embedder (cnn, else color) at most
  `threshold` apart (angular distance, sqrt(2 - 2 cos)).

Pairs come from indexes, never from comparing every pair: exact pixels by the database's
index on (team, pixel digest); near hashes by multi-index hashing (a pair within t bits agrees
within t // 4 bits on one of the hash's four 16-bit quarters, so each quarter is looked up in
a table of the team's quarters); similar vectors, for the whole team, by cells around centres
(`radius_pairs`: exact, each vector compared only with those of the cells it can share a close
pair with), and around one image by radius queries on the team's nearest-neighbour index plus
an exact scan of the embeddings it does not hold yet.

Groups are the connected components of those pairs, less the pairs a team said are not
duplicates (`DuplicateDecision`). A component that still holds such a pair (two dismissed
images both close to a newcomer) is split so that no group holds one: pairs are taken nearest
first, each joins or merges the groups of its two images when that keeps every group free of
dismissed pairs, else it becomes a group of its own. So a new image joining dismissed ones is
shown with each of them, never bringing them back together.

A group's id is `<tier>-<threshold>-<smallest member id>-<digest of all member ids>`: the same
members give the same id on every run, any change of membership a new one. Resolving
recomputes the group from its smallest member, so a group that changed since it was listed is
a Conflict, and one whose member is not the team's is NotFound.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import redis
from flask import current_app
from sqlalchemy import String, func, select, type_coerce
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.exc import StaleDataError

from app import queue
from app.errors import Conflict, Invalid, NotFound, Unavailable
from app.extensions import db, redis_connection
from app.models import DuplicateDecision, Embedding, Image, IndexBuild
from app.plugin_api import ExactScan
from app.runtime import index_cache, plugins
from app.services import audit, images
from app.services.audit import Actor
from app.services.indexing import current_build, embeddings_query, load_vectors
from app.services.search import PREFERRED_EMBEDDERS
from app.services.transaction import transactional

log = logging.getLogger(__name__)

TIERS = ("exact", "near", "similar")
DEFAULT_TIER = "near"
NEAR_EMBEDDER = "phash"

# Chosen from the quality benchmark (bench/quality.py, README "Benchmarks"): the largest that
# keep pair precision at 0.999 (near) and 0.99 (similar) or better on real photographs.
NEAR_BITS = 9
NEAR_MAX_BITS = 16  # beyond this, unrelated photographs start to join groups in numbers
SIMILAR_DISTANCE = {"cnn": 0.375, "color": 0.025}
SIMILAR_FALLBACK_DISTANCE = 0.1  # a third-party embedder, until its benchmark says better
SIMILAR_MAX_DISTANCE = 1.0  # cos 0.5

MAX_LIMIT = 200  # groups a page, as every list of the API pages its items
REPORT_CACHE_SECONDS = 600
# A large team's similar report at the tier's own threshold (the review page's) takes a worker
# minutes: it is kept until the team changes, or a day, not made again after ten idle minutes.
LARGE_REPORT_KEEP_SECONDS = 24 * 3600
REPORT_RETRY_SECONDS = 5  # what a request told "being prepared" is asked to wait
_GROUP_ID = re.compile(
    r"^(exact|near|similar)-([0-9]+(?:\.[0-9]+)?)-([0-9a-f]{32})-([0-9a-f]{16})$"
)


@dataclass
class Group:
    """One group of images that look like duplicates of each other, keeper first."""

    id: str
    tier: str
    images: list[Image]

    @property
    def suggested_keep(self) -> Image:
        return self.images[0]


@dataclass(frozen=True)
class _Plan:
    """What one run compares: a tier, its threshold, and the embedder that measures it."""

    tier: str
    threshold: float
    embedder: str | None

    @property
    def threshold_text(self) -> str:
        return f"{self.threshold:g}" if self.tier == "similar" else str(int(self.threshold))


def keeper_order(image: Image) -> tuple:
    """Sort key, best to keep first: most pixels, then the largest file, then the oldest."""
    return (-(image.width * image.height), -image.size_bytes, image.created_at, image.id)


# --- the plan ------------------------------------------------------------------------------------


def similar_embedder() -> str | None:
    """The embedder of the `similar` tier: the best enabled one that describes content."""
    enabled = plugins().embedders
    preferred = [n for n in PREFERRED_EMBEDDERS if n in enabled]
    content = [n for n, e in enabled.items() if e.metric != "hamming"]
    return (preferred + content + [None])[0]


def _plan(tier: str | None, threshold: str | float | None) -> _Plan:
    tier = tier or DEFAULT_TIER
    if tier not in TIERS:
        raise Invalid(f"tier must be one of {', '.join(TIERS)}")
    if tier == "exact":
        if threshold not in (None, "", 0, "0"):
            raise Invalid("the exact tier takes no threshold: its pixels are identical")
        return _Plan("exact", 0, None)
    if tier == "near":
        if NEAR_EMBEDDER not in plugins().embedders:
            raise Invalid(f"the near tier needs the {NEAR_EMBEDDER} embedder, which is not enabled")
        bits = NEAR_BITS if threshold in (None, "") else _number(threshold, int)
        if not 0 <= bits <= NEAR_MAX_BITS:
            raise Invalid(f"threshold of the near tier is a number of bits, 0 to {NEAR_MAX_BITS}")
        return _Plan("near", bits, NEAR_EMBEDDER)
    embedder = similar_embedder()
    if embedder is None:
        raise Invalid("the similar tier needs a content embedder (cnn or color) enabled")
    if threshold in (None, ""):
        distance = SIMILAR_DISTANCE.get(embedder, SIMILAR_FALLBACK_DISTANCE)
    else:
        distance = round(_number(threshold, float), 4)
    if not 0 <= distance <= SIMILAR_MAX_DISTANCE:
        raise Invalid(f"threshold of the similar tier is a distance, 0 to {SIMILAR_MAX_DISTANCE}")
    return _Plan("similar", distance, embedder)


# Written as every other number of a query: ASCII digits, no sign, no exponent, no spaces
# (int() and float() would also take "+5", " 5", "1e-1" and "٩").
_NUMBER_TEXT = {int: re.compile(r"[0-9]+"), float: re.compile(r"[0-9]+(\.[0-9]+)?|\.[0-9]+")}


def _number(value, kind):
    if isinstance(value, str) and not _NUMBER_TEXT[kind].fullmatch(value):
        raise Invalid("threshold must be a number, in plain digits")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise Invalid("threshold must be a number") from None
    if isinstance(number, float) and not np.isfinite(number):
        raise Invalid("threshold must be a number")
    return number


# --- pairs ---------------------------------------------------------------------------------------

Pair = tuple[str, str, float]  # (smaller id, larger id, distance)


def _ready_ids(team_id: uuid.UUID) -> set[str]:
    return {
        str(i)
        for i in db.session.scalars(
            select(Image.id).where(Image.team_id == team_id, Image.status == "ready")
        )
    }


def _exact_pairs(team_id: uuid.UUID, only: set[str] | None = None) -> list[Pair]:
    """Pairs of ready images with the same pixel digest (of `only`'s digests, if given)."""
    query = select(Image.pixel_sha256).where(
        Image.team_id == team_id, Image.status == "ready", Image.pixel_sha256.is_not(None)
    )
    if only is not None:
        query = query.where(Image.id.in_([uuid.UUID(i) for i in only]))
    else:
        query = query.group_by(Image.pixel_sha256).having(func.count() > 1)
    digests = set(db.session.scalars(query))
    buckets: dict[str, list[str]] = {}
    for image_id, digest in db.session.execute(
        select(Image.id, Image.pixel_sha256).where(
            Image.team_id == team_id, Image.status == "ready", Image.pixel_sha256.in_(digests)
        )
    ):
        buckets.setdefault(digest, []).append(str(image_id))
    return [
        (*sorted(pair), 0.0)
        for members in buckets.values()
        for pair in itertools.combinations(members, 2)
    ]


def _chunking(n: int, bits: int) -> tuple[int, int]:
    """(number of substrings, radius within each) for multi-index hashing of n 64-bit words
    within `bits`: the one with the least work. A lookup costs a few passes over the n words,
    about 2.5 candidate pairs' worth (measured at 100,000 words), and brings n times the share
    of a bucket as candidates (for uniform hashes)."""

    def cost(chunks: int) -> float:
        width = 64 // chunks
        radius = bits // chunks
        probes = sum(math.comb(width, r) for r in range(radius + 1)) * chunks
        return probes * n * (2.5 + n / 2**width)

    chunks = min(range(4, 9), key=cost)  # at most 16 bits a substring: small tables
    return chunks, bits // chunks


def hamming_pairs(words: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i < j) of 64-bit words at most `bits` apart, with its distance, by
    multi-index hashing (Norouzi et al.): cut into m substrings, two words within `bits` are
    within bits // m on at least one of them. So for each substring every word looks up, in a
    table of all words by that substring, the values within bits // m of its own, and only those
    candidates are compared in full. Never every pair: for uniform hashes the candidates are a
    few hundred per word whatever the team's size."""
    words = np.ascontiguousarray(words, dtype=np.uint64)
    n = len(words)
    empty = np.zeros(0, np.int64)
    if n < 2:
        return empty, empty, np.zeros(0, np.int64)
    chunks, radius = _chunking(n, bits)
    found_i, found_j = [], []
    for chunk in range(chunks):
        low = chunk * 64 // chunks
        width = (chunk + 1) * 64 // chunks - low
        keys = ((words >> np.uint64(low)) & np.uint64((1 << width) - 1)).astype(np.int64)
        order = np.argsort(keys, kind="stable")
        counts = np.bincount(keys, minlength=1 << width)
        starts = np.cumsum(counts) - counts
        masks = [0] + [
            sum(1 << b for b in combo)
            for r in range(1, radius + 1)
            for combo in itertools.combinations(range(width), r)
        ]
        for mask in masks:
            wanted = keys ^ mask
            sizes = counts[wanted]
            total = int(sizes.sum())
            if total == 0:
                continue
            left = np.repeat(np.arange(n), sizes)
            # Position within each run, then offset by the run's start.
            offsets = np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)
            right = order[np.repeat(starts[wanted], sizes) + offsets]
            keep = left < right  # each pair once (a word also finds itself: mask 0)
            left, right = left[keep], right[keep]
            close = np.bitwise_count(words[left] ^ words[right]) <= bits
            found_i.append(left[close])
            found_j.append(right[close])
    if not found_i:
        return empty, empty, np.zeros(0, np.int64)
    codes = np.unique(np.concatenate(found_i) * n + np.concatenate(found_j))
    left, right = codes // n, codes % n
    return left, right, np.bitwise_count(words[left] ^ words[right]).astype(np.int64)


_BLOCK_ROWS = 2048  # rows of a block of distances: 2048 x 2048 float32 is 16 MB
_DIRECT_PAIRS = 4096  # below this many vectors, every pair is compared in blocks
_SAMPLE_ROWS = 2000  # rows whose visits tell whether cells save work
_MAX_VISITED_SHARE = 0.1  # of the cells, that a vector visits on average


def radius_pairs(
    vectors: np.ndarray, radius: float, metric: str, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Every pair (i < j) of float vectors at most `radius` apart in the metric's distance
    (angular: sqrt(2 - 2 cos) of the unit vectors, as the indexes report it; euclidean: L2),
    with its distance. Exact, and never every pair: the vectors are cut into cells around
    about sqrt(n) centres, each vector's home is its nearest centre, and each vector also
    visits every cell whose centre is within d + 2 * radius of it (d: to its home). Vectors of a
    pair within the radius then meet in the home cell of either one: if |x - y| <= r and c is
    x's home, |y - c| <= |x - c| + r, and |x - c| <= |x - c_y| <= |y - c_y| + r, so y visits c.
    Each cell compares its homes with its visitors by matrix products. A zero vector has no
    direction and is close to nothing.

    None when the cells would not save work (vectors would visit more than a tenth of the cells
    on average, as for a radius wide against how the vectors spread): search otherwise."""
    empty = np.zeros(0, np.int64)
    rows = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if metric == "angular":
        norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
        live = np.flatnonzero(norms > 0)
        rows = rows[live] / norms[live, None]
    else:
        live = np.arange(len(rows))
    n = len(rows)
    if n < 2:
        return empty, empty, np.zeros(0, np.float32)
    squares = np.einsum("ij,ij->i", rows, rows)
    # Float32 products are off by about 1e-6 of the squares: never drop a pair for that.
    slack = 1e-5 * (1.0 + float(squares.max()))
    limit = float(radius) ** 2 + slack

    def close(left: np.ndarray, right: np.ndarray):
        """Candidate pairs of left x right positions: within the radius by their products."""
        found_i, found_j = [], []
        for start in range(0, len(left), _BLOCK_ROWS):
            block = left[start : start + _BLOCK_ROWS]
            d2 = squares[block, None] + squares[None, right] - 2.0 * (rows[block] @ rows[right].T)
            i, j = np.nonzero(d2 <= limit)
            found_i.append(block[i])
            found_j.append(right[j])
        return found_i, found_j

    everyone = np.arange(n)
    if n <= _DIRECT_PAIRS:
        found_i, found_j = close(everyone, everyone)
    else:
        rng = np.random.default_rng(seed)
        centres = rows[rng.choice(n, int(math.sqrt(n)), replace=False)]
        centre_squares = np.einsum("ij,ij->i", centres, centres)

        def visits(positions: np.ndarray):
            """(homes, visiting positions, visited cells) of these rows."""
            d2 = squares[positions, None] + centre_squares - 2.0 * (rows[positions] @ centres.T)
            d = np.sqrt(np.maximum(d2, 0.0))
            nearest = d.argmin(axis=1)
            reach = d[np.arange(len(d)), nearest][:, None] + 2.0 * radius + math.sqrt(slack)
            i, c = np.nonzero(d <= reach)
            return nearest, positions[i], c

        # Cells save work only when a vector visits few: where the radius is wide against the
        # vectors' spread, each would visit most cells, and comparing them all is every pair.
        sample = rng.choice(n, min(n, _SAMPLE_ROWS), replace=False)
        if len(visits(sample)[2]) > _MAX_VISITED_SHARE * len(sample) * len(centres):
            return None
        homes = np.empty(n, np.int64)
        visits_i, visits_c = [], []
        for start in range(0, n, _BLOCK_ROWS):
            homes[start : start + _BLOCK_ROWS], i, c = visits(everyone[start : start + _BLOCK_ROWS])
            visits_i.append(i)
            visits_c.append(c)
        visits_i, visits_c = np.concatenate(visits_i), np.concatenate(visits_c)
        by_cell = np.argsort(visits_c, kind="stable")
        visits_i, visits_c = visits_i[by_cell], visits_c[by_cell]
        cell_starts = np.searchsorted(visits_c, np.arange(len(centres) + 1))
        home_order = np.argsort(homes, kind="stable")
        home_starts = np.searchsorted(homes[home_order], np.arange(len(centres) + 1))
        found_i, found_j = [], []
        for cell in range(len(centres)):
            residents = home_order[home_starts[cell] : home_starts[cell + 1]]
            if len(residents):
                visitors = visits_i[cell_starts[cell] : cell_starts[cell + 1]]
                more_i, more_j = close(residents, visitors)
                found_i += more_i
                found_j += more_j
    left, right = np.concatenate(found_i), np.concatenate(found_j)
    keep = left != right
    left, right = left[keep], right[keep]
    codes = np.sort(np.minimum(left, right) * n + np.maximum(left, right))
    first = np.ones(len(codes), bool)
    first[1:] = codes[1:] != codes[:-1]
    codes = codes[first]  # each pair once
    left, right = codes // n, codes % n
    # The candidates' distances again from their differences: the products above lose the
    # small distances that matter here to rounding.
    distance = np.empty(len(left), np.float32)
    for start in range(0, len(left), _BLOCK_ROWS * 64):
        part = slice(start, start + _BLOCK_ROWS * 64)
        difference = rows[left[part]] - rows[right[part]]
        distance[part] = np.sqrt(np.einsum("ij,ij->i", difference, difference))
    within = distance <= radius + 1e-6
    return live[left[within]], live[right[within]], distance[within]


def _hash_words(vectors: np.ndarray) -> np.ndarray:
    """Packed 64-bit hashes (n, 8) uint8 as one big-endian word each."""
    return np.ascontiguousarray(vectors, dtype=np.uint8).view(">u8").reshape(-1).astype(np.uint64)


class _Space:
    """The team's vectors of one embedder, and radius queries over its index and delta."""

    def __init__(self, team_id: uuid.UUID, embedder: str, radius: float):
        self.team_id, self.embedder, self.radius = team_id, embedder, radius
        self.plugin = plugins().embedders[embedder]
        build = current_build(team_id, embedder, self.plugin.version)
        self.index = index_cache().get(build) if build is not None else None
        rows = db.session.execute(
            embeddings_query(team_id, embedder, after_id=build.watermark if build else 0)
        ).all()
        self.delta_ids, delta, _ = load_vectors(rows, embedder)
        self.delta = ExactScan.of_vectors(self.plugin.codec, delta, copy=False)

    def vectors(self, ids: Iterable[str] | None = None) -> tuple[list[str], np.ndarray]:
        query = embeddings_query(self.team_id, self.embedder)
        if ids is not None:
            query = query.where(Embedding.image_id.in_([uuid.UUID(i) for i in ids]))
        found, matrix, _ = load_vectors(db.session.execute(query), self.embedder)
        return found, matrix

    def within(self, vector: np.ndarray) -> dict[str, float]:
        """Ids at most `radius` from `vector`: the index asked for more until its farthest
        answer is beyond the radius, then the delta scanned."""
        found: dict[str, float] = {}
        if self.index is not None:
            k = 16
            while True:
                hits = self.index.query(vector, k)
                found = {i: d for i, d in hits if d <= self.radius + 1e-6}
                if len(hits) < k or len(found) < len(hits):
                    break
                k *= 4
        if len(self.delta):
            distances = self.delta.distances(vector)
            for position in np.flatnonzero(distances <= self.radius + 1e-6):
                image_id = self.delta_ids[position]
                found[image_id] = min(float(distances[position]), found.get(image_id, np.inf))
        return found


def _pairs_from(space: _Space, ids: list[str], matrix: np.ndarray, ready: set[str]) -> list[Pair]:
    pairs = {}
    for image_id, vector in zip(ids, matrix, strict=True):
        for other, distance in space.within(vector).items():
            if other != image_id and other in ready:
                key = (image_id, other) if image_id < other else (other, image_id)
                pairs[key] = min(distance, pairs.get(key, np.inf))
    return [(a, b, d) for (a, b), d in pairs.items()]


def _id(raw) -> str:
    """An image id as a canonical string, from a UUID or the hex text SQLite stores."""
    return str(raw if isinstance(raw, uuid.UUID) else uuid.UUID(raw))


def _ready_hashes(team_id: uuid.UUID) -> tuple[list, np.ndarray]:
    """The ready images' ids and phash words, read as one block of bytes (a team's 100,000
    hashes are 800 KB: decoding them row by row would cost more than comparing them)."""
    version = plugins().embedders[NEAR_EMBEDDER].version
    rows = db.session.execute(
        # Untyped: 100,000 UUID objects would cost more than the search.
        select(type_coerce(Embedding.image_id, String), Embedding.vector)
        .join(Image, Image.id == Embedding.image_id)
        .where(
            Embedding.team_id == team_id,
            Embedding.embedder == NEAR_EMBEDDER,
            Embedding.version == version,
            Image.status == "ready",
        )
    ).all()
    ids = [row[0] for row in rows]  # raw: only the few in pairs become ids (`_id`)
    blob = b"".join(row.vector for row in rows)
    return ids, _hash_words(np.frombuffer(blob, dtype=np.uint8).reshape(-1, 8))


@dataclass
class _Pairs:
    """Close pairs as arrays, for teams where they number millions: positions `left[n]` and
    `right[n]` into `ids` (as the database gave them: `_id` makes them canonical), `dist[n]`."""

    ids: list
    left: np.ndarray
    right: np.ndarray
    dist: np.ndarray

    @classmethod
    def of(cls, pairs: list[Pair]) -> _Pairs:
        ids = sorted({i for pair in pairs for i in pair[:2]})
        where = {image_id: n for n, image_id in enumerate(ids)}
        return cls(
            ids,
            np.array([where[a] for a, _, _ in pairs], np.int64),
            np.array([where[b] for _, b, _ in pairs], np.int64),
            np.array([d for _, _, d in pairs], np.float64),
        )

    def pair(self, n: int) -> Pair:
        a, b = _id(self.ids[self.left[n]]), _id(self.ids[self.right[n]])
        return (a, b, float(self.dist[n])) if a < b else (b, a, float(self.dist[n]))


def _all_pairs(team_id: uuid.UUID, plan: _Plan) -> _Pairs:
    """Every close pair of the team's ready images in this plan's tier."""
    if plan.tier == "exact":
        return _Pairs.of(_exact_pairs(team_id))
    if plan.tier == "near":
        ids, words = _ready_hashes(team_id)
        left, right, dist = hamming_pairs(words, int(plan.threshold))
        return _Pairs(ids, left, right, dist)
    ready = _ready_ids(team_id)
    ids, matrix, _ = load_vectors(
        db.session.execute(embeddings_query(team_id, plan.embedder)), plan.embedder
    )
    keep = [p for p, i in enumerate(ids) if i in ready]
    kept = [ids[p] for p in keep]
    metric = plugins().embedders[plan.embedder].metric
    found = radius_pairs(matrix[keep], plan.threshold, metric)
    if found is None:  # one radius query per image on the team's index
        space = _Space(team_id, plan.embedder, plan.threshold)
        return _Pairs.of(_pairs_from(space, kept, matrix[keep], ready))
    return _Pairs(kept, *found)


def _pairs_around(team_id: uuid.UUID, plan: _Plan, anchor: str, ready: set[str]) -> list[Pair]:
    """The close pairs of the connected component (dismissed pairs aside) holding `anchor`,
    found by radius queries from it outwards."""
    dismissed = _dismissed(team_id)
    space = None if plan.tier == "exact" else _Space(team_id, plan.embedder, plan.threshold)
    seen, frontier, pairs = {anchor}, {anchor}, {}
    while frontier:
        if space is None:
            found = _exact_pairs(team_id, only=frontier)
        else:
            ids, matrix = space.vectors(frontier)
            found = _pairs_from(space, ids, matrix, ready)
        frontier = set()
        for a, b, d in found:
            pairs[(a, b)] = d
            if (a, b) in dismissed:
                continue
            for image_id in (a, b):
                if image_id not in seen:
                    seen.add(image_id)
                    frontier.add(image_id)
    return [(a, b, d) for (a, b), d in pairs.items() if a in seen and b in seen]


def _dismissed(team_id: uuid.UUID) -> set[tuple[str, str]]:
    return {
        (str(a), str(b))
        for a, b in db.session.execute(
            select(DuplicateDecision.image_a_id, DuplicateDecision.image_b_id).where(
                DuplicateDecision.team_id == team_id
            )
        )
    }


# --- groups --------------------------------------------------------------------------------------


def _split(pairs: list[Pair], dismissed: set[tuple[str, str]]) -> list[frozenset[str]]:
    """Member sets of the groups of one component that holds a dismissed pair, none holding
    one."""

    def compatible(group: set[str], newcomers: Iterable[str]) -> bool:
        return not any(
            (min(x, y), max(x, y)) in dismissed for x in newcomers for y in group if x != y
        )

    groups: list[set[str]] = []
    for a, b, _ in sorted(pairs, key=lambda p: (p[2], p[0], p[1])):
        if any(a in g and b in g for g in groups):
            continue
        with_a = [g for g in groups if a in g]
        with_b = [g for g in groups if b in g]
        merged = next(((ga, gb) for ga in with_a for gb in with_b if compatible(ga, gb)), None)
        if merged:
            merged[0].update(merged[1])
            groups.remove(merged[1])
            continue
        joined = next((g for g in with_a if compatible(g, [b])), None) or next(
            (g for g in with_b if compatible(g, [a])), None
        )
        if joined is not None:
            joined.update((a, b))
        else:
            groups.append({a, b})
    return [frozenset(g) for g in groups]


def _group_id(plan: _Plan, members: Iterable[str]) -> str:
    # Canonical UUID strings sort as the UUIDs do.
    ordered = sorted(members)
    digest = hashlib.sha256(
        f"{plan.tier}|{plan.threshold_text}|{'|'.join(ordered)}".encode()
    ).hexdigest()[:16]
    return f"{plan.tier}-{plan.threshold_text}-{ordered[0].replace('-', '')}-{digest}"


def _component_labels(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """For each of n nodes, the smallest node of its connected component given by the edges
    (left[i], right[i]): each edge hooks the larger label onto the smaller, then labels jump to
    their roots, until every edge joins equal labels (a few rounds, whatever n)."""
    labels = np.arange(n)
    while len(left) and (labels[left] != labels[right]).any():
        low = np.minimum(labels[left], labels[right])
        np.minimum.at(labels, labels[left], low)
        np.minimum.at(labels, labels[right], low)
        while True:  # a label is never above its node: these are trees, flattened here
            jumped = labels[labels]
            if (jumped == labels).all():
                break
            labels = jumped
    return labels


def _groups(
    team_id: uuid.UUID, plan: _Plan, pairs: _Pairs | list[Pair]
) -> dict[str, frozenset[str]]:
    """Group id -> member ids, from the close pairs (dismissed ones included: they decide
    the splits). Components are found on the arrays; only those still linking two images
    someone said are not duplicates become pairs in Python, to be split."""
    if not isinstance(pairs, _Pairs):
        pairs = _Pairs.of(pairs)
    n = len(pairs.ids)
    left, right = pairs.left, pairs.right
    touched = np.unique(np.concatenate([left, right]))
    position = {_id(pairs.ids[p]): p for p in touched.tolist()}
    dismissed = {(a, b) for a, b in _dismissed(team_id) if a in position and b in position}
    codes = np.minimum(left, right) * n + np.maximum(left, right)
    refused = [
        min(position[a], position[b]) * n + max(position[a], position[b]) for a, b in dismissed
    ]
    live = ~np.isin(codes, np.array(refused, np.int64))
    labels = _component_labels(n, left[live], right[live])
    # Components that still link two images someone said are not duplicates: split below.
    holding = {
        int(labels[position[a]]) for a, b in dismissed if labels[position[a]] == labels[position[b]]
    }
    members = np.unique(np.concatenate([left[live], right[live]]))
    if not len(members):
        return {}
    order = np.argsort(labels[members], kind="stable")
    members, member_labels = members[order], labels[members][order]
    bounds = np.flatnonzero(np.diff(member_labels)) + 1
    live_pairs = np.flatnonzero(live)
    groups = {}
    for component, label in zip(
        np.split(members, bounds),
        member_labels[np.r_[0, bounds]],
        strict=True,
    ):
        if int(label) in holding:
            inside = live_pairs[labels[left[live_pairs]] == label]
            split = _split([pairs.pair(i) for i in inside.tolist()], dismissed)
        else:
            split = [frozenset(_id(pairs.ids[p]) for p in component.tolist())]
        for group in split:
            groups[_group_id(plan, group)] = group
    return groups


def report(
    team_id: uuid.UUID,
    tier: str | None = None,
    threshold: str | float | None = None,
    *,
    in_request: bool = False,
) -> dict[str, frozenset[str]]:
    """Every duplicate group of the team in one tier: group id -> member image ids.

    The newest report of a tier and threshold is kept in Redis for REPORT_CACHE_SECONDS (a
    large team's similar report at the tier's own threshold: LARGE_REPORT_KEEP_SECONDS) with a
    fingerprint of everything it depends on, so that paging through a large team's groups
    computes them once; a report whose fingerprint no longer matches is made again.

    `in_request`: a `similar` report of more than DUPLICATE_REPORT_INLINE_IMAGES ready images
    that is out of date is left to a worker (one job per team at a time). Meanwhile the kept one
    is answered if there is one, less the groups dismissed since (an image deleted since drops
    out of its group, and resolving checks each group against the images as they are now),
    else Unavailable says to ask again shortly."""
    plan = _plan(tier, threshold)
    key, fingerprint, ready = _report_state(team_id, plan)
    kept = _kept(key)
    if kept is not None and kept[0] == fingerprint:
        return kept[1]
    inline_limit = current_app.config["DUPLICATE_REPORT_INLINE_IMAGES"]
    if in_request and plan.tier == "similar" and ready > inline_limit:
        queued = queue.enqueue_duplicate_report(team_id, plan.tier, plan.threshold_text)
        if kept is not None:
            return _without_dismissed(team_id, kept[1])
        if not queued:
            raise Unavailable("the duplicate report cannot be prepared now: no queue to prepare it")
        raise Unavailable(
            f"the similar report of {ready:,} images is being prepared; ask again shortly",
            retry_after=REPORT_RETRY_SECONDS,
        )
    groups = _groups(team_id, plan, _all_pairs(team_id, plan))
    large = plan.tier == "similar" and ready > inline_limit and plan == _plan(plan.tier, None)
    try:
        encoded = json.dumps(
            {"fingerprint": fingerprint, "groups": {g: sorted(m) for g, m in groups.items()}}
        )
        keep = LARGE_REPORT_KEEP_SECONDS if large else REPORT_CACHE_SECONDS
        redis_connection.client.set(key, encoded, ex=keep)
    except redis.RedisError as exc:
        log.warning("could not keep the duplicate report in Redis: %s", exc)
    return groups


def _kept(key: str) -> tuple[str, dict[str, frozenset[str]]] | None:
    """The report kept in Redis under `key` with its fingerprint, if any (and Redis answers)."""
    try:
        cached = redis_connection.client.get(key)
    except redis.RedisError:
        return None
    if cached is None:
        return None
    kept = json.loads(cached)
    return kept["fingerprint"], {g: frozenset(m) for g, m in kept["groups"].items()}


def _without_dismissed(
    team_id: uuid.UUID, groups: dict[str, frozenset[str]]
) -> dict[str, frozenset[str]]:
    """An earlier report less its groups that hold a pair dismissed since it was made (a
    report never holds one when it is made), so that "not duplicates" sticks at once."""
    group_of = {member: group_id for group_id, members in groups.items() for member in members}
    dropped = {
        group_of[a]
        for a, b in _dismissed(team_id)
        if a in group_of and group_of[a] == group_of.get(b)
    }
    return {group_id: members for group_id, members in groups.items() if group_id not in dropped}


def _report_state(team_id: uuid.UUID, plan: _Plan) -> tuple[str, str, int]:
    """Where the team's report of this tier and threshold is kept; a fingerprint that changes
    whenever the report could (an image becomes ready, is processed again or deleted, a vector
    or an index build is added, a pair is dismissed); and how many ready images there are."""
    ready = db.session.execute(
        select(func.count(), func.max(Image.processed_at)).where(
            Image.team_id == team_id, Image.status == "ready"
        )
    ).one()
    decisions = db.session.execute(
        select(func.count(), func.max(DuplicateDecision.id)).where(
            DuplicateDecision.team_id == team_id
        )
    ).one()
    vectors = builds = None
    if plan.embedder is not None:
        vectors = db.session.scalar(
            select(func.max(Embedding.id)).where(
                Embedding.team_id == team_id, Embedding.embedder == plan.embedder
            )
        )
        builds = db.session.scalar(
            select(func.max(IndexBuild.id)).where(
                IndexBuild.team_id == team_id, IndexBuild.embedder == plan.embedder
            )
        )
    parts = [ready[0], ready[1], decisions[0], decisions[1], vectors, builds, plan.embedder]
    fingerprint = hashlib.sha256(repr(parts).encode()).hexdigest()[:24]
    prefix = current_app.config["QUEUE_NAME"]
    key = f"likeness:{prefix}:duplicates:{team_id}:{plan.tier}:{plan.threshold_text}"
    return key, fingerprint, ready[0]


def list_groups(
    team_id: uuid.UUID,
    tier: str | None = None,
    threshold: str | float | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> tuple[list[Group], str | None]:
    """One page of the team's duplicate groups in a tier, by group id, and the next cursor."""
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit must be 1 to {MAX_LIMIT}")
    plan = _plan(tier, threshold)
    if cursor is not None and not _GROUP_ID.match(cursor):
        raise Invalid("cursor is not one this API returned")
    groups = report(team_id, plan.tier, plan.threshold, in_request=True)
    ids = sorted(g for g in groups if cursor is None or g > cursor)
    page = _with_images(team_id, plan, groups, ids[:limit])
    return page, (ids[limit - 1] if len(ids) > limit else None)


def all_groups(
    team_id: uuid.UUID, tier: str | None = None, threshold: str | float | None = None
) -> list[Group]:
    """Every duplicate group of the team in a tier, by group id (the command line's report)."""
    plan = _plan(tier, threshold)
    groups = report(team_id, plan.tier, plan.threshold)
    return _with_images(team_id, plan, groups, sorted(groups))


def _with_images(
    team_id: uuid.UUID, plan: _Plan, groups: dict[str, frozenset[str]], ids: list[str]
) -> list[Group]:
    members = {uuid.UUID(i) for g in ids for i in groups[g]}
    loaded = {
        str(image.id): image
        for image in db.session.scalars(
            select(Image)
            .where(Image.team_id == team_id, Image.id.in_(members))
            .options(
                selectinload(Image.tags),
                selectinload(Image.labels),
                selectinload(Image.uploaded_by_user),
                selectinload(Image.uploaded_by_key),
            )
        )
    }
    # An image deleted since the report was made drops out of its group.
    shown = [(g, [loaded[i] for i in groups[g] if i in loaded]) for g in ids]
    return [
        Group(g, plan.tier, sorted(images, key=keeper_order))
        for g, images in shown
        if len(images) > 1
    ]


# --- resolving -----------------------------------------------------------------------------------


def _parse_group_id(group_id: str) -> tuple[_Plan, uuid.UUID, str]:
    match = _GROUP_ID.match(group_id or "")
    if match is None:
        raise NotFound("no such duplicate group")
    tier, threshold, anchor, _ = match.groups()
    try:
        plan = _plan(tier, None if tier == "exact" else threshold)
    except Invalid:
        raise NotFound("no such duplicate group") from None
    return plan, uuid.UUID(anchor), group_id


def _team_images(team_id: uuid.UUID, ids: list[uuid.UUID]) -> dict[uuid.UUID, Image]:
    """The named images, locked until the resolution commits: of two requests resolving one
    group, the second waits, then finds the first's deletions (a Conflict)."""
    found = {
        image.id: image
        for image in db.session.scalars(
            select(Image)
            .where(Image.team_id == team_id, Image.id.in_(ids))
            .order_by(Image.id)
            .with_for_update()
        )
    }
    if len(found) != len(set(ids)):
        raise NotFound("an image named is not one of the team's")
    return found


def _ids(value, name: str) -> list[uuid.UUID]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid(f"{name} is a list of image ids")
    try:
        return [uuid.UUID(v) for v in value]
    except ValueError:
        raise Invalid(f"{name} holds something that is not an image id") from None


def _resolution(body) -> tuple[list[uuid.UUID], list[uuid.UUID]] | None:
    """(keep, delete) from a resolve request's body, or None for "not duplicates"."""
    if not isinstance(body, dict):
        raise Invalid('send {"keep": [ids], "delete": [ids]} or {"not_duplicates": true}')
    unknown = sorted(set(body) - {"keep", "delete", "not_duplicates"})
    if unknown:
        raise Invalid(f"unsupported field {', '.join(unknown)}")
    if "not_duplicates" in body:
        if set(body) != {"not_duplicates"}:
            raise Invalid("send either keep and delete, or not_duplicates, not both")
        if body["not_duplicates"] is not True:
            raise Invalid("not_duplicates must be true")
        return None
    if set(body) != {"keep", "delete"}:
        raise Invalid('send {"keep": [ids], "delete": [ids]} or {"not_duplicates": true}')
    keep_ids, delete_ids = _ids(body["keep"], "keep"), _ids(body["delete"], "delete")
    if not keep_ids:
        raise Invalid("keep at least one image")
    if len(set(keep_ids) | set(delete_ids)) != len(keep_ids) + len(delete_ids):
        raise Invalid("an image is named twice in keep and delete")
    return keep_ids, delete_ids


def _names_a_changed_group(team_id: uuid.UUID, plan: _Plan, group_id: str, body) -> bool:
    """Whether a body names exactly the images this group id was listed with, some of them
    still the team's: the team's own group, changed since (its smallest image deleted)."""
    try:
        resolution = _resolution(body)
    except Invalid:
        return False
    if resolution is None:
        return False
    named = resolution[0] + resolution[1]
    if _group_id(plan, (str(i) for i in named)) != group_id:
        return False
    return (
        db.session.scalar(
            select(Image.id).where(Image.team_id == team_id, Image.id.in_(named)).limit(1)
        )
        is not None
    )


@transactional
def resolve(team_id: uuid.UUID, group_id: str, body, *, actor: Actor) -> dict:
    """Resolve a group as listed: `{"keep": [ids], "delete": [ids]}` keeps some images and
    deletes the others (their tags and collection go to the kept ones); `{"not_duplicates":
    true}` remembers that its images are not duplicates of each other.

    `keep` and `delete` together must name exactly the group's images; a group or an image the
    team lacks is NotFound, a group that changed since it was listed is a Conflict.
    """
    plan, anchor, group_id = _parse_group_id(group_id)
    # Locked: resolutions of one group (its smallest member) run one after the other, and the
    # second finds the group changed.
    anchored = select(Image.id).where(Image.team_id == team_id, Image.id == anchor)
    if db.session.scalar(anchored.with_for_update()) is None:
        if _names_a_changed_group(team_id, plan, group_id, body):
            raise Conflict("an image of the group is gone; list the duplicates again")
        raise NotFound("no such duplicate group")
    resolution = _resolution(body)
    not_duplicates = resolution is None
    if not not_duplicates:
        keep_ids, delete_ids = resolution
        listed = _group_id(plan, (str(i) for i in keep_ids + delete_ids)) == group_id
        try:
            named = _team_images(team_id, keep_ids + delete_ids)
        except NotFound:
            if listed:  # the group's own images, one of them deleted since
                raise Conflict("an image of the group is gone; list the duplicates again") from None
            raise
        if not listed:
            raise Invalid("keep and delete must together name exactly the group's images")

    ready = _ready_ids(team_id)
    current = _groups(team_id, plan, _pairs_around(team_id, plan, str(anchor), ready))
    if group_id not in current:
        raise Conflict("the group has changed since it was listed; list the duplicates again")
    members = sorted(uuid.UUID(i) for i in current[group_id])

    if not_duplicates:
        existing = _dismissed(team_id)
        for a, b in itertools.combinations(members, 2):
            if (str(a), str(b)) not in existing:
                db.session.add(DuplicateDecision(team_id=team_id, image_a_id=a, image_b_id=b))
        try:
            db.session.flush()
        except IntegrityError:
            # SQLite locks nothing it reads: another request dismissed the group (or deleted
            # one of its images) since it was found unchanged.
            raise Conflict(
                "the group has changed since it was listed; list the duplicates again"
            ) from None
        audit.record(
            actor,
            "duplicates.dismiss",
            team_id,
            target_type="duplicate_group",
            target_id=group_id,
            target=f"{plan.tier} group of {len(members)} images",
            images=[str(i) for i in members],
        )
        return {"group_id": group_id, "not_duplicates": [str(i) for i in members]}

    kept = sorted((named[i] for i in keep_ids), key=keeper_order)
    doomed = sorted((named[i] for i in delete_ids), key=keeper_order)
    gone = Conflict("an image of the group is gone; list the duplicates again")
    try:
        tags = sorted({t.name for image in kept + doomed for t in image.tags})
        collection = next((i.collection_id for i in kept + doomed if i.collection_id), None)
        for image in kept:
            images.set_tags(image, tags)
            if image.collection_id is None and collection is not None:
                image.collection_id = collection
        audit.record(
            actor,
            "duplicates.resolve",
            team_id,
            target_type="duplicate_group",
            target_id=group_id,
            target=f"{plan.tier} group of {len(members)} images",
            kept=[str(i.id) for i in kept],
            deleted=[str(i.id) for i in doomed],
            tags=tags,
            collection=str(collection) if collection else None,
        )
        for image in doomed:
            images.delete_image(image, actor=actor)
        db.session.flush()
    except (IntegrityError, StaleDataError):
        # SQLite locks nothing it reads: a kept image was deleted since (its tags or
        # collection could not be written).
        raise gone from None
    # Only now, writing, does SQLite's transaction see what committed meanwhile: a kept image
    # deleted since must not leave the group with none (PostgreSQL holds the rows locked).
    still = select(func.count()).select_from(Image).where(Image.id.in_(keep_ids))
    if db.session.scalar(still) != len(keep_ids):
        raise gone
    return {"group_id": group_id, "kept": kept, "deleted": [str(i.id) for i in doomed]}


def suggested_resolution(team_id: uuid.UUID, group_id: str) -> dict:
    """The body that resolves a group as it stands keeping only its suggested keeper, for a
    page that resolves many groups at once; NotFound and Conflict as `resolve` has them."""
    plan, anchor, group_id = _parse_group_id(group_id)
    if (
        db.session.scalar(select(Image.id).where(Image.team_id == team_id, Image.id == anchor))
        is None
    ):
        raise NotFound("no such duplicate group")
    current = _groups(team_id, plan, _pairs_around(team_id, plan, str(anchor), _ready_ids(team_id)))
    if group_id not in current:
        raise Conflict("the group has changed since it was listed; list the duplicates again")
    members = _team_images(team_id, [uuid.UUID(i) for i in current[group_id]])
    ordered = sorted(members.values(), key=keeper_order)
    return {"keep": [str(ordered[0].id)], "delete": [str(i.id) for i in ordered[1:]]}
