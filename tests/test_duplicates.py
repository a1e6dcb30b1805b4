"""Duplicate review through the API: real images, real processing, real indexes."""

from __future__ import annotations

import io
import os
import uuid
from datetime import timedelta

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import PngImagePlugin
from sqlalchemy import select, update

from app.extensions import db, redis_connection
from app.models import AuditEvent, DuplicateDecision, Image
from app.queue import get_import_queue
from app.services import collections, duplicates, reconcile
from app.services.audit import Actor
from app.tenancy import team_scope
from tests import samples

ALICE = Actor("user", "alice@a.example")


def png(image: PILImage.Image, text: str | None = None, level: int = 6) -> bytes:
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text("Comment", text)
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info, compress_level=level)
    return out.getvalue()


def decoded(data: bytes) -> PILImage.Image:
    return PILImage.open(io.BytesIO(data)).convert("RGB")


def brighter_copy(original: bytes, quality: int = 85) -> bytes:
    """The picture 20% brighter, saved again: alike in content, further apart in its hash."""
    brighter = decoded(original).point(lambda v: min(255, int(v * 1.2)))
    return samples.encode(brighter, "JPEG", quality=quality)


@pytest.fixture
def add(upload, run_jobs):
    """Upload files as a team and process them: their ids, in order."""

    def post(team, *files: tuple[bytes, str]) -> list[str]:
        response = upload(team, list(files))
        assert response.status_code == 201, response.json
        run_jobs()
        return [item["id"] for item in response.json["items"]]

    return post


def groups(client, team, **params) -> list[dict]:
    response = client.get("/api/v1/duplicates", query_string=params, headers=team.headers())
    assert response.status_code == 200, response.json
    return response.json["groups"]


def members(group: dict) -> set[str]:
    return {image["id"] for image in group["images"]}


def resolve(client, team, group_id, body, key=None):
    return client.post(
        f"/api/v1/duplicates/{group_id}/resolve", json=body, headers=team.headers(key)
    )


# --- tiers ---------------------------------------------------------------------------------------


def test_exact_tier_is_the_same_pixels_in_other_bytes(client, team_a, add):
    original = samples.jpeg(1)
    pixels = decoded(original)
    ids = add(
        team_a,
        (original, "original.jpg"),
        (png(pixels), "lossless.png"),  # the JPEG's pixels re-saved losslessly
        (png(pixels, text="edited", level=1), "edited-metadata.png"),
        (samples.resized_copy(original), "smaller.jpg"),
        (samples.jpeg(2), "other.jpg"),
    )
    exact = groups(client, team_a, tier="exact")
    assert [members(g) for g in exact] == [set(ids[:3])]
    assert exact[0]["tier"] == "exact"
    # One pixel changed is not the same picture.
    changed = np.asarray(pixels).copy()
    changed[10, 10] ^= 1
    add(team_a, (png(PILImage.fromarray(changed)), "one-pixel.png"))
    assert [members(g) for g in groups(client, team_a, tier="exact")] == [set(ids[:3])]


def test_near_tier_groups_recompressed_and_resized_copies_only(client, team_a, add):
    original = samples.jpeg(3)
    ids = add(
        team_a,
        (original, "a.jpg"),
        (samples.resized_copy(original), "a-small.jpg"),
        (samples.encode(decoded(original), "JPEG", quality=30), "a-q30.jpg"),
        (samples.jpeg(4), "b.jpg"),
        (samples.jpeg(5), "c.jpg"),
    )
    near = groups(client, team_a)  # near is the default tier
    assert [members(g) for g in near] == [set(ids[:3])]
    assert near[0]["tier"] == "near"
    assert groups(client, team_a, tier="near", threshold=0) == [] or all(
        members(g) <= set(ids[:3]) for g in groups(client, team_a, tier="near", threshold=0)
    )


def test_similar_tier_uses_the_content_embedder(client, team_a, add):
    original = samples.jpeg(6)
    ids = add(
        team_a,
        (original, "a.jpg"),
        (brighter_copy(original), "a-brighter.jpg"),
        (samples.jpeg(7), "b.jpg"),
    )
    similar = groups(client, team_a, tier="similar", threshold=0.4)
    assert [members(g) for g in similar] == [set(ids[:2])]
    assert similar[0]["tier"] == "similar"


