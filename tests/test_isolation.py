"""Nothing of one team reaches another: generated from the URL map, so new routes are covered."""

from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import select

from app import queue
from app.extensions import db
from app.models import ApiKey, AuditEvent, Collection, Image, Membership, Team
from app.services import audit, collections, members
from app.tenancy import unscoped
from tests import samples


def id_routes(app):
    """Every (rule, method) that takes an object id."""
    for rule in app.url_map.iter_rules():
        if not any(arg.endswith("_id") for arg in rule.arguments):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


# Input each API id route would take from the owner, so that what refuses the intruder is the
# id, not the body (routes not named here take no body); <name_id> is filled in as in paths.
VALID_API_BODIES = {
    ("PATCH", "/api/v1/images/<image_id>"): {"filename": "mine-now.jpg"},
    ("PATCH", "/api/v1/members/<user_id>"): {"role": "viewer"},
    ("PATCH", "/api/v1/collections/<collection_id>"): {"name": "Mine now"},
    ("POST", "/api/v1/collections/<collection_id>/images"): {"image_ids": ["<image_id>"]},
    ("DELETE", "/api/v1/collections/<collection_id>/images"): {"image_ids": ["<image_id>"]},
}


def fill(text: str, ids: dict[str, str]) -> str:
    """`text` with each <name_id> replaced by the id of that name."""
    for name, value in ids.items():
        text = text.replace(f"<{name}>", value)
    return text


def team_state(app, team_id):
    """Everything about a team that a request could change."""
    with app.app_context(), unscoped():
        images = db.session.execute(
            select(Image.id, Image.filename, Image.status, Image.meta, Image.collection_id).where(
                Image.team_id == team_id
            )
        ).all()
        team_collections = db.session.execute(
            select(Collection.id, Collection.name, Collection.description).where(
                Collection.team_id == team_id
            )
        ).all()
        keys = db.session.execute(
            select(ApiKey.id, ApiKey.name, ApiKey.revoked_at, ApiKey.scopes).where(
                ApiKey.team_id == team_id
            )
        ).all()
        roles = db.session.execute(
            select(Membership.user_id, Membership.role).where(Membership.team_id == team_id)
        ).all()
        events = db.session.scalars(
            select(AuditEvent.action).where(AuditEvent.team_id == team_id)
        ).all()
    return (
        sorted(map(tuple, images), key=str),
        sorted(map(tuple, team_collections), key=str),
        sorted(keys, key=str),
        sorted(roles),
        events,
    )


