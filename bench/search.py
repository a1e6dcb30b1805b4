"""Search at 100,000 items, through the installed index plugins, each against its baseline in
the same run, on one core.

    .venv/bin/python bench/search.py                  # the table below, a few minutes
    .venv/bin/python bench/search.py --tune           # Annoy: n_trees x search_k table
    .venv/bin/python bench/search.py --only near-dup  # or more-like-this, colour, sharing

- near-dup: 64-bit perceptual hashes (bench/_vectors.py) in the `exact` index, memory-mapped
  from its saved files; k=10 per query. Against the naive design, loading every hash of the team
  from the database (SQLite, the application's models) and comparing them in a Python loop, and
  against the scan it replaced (a byte lookup table).
- more-like-this: 1280-d CNN-like vectors (angular) in the `annoy` index with the configured
  ANNOY_N_TREES and ANNOY_SEARCH_K, memory-mapped; recall@10 against the `exact` index (exact
  numpy search over unit rows, memory-mapped too), and the ratio of their latencies. The
  rebuild is the plugin's build and save (reading the rows from the database comes on top).
- colour: the same for the 136-d vectors of the `color` embedder on crowded, themed pictures.
- sharing: two processes load the same saved index files and run the queries; their resident
  (Rss) and proportional (Pss) memory of the mapped index files, from /proc/<pid>/smaps: pages
  of one memory-mapped copy count half to each.
- text: a team of 100,000 images seeded into the application's database (bulk inserts: file
  names, tags, labels, collections; the text index's triggers write the documents as for
  uploads), then `list_images(text=...)` (the first page of 50, as the API and the gallery ask)
  for a mix of what people type, against the LIKE scan it replaced (each word over filename,
  tags, labels and collection name). SQLite; PostgreSQL too with --postgres URL (or
  $BENCH_DATABASE_URL; the database is emptied).
- api-similar: GET /api/v1/images/{id}/similar?k=20 through the Flask application (API key,
  team scope, the index, the delta, the rows, JSON) with 100,000 images of `color` vectors
  (`--api-embedder cnn`: 1280-d vectors searched on the cnn index) in a team and their index
  built through the application; then again with a delta just under the
  rebuild threshold (the build's watermark moved back); against GET /api/v1/images/{id}. The
  objects loaded by then are frozen out of the garbage collector's full scans, as gunicorn.conf.py
  does in each web worker.

Latency: wall time per query (time.perf_counter) and CPU time (time.thread_time), the first
queries as warm-up; median and p99 per repeat, then the median over repeats. The machine may be
shared: the CPU-time p99 shows what the query itself costs. Exit status 1 when a target is
missed.
"""

from __future__ import annotations

import os

# One core means one BLAS thread too; set before numpy is imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import heapq  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from app.plugin_api import VectorIndex  # noqa: E402
from bench._photos import DEFAULT_DIR, pin_to_one_core  # noqa: E402
from bench._vectors import cached, cnn_like, colour_histograms, hashes  # noqa: E402
from config import Config  # noqa: E402
from plugins.index_annoy import AnnoyIndex  # noqa: E402
from plugins.index_exact import ExactIndex  # noqa: E402

K = 10
DIMS = 1280


@dataclass
class Row:
    measure: str
    result: str
    target: str = ""
    met: bool | None = None


@dataclass
class Latency:
    median_ms: float
    p99_ms: float
    p99_cpu_ms: float

    def __str__(self) -> str:
        return (
            f"median {self.median_ms:.3f} ms, p99 {self.p99_ms:.3f} ms "
            f"(CPU p99 {self.p99_cpu_ms:.3f} ms)"
        )


