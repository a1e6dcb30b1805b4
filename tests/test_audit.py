"""The audit trail: every state change is a row admins can read; every API call is logged."""

from __future__ import annotations

import io
import json
import logging

from tests import samples
from tests.conftest import PASSWORD


def audit(client, team, **params):
    response = client.get("/api/v1/audit", query_string=params, headers=team.headers())
    assert response.status_code == 200, response.json
    return response.json


def test_state_changes_are_recorded_newest_first(app, client, team_a, person, upload):
    admin = person(team_a, "admin", email="auditor@example.com")
    image = upload(team_a, [(samples.jpeg(1), "holiday.jpg")]).json["items"][0]
    client.delete(f"/api/v1/images/{image['id']}", headers=team_a.headers())
    admin.client.post("/settings/keys", data={"name": "browser key", "scopes": "read-only"})
    admin.client.post("/settings/members", data={"email": "m@example.com", "role": "member"})
    app.test_client().post("/login", data={"email": "auditor@example.com", "password": "wrong!"})

    items = audit(client, team_a)["items"]
    actions = [e["action"] for e in items]
    assert actions[:4] == ["member.invite", "key.create", "image.delete", "image.upload"]
    # Before those, the fixture's two keys. Sign-ins (the admin's, the failed one) are the
    # person's own events, in no team's log.
    assert actions[4:] == ["key.create", "key.create"]
    assert items[-1]["actor"] == "system" and items[-1]["actor_type"] == "system"
    upload_event = items[3]
    assert upload_event["target"] == "holiday.jpg" and upload_event["target_id"] == image["id"]
    assert upload_event["actor"].startswith(f"key {team_a.key.split('_')[1]} ")
    assert upload_event["ip"] == "127.0.0.1" and upload_event["at"].endswith("Z")
    assert items[0]["actor"] == "auditor@example.com" and items[0]["target"] == "m@example.com"
    assert items[0]["actor_type"] == "user" and items[0]["details"] == {"role": "member"}


def test_failed_login_for_an_unknown_email_reaches_no_team(app, client, team_a, team_b, person):
    person(team_a, "admin")
    app.test_client().post("/login", data={"email": "stranger@example.com", "password": "x" * 12})
    for team in (team_a, team_b):
        assert "stranger@example.com" not in json.dumps(audit(client, team))


def test_audit_is_filtered_by_actor_and_action_and_paginated(client, team_a, upload):
    client.post("/api/v1/keys", json={"name": "k", "scopes": ["read"]}, headers=team_a.headers())
    for n in range(3):
        upload(team_a, [(samples.jpeg(10 + n), f"{n}.jpg")])
    by_action = audit(client, team_a, action="image.upload")["items"]
    assert [e["target"] for e in by_action] == ["2.jpg", "1.jpg", "0.jpg"]
    family = audit(client, team_a, action="key")["items"]
    assert family and all(e["action"].startswith("key.") for e in family)
    prefix = team_a.key.split("_")[1]
    by_actor = audit(client, team_a, actor=prefix)["items"]
    assert len(by_actor) == 4 and all(prefix in e["actor"] for e in by_actor)
    assert audit(client, team_a, actor="nobody@example.com")["items"] == []

    first = audit(client, team_a, action="image.upload", limit=2)
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = audit(client, team_a, action="image.upload", limit=2, cursor=first["next_cursor"])
    assert [e["target"] for e in rest["items"]] == ["0.jpg"] and rest["next_cursor"] is None


def test_audit_refuses_bad_parameters(client, team_a):
    for query in (
        "limit=0",
        "limit=201",
        "limit=ten",
        "cursor=%%%",
        "cursor=bm90LWEtbnVtYmVy",
        "team_id=x",
    ):
        response = client.get(f"/api/v1/audit?{query}", headers=team_a.headers())
        assert response.status_code == 400, query
        assert response.json["error"]["code"] == "bad_request"


def test_audit_needs_the_admin_scope(client, team_a):
    response = client.get("/api/v1/audit", headers=team_a.headers(team_a.read_key))
    assert response.status_code == 403 and "admin" in response.json["error"]["message"]


def test_settings_shows_the_audit_trail_to_admins(team_a, person, upload):
    admin = person(team_a, "admin")
    upload(team_a, [(samples.jpeg(3), "shown-in-audit.jpg")])
    page = admin.client.get("/settings/audit").get_data(as_text=True)
    assert "image.upload" in page and "shown-in-audit.jpg" in page
    filtered = admin.client.get(
        "/settings/audit?action=key", headers={"HX-Request": "true"}
    ).get_data(as_text=True)
    assert "<html" not in filtered and "image.upload" not in filtered and "key.create" in filtered
    # Back to the filtered address, on a miss of htmx's history cache: the whole page.
    restored = admin.client.get(
        "/settings/audit?action=key",
        headers={"HX-Request": "true", "HX-History-Restore-Request": "true"},
    )
    assert "<html" in restored.get_data(as_text=True)
    assert "HX-History-Restore-Request" in restored.headers["Vary"]


def test_every_api_request_is_in_the_access_log_with_its_key_prefix(client, team_a, caplog):
    with caplog.at_level(logging.INFO, logger="likeness.access"):
        client.get("/api/v1/team", headers=team_a.headers())
        client.get("/api/v1/team", headers={"X-API-Key": "lk_nope"})
        client.post(
            "/api/v1/images",
            data={"file": (io.BytesIO(b"not an image"), "x.jpg")},
            headers=team_a.headers(),
            content_type="multipart/form-data",
        )
    lines = [r for r in caplog.records if r.name == "likeness.access"]
    assert [(line.method, line.status) for line in lines] == [
        ("GET", 200),
        ("GET", 401),
        ("POST", 415),
    ]
    assert lines[0].key_prefix == team_a.key.split("_")[1] and lines[1].key_prefix is None
    assert lines[0].team_id == str(team_a.id) and lines[1].team_id is None
    assert all(line.path.startswith("/api/v1/") and line.duration_ms >= 0 for line in lines)
    assert team_a.key not in caplog.text  # never the secret


def test_password_is_never_in_the_audit_trail(client, team_a, person):
    person(team_a, "admin", email="secretive@example.com")
    client.post("/login", data={"email": "secretive@example.com", "password": "oops my password"})
    assert "oops my password" not in json.dumps(audit(client, team_a))
    assert PASSWORD not in json.dumps(audit(client, team_a))
