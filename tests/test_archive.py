"""Backups: `flask export` of one team and `flask import-archive` into another deployment (its own
database, storage and queue), and every way an archive can be refused with nothing imported."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import uuid

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from app import create_app
from app.extensions import db
from app.models import Collection, DuplicateDecision, Image, Label, Tag, Team
from app.runtime import storage
from app.services import archive, collections, keys
from app.services.audit import COMMAND_LINE as CLI
from app.tenancy import team_scope
from app.worker import LikenessWorker
from tests import samples
from tests.conftest import TEST_DATABASE_URL, make_config

# --- a team worth exporting -------------------------------------------------------------------


@pytest.fixture
def exported_team(app, client, team_a, upload, run_jobs):
    """Team A with four processed images, tags, a collection, custom metadata and labels."""
    photos = [(samples.jpeg(seed), f"photo-{seed}.jpg") for seed in (11, 12, 13)]
    photos.append((samples.encode(samples.photo(14), "PNG"), "drawing.png"))
    items = []
    for n, (data, name) in enumerate(photos):
        answer = client.post(
            "/api/v1/images",
            data={"file": [(io.BytesIO(data), name)], "tags": f"trip,day {n}"},
            headers=team_a.headers(),
            content_type="multipart/form-data",
        )
        assert answer.status_code == 201, answer.json
        items.append(answer.json["items"][0])
    with app.app_context(), team_scope(team_a.id):  # no collections API yet: the service
        made = collections.create_collection(
            team_a.id, "Summer Trip", "Two weeks\nby the sea", actor=CLI
        )
        collections.add_images(made.collection.id, [items[0]["id"], items[1]["id"]], actor=CLI)
        collections.create_collection(team_a.id, "Empty one", actor=CLI)
    edit = client.patch(
        f"/api/v1/images/{items[2]['id']}",
        json={"metadata": {"custom": {"camera": "X100", "rating": 4}}},
        headers=team_a.headers(),
    )
    assert edit.status_code == 200
    run_jobs()
    with app.app_context():
        db.session.add(
            Label(
                team_id=team_a.id,
                image_id=uuid.UUID(items[0]["id"]),
                embedder="cnn",
                name="seashore",
                score=0.81,
            )
        )
        db.session.add(Tag(team_id=team_a.id, name="unused tag"))
        a, b = sorted(uuid.UUID(items[n]["id"]) for n in (1, 2))
        db.session.add(DuplicateDecision(team_id=team_a.id, image_a_id=a, image_b_id=b))
        db.session.commit()
    return team_a


def team_state(app, slug: str) -> dict:
    """What must survive the trip, by content (ids may differ between deployments)."""
    with app.app_context():
        team = db.session.scalar(select(Team).where(Team.slug == slug))
        rows = db.session.scalars(select(Image).where(Image.team_id == team.id)).all()
        collections = {
            c.id: (c.name, c.description)
            for c in db.session.scalars(select(Collection).where(Collection.team_id == team.id))
        }
        by_sha = {}
        for image in rows:
            with storage().open(image.storage_key) as f:
                stored_sha = hashlib.sha256(f.read()).hexdigest()
            assert stored_sha == image.sha256
            by_sha[image.sha256] = {
                "filename": image.filename,
                "content_type": image.content_type,
                "size": (image.size_bytes, image.width, image.height),
                "tags": sorted(t.name for t in image.tags),
                "collection": collections.get(image.collection_id),
                "custom": image.meta["custom"],
                "colors": image.meta["colors"],
                "labels": sorted((lb.embedder, lb.name, lb.score) for lb in image.labels),
                "created_at": image.created_at,
            }
        tags = sorted(db.session.scalars(select(Tag.name).where(Tag.team_id == team.id)))
        sha_of = {image.id: image.sha256 for image in rows}
        decisions = {
            frozenset((sha_of[d.image_a_id], sha_of[d.image_b_id]))
            for d in db.session.scalars(
                select(DuplicateDecision).where(DuplicateDecision.team_id == team.id)
            )
        }
        return {
            "not_duplicates": decisions,
            "name": team.name,
            "images": by_sha,
            "collections": sorted(collections.values()),
            "tags": tags,
        }


# --- another deployment -------------------------------------------------------------------------


@pytest.fixture
def other_database_url(tmp_path):
    """A second, empty database: SQLite beside the first, or a second PostgreSQL database."""
    if not TEST_DATABASE_URL:
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    url = make_url(TEST_DATABASE_URL)
    name = f"{url.database}_other"
    admin = url.set(drivername="postgresql", database="postgres")
    conninfo = admin.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield url.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def other_deployment(app_env, tmp_path, other_database_url):
    root = tmp_path / "other"
    root.mkdir()
    env = {
        **app_env,
        "LIKENESS_INSTANCE_PATH": str(root),
        "DATABASE_URL": other_database_url,
        "STORAGE_ROOT": str(root / "storage"),
        "QUEUE_NAME": "likeness-test-other",
    }
    other = create_app(make_config(env))
    with other.app_context():
        db.create_all()
    yield other
    with other.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


def test_round_trip_to_another_deployment(app, runner, exported_team, other_deployment, tmp_path):
    archive = tmp_path / "team-a.tar"
    exported = runner.invoke(args=["export", "--team", exported_team.team.slug, "--to", archive])
    assert exported.exit_code == 0, exported.output
    assert "4 images, 2 collections" in exported.output
    before = team_state(app, exported_team.team.slug)

    imported = other_deployment.test_cli_runner().invoke(args=["import-archive", str(archive)])
    assert imported.exit_code == 0, imported.output
    assert f"imported team {exported_team.team.slug}: 4 images" in imported.output
    after = team_state(other_deployment, exported_team.team.slug)
    assert after == before  # bytes (sha256), tags, collections, metadata, labels, times
    assert len(after["not_duplicates"]) == 1  # the "not duplicates" decision came along
    assert (
        "unused tag" in after["tags"]
        and ("Summer Trip", "Two weeks\nby the sea") in after["collections"]
    )
    with other_deployment.app_context():
        team = db.session.scalar(select(Team).where(Team.slug == exported_team.team.slug))
        rows = db.session.scalars(select(Image).where(Image.team_id == team.id)).all()
        assert {r.status for r in rows} == {"pending"}  # renditions and vectors: the workers'
        _, key = keys.create_key(team, "after import", ["read"])
        db.session.commit()
        # Ids came along: links into the team keep working.
        with app.app_context():
            original_ids = set(db.session.scalars(select(Image.id)))
        assert {r.id for r in rows} == original_ids
        first = next(r for r in rows if r.filename == "photo-11.jpg")

    # Its workers process the images and build the team's indexes: similar search works.
    LikenessWorker(other_deployment).work(burst=True)
    client = other_deployment.test_client()
    similar = client.get(f"/api/v1/images/{first.id}/similar?k=10", headers={"X-API-Key": key})
    assert similar.status_code == 200, similar.json
    found = {item["image"]["filename"] for item in similar.json["items"]}
    assert found == {"photo-12.jpg", "photo-13.jpg", "drawing.png"}
    assert similar.json["index"]["version"] >= 1
    listed = client.get("/api/v1/images", headers={"X-API-Key": key}).json["items"]
    assert {item["status"] for item in listed} == {"ready"}
    assert all(item["urls"]["preview"] for item in listed)


def test_import_into_the_same_deployment_needs_another_name(app, runner, exported_team, tmp_path):
    archive = tmp_path / "team-a.tar"
    assert runner.invoke(args=["export", "--team", "team-a", "--to", archive]).exit_code == 0
    refused = runner.invoke(args=["import-archive", str(archive)])
    assert refused.exit_code == 1
    assert "a team with slug 'team-a'" in refused.output and "--team-name" in refused.output
    copied = runner.invoke(args=["import-archive", str(archive), "--team-name", "Team A copy"])
    assert copied.exit_code == 0, copied.output
    assert "imported team team-a-copy: 4 images" in copied.output and "new ids" in copied.output
    original, copy = team_state(app, "team-a"), team_state(app, "team-a-copy")
    assert copy["images"] == original["images"] and copy["collections"] == original["collections"]


# --- refused archives ------------------------------------------------------------------------


def write_tar(path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def manifest_for(files: list[tuple[bytes, str]], **changes) -> dict:
    images = []
    for data, name in files:
        sha = hashlib.sha256(data).hexdigest()
        images.append(
            {
                "id": str(uuid.uuid4()),
                "filename": name,
                "content_type": "image/jpeg",
                "size_bytes": len(data),
                "width": 640,
                "height": 480,
                "sha256": sha,
                "created_at": "2026-01-02T03:04:05+00:00",
                "collection_id": None,
                "tags": ["t"],
                "labels": [],
                "metadata": {"custom": {}},
                "original": f"originals/{sha}",
            }
        )
    return {
        "format": "likeness-team-archive",
        "version": 1,
        "team": {"name": "Imported", "slug": "imported"},
        "tags": [],
        "collections": [],
        "images": images,
        **changes,
    }


def archive_of(path, files, manifest=None, extra=()) -> str:
    manifest = manifest or manifest_for(files)
    members = [regular("manifest.json", json.dumps(manifest).encode())]
    members += [regular(f"originals/{hashlib.sha256(d).hexdigest()}", d) for d, _ in files]
    write_tar(path, [*members, *extra])
    return str(path)


def stored_files(app) -> set[str]:
    root = app.config["STORAGE_ROOT"]
    return {
        os.path.relpath(os.path.join(folder, name), root)
        for folder, _, names in os.walk(root)
        for name in names
    }


def refused(app, runner, path, *expected):
    before = stored_files(app)
    result = runner.invoke(args=["import-archive", path])
    assert result.exit_code == 1, result.output
    for text in expected:
        assert text in result.output, result.output
    with app.app_context():
        assert db.session.scalar(select(Team).where(Team.slug == "imported")) is None
        assert db.session.scalar(select(Image).limit(1)) is None
    assert stored_files(app) == before  # nothing half imported, no object left behind
    return result


def test_a_good_archive_imports(app, runner, tmp_path):
    files = [(samples.jpeg(1), "a.jpg"), (samples.jpeg(2), "b.jpg")]
    result = runner.invoke(args=["import-archive", archive_of(tmp_path / "ok.tar", files)])
    assert result.exit_code == 0, result.output
    assert "imported team imported: 2 images" in result.output


def test_an_unknown_format_version_is_refused(app, runner, tmp_path):
    files = [(samples.jpeg(1), "a.jpg")]
    path = archive_of(tmp_path / "v2.tar", files, manifest_for(files, version=2))
    refused(app, runner, path, "format version 2", "reads version 1")


def test_not_an_archive_is_refused(app, runner, tmp_path):
    path = tmp_path / "junk.tar"
    path.write_bytes(b"this is no tar file at all" * 40)
    refused(app, runner, str(path), "not a readable tar archive")


def test_an_archive_without_a_manifest_is_refused(app, runner, tmp_path):
    data = samples.jpeg(1)
    path = tmp_path / "bare.tar"
    write_tar(path, [regular(f"originals/{hashlib.sha256(data).hexdigest()}", data)])
    refused(app, runner, str(path), "no manifest.json")


def _link(name: str, kind: bytes, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


SHA = "ab" * 32


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (regular("../escape", b"x"), "unexpected member '../escape'"),
        (regular("/etc/cron.d/evil", b"x"), "unexpected member '/etc/cron.d/evil'"),
        (regular(f"originals/../../{SHA}", b"x"), "unexpected member"),
        (regular("originals/not-a-digest", b"x"), "unexpected member"),
        (regular("./manifest.json", b"{}"), "unexpected member './manifest.json'"),
        (_link(f"originals/{SHA}", tarfile.SYMTYPE, "/etc/passwd"), "not a regular file"),
        (_link(f"originals/{SHA}", tarfile.LNKTYPE, "manifest.json"), "not a regular file"),
        (_link(f"originals/{SHA}", tarfile.DIRTYPE, ""), "not a regular file"),
        (_link(f"originals/{SHA}", tarfile.CHRTYPE, ""), "not a regular file"),
    ],
    ids=[
        "parent",
        "absolute",
        "dotdot",
        "odd-name",
        "dot-slash",
        "symlink",
        "hardlink",
        "dir",
        "device",
    ],
)
def test_hostile_members_are_refused(app, runner, tmp_path, member, message):
    files = [(samples.jpeg(1), "a.jpg")]
    path = archive_of(tmp_path / "hostile.tar", files, extra=[member])
    refused(app, runner, path, message)
    assert not (tmp_path.parent / "escape").exists()


def test_a_missing_original_is_refused(app, runner, tmp_path):
    files = [(samples.jpeg(1), "a.jpg"), (samples.jpeg(2), "b.jpg")]
    manifest = manifest_for(files)
    members = [regular("manifest.json", json.dumps(manifest).encode())]
    members.append(regular(manifest["images"][0]["original"], files[0][0]))  # b.jpg's is missing
    path = tmp_path / "missing.tar"
    write_tar(path, members)
    refused(app, runner, str(path), "lacks originals/", "images[1]")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(format="zip"), "format must be"),
        (lambda m: m["team"].update(slug="../x"), "team.slug"),
        (lambda m: m["images"][0].update(size_bytes=-1), "images[0].size_bytes"),
        (lambda m: m["images"][0].update(id="not-a-uuid"), "images[0].id"),
        (lambda m: m["images"][0].update(collection_id=str(uuid.uuid4())), "names no collection"),
        (lambda m: m["images"][0].update(tags=["x" * 65]), "at most 64"),
        (lambda m: m["images"][0].update(labels=[{"embedder": "e", "name": "n", "score": 7}]),
         "0..1"),
        (lambda m: m["images"][0]["metadata"].update(custom=[1]), "metadata.custom"),
        (lambda m: m["images"][1].update(original=m["images"][0]["original"]), "originals/<its"),
        (lambda m: m.update(collections=[{"id": "1", "name": "c"}]), "collections[0].id"),
        (lambda m: m.pop("images"), "images must be a list"),
        (lambda m: m.update(not_duplicates=[[m["images"][0]["id"]] * 2]), "not_duplicates[0]"),
        (lambda m: m.update(not_duplicates=[["x", "y"]]), "not_duplicates[0]"),
    ],
    ids=[
        "format", "slug", "size", "id", "collection", "tag", "score", "custom", "shared",
        "collection-id", "no-images", "self-pair", "bad-pair",
    ],
)  # fmt: skip
def test_a_malformed_manifest_is_refused(app, runner, tmp_path, change, message):
    files = [(samples.jpeg(1), "a.jpg"), (samples.jpeg(2), "b.jpg")]
    manifest = manifest_for(files)
    change(manifest)
    refused(app, runner, archive_of(tmp_path / "bad.tar", files, manifest), message)


def test_a_bad_original_late_in_the_archive_leaves_nothing(app, runner, tmp_path):
    """The first images are stored before the third fails validation: all of it is undone."""
    bomb = samples.encode(samples.photo(3).resize((64, 64)), "PNG")[:-40]  # truncated PNG
    files = [(samples.jpeg(1), "a.jpg"), (samples.jpeg(2), "b.jpg"), (bomb, "c.png")]
    result = refused(app, runner, archive_of(tmp_path / "late.tar", files), "c.png")
    assert "originals/" in result.output


def test_an_original_that_does_not_match_its_digest_is_refused(app, runner, tmp_path):
    files = [(samples.jpeg(1), "a.jpg"), (samples.jpeg(2), "b.jpg")]
    manifest = manifest_for(files)
    good, other = files[1][0], samples.jpeg(3)[: len(files[1][0])]
    other = other + b"\0" * (len(good) - len(other))
    members = [regular("manifest.json", json.dumps(manifest).encode())]
    members.append(regular(manifest["images"][0]["original"], files[0][0]))
    members.append(regular(manifest["images"][1]["original"], other))  # same size, other bytes
    path = tmp_path / "damaged.tar"
    write_tar(path, members)
    refused(app, runner, str(path), "b.jpg")


def test_an_unreferenced_member_is_refused(app, runner, tmp_path):
    files = [(samples.jpeg(1), "a.jpg")]
    stray = samples.jpeg(9)
    path = archive_of(
        tmp_path / "stray.tar",
        files,
        extra=[regular(f"originals/{hashlib.sha256(stray).hexdigest()}", stray)],
    )
    refused(app, runner, path, "belongs to no image")


def test_export_of_an_unknown_team_fails_cleanly(runner, tmp_path):
    result = runner.invoke(args=["export", "--team", "nobody", "--to", tmp_path / "x.tar"])
    assert result.exit_code == 1 and "no team with slug 'nobody'" in result.output
    assert not (tmp_path / "x.tar").exists()


def test_export_stops_on_a_missing_object_and_leaves_no_file(app, runner, team_a, upload, tmp_path):
    answer = upload(team_a, [(samples.jpeg(4), "gone.jpg")])
    with app.app_context():
        image = db.session.get(Image, uuid.UUID(answer.json["items"][0]["id"]))
        storage().delete(image.storage_key)
    result = runner.invoke(args=["export", "--team", "team-a", "--to", tmp_path / "a.tar"])
    assert result.exit_code == 1
    assert f"stored object {image.storage_key} is missing" in result.output
    assert not list(tmp_path.glob("*.tar")) and not list(tmp_path.glob(".likeness-export-*"))


# --- ids in any spelling, times out of range, an unwritable destination ------------------------


def test_two_images_with_one_id_are_refused(app, runner, tmp_path):
    files = [(samples.jpeg(1), "a.jpg"), (samples.jpeg(2), "b.jpg"), (samples.jpeg(3), "c.jpg")]
    manifest = manifest_for(files)
    manifest["images"][2]["id"] = manifest["images"][0]["id"].upper()  # the same UUID
    path = archive_of(tmp_path / "twice.tar", files, manifest)
    result = refused(app, runner, path, "images[2] repeats the id of images[0]")
    assert isinstance(result.exception, SystemExit)  # a message, not an IntegrityError


def test_two_collections_with_one_id_are_refused(app, runner, tmp_path):
    files = [(samples.jpeg(1), "a.jpg")]
    shared = str(uuid.uuid4())
    manifest = manifest_for(
        files, collections=[{"id": shared, "name": "One"}, {"id": shared.upper(), "name": "Two"}]
    )
    path = archive_of(tmp_path / "twice.tar", files, manifest)
    refused(app, runner, path, "collections[1] repeats the id of collections[0]")


def test_ids_are_the_same_in_any_spelling_of_the_uuid(app, runner, tmp_path):
    """A collection_id or not_duplicates id in capitals (or braces) is the same UUID as the
    listed id, not an id that names nothing."""
    files = [(samples.jpeg(1), "a.jpg"), (samples.jpeg(2), "b.jpg")]
    collection = str(uuid.uuid4())
    manifest = manifest_for(files, collections=[{"id": collection, "name": "Trip"}])
    first, second = manifest["images"]
    first["collection_id"] = collection.upper()
    second["id"] = "{" + second["id"].upper() + "}"
    manifest["not_duplicates"] = [[first["id"].upper(), second["id"].strip("{}").lower()]]
    result = runner.invoke(
        args=["import-archive", archive_of(tmp_path / "ok.tar", files, manifest)]
    )
    assert result.exit_code == 0, result.output
    with app.app_context():
        rows = {i.id: i for i in db.session.scalars(select(Image))}
        assert rows[uuid.UUID(first["id"])].collection_id == uuid.UUID(collection)
        assert uuid.UUID(second["id"]) in rows
        (decision,) = db.session.scalars(select(DuplicateDecision)).all()
        assert {decision.image_a_id, decision.image_b_id} == set(rows)


def test_a_pair_of_one_image_in_two_spellings_is_refused(app, runner, tmp_path):
    files = [(samples.jpeg(1), "a.jpg"), (samples.jpeg(2), "b.jpg")]
    manifest = manifest_for(files)
    image_id = manifest["images"][0]["id"]
    manifest["not_duplicates"] = [[image_id, image_id.upper()]]
    refused(app, runner, archive_of(tmp_path / "pair.tar", files, manifest), "not_duplicates[0]")


@pytest.mark.parametrize(
    ("where", "moment"),
    [
        ("images[0].created_at", "0001-01-01T00:00:00+05:00"),
        ("images[0].created_at", "9999-12-31T23:00:00-05:00"),
        ("collections[0].created_at", "0001-01-01T00:00:00+05:00"),
        ("collections[0].updated_at", "9999-12-31T23:00:00-05:00"),
    ],
    ids=["image-too-early", "image-too-late", "collection-too-early", "collection-too-late"],
)
def test_a_time_with_no_utc_time_is_refused(app, runner, tmp_path, where, moment):
    """The time parses, but moved to UTC it falls outside the years 1 to 9999."""
    files = [(samples.jpeg(1), "a.jpg")]
    manifest = manifest_for(files, collections=[{"id": str(uuid.uuid4()), "name": "C"}])
    entry = manifest["images"][0] if where.startswith("images") else manifest["collections"][0]
    entry[where.split(".")[1]] = moment
    result = refused(app, runner, archive_of(tmp_path / "when.tar", files, manifest), where)
    assert "ISO time" in result.output


def test_export_to_a_folder_that_does_not_exist_fails_cleanly(runner, team_a, tmp_path):
    target = tmp_path / "nonexistent" / "dir" / "x.tar"
    result = runner.invoke(args=["export", "--team", "team-a", "--to", str(target)])
    assert result.exit_code == 1, result.output
    assert f"Error: cannot write {target}: No such file or directory" in result.output
    assert not isinstance(result.exception, OSError)
    assert not (tmp_path / "nonexistent").exists()  # no folder made, no partial file left


def test_an_image_deleted_while_the_export_runs_is_left_out(
    app, client, runner, exported_team, other_deployment, tmp_path, monkeypatch
):
    """A team is in use while it is backed up: an image deleted part way leaves the archive
    whole, without that image (nor the decision that named it), instead of failing it."""
    with app.app_context():
        doomed = db.session.scalar(select(Image).where(Image.filename == "photo-13.jpg"))
        doomed_id, doomed_key = str(doomed.id), doomed.storage_key
    real_storage = archive.storage
    opened = []

    class DeletedPartWay:
        def __getattr__(self, name):
            return getattr(real_storage(), name)

        def open(self, key):
            if not opened:  # the first original is being copied: someone deletes another
                deleted = client.delete(
                    f"/api/v1/images/{doomed_id}", headers=exported_team.headers()
                )
                assert deleted.status_code == 204
            opened.append(key)
            return real_storage().open(key)

    monkeypatch.setattr(archive, "storage", DeletedPartWay)
    path = tmp_path / "busy.tar"
    exported = runner.invoke(args=["export", "--team", exported_team.team.slug, "--to", path])
    assert exported.exit_code == 0, exported.output
    assert "3 images, 2 collections" in exported.output
    assert doomed_key in opened  # it was looked for, after its image was gone

    imported = other_deployment.test_cli_runner().invoke(args=["import-archive", str(path)])
    assert imported.exit_code == 0, imported.output
    after = team_state(other_deployment, exported_team.team.slug)
    assert sorted(i["filename"] for i in after["images"].values()) == [
        "drawing.png",
        "photo-11.jpg",
        "photo-12.jpg",
    ]
    assert after["not_duplicates"] == set()  # the decision named the deleted image