def test_similar_tier_answers_the_same_from_the_index_when_cells_cannot_help(
    app, client, team_a, add, monkeypatch
):
    pictures = [samples.jpeg(seed) for seed in (6, 8)]
    files = []
    for n, original in enumerate(pictures):
        files += [
            (original, f"{n}.jpg"),
            (brighter_copy(original), f"{n}b.jpg"),
        ]
    files += [(samples.jpeg(seed), f"other-{seed}.jpg") for seed in (7, 9, 10)]
    ids = add(team_a, *files)
    by_cells = groups(client, team_a, tier="similar", threshold=0.4)
    assert sorted(map(members, by_cells), key=sorted) == sorted(
        [set(ids[0:2]), set(ids[2:4])], key=sorted
    )

    # For a radius as wide as cnn's, cells would not save work: one index query per image.
    monkeypatch.setattr(duplicates, "radius_pairs", lambda *args, **kwargs: None)
    with app.app_context():
        redis_connection.client.flushdb()  # the report is kept; compute it again
    by_index = groups(client, team_a, tier="similar", threshold=0.4)
    assert [(g["id"], members(g)) for g in by_index] == [(g["id"], members(g)) for g in by_cells]


class TestALargeTeamsSimilarReport:
    """Made by a worker: with cnn's wide threshold it takes minutes at 100,000 images."""

    @pytest.fixture
    def config_overrides(self):
        return {"DUPLICATE_REPORT_INLINE_IMAGES": 3}  # "large" from four ready images

    @staticmethod
    def ask(client, team):
        return client.get(
            "/api/v1/duplicates",
            query_string={"tier": "similar", "threshold": 0.4},
            headers=team.headers(),
        )

    @staticmethod
    def waiting_reports(app) -> list:
        with app.app_context():
            queue = get_import_queue()
            return [job for job in queue.jobs if job.func_name == "app.jobs.duplicate_report"]

    def test_is_prepared_by_a_worker_and_the_last_one_answers_while_the_next_is_made(
        self, app, client, team_a, team_b, add, run_jobs
    ):
        original = samples.jpeg(6)
        ids = add(
            team_a,
            (original, "a.jpg"),
            (brighter_copy(original), "a-brighter.jpg"),
            (samples.jpeg(7), "b.jpg"),
            (samples.jpeg(8), "c.jpg"),
        )
        # The exact and near tiers are made in the request, whatever the team's size.
        assert groups(client, team_a, tier="exact") == []

        first = self.ask(client, team_a)
        assert first.status_code == 503, first.json
        assert first.json["error"]["code"] == "unavailable"
        assert "being prepared" in first.json["error"]["message"]
        assert first.headers["Retry-After"] == str(duplicates.REPORT_RETRY_SECONDS)
        assert self.ask(client, team_a).status_code == 503
        assert len(self.waiting_reports(app)) == 1  # asking again queues nothing more

        run_jobs()
        made = self.ask(client, team_a)
        assert made.status_code == 200, made.json
        assert [members(g) for g in made.json["groups"]] == [set(ids[:2])]
        assert self.waiting_reports(app) == []
        # Another team's report is its own: small, made at once, and empty.
        assert groups(client, team_b, tier="similar", threshold=0.4) == []

        # A new copy changes the report: the last one answers while the next is made.
        copy = add(team_a, (brighter_copy(original, quality=60), "a-copy.jpg"))
        meanwhile = self.ask(client, team_a)
        assert meanwhile.status_code == 200
        assert [members(g) for g in meanwhile.json["groups"]] == [set(ids[:2])]
        assert len(self.waiting_reports(app)) == 1
        run_jobs()
        (grown,) = self.ask(client, team_a).json["groups"]
        assert members(grown) == set(ids[:2]) | set(copy)

        # "Not duplicates" sticks at once, also while the next report is being made.
        assert resolve(client, team_a, grown["id"], {"not_duplicates": True}).status_code == 200
        assert self.ask(client, team_a).json["groups"] == []
        assert len(self.waiting_reports(app)) == 1
        run_jobs()
        assert self.ask(client, team_a).json["groups"] == []

    def test_a_team_has_one_report_in_making_whatever_thresholds_it_asks_for(
        self, app, client, team_a, team_b, add, run_jobs
    ):
        add(team_a, *[(samples.jpeg(seed), f"{seed}.jpg") for seed in (6, 7, 8, 9)])
        add(team_b, *[(samples.jpeg(seed), f"{seed}.jpg") for seed in (6, 7, 8, 9)])
        for threshold in ("0.1", "0.2", "0.3", "0.4", "0.5"):
            response = client.get(
                "/api/v1/duplicates",
                query_string={"tier": "similar", "threshold": threshold},
                headers=team_a.headers(),
            )
            assert response.status_code == 503
        # Each job takes minutes at scale, on the queue every team's imports share: one a team.
        assert len(self.waiting_reports(app)) == 1
        assert self.ask(client, team_b).status_code == 503  # another team is not held up
        assert len(self.waiting_reports(app)) == 2
        run_jobs()
        assert self.ask(client, team_b).status_code == 200
        assert self.ask(client, team_a).status_code == 503  # its turn comes now
        run_jobs()
        assert self.ask(client, team_a).status_code == 200

    def test_the_review_pages_report_is_kept_until_the_team_changes(
        self, app, client, team_a, add, run_jobs
    ):
        add(team_a, *[(samples.jpeg(seed), f"{seed}.jpg") for seed in (6, 7, 8, 9)])
        for query in ({"tier": "similar"}, {"tier": "similar", "threshold": 0.4}):
            response = client.get(
                "/api/v1/duplicates", query_string=query, headers=team_a.headers()
            )
            assert response.status_code == 503
            run_jobs()
        with app.app_context():
            kept = {
                key.decode().rsplit(":", 1)[-1]: redis_connection.client.ttl(key)
                for key in redis_connection.client.scan_iter(
                    f"likeness:*:duplicates:{team_a.id}:similar:*"
                )
            }
        default = f"{duplicates.SIMILAR_DISTANCE['color']:g}"
        assert set(kept) == {default, "0.4"}
        # The tier's own threshold (the review page's) for a day; any other for ten minutes.
        assert duplicates.REPORT_CACHE_SECONDS < kept[default] <= 24 * 3600
        assert 0 < kept["0.4"] <= duplicates.REPORT_CACHE_SECONDS

    def test_the_command_line_makes_it_at_once(self, app, runner, team_a, add):
        original = samples.jpeg(6)
        add(
            team_a,
            (original, "a.jpg"),
            (brighter_copy(original), "a-brighter.jpg"),
            *[(samples.jpeg(seed), f"{seed}.jpg") for seed in (7, 8, 9)],
        )
        result = runner.invoke(
            args=[
                "duplicates",
                "report",
                "--team",
                team_a.team.slug,
                "--tier",
                "similar",
                "--threshold",
                "0.4",
            ]
        )
        assert result.exit_code == 0, result.output
        assert "a.jpg" in result.output and "a-brighter.jpg" in result.output
        assert self.waiting_reports(app) == []


