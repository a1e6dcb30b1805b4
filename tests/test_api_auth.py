"""API keys at the door: 401 for anything but a live key, 403 naming a missing scope."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.extensions import db
from app.models import ApiKey, utcnow
from app.services import accounts


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": ""},
        {"X-API-Key": "nonsense"},
        {"X-API-Key": "lk_"},
        {"X-API-Key": "lk_0123456789_"},
        {"X-API-Key": "lk_0123456789_" + "a" * 43},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"X-API-Key": "lk_" + "x" * 5000},
    ],
)
def test_missing_or_bad_keys_are_401(client, team_a, headers):
    response = client.get("/api/v1/images", headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"


def test_wrong_secret_for_a_real_prefix_is_401(client, team_a):
    prefix = team_a.key.split("_")[1]
    response = client.get("/api/v1/images", headers={"X-API-Key": f"lk_{prefix}_{'A' * 43}"})
    assert response.status_code == 401


def test_bearer_token_works(client, team_a):
    response = client.get("/api/v1/images", headers={"Authorization": f"Bearer {team_a.key}"})
    assert response.status_code == 200


def test_two_different_keys_at_once_are_401_and_the_same_one_twice_works(client, team_a, team_b):
    both = {"X-API-Key": team_a.key, "Authorization": f"Bearer {team_b.key}"}
    response = client.get("/api/v1/images", headers=both)
    assert (
        response.status_code == 401
        and "two different API keys" in response.json["error"]["message"]
    )
    same = {"X-API-Key": team_a.key, "Authorization": f"Bearer {team_a.key}"}
    assert client.get("/api/v1/images", headers=same).status_code == 200
    # An Authorization header of another scheme (a proxy's Basic) is not a key.
    basic = {"X-API-Key": team_a.key, "Authorization": "Basic dXNlcjpwYXNz"}
    assert client.get("/api/v1/images", headers=basic).status_code == 200


def test_key_in_query_string_is_not_accepted(client, team_a):
    for name in ("api_key", "key", "X-API-Key"):
        response = client.get(f"/api/v1/images?{name}={team_a.key}")
        assert response.status_code == 401


def test_revoked_and_expired_keys_are_401(app, client, team_a):
    assert client.get("/api/v1/images", headers=team_a.headers()).status_code == 200
    with app.app_context():
        key = db.session.query(ApiKey).filter_by(prefix=team_a.key.split("_")[1]).one()
        key.revoked_at = utcnow()
        db.session.commit()
    assert client.get("/api/v1/images", headers=team_a.headers()).status_code == 401
    with app.app_context():
        key = db.session.query(ApiKey).filter_by(prefix=team_a.read_key.split("_")[1]).one()
        key.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    assert client.get("/api/v1/images", headers=team_a.headers(team_a.read_key)).status_code == 401


def test_only_a_hash_of_the_secret_is_stored(app, team_a):
    secret = team_a.key.split("_", 2)[2]
    with app.app_context():
        for key in db.session.query(ApiKey):
            assert secret not in key.secret_hash and secret not in key.prefix


def test_session_cookie_is_not_an_api_credential(app, client, team_a):
    with app.app_context():
        user = accounts.create_user("a@example.com", "correct horse battery")
        accounts.add_member(user, db.session.merge(team_a.team), "admin")
        db.session.commit()
    assert (
        client.post(
            "/login", data={"email": "a@example.com", "password": "correct horse battery"}
        ).status_code
        == 302
    )
    assert client.get("/api/v1/images").status_code == 401
