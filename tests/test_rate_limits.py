"""API rate limits: counted in the real Redis per key (or address), 429 with Retry-After."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import pytest

from app import create_app
from tests import samples
from tests.conftest import make_config

LIMITS = {
    "API_RATE_LIMIT": "5 per minute",
    "API_RATE_LIMIT_ANONYMOUS": "3 per minute",
    "API_RATE_LIMIT_UPLOADS": "2 per minute",
    "API_RATE_LIMIT_SEARCHES": "2 per minute",
}


@pytest.fixture
def config_overrides():
    return LIMITS


def assert_rate_limited(response, what: str = "requests"):
    assert response.status_code == 429, response.data
    assert set(response.json) == {"error"}
    assert response.json["error"]["code"] == "rate_limited"
    assert response.json["error"]["message"].startswith(f"too many {what} from ")
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60  # the rest of a one-minute window


def test_a_key_is_limited_at_the_configured_count(client, team_a):
    for _ in range(5):
        assert client.get("/api/v1/team", headers=team_a.headers()).status_code == 200
    over = client.get("/api/v1/team", headers=team_a.headers())
    assert_rate_limited(over)
    assert "this API key" in over.json["error"]["message"]
    assert "5 per 1 minute" in over.json["error"]["message"]
    # Refused requests are counted too: waiting is the only way back in.
    assert_rate_limited(client.get("/api/v1/images", headers=team_a.headers()))


def test_keys_of_two_teams_count_separately(client, team_a, team_b):
    for _ in range(5):
        assert client.get("/api/v1/team", headers=team_a.headers()).status_code == 200
    assert_rate_limited(client.get("/api/v1/team", headers=team_a.headers()))
    for _ in range(5):
        assert client.get("/api/v1/team", headers=team_b.headers()).status_code == 200
    assert_rate_limited(client.get("/api/v1/team", headers=team_b.headers()))


def test_two_keys_of_one_team_count_separately(client, team_a):
    for _ in range(5):
        assert client.get("/api/v1/team", headers=team_a.headers()).status_code == 200
    assert_rate_limited(client.get("/api/v1/team", headers=team_a.headers()))
    read_only = team_a.headers(team_a.read_key)
    assert client.get("/api/v1/team", headers=read_only).status_code == 200


def test_switching_between_x_api_key_and_bearer_shares_the_bucket(client, team_a):
    as_header = {"X-API-Key": team_a.key}
    as_bearer = {"Authorization": f"Bearer {team_a.key}"}
    as_lowercase_bearer = {"Authorization": f"bearer  {team_a.key} "}
    for headers in (as_header, as_bearer, as_header, as_lowercase_bearer, as_bearer):
        assert client.get("/api/v1/team", headers=headers).status_code == 200
    for headers in (as_header, as_bearer, as_lowercase_bearer):
        assert_rate_limited(client.get("/api/v1/team", headers=headers))


def test_requests_without_a_valid_key_are_limited_per_address(client, team_a):
    guesses = [{}, {"X-API-Key": "lk_guess"}, {"Authorization": "Bearer lk_another"}]
    for headers in guesses:
        assert client.get("/api/v1/team", headers=headers).status_code == 401
    over = client.get("/api/v1/team", headers={"X-API-Key": "lk_yet_another"})
    assert_rate_limited(over)
    assert "this address" in over.json["error"]["message"]
    # Public endpoints count against the address as well.
    assert_rate_limited(client.post("/api/v1/uploads/direct/some-token"))

    elsewhere = {"REMOTE_ADDR": "192.0.2.7"}
    assert client.get("/api/v1/team", environ_base=elsewhere).status_code == 401
    # A valid key from the limited address has a bucket of its own.
    assert client.get("/api/v1/team", headers=team_a.headers()).status_code == 200


def test_uploads_have_a_limit_of_their_own(client, team_a, upload):
    for seed in (1, 2):
        assert upload(team_a, [(samples.jpeg(seed), f"{seed}.jpg")]).status_code == 201
    assert_rate_limited(upload(team_a, [(samples.jpeg(3), "3.jpg")]), what="uploads")
    reservation = client.post(
        "/api/v1/uploads",
        json={"filename": "d.jpg", "content_type": "image/jpeg", "size_bytes": 10},
        headers=team_a.headers(),
    )
    assert_rate_limited(reservation, what="uploads")
    # Other requests of the key are still within the general limit (5, 4 used).
    listed = client.get("/api/v1/images", headers=team_a.headers())
    assert listed.status_code == 200 and len(listed.json["items"]) == 2


def test_searches_have_a_limit_of_their_own(client, team_a, upload):
    image = upload(team_a, [(samples.jpeg(1), "1.jpg")]).json["items"][0]
    similar = f"/api/v1/images/{image['id']}/similar"
    for _ in range(2):
        assert client.get(similar, headers=team_a.headers()).status_code != 429
    assert_rate_limited(client.get(similar, headers=team_a.headers()), what="searches")
    assert client.get(f"/api/v1/images/{image['id']}", headers=team_a.headers()).status_code == 200


def test_the_count_is_shared_by_every_process_through_redis(app_env, client, team_a):
    for _ in range(3):
        assert client.get("/api/v1/team", headers=team_a.headers()).status_code == 200
    other_process = create_app(make_config(app_env, **LIMITS)).test_client()
    for _ in range(2):
        assert other_process.get("/api/v1/team", headers=team_a.headers()).status_code == 200
    assert_rate_limited(other_process.get("/api/v1/team", headers=team_a.headers()))
    assert_rate_limited(client.get("/api/v1/team", headers=team_a.headers()))


@pytest.mark.parametrize(
    "config_overrides", [{**LIMITS, "API_RATE_LIMIT_UPLOADS": "", "API_RATE_LIMIT": "4/minute"}]
)
def test_an_empty_upload_limit_is_none(team_a, upload):
    for seed in range(4):
        assert upload(team_a, [(samples.jpeg(seed), f"{seed}.jpg")]).status_code == 201
    assert_rate_limited(upload(team_a, [(samples.jpeg(9), "9.jpg")]))


@pytest.mark.parametrize("config_overrides", [{**LIMITS, "API_RATE_LIMIT_ENABLED": False}])
def test_limits_can_be_turned_off(client, team_a):
    for _ in range(8):
        assert client.get("/api/v1/team", headers=team_a.headers()).status_code == 200


@pytest.mark.parametrize("setting", ["API_RATE_LIMIT", "API_RATE_LIMIT_SEARCHES"])
def test_a_limit_that_is_not_one_stops_start_up(app_env, setting):
    with pytest.raises(ValueError, match=setting):
        create_app(make_config(app_env, **{**LIMITS, setting: "lots per minute"}))


def test_the_api_serves_while_the_counters_cannot_be_reached(
    app_env, app, team_a, tmp_path, caplog
):
    unreachable = {**LIMITS, "REDIS_URL": f"unix://{tmp_path}/nobody-listens.sock"}
    down = create_app(make_config(app_env, **unreachable)).test_client()
    with caplog.at_level(logging.ERROR, logger="flask-limiter"):
        for _ in range(8):  # above every limit: fail open
            response = down.get("/api/v1/team", headers=team_a.headers())
            assert response.status_code == 200, response.data
            assert response.json["name"] == "Team A"
        assert down.get("/api/v1/team").status_code == 401
    refusals = [r for r in caplog.records if r.name == "flask-limiter"]
    assert len(refusals) >= 9 and all(r.exc_info for r in refusals)


@pytest.mark.parametrize("config_overrides", [{**LIMITS, "API_RATE_LIMIT": "20 per minute"}])
def test_concurrent_requests_are_counted_exactly(app, team_a, team_b):
    def send(team) -> int:
        client = app.test_client()
        return client.get("/api/v1/team", headers=team.headers()).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(send, [team_a, team_b] * 15))
    for team in (team_a, team_b):
        mine = statuses[team is team_b :: 2]
        assert sorted(mine) == [200] * 15  # 15 each: within the limit of 20
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(send, [team_a] * 10))
    assert sorted(statuses) == [200] * 5 + [429] * 5