# --- keeper --------------------------------------------------------------------------------------


def test_the_suggested_keeper_has_most_pixels_then_largest_file_then_is_oldest(client, team_a, add):
    pixels = samples.photo(8, (320, 240))
    ids = add(
        team_a,
        (png(pixels, text="a"), "first.png"),
        (png(pixels, text="b"), "second.png"),  # same size, newer
        (png(pixels, text="a longer comment"), "bigger-file.png"),
    )
    sizes = [len(png(pixels, text=t)) for t in ("a", "b", "a longer comment")]
    assert sizes[0] == sizes[1] < sizes[2]
    (group,) = groups(client, team_a, tier="exact")
    assert group["suggested_keep"] == ids[2]
    assert [i["id"] for i in group["images"]][:3] == [ids[2], ids[0], ids[1]]

    # Once the largest file is gone, the older of two equal files.
    assert client.delete(f"/api/v1/images/{ids[2]}", headers=team_a.headers()).status_code == 204
    (group,) = groups(client, team_a, tier="exact")
    assert group["suggested_keep"] == ids[0]

    # More pixels beat a larger file: a bigger picture of the same scene, near tier.
    big = add(team_a, (samples.encode(pixels.resize((640, 480)), "JPEG", quality=60), "big.jpg"))
    (group,) = groups(client, team_a, tier="near")
    assert members(group) == {ids[0], ids[1], big[0]}
    assert group["suggested_keep"] == big[0]


