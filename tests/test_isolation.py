"""Nothing of one team reaches another: generated from the URL map, so new routes are covered."""

from __future__ import annotations

import pytest

from app.extensions import db
from app.models import Image
from app.services import accounts
from tests import samples


def id_routes(app):
    """Every (rule, method) that takes an object id."""
    for rule in app.url_map.iter_rules():
        if not any(arg.endswith("_id") for arg in rule.arguments):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def login(client, app, team_fixture, email):
    with app.app_context():
        user = accounts.create_user(email, "correct horse battery")
        accounts.add_member(user, db.session.merge(team_fixture.team), "admin")
        db.session.commit()
    response = client.post("/login", data={"email": email, "password": "correct horse battery"})
    assert response.status_code == 302


def test_every_id_route_hides_other_teams_objects(app, team_a, team_b, upload, run_jobs):
    image = upload(team_a, [(samples.jpeg(1), "secret.jpg")]).json["items"][0]
    upload(team_a, [(samples.resized_copy(samples.jpeg(1)), "copy.jpg")])
    run_jobs()
    browser = app.test_client()
    login(browser, app, team_b, "b@example.com")
    api = app.test_client()

    checked = []
    for rule, method in id_routes(app):
        url = rule.rule.replace("<image_id>", image["id"])
        assert "<" not in url, f"isolation test does not know how to fill {rule.rule}"
        if rule.rule.startswith("/api/"):
            response = api.open(url, method=method, headers=team_b.headers(), json={})
        else:
            response = browser.open(url, method=method, data={})
        assert response.status_code == 404, (method, rule.rule, response.status_code)
        assert b"secret.jpg" not in response.data
        checked.append((method, rule.rule))

    assert ("GET", "/api/v1/images/<image_id>/similar") in checked
    assert ("GET", "/images/<image_id>/thumbnail") in checked
    owner_view = api.get(f"/api/v1/images/{image['id']}", headers=team_a.headers())
    assert owner_view.status_code == 200 and owner_view.json["status"] == "ready"


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


def test_team_scoped_query_without_a_team_in_a_request_raises(app):
    from app.tenancy import TenancyError

    with app.test_request_context("/"), pytest.raises(TenancyError):
        db.session.query(Image).all()
