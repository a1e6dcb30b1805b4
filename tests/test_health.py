"""`/healthz` names each dependency and fails when one is down; uploads survive Redis being down."""

from __future__ import annotations

import pytest

from tests import samples


def test_all_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "ok", "storage": "ok"},
    }


class TestRedisDown:
    @pytest.fixture
    def config_overrides(self, tmp_path):
        return {"REDIS_URL": f"unix://{tmp_path}/nobody-listens.sock"}

    def test_healthz_is_503_naming_redis(self, client):
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json["status"] == "unavailable"
        assert response.json["checks"]["redis"].startswith("failed")
        assert response.json["checks"]["database"] == "ok"

    def test_upload_still_succeeds_and_stays_pending(self, client, team_a, upload):
        response = upload(team_a, [(samples.jpeg(1), "a.jpg")])
        assert response.status_code == 201
        assert response.json["items"][0]["status"] == "pending"