# --- resolving -----------------------------------------------------------------------------------


def test_resolve_keeps_merges_tags_and_collection_and_deletes_the_rest(app, client, team_a, add):
    original = samples.jpeg(9)
    keeper, copy, smaller = add(
        team_a,
        (original, "keeper.jpg"),
        (png(decoded(original)), "copy.png"),
        (samples.resized_copy(original), "small.jpg"),
    )
    with app.app_context(), team_scope(team_a.id):
        album = collections.create_collection(team_a.id, "Holidays", actor=ALICE).collection
        collections.add_images(album.id, [smaller], actor=ALICE)
        album_id = str(album.id)
    for image_id, tags in ((keeper, ["sea"]), (copy, ["beach", "sea"]), (smaller, ["2024"])):
        response = client.patch(
            f"/api/v1/images/{image_id}", json={"tags": tags}, headers=team_a.headers()
        )
        assert response.status_code == 200
    with app.app_context():
        files = {
            i: [row.storage_key, row.thumbnail_key, row.preview_key]
            for i, row in ((i, db.session.get(Image, uuid.UUID(i))) for i in (copy, smaller))
        }
    storage_root = os.path.join(app.instance_path, "storage")

    (group,) = groups(client, team_a)
    assert group["suggested_keep"] == copy  # the same pixels in a larger file
    response = resolve(client, team_a, group["id"], {"keep": [keeper], "delete": [copy, smaller]})
    assert response.status_code == 200, response.json
    assert response.json["kept"][0]["tags"] == ["2024", "beach", "sea"]
    assert sorted(response.json["deleted"]) == sorted([copy, smaller])

    for gone in (copy, smaller):
        assert client.get(f"/api/v1/images/{gone}", headers=team_a.headers()).status_code == 404
        for key in files[gone]:
            assert not os.path.exists(os.path.join(storage_root, key))
    with app.app_context():
        kept = db.session.get(Image, uuid.UUID(keeper))
        assert str(kept.collection_id) == album_id
        assert sorted(t.name for t in kept.tags) == ["2024", "beach", "sea"]
        event = db.session.scalar(
            select(AuditEvent).where(AuditEvent.action == "duplicates.resolve")
        )
        assert event.team_id == team_a.id and event.details["kept"] == [keeper]
    assert groups(client, team_a) == []
    # Asked again (a second tab, a retry): the group is gone.
    again = resolve(client, team_a, group["id"], {"keep": [keeper], "delete": [copy, smaller]})
    assert again.status_code == 409
    # A search no longer finds the deleted images.
    similar = client.get(f"/api/v1/images/{keeper}/similar", headers=team_a.headers()).json
    assert not {m["image"]["id"] for m in similar["items"]} & {copy, smaller}


def test_not_duplicates_survives_reruns_and_a_newcomer_shows_only_with_itself(
    app, client, team_a, add
):
    original = samples.jpeg(10)
    first, second = add(team_a, (original, "a.jpg"), (samples.resized_copy(original, 0.6), "b.jpg"))
    (group,) = groups(client, team_a)
    response = resolve(client, team_a, group["id"], {"not_duplicates": True})
    assert response.status_code == 200, response.json
    assert groups(client, team_a) == []
    assert groups(client, team_a) == []  # and on every later run
    with app.app_context():
        assert db.session.scalar(select(DuplicateDecision.image_a_id)) is not None
        actions = db.session.scalars(select(AuditEvent.action)).all()
        assert "duplicates.dismiss" in actions

    (newcomer,) = add(team_a, (samples.resized_copy(original, 0.8), "c.jpg"))
    shown = [members(g) for g in groups(client, team_a)]
    assert sorted(map(sorted, shown)) == sorted(
        [sorted({first, newcomer}), sorted({second, newcomer})]
    )
    # Resolving the dismissed pair's group again is refused as stale.
    assert resolve(client, team_a, group["id"], {"not_duplicates": True}).status_code == 409