def timed(query: Callable[[np.ndarray], object], queries: np.ndarray, repeats: int) -> Latency:
    """Per-query wall and CPU time over `repeats` passes; medians over the passes."""
    for vector in queries[: min(20, len(queries))]:
        query(vector)  # warm-up: page in, fill caches
    medians, p99s, cpu_p99s = [], [], []
    for _ in range(repeats):
        wall, cpu = [], []
        for vector in queries:
            started, started_cpu = time.perf_counter(), time.thread_time()
            query(vector)
            cpu.append(time.thread_time() - started_cpu)
            wall.append(time.perf_counter() - started)
        medians.append(np.median(wall))
        p99s.append(np.percentile(wall, 99))
        cpu_p99s.append(np.percentile(cpu, 99))
    return Latency(*(1000 * float(np.median(v)) for v in (medians, p99s, cpu_p99s)))


def top_k(index: VectorIndex) -> Callable[[np.ndarray], object]:
    return lambda vector: index.query(vector, K)


def item_ids(n: int) -> list[str]:
    """Image ids as the application stores them (UUID strings)."""
    return [str(uuid.UUID(int=i + 1)) for i in range(n)]


def saved(index: VectorIndex, directory: str) -> tuple[float, int]:
    """Save into a fresh `directory`: (seconds, bytes written)."""
    os.makedirs(directory)
    started = time.perf_counter()
    names = index.save(directory)
    seconds = time.perf_counter() - started
    return seconds, sum(os.path.getsize(os.path.join(directory, n)) for n in names)


def recall_at_k(found: list[list[float]], kth_true: np.ndarray) -> float:
    """Share of the k results within the true k-th distance: ties with the k-th count as
    found, whichever of them an index returns."""
    hits = [
        sum(d <= kth + 1e-5 for d in dists[:K]) / K
        for dists, kth in zip(found, kth_true, strict=True)
    ]
    return float(np.mean(hits))


# --- near-duplicate lookup -----------------------------------------------------------------