def test_every_id_route_hides_other_teams_objects(app, team_a, team_b, upload, run_jobs, person):
    image = upload(team_a, [(samples.jpeg(1), "secret.jpg")]).json["items"][0]
    upload(team_a, [(samples.resized_copy(samples.jpeg(1)), "copy.jpg")])
    with app.app_context():
        # A failed job of team A's image (called with one argument too many, so it fails).
        queue.get_queue().enqueue("app.jobs.process_image", image["id"], "x", job_id="broken-a")
    run_jobs()
    owner = person(team_a, "admin")
    with app.app_context():
        key_id = db.session.scalar(
            select(ApiKey.id).where(ApiKey.team_id == team_a.id, ApiKey.name == "read-only")
        )
    batch = (
        app.test_client()
        .post(
            "/api/v1/imports", json={"urls": ["http://example.com/a.jpg"]}, headers=team_a.headers()
        )
        .json
    )
    direct = (
        app.test_client()
        .post(
            "/api/v1/uploads",
            json={"filename": "d.jpg", "content_type": "image/jpeg", "size_bytes": 10},
            headers=team_a.headers(),
        )
        .json
    )
    groups = app.test_client().get("/api/v1/duplicates", headers=team_a.headers()).json["groups"]
    assert len(groups) == 1  # the photo and its resized copy
    with app.app_context():
        collection_id = str(
            collections.create_collection(
                team_a.id, "secret.jpg's album", actor=audit.SYSTEM
            ).collection.id
        )
    with app.app_context():
        invite, _token = members.create_invite(
            db.session.get(Team, team_a.id), "invitee@team-a.example", "member", None
        )
        invite_id = str(invite.id)
    ids = {
        "invite_id": invite_id,
        "collection_id": collection_id,
        "group_id": groups[0]["id"],
        "upload_id": direct["image_id"],
        "image_id": image["id"],
        "key_id": str(key_id),
        "user_id": str(owner.user_id),
        "import_id": batch["id"],
        "job_id": "broken-a",
    }
    intruder = person(team_b, "admin").client
    before = team_state(app, team_a.id)

    checked = []
    for rule, method in id_routes(app):
        url = fill(rule.rule, ids)
        assert "<" not in url, f"isolation test does not know how to fill {rule.rule}"
        if rule.rule.startswith("/api/"):
            body = VALID_API_BODIES.get((method, rule.rule))
            body = json.loads(fill(json.dumps(body), ids))
            response = app.test_client().open(
                url, method=method, headers=team_b.headers(), json=body
            )
        else:
            response = intruder.open(url, method=method, data={"role": "viewer"})
        assert response.status_code == 404, (method, rule.rule, response.status_code)
        assert b"secret.jpg" not in response.data and owner.email.encode() not in response.data
        checked.append((method, rule.rule))

    assert team_state(app, team_a.id) == before
    with app.app_context():
        assert "broken-a" in queue.get_queue().failed_job_registry  # not retried by team B
    for expected in [
        ("GET", "/api/v1/images/<image_id>/similar"),
        ("GET", "/images/<image_id>/thumbnail"),
        ("DELETE", "/api/v1/keys/<key_id>"),
        ("PATCH", "/api/v1/members/<user_id>"),
        ("POST", "/settings/keys/<key_id>/revoke"),
        ("POST", "/settings/members/<user_id>/remove"),
        ("GET", "/api/v1/imports/<import_id>/report.csv"),
        ("PATCH", "/api/v1/images/<image_id>"),
        ("POST", "/images/<image_id>/retry"),
        ("POST", "/api/v1/uploads/<upload_id>/complete"),
        ("POST", "/operations/jobs/<job_id>/retry"),
        ("GET", "/collections/<collection_id>"),
        ("POST", "/collections/<collection_id>/delete"),
        ("POST", "/collections/<collection_id>/images/remove"),
        ("GET", "/imports/<import_id>"),
        ("POST", "/settings/invites/<invite_id>/revoke"),
        ("POST", "/duplicates/<group_id>/resolve"),
        ("GET", "/imports/<import_id>/report.csv"),
        ("GET", "/images/<image_id>"),
        ("GET", "/images/<image_id>/similar"),
        ("GET", "/images/<image_id>/duplicates"),
        ("GET", "/images/<image_id>/preview"),
        ("GET", "/images/<image_id>/original"),
        ("GET", "/images/<image_id>/download"),
        ("POST", "/images/<image_id>/tags"),
        ("POST", "/images/<image_id>/collection"),
        ("POST", "/images/<image_id>/delete"),
        ("GET", "/api/v1/collections/<collection_id>"),
        ("PATCH", "/api/v1/collections/<collection_id>"),
        ("DELETE", "/api/v1/collections/<collection_id>"),
        ("POST", "/api/v1/collections/<collection_id>/images"),
        ("DELETE", "/api/v1/collections/<collection_id>/images"),
        ("POST", "/api/v1/duplicates/<group_id>/resolve"),
    ]:
        assert expected in checked
    owner_view = app.test_client().get(f"/api/v1/images/{image['id']}", headers=team_a.headers())
    assert owner_view.status_code == 200 and owner_view.json["status"] == "ready"


def test_switching_to_a_team_you_are_not_in_is_404(app, team_a, team_b, person):
    intruder = person(team_b, "admin").client
    response = intruder.post("/teams/switch", data={"team_id": str(team_a.id)})
    assert response.status_code == 404
    assert b"Team A" not in intruder.get("/").data