def test_pages_and_ids_are_stable(client, team_a, add):
    ids = []
    for seed in (11, 12, 13):
        original = samples.jpeg(seed)
        ids += add(team_a, (original, f"{seed}.jpg"), (samples.resized_copy(original), "s.jpg"))
    everything = groups(client, team_a)
    assert len(everything) == 3
    assert groups(client, team_a) == everything  # same ids, same order, run after run

    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/duplicates", query_string=params, headers=team_a.headers())
        assert page.status_code == 200
        seen += [g["id"] for g in page.json["groups"]]
        cursor = page.json["next_cursor"]
        if cursor is None:
            break
    assert seen == [g["id"] for g in everything]

    # A new member changes that group's id and no other.
    before = {frozenset(members(g)): g["id"] for g in everything}
    (extra,) = add(team_a, (samples.resized_copy(samples.jpeg(11), 0.7), "t.jpg"))
    after = {frozenset(members(g)): g["id"] for g in groups(client, team_a)}
    unchanged = {m: i for m, i in before.items() if ids[0] not in m}
    assert all(after.get(m) == i for m, i in unchanged.items())
    assert frozenset({ids[0], ids[1], extra}) in after
    assert after[frozenset({ids[0], ids[1], extra})] not in before.values()


# --- refusals ------------------------------------------------------------------------------------


@pytest.fixture
def pair(client, team_a, add):
    original = samples.jpeg(14)
    ids = add(team_a, (original, "a.jpg"), (samples.resized_copy(original), "b.jpg"))
    (group,) = groups(client, team_a)
    return group["id"], ids


def test_another_teams_ids_are_not_found(client, team_a, team_b, add, pair):
    group_id, (a, b) = pair
    theirs = add(team_b, (samples.jpeg(15), "theirs.jpg"))
    assert resolve(client, team_a, group_id, {"keep": [a], "delete": theirs}).status_code == 404
    assert resolve(client, team_b, group_id, {"keep": [a], "delete": [b]}).status_code == 404
    assert resolve(client, team_b, group_id, {"not_duplicates": True}).status_code == 404
    assert resolve(client, team_a, "near-9-" + "0" * 32 + "-" + "0" * 16, {}).status_code == 404
    assert resolve(client, team_a, "not-a-group", {"not_duplicates": True}).status_code == 404
    assert len(groups(client, team_a)) == 1


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {},
        {"keep": []},
        {"keep": "x", "delete": []},
        {"keep": ["not-a-uuid"], "delete": []},
        {"not_duplicates": False},
        {"not_duplicates": "yes"},
        {"not_duplicates": True, "keep": []},
        {"team_id": "x", "not_duplicates": True},
    ],
)
def test_bad_bodies_are_400(client, team_a, pair, body):
    group_id, _ = pair
    response = client.post(
        f"/api/v1/duplicates/{group_id}/resolve", json=body, headers=team_a.headers()
    )
    assert response.status_code == 400, response.json
    assert response.json["error"]["message"]
    assert len(groups(client, team_a)) == 1


def test_keep_and_delete_must_be_exactly_the_group(client, team_a, add, pair):
    group_id, (a, b) = pair
    (other,) = add(team_a, (samples.jpeg(16), "other.jpg"))
    for body in (
        {"keep": [a], "delete": []},
        {"keep": [a], "delete": [b, other]},
        {"keep": [], "delete": [a, b]},
        {"keep": [a, b], "delete": [a]},
    ):
        assert resolve(client, team_a, group_id, body).status_code == 400, body
    assert len(groups(client, team_a)) == 1


def test_a_group_changed_since_listing_is_a_conflict(client, team_a, add, pair):
    group_id, (a, b) = pair
    add(team_a, (samples.resized_copy(samples.jpeg(14), 0.7), "c.jpg"))
    assert resolve(client, team_a, group_id, {"keep": [a], "delete": [b]}).status_code == 409
    assert resolve(client, team_a, group_id, {"not_duplicates": True}).status_code == 409
    assert client.get(f"/api/v1/images/{b}", headers=team_a.headers()).status_code == 200