def _previous_hamming_scan(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """The scan this replaced: XOR bytes, then a 256-entry popcount table per byte."""
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[np.bitwise_xor(matrix, vector)].sum(axis=1, dtype=np.int64).astype(np.float32)


def _naive_database(work: str, stored: np.ndarray):
    """An application database (SQLite) holding one team's images and their hashes, and the
    naive lookup over it: every hash loaded, compared in a Python loop."""
    from sqlalchemy import insert, select

    from app.extensions import db
    from app.models import Embedding, Image, utcnow
    from app.services import accounts
    from bench._app import make_app

    app = make_app(os.path.join(work, "instance"), "redis://127.0.0.1:1/0")
    context = app.app_context()
    context.push()
    team = accounts.create_team("Bench")
    db.session.commit()
    now = utcnow()
    ids = [uuid.UUID(i) for i in item_ids(len(stored))]
    for start in range(0, len(stored), 10_000):
        chunk = range(start, min(start + 10_000, len(stored)))
        db.session.execute(
            insert(Image),
            [
                dict(id=ids[i], team_id=team.id, filename=f"{i}.jpg", content_type="image/jpeg",
                     size_bytes=1, width=1, height=1, sha256=f"{i:064x}", status="ready",
                     storage_key=f"o/{i}", thumbnail_key=f"t/{i}", meta={}, created_at=now)
                for i in chunk
            ],
        )  # fmt: skip
        db.session.execute(
            insert(Embedding),
            [
                dict(team_id=team.id, image_id=ids[i], embedder="phash", version="1",
                     vector=stored[i].tobytes(), created_at=now)
                for i in chunk
            ],
        )  # fmt: skip
    db.session.commit()

    def naive(vector: np.ndarray) -> list[tuple[int, str]]:
        wanted = int.from_bytes(vector.tobytes(), "big")
        rows = db.session.execute(
            select(Embedding.image_id, Embedding.vector).where(
                Embedding.team_id == team.id, Embedding.embedder == "phash"
            )
        ).all()
        scored = [
            (bin(wanted ^ int.from_bytes(data, "big")).count("1"), str(image_id))
            for image_id, data in rows
        ]
        return heapq.nsmallest(K, scored)

    return naive, context


def near_duplicates(args, work: str) -> list[Row]:
    stored, asked = hashes(args.items, args.queries)
    ids = item_ids(args.items)
    index = ExactIndex("hamming", 64, {})
    index.build(ids, stored)
    saved(index, os.path.join(work, "phash"))
    loaded = ExactIndex("hamming", 64, {})
    loaded.load(os.path.join(work, "phash"))

    ours = timed(top_k(loaded), asked, args.repeats)
    found = [[d for _, d in loaded.query(q, K)] for q in asked]
    reference = [np.sort(np.unpackbits(stored ^ q, axis=1).sum(axis=1))[:K] for q in asked]
    exact = all(np.array_equal(f, r) for f, r in zip(found, reference, strict=True))
    recall = recall_at_k(found, np.array([r[-1] for r in reference]))

    previous = timed(lambda q: _previous_hamming_scan(stored, q), asked[:50], 1)
    naive, context = _naive_database(work, stored)
    try:
        naive_found = [naive(q) for q in asked[:3]]
        assert [[d for d, _ in f] for f in naive_found] == [list(r) for r in reference[:3]]
        baseline = timed(naive, asked[: args.naive_queries], 1)
    finally:
        context.pop()
    speedup = baseline.median_ms / ours.median_ms
    return [
        Row(f"near-dup lookup, {args.items:,} hashes, k={K}", str(ours), "p99 <= 0.5 ms",
            ours.p99_ms <= 0.5),
        Row("near-dup recall (against a textbook popcount)",
            f"{recall:.3f}" + (", distances identical" if exact else ""), "1.0", recall == 1.0),
        Row("naive: every hash from the database, Python loop", str(baseline)),
        Row("near-dup vs naive (medians)", f"{speedup:,.0f}x "
            f"(p99: {baseline.p99_ms / ours.p99_ms:,.0f}x)", ">= 1,000x", speedup >= 1000),
        Row("the scan it replaced (byte lookup table), per query", str(previous)),
    ]  # fmt: skip


# --- more like this ------------------------------------------------------------------------------


def annoy_config(args) -> dict:
    return {"ANNOY_N_TREES": args.n_trees, "ANNOY_SEARCH_K": args.search_k}


def _exact_baseline(vectors, queries, ids, directory, metric="angular"):
    """The exact index, saved and memory-mapped: its loaded copy, and the true k-th distance per
    query."""
    exact = ExactIndex(metric, vectors.shape[1], {})
    exact.build(ids, vectors)
    saved(exact, directory)
    loaded = ExactIndex(metric, vectors.shape[1], {})
    loaded.load(directory)
    kth = np.array([loaded.query(q, K)[-1][1] for q in queries])
    return loaded, kth


def _annoy(vectors, ids, directory, config) -> tuple[AnnoyIndex, float, int]:
    """Annoy built and saved (seconds for both), then loaded memory-mapped; bytes saved."""
    started = time.perf_counter()
    index = AnnoyIndex("angular", vectors.shape[1], config)
    index.build(ids, vectors)
    save_seconds, size = saved(index, directory)
    seconds = time.perf_counter() - started
    loaded = AnnoyIndex("angular", vectors.shape[1], config)
    loaded.load(directory)
    return loaded, seconds, size


def _previous_angular_scan(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """The scan this replaced: every row's norm recomputed per query."""
    norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(vector)
    cos = np.divide(matrix @ vector, norms, out=np.zeros(len(matrix), np.float32), where=norms > 0)
    return np.sqrt(np.clip(2.0 - 2.0 * cos, 0.0, 4.0))


def more_like_this(args, work: str) -> list[Row]:
    total = args.items + args.queries
    everything = cached(args.data, f"cnn-like-{total}", lambda: cnn_like(total))
    queries, vectors = everything[: args.queries], everything[args.queries :]
    ids = item_ids(args.items)
    exact, kth = _exact_baseline(vectors, queries, ids, os.path.join(work, "exact-1280"))
    annoy, build_seconds, size = _annoy(
        vectors, ids, os.path.join(work, "annoy-1280"), annoy_config(args)
    )
    raw = vectors.nbytes

    baseline = timed(top_k(exact), queries[: args.exact_queries], args.repeats)
    ours = timed(top_k(annoy), queries, args.repeats)
    recall = recall_at_k([[d for _, d in annoy.query(q, K)] for q in queries], kth)
    previous = timed(lambda q: _previous_angular_scan(vectors, q), queries[:3], 1)
    speedup = baseline.median_ms / ours.median_ms
    settings = f"n_trees={args.n_trees}, search_k={args.search_k}"
    return [
        Row(f"more-like-this recall@{K}, {args.items:,} x {DIMS}-d, annoy {settings}",
            f"{recall:.3f}", ">= 0.95", recall >= 0.95),
        Row("more-like-this latency, annoy", str(ours), "p99 <= 5 ms", ours.p99_ms <= 5.0),
        Row("exact numpy search (exact index, unit rows)", str(baseline)),
        Row("annoy vs exact numpy (medians)", f"{speedup:.1f}x "
            f"(p99: {baseline.p99_ms / ours.p99_ms:.1f}x)", ">= 10x", speedup >= 10),
        Row(f"rebuild {args.items:,} x {DIMS}-d (annoy build + save)", f"{build_seconds:.1f} s",
            "<= 30 s", build_seconds <= 30),
        Row("index files / raw float32 vectors", f"{size / raw:.3f} ({size / 2**20:.0f} MiB / "
            f"{raw / 2**20:.0f} MiB, ids.npy included)", "<= 1.15", size / raw <= 1.15),
        Row("the exact scan it replaced (norms per query), per query", str(previous)),
    ]  # fmt: skip


def colour(args, work: str) -> list[Row]:
    everything = cached(
        args.data,
        f"colour-themed-{args.items + args.queries}",
        lambda: colour_histograms(args.items + args.queries),
    )
    queries, vectors = everything[: args.queries], everything[args.queries :]
    ids = item_ids(args.items)
    exact, kth = _exact_baseline(vectors, queries, ids, os.path.join(work, "exact-136"))
    annoy, build_seconds, size = _annoy(
        vectors, ids, os.path.join(work, "annoy-136"), annoy_config(args)
    )
    baseline = timed(top_k(exact), queries[: args.exact_queries], args.repeats)
    ours = timed(top_k(annoy), queries, args.repeats)
    recall = recall_at_k([[d for _, d in annoy.query(q, K)] for q in queries], kth)
    return [
        Row(f"colour recall@{K}, {args.items:,} x 136-d (themed pictures), annoy",
            f"{recall:.3f}"),
        Row("colour latency, annoy", str(ours)),
        Row("colour latency, exact numpy search", str(baseline)),
        Row("colour: annoy build + save; files / raw vectors",
            f"{build_seconds:.1f} s; {size / vectors.nbytes:.2f}"),
    ]  # fmt: skip


# --- memory shared between processes -------------------------------------------------------------

_CHILD = """
import sys
import numpy as np
sys.path.insert(0, {root!r})
from plugins.index_annoy import AnnoyIndex
from plugins.index_exact import ExactIndex
kind, directory, queries = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
config = {config!r}
index = (AnnoyIndex if kind == "annoy" else ExactIndex)("angular", queries.shape[1], config)
index.load(directory)
for query in queries:
    index.query(query, 10)
print("ready", flush=True)
sys.stdin.readline()
"""


def _mapped(pid: int, directory: str) -> tuple[int, int]:
    """(Rss, Pss) in bytes of a process's mappings of files under `directory`."""
    rss = pss = 0
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                inside = len(fields) >= 6 and fields[5].startswith(directory)
            elif inside and fields[0] == "Rss:":
                rss += int(fields[1]) * 1024
            elif inside and fields[0] == "Pss:":
                pss += int(fields[1]) * 1024
    return rss, pss


def _rollup(pid: int) -> tuple[int, int]:
    """(Rss, Pss) in bytes of a whole process."""
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            fields = line.split()
            if fields[0] in ("Rss:", "Pss:"):
                values[fields[0]] = int(fields[1]) * 1024
    return values["Rss:"], values["Pss:"]


def _two_processes(kind: str, directory: str, queries_file: str, args) -> tuple[str, bool]:
    code = _CHILD.format(root=ROOT, config=annoy_config(args))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, kind, directory, queries_file],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready"
        mapped = [_mapped(c.pid, directory) for c in children]
        whole = [_rollup(c.pid) for c in children]
    finally:
        for child in children:
            child.communicate("\n", timeout=60)
    mib = 2**20
    rss = [r for r, _ in mapped]
    pss = [p for _, p in mapped]
    shared = sum(pss) <= 0.55 * sum(rss)  # each page of one copy counts half to each process
    return (
        f"index files: Rss {rss[0] / mib:.0f} + {rss[1] / mib:.0f} MiB, "
        f"Pss {pss[0] / mib:.0f} + {pss[1] / mib:.0f} MiB -> "
        + ("one shared copy" if shared else "NOT SHARED")
        + f"; whole processes Rss {whole[0][0] / mib:.0f} / {whole[1][0] / mib:.0f} MiB, "
        f"Pss {whole[0][1] / mib:.0f} / {whole[1][1] / mib:.0f} MiB"
    ), shared


def sharing(args, work: str) -> list[Row]:
    if not os.path.isdir(os.path.join(work, "annoy-1280")):
        more_like_this(args, work)
    everything = np.load(os.path.join(args.data, f"cnn-like-{args.items + args.queries}.npy"))
    queries_file = os.path.join(work, "queries.npy")
    np.save(queries_file, everything[: args.queries])
    rows = []
    for kind in ("annoy", "exact"):
        result, shared = _two_processes(
            kind, os.path.join(work, f"{kind}-1280"), queries_file, args
        )
        rows.append(
            Row(f"two processes querying one saved {kind} index ({DIMS}-d)", result,
                "one copy", shared)
        )  # fmt: skip
    return rows


# --- tuning ------------------------------------------------------------------------------------


def tune(args, work: str) -> None:
    """Recall@10 and latency of Annoy per n_trees and search_k, on both kinds of vectors."""
    datasets = {
        f"{DIMS}-d CNN-like": lambda: cnn_like(args.items + args.queries),
        f"{DIMS}-d CNN-like, hard": lambda: cnn_like(args.items + args.queries, hard=True),
        "136-d colour": lambda: colour_histograms(args.items + args.queries),
    }
    names = {
        f"{DIMS}-d CNN-like": f"cnn-like-{args.items + args.queries}",
        f"{DIMS}-d CNN-like, hard": f"cnn-like-hard-{args.items + args.queries}",
        "136-d colour": f"colour-themed-{args.items + args.queries}",
    }
    for label, make in datasets.items():  # generated on every core, before pinning to one
        cached(args.data, names[label], make)
    print(f"tuning {pin_to_one_core()}")
    print("| vectors | n_trees | build + save | files / raw | search_k | recall@10 "
          "| median | p99 | CPU p99 | x exact (median) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, make in datasets.items():
        everything = cached(args.data, names[label], make)
        queries, vectors = everything[: args.queries], everything[args.queries :]
        ids = item_ids(args.items)
        directory = os.path.join(work, f"tune-exact-{names[label]}")
        exact, kth = _exact_baseline(vectors, queries, ids, directory)
        baseline = timed(top_k(exact), queries[: args.exact_queries], 1)
        for n_trees in args.tune_trees:
            config = {"ANNOY_N_TREES": n_trees, "ANNOY_SEARCH_K": 0}
            directory = os.path.join(work, f"tune-{names[label]}-{n_trees}")
            annoy, seconds, size = _annoy(vectors, ids, directory, config)
            for search_k in args.tune_search_k:
                annoy.search_k = search_k
                latency = timed(top_k(annoy), queries, args.repeats)
                recall = recall_at_k([[d for _, d in annoy.query(q, K)] for q in queries], kth)
                print(
                    f"| {label} | {n_trees} | {seconds:.1f} s | {size / vectors.nbytes:.3f} "
                    f"| {search_k} | {recall:.3f} | {latency.median_ms:.2f} ms "
                    f"| {latency.p99_ms:.2f} ms | {latency.p99_cpu_ms:.2f} ms "
                    f"| {baseline.median_ms / latency.median_ms:.1f}x |",
                    flush=True,
                )
            annoy = None  # unmapped before its files go
            shutil.rmtree(directory, ignore_errors=True)
        print(f"<!-- {label}: exact numpy search {baseline} -->", flush=True)


# --- text search and /similar through the application ----------------------------------------


def _library_app(work: str, name: str, redis_url: str, database_url: str | None = None):
    """An application over a fresh database: SQLite in `work`, or the PostgreSQL named."""
    from app.extensions import db
    from bench._app import LIFTED_RATE_LIMITS, make_app

    settings = {"SQLALCHEMY_DATABASE_URI": database_url} if database_url else {}
    app = make_app(os.path.join(work, name), redis_url, **LIFTED_RATE_LIMITS, **settings)
    if database_url:
        with app.app_context():
            db.drop_all()
            db.create_all()
    return app


def _text_queries(count: int, seed: int = 1) -> list[str]:
    """What people type: a place, a tag, a label, a collection, two words, a prefix being
    typed, an image number, and words that match nothing."""
    import random

    from bench._library import LABELS, PLACES, THINGS

    rng = random.Random(seed)
    makers = [
        lambda: rng.choice(PLACES),
        lambda: rng.choice(THINGS),
        lambda: rng.choice(LABELS).split()[1],
        lambda: f"{rng.choice(PLACES)} {rng.randint(2019, 2024)}",
        lambda: f"{rng.choice(PLACES)} {rng.choice(THINGS)}",
        lambda: rng.choice(LABELS)[:7],
        lambda: f"IMG {rng.randrange(100_000):06d}",
        lambda: f"nothing{rng.randrange(1000)}",
    ]
    return [makers[i % len(makers)]() for i in range(count)]


def _like_filter(text: str):
    """The scan text search replaced (each word a LIKE over filename, tags and labels), with
    the collection name added, so both find the same."""
    from sqlalchemy import and_, func, or_, select

    from app.models import Collection, Image, Label, Tag

    return and_(
        *(
            or_(
                func.lower(Image.filename).contains(word, autoescape=True),
                Image.tags.any(Tag.name.contains(word, autoescape=True)),
                Image.labels.any(func.lower(Label.name).contains(word, autoescape=True)),
                Image.collection_id.in_(
                    select(Collection.id).where(
                        func.lower(Collection.name).contains(word, autoescape=True)
                    )
                ),
            )
            for word in text.lower().split()
        )
    )


def _text_search_on(label: str, args, work: str, database_url: str | None) -> list[Row]:
    from sqlalchemy import select

    from app.extensions import db
    from app.models import Image
    from app.services import images
    from app.tenancy import team_scope
    from bench._library import PLACES, database_size, seed_team

    app = _library_app(work, f"text-{label}", "redis://127.0.0.1:1/0", database_url)
    started = time.perf_counter()
    team_id, _, _ = seed_team(app, args.items)
    seeding = time.perf_counter() - started
    queries = _text_queries(args.queries)
    with app.app_context(), team_scope(team_id):

        def ours(text: str):
            return images.list_images(50, text=text)[0]

        def like(text: str):
            query = (
                select(Image)
                .where(_like_filter(text))
                .order_by(Image.created_at.desc(), Image.id.desc())
                .limit(51)
            )
            return db.session.scalars(query).all()

        # A place is a whole word of no other: both find the same first page, newest first.
        for text in PLACES[:3]:
            assert [i.id for i in ours(text)] == [i.id for i in like(text)][:50], text
        fast = timed(ours, queries, args.repeats)
        slow = timed(like, queries[: args.naive_queries * 8], 1)
        size = database_size(app)
    speedup = slow.median_ms / fast.median_ms
    return [
        Row(f"text search, {args.items:,} images ({label}), first page of 50, mixed queries",
            str(fast), "fast at 100k"),
        Row(f"its baseline: LIKE scan of filename, tags, labels, collection ({label})", str(slow)),
        Row(f"text search vs LIKE scan ({label}, medians)",
            f"{speedup:,.0f}x (p99: {slow.p99_ms / fast.p99_ms:,.0f}x)", "> 1x", speedup > 1),
        Row(f"seeding {args.items:,} images with tags and labels, documents by triggers "
            f"({label})", f"{seeding:.0f} s, database {size}"),
    ]  # fmt: skip


def text_search(args, work: str) -> list[Row]:
    rows = _text_search_on("SQLite", args, work, None)
    if args.postgres:
        rows += _text_search_on("PostgreSQL", args, work, normalise_url(args.postgres))
    return rows


def normalise_url(url: str) -> str:
    from config import normalise_database_url

    return normalise_database_url(url)


def api_similar(args, work: str) -> list[Row]:
    """GET /api/v1/images/{id}/similar through the Flask application (routing, API key, team
    scope, index, the delta, the rows, JSON) with 100k images in the team: with every
    embedding in the index, and with a delta just under the rebuild threshold."""
    from sqlalchemy import update

    from app.extensions import db
    from app.models import IndexBuild
    from app.services import indexing
    from bench._library import seed_team
    from tests.redis_server import RedisServer

    redis = RedisServer(tempfile.mkdtemp(prefix="lk-bench-redis-", dir="/tmp"))
    redis_url = redis.start()
    try:
        app = _library_app(
            work, "api", redis_url, normalise_url(args.postgres) if args.api_postgres else None
        )
        embedder = args.api_embedder
        with app.app_context():
            enabled = app.extensions["likeness"].plugins.embedders
            if embedder not in enabled:
                sys.exit(f"--api-embedder {embedder} is not enabled here: {', '.join(enabled)}")
            width = enabled[embedder].dimensions
        vectors = cnn_like(args.items, dims=width, seed=3)
        team_id, key, ids = seed_team(app, args.items, vectors={embedder: vectors})
        with app.app_context():
            started = time.perf_counter()
            build = indexing.build_index(team_id, embedder)
            build_seconds = time.perf_counter() - started
            assert build is not None and build.item_count == args.items
        client = app.test_client()
        headers = {"X-API-Key": key}
        # As each web worker does once it has loaded the application (gunicorn.conf.py): what
        # is loaded, here with the seeding's leftovers, is kept out of full collections.
        gc.collect()
        gc.freeze()
        rng = np.random.default_rng(5)
        asked = [str(ids[i]) for i in rng.choice(args.items, args.queries, replace=False)]

        def similar(image_id: str):
            response = client.get(
                f"/api/v1/images/{image_id}/similar?k=20&embedder={embedder}", headers=headers
            )
            assert response.status_code == 200 and len(response.json["items"]) == 20, response.json
            return response

        def one_image(image_id: str):
            assert client.get(f"/api/v1/images/{image_id}", headers=headers).status_code == 200

        floor = timed(one_image, asked, args.repeats)
        indexed = timed(similar, asked, args.repeats)
        assert similar(asked[0]).json["index"]["fresh"] is True
        # A delta just under the rebuild threshold (5% of the team): the watermark moved back.
        with app.app_context():
            delta = indexing.rebuild_threshold(args.items) - 1
            db.session.execute(
                update(IndexBuild)
                .where(IndexBuild.id == build.id)
                .values(watermark=build.watermark - delta)
            )
            db.session.commit()
        assert similar(asked[0]).json["index"]["fresh"] is False
        with_delta = timed(similar, asked, args.repeats)
    finally:
        gc.unfreeze()
        redis.stop()
    return [
        Row(f"GET /images/{{id}}/similar?k=20 through the API, {args.items:,} images, {embedder} "
            "index, no delta", str(indexed), "p99 <= 20 ms", indexed.p99_ms <= 20),
        Row(f"the same with a delta of {delta:,} embeddings (just under the rebuild threshold)",
            str(with_delta), "p99 <= 20 ms", with_delta.p99_ms <= 20),
        Row("baseline: GET /images/{id} (key, team, one row, JSON)", str(floor)),
        Row("/similar over GET /images/{id} (medians)",
            f"{indexed.median_ms / floor.median_ms:.1f}x, with the delta "
            f"{with_delta.median_ms / floor.median_ms:.1f}x"),
        Row(f"index build of {args.items:,} x {width}-d {embedder} vectors from the database",
            f"{build_seconds:.1f} s"),
    ]  # fmt: skip


SECTIONS = {
    "near-dup": near_duplicates,
    "more-like-this": more_like_this,
    "colour": colour,
    "sharing": sharing,
    "text": text_search,
    "api-similar": api_similar,
}


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} CPUs (load average {load}), Python "
        f"{platform.python_version()}, numpy {np.__version__}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--exact-queries", type=int, default=100, help="for the exact baseline")
    parser.add_argument("--naive-queries", type=int, default=5, help="for the naive baseline")
    parser.add_argument("--n-trees", type=int, default=Config.ANNOY_N_TREES)
    parser.add_argument("--search-k", type=int, default=Config.ANNOY_SEARCH_K)
    parser.add_argument("--only", help="comma-separated sections: " + ", ".join(SECTIONS))
    parser.add_argument("--tune", action="store_true", help="print the Annoy tuning table")
    parser.add_argument("--tune-trees", type=lambda v: [int(x) for x in v.split(",")],
                        default=[8, 16, 32])  # fmt: skip
    parser.add_argument(
        "--tune-search-k",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1000, 2000, 3000, 5000, 10000, 20000],
    )
    parser.add_argument("--data", default=DEFAULT_DIR, help="where generated vectors are cached")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_DATABASE_URL"),
        help="a PostgreSQL database (emptied!) to run text search on too; $BENCH_DATABASE_URL",
    )
    parser.add_argument(
        "--api-postgres", action="store_true", help="run api-similar on --postgres, not SQLite"
    )
    parser.add_argument(
        "--api-embedder",
        default="color",
        help="the index api-similar searches (cnn: the 1280-d one, with the cnn extra installed)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # One line per request would drown the table (and cost the requests measured).
    logging.getLogger("likeness.access").setLevel(logging.WARNING)

    # Vectors are generated (on every core) before the benchmark pins itself to one.
    if args.tune:
        pinned = "generation first"
    else:
        if not args.only or "colour" in args.only:
            cached(
                args.data,
                f"colour-themed-{args.items + args.queries}",
                lambda: colour_histograms(args.items + args.queries),
            )
        pinned = pin_to_one_core()
    print(f"machine: {machine()}; {pinned}")
    work = tempfile.mkdtemp(prefix="lk-bench-search-", dir="/tmp")
    try:
        if args.tune:
            tune(args, work)
            return 0
        rows: list[Row] = []
        for name in args.only.split(",") if args.only else SECTIONS:
            started = time.perf_counter()
            rows += SECTIONS[name](args, work)
            print(f"[{name}: {time.perf_counter() - started:.0f} s]", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("| measure | result | target |")
    print("|---|---|---|")
    for row in rows:
        verdict = "" if row.met is None else (" (met)" if row.met else " (MISSED)")
        print(f"| {row.measure} | {row.result} | {row.target}{verdict} |")
    return 0 if all(row.met is not False for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