def test_gallery_filters_and_uploads_refuse_another_teams_collection(app, team_a, team_b, person):
    from app.services import collections
    from app.services.audit import Actor

    with app.app_context():
        theirs = collections.create_collection(team_a.id, "Private", actor=Actor.system())
        collection_id = str(theirs.collection.id)
    intruder = person(team_b, "admin").client
    for path in (f"/?collection={collection_id}", f"/fresh?collection={collection_id}"):
        response = intruder.get(path)
        assert response.status_code == 404 and b"Private" not in response.data
    upload = intruder.post(
        "/upload",
        data={"file": [(io.BytesIO(samples.jpeg(1)), "x.jpg")], "collection": collection_id},
        content_type="multipart/form-data",
    )
    assert upload.status_code == 404 and b"Private" not in upload.data
    with app.app_context(), unscoped():
        assert db.session.scalar(select(Image.id).where(Image.team_id == team_b.id)) is None


def test_lists_and_similar_results_never_show_other_teams(client, team_a, team_b, upload, run_jobs):
    original = samples.jpeg(5)
    a = upload(team_a, [(original, "a.jpg")]).json["items"][0]
    b = upload(team_b, [(samples.resized_copy(original), "b-copy.jpg")]).json["items"][0]
    run_jobs()
    assert [
        i["id"] for i in client.get("/api/v1/images", headers=team_b.headers()).json["items"]
    ] == [b["id"]]
    for embedder in ("phash", "color"):
        similar = client.get(
            f"/api/v1/images/{a['id']}/similar?embedder={embedder}", headers=team_a.headers()
        ).json
        assert similar["items"] == []  # the near-identical copy belongs to team B


def test_team_lists_of_keys_members_and_audit_never_show_other_teams(
    client, team_a, team_b, person, upload
):
    person(team_a, "admin", email="alice@a.example")
    upload(team_a, [(samples.jpeg(9), "a-only.jpg")])
    for path in ("/api/v1/keys", "/api/v1/members", "/api/v1/audit", "/api/v1/team"):
        body = client.get(path, headers=team_b.headers()).get_data(as_text=True)
        assert "alice@a.example" not in body and "a-only.jpg" not in body
        assert str(team_a.id) not in body
    team = client.get("/api/v1/team", headers=team_b.headers()).json
    assert team["image_count"] == 0 and team["name"] == "Team B"


def test_team_scoped_query_without_a_team_in_a_request_raises(app):
    from app.tenancy import TenancyError

    with app.test_request_context("/"), pytest.raises(TenancyError):
        db.session.query(Image).all()


def test_search_by_file_or_text_never_shows_other_teams(client, team_a, team_b, upload, run_jobs):
    original = samples.jpeg(7)
    upload(team_a, [(original, "secret-harbour.jpg")])
    mine = upload(team_b, [(samples.jpeg(8), "b-only.jpg")]).json["items"][0]
    run_jobs()
    for embedder in ("phash", "color"):
        response = client.post(
            "/api/v1/search",
            data={"file": (io.BytesIO(original), "q.jpg"), "embedder": embedder},
            headers=team_b.headers(),
            content_type="multipart/form-data",
        )
        assert response.status_code == 200
        # Team A's identical picture is not found; team B's own image is all there is.
        assert [m["image"]["id"] for m in response.json["items"]] == [mine["id"]]
        assert b"secret-harbour" not in response.data
    for path in ("/api/v1/search", "/api/v1/images"):
        for q in ("secret", "harbour", "secret harbour jpg"):
            response = client.get(path, query_string={"q": q}, headers=team_b.headers())
            assert response.status_code == 200 and response.json["items"] == []
        owner = client.get(path, query_string={"q": "harbour"}, headers=team_a.headers())
        assert [i["filename"] for i in owner.json["items"]] == ["secret-harbour.jpg"]