def test_a_read_only_key_cannot_resolve(client, team_a, pair):
    group_id, (a, b) = pair
    response = resolve(client, team_a, group_id, {"keep": [a], "delete": [b]}, team_a.read_key)
    assert response.status_code == 403
    assert client.get(f"/api/v1/images/{b}", headers=team_a.headers()).status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"tier": "fuzzy"},
        {"tier": "near", "threshold": "x"},
        {"tier": "near", "threshold": "99"},
        {"tier": "similar", "threshold": "nan"},
        {"tier": "exact", "threshold": "3"},
        {"tier": "near", "threshold": "+5"},
        {"tier": "near", "threshold": " 5"},
        {"tier": "near", "threshold": "\u0669"},  # an Arabic-Indic 9, which int() reads
        {"tier": "near", "threshold": "5.0"},
        {"tier": "similar", "threshold": "1e-1"},
        {"tier": "similar", "threshold": "-0"},
        {"limit": "0"},
        {"limit": "201"},
        {"cursor": "garbage"},
        {"colour": "red"},
    ],
)
def test_bad_listing_parameters_are_400(client, team_a, params):
    response = client.get("/api/v1/duplicates", query_string=params, headers=team_a.headers())
    assert response.status_code == 400, response.json


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "200"},
        {"limit": "1"},
        {"tier": "near", "threshold": "12"},
        {"tier": "similar", "threshold": "0.05"},
        {"tier": "similar", "threshold": ".05"},
        {"tier": "similar", "threshold": "1"},
    ],
)
def test_listing_parameters_in_range_are_taken(client, team_a, params):
    """As every list of the API: limit 1-200; thresholds written plainly."""
    response = client.get("/api/v1/duplicates", query_string=params, headers=team_a.headers())
    assert response.status_code == 200, response.json


# --- the grouping rule ---------------------------------------------------------------------------


def test_hamming_pairs_match_a_full_comparison():
    rng = np.random.default_rng(0)
    words = rng.integers(0, 2**63, 3000, dtype=np.uint64)
    copies = rng.integers(0, 3000, 600)
    flips = [rng.choice(64, rng.integers(0, 13), replace=False) for _ in copies]
    near = np.array(
        [
            words[c] ^ np.uint64(sum(1 << int(b) for b in f))
            for c, f in zip(copies, flips, strict=True)
        ],
        dtype=np.uint64,
    )
    words = np.concatenate([words, near])
    for bits in (0, 3, 7, 10, 12):
        left, right, dist = duplicates.hamming_pairs(words, bits)
        full = np.bitwise_count(words[:, None] ^ words[None, :])
        i, j = np.nonzero(np.triu(full <= bits, 1))
        assert sorted(zip(left.tolist(), right.tolist(), strict=True)) == sorted(
            zip(i.tolist(), j.tolist(), strict=True)
        )
        assert (dist == full[left, right]).all()


@pytest.mark.parametrize("metric", ["angular", "euclidean"])
@pytest.mark.parametrize("n", [300, 6000])  # compared directly, and cut into cells
def test_radius_pairs_match_a_full_comparison(metric, n):
    # Clustered, non-negative vectors (as a CNN's are), copies at distances around the radii,
    # some exactly repeated, and zero vectors, which have no direction.
    rng = np.random.default_rng(1)
    centres = rng.random((40, 24), dtype=np.float32)
    rows = centres[rng.integers(0, 40, n)] + 0.3 * rng.random((n, 24), dtype=np.float32)
    copies = rng.integers(0, n, n // 5)
    rows[copies[: n // 10]] = rows[copies[n // 10 :]]
    rows[rng.integers(0, n, n // 5)] += rng.normal(0, 0.01, (n // 5, 24)).astype(np.float32)
    rows[rng.integers(0, n, 3)] = 0.0
    exact = rows.astype(np.float64)  # the reference, in double precision
    norms = np.sqrt(np.einsum("ij,ij->i", exact, exact))[:, None]
    if metric == "angular":
        exact = np.divide(exact, norms, out=np.zeros_like(exact), where=norms > 0)
    squares = np.einsum("ij,ij->i", exact, exact)
    full = np.sqrt(np.maximum(squares[:, None] + squares[None, :] - 2.0 * (exact @ exact.T), 0))
    if metric == "angular":
        full[norms[:, 0] == 0, :] = full[:, norms[:, 0] == 0] = np.sqrt(2.0)  # as ExactScan
    for radius in (0.0, 0.02, 0.05, 0.2) if n < 4096 else (0.0, 0.02, 0.05):
        left, right, dist = duplicates.radius_pairs(rows, radius, metric)
        i, j = np.nonzero(np.triu(full <= radius + 1e-3, 1))
        expected = set(zip(i.tolist(), j.tolist(), strict=True))
        found = set(zip(left.tolist(), right.tolist(), strict=True))
        # Every pair within the radius, and nothing beyond it but float rounding's width.
        strict = set(zip(*np.nonzero(np.triu(full <= max(radius - 1e-3, 0), 1)), strict=True))
        assert {(int(a), int(b)) for a, b in strict} <= found <= expected, radius
        assert len(found) == len(set(found)) == len(left)
        assert (left < right).all()
        assert np.allclose(dist, full[left, right], atol=1e-4)


def test_radius_pairs_declines_a_radius_too_wide_for_cells_to_save_work():
    rng = np.random.default_rng(2)
    centres = rng.random((40, 24), dtype=np.float32)
    rows = centres[rng.integers(0, 40, 6000)] + 0.3 * rng.random((6000, 24), dtype=np.float32)
    assert duplicates.radius_pairs(rows, 0.05, "angular") is not None
    assert duplicates.radius_pairs(rows, 1.0, "angular") is None  # most cells for everyone


@pytest.mark.parametrize("edges", [0, 50, 400, 3000])
def test_component_labels_match_a_union_find(edges):
    rng = np.random.default_rng(edges)
    n = 2000
    left, right = rng.integers(0, n, edges), rng.integers(0, n, edges)
    chain = np.arange(0, 300)  # a long path too: labels must travel its whole length
    left, right = np.concatenate([left, chain[:-1]]), np.concatenate([right, chain[1:][::-1]])
    parent = list(range(n))

    def root(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in zip(left.tolist(), right.tolist(), strict=True):
        parent[max(root(a), root(b))] = min(root(a), root(b))
    labels = duplicates._component_labels(n, left, right)
    assert labels.tolist() == [root(x) for x in range(n)]  # the smallest node of each


def test_the_command_line_reports_every_group(runner, team_a, add, pair):
    group_id, (a, b) = pair
    result = runner.invoke(args=["duplicates", "report", "--team", team_a.team.slug])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == group_id and lines[-1] == "1 groups"
    assert {line.split()[0] for line in lines[1:3]} == {a, b}
    refused = runner.invoke(
        args=["duplicates", "report", "--team", team_a.team.slug, "--threshold", "x"]
    )
    assert refused.exit_code == 1 and "threshold must be a number" in refused.output


def test_a_group_whose_smallest_image_is_gone_is_a_conflict_not_a_404(client, team_a, pair):
    group_id, (a, b) = pair
    smallest, other = sorted((a, b), key=uuid.UUID)
    assert client.delete(f"/api/v1/images/{smallest}", headers=team_a.headers()).status_code == 204
    body = {"keep": [other], "delete": [smallest]}
    assert resolve(client, team_a, group_id, body).status_code == 409
    assert resolve(client, team_a, group_id, {"not_duplicates": True}).status_code == 404


def test_images_processed_before_pixel_digests_get_them_in_the_background(
    app, client, team_a, add, run_jobs
):
    original = samples.jpeg(17)
    ids = add(team_a, (original, "a.jpg"), (png(decoded(original)), "a.png"))
    with app.app_context():
        db.session.execute(update(Image).values(pixel_sha256=None))
        db.session.commit()
    assert groups(client, team_a, tier="exact") == []
    with app.app_context():
        assert reconcile.reconcile(timedelta(hours=1)) == 0  # nothing stuck; two to digest
    run_jobs()
    assert [members(g) for g in groups(client, team_a, tier="exact")] == [set(ids)]
