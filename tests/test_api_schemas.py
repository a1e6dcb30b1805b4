"""The API on declared schemas: refusals name the field, every error keeps the envelope, lists
page by cursor."""

from __future__ import annotations

import json

import pytest

from app.services import keys
from tests import samples


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    error = response.json["error"]
    assert set(error) <= {"code", "message", "fields"} and error["code"] == code
    assert error["message"] and "Traceback" not in error["message"]
    return error


LISTS = ["/api/v1/keys", "/api/v1/members", "/api/v1/audit"]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize(
    "limit",
    ["0", "201", "-1", "abc", "1.5", "+5", " 5", "5 ", "1_0", "\u0665", "", "1e2", "9" * 30],
)
def test_limit_must_be_a_plain_decimal_integer_from_1_to_200(client, team_a, path, limit):
    response = client.get(path, query_string={"limit": limit}, headers=team_a.headers())
    error = assert_envelope(response, 400, "bad_request")
    assert "limit" in error["message"] and "1 to 200" in error["fields"]["limit"]


@pytest.mark.parametrize("path", LISTS)
def test_limit_within_bounds_is_taken(client, team_a, path):
    for limit in ("1", "200", "007"):
        response = client.get(path, query_string={"limit": limit}, headers=team_a.headers())
        assert response.status_code == 200 and len(response.json["items"]) <= int(limit)
        assert set(response.json) == {"items", "next_cursor"}


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("cursor", ["garbage", "eyJ4IjogMX0", "W10", "WyJhIiwgImIiXQ", "x" * 5000])
def test_a_tampered_cursor_is_400(client, team_a, path, cursor):
    response = client.get(path, query_string={"cursor": cursor}, headers=team_a.headers())
    error = assert_envelope(response, 400, "bad_request")
    assert "cursor" in error["message"]


@pytest.mark.parametrize("path", LISTS)
def test_an_unknown_query_parameter_is_400_naming_it(client, team_a, path):
    response = client.get(path, query_string={"limti": "5"}, headers=team_a.headers())
    error = assert_envelope(response, 400, "bad_request")
    assert "limti" in error["message"] and "limti" in error["fields"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/team"),
        ("delete", "/api/v1/images/{image}"),
        ("get", "/api/v1/images/{image}"),
        ("post", "/api/v1/imports"),
    ],
)
def test_an_endpoint_without_a_query_refuses_any_query_parameter(
    client, team_a, upload, method, path
):
    """Not a silent no-op: `?force=1` on a delete does nothing a client could count on."""
    image = upload(team_a, [(samples.jpeg(1), "kept.jpg")]).json["items"][0]["id"]
    url = path.format(image=image)
    response = getattr(client, method)(f"{url}?force=1", headers=team_a.headers())
    error = assert_envelope(response, 400, "bad_request")
    assert "force" in error["message"] and "force" in error["fields"]
    assert client.get(f"/api/v1/images/{image}", headers=team_a.headers()).status_code == 200
    # Without a key it is still the 401 first.
    assert client.get("/api/v1/team?force=1").status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scopes": ["read"], "team_id": "x"}, "team_id"),
        ({"name": 5, "scopes": ["read"]}, "name"),
        ({"name": "x", "scopes": {"read": True}}, "scopes"),
        ({"name": "x", "scopes": ["read", 7]}, "scopes"),
        ({"name": "x", "scopes": ["read"], "expires_in_days": 1.5}, "expires_in_days"),
        ({"name": "x", "scopes": ["read"], "expires_in_days": 3651}, "expires_in_days"),
        ({"scopes": ["read"]}, "name"),
        (["name", "x"], "body"),
        ("a string", "body"),
        (None, "body"),
    ],
)
def test_a_refused_body_names_the_field(client, team_a, body, field):
    response = client.post(
        "/api/v1/keys", data=json.dumps(body), headers=team_a.headers(),
        content_type="application/json",
    )  # fmt: skip
    error = assert_envelope(response, 400, "bad_request")
    assert field in error["fields"] and field in error["message"]


def test_a_body_that_is_not_json_is_refused_not_taken_for_empty(client, team_a):
    response = client.post(
        "/api/v1/keys", data="name=x&scopes=read", headers=team_a.headers(),
        content_type="application/x-www-form-urlencoded",
    )  # fmt: skip
    assert "JSON" in assert_envelope(response, 400, "bad_request")["message"]


def test_nan_in_a_body_is_refused_by_the_strict_parser(client, team_a):
    response = client.post(
        "/api/v1/keys",
        data=b'{"name": "x", "scopes": ["read"], "expires_in_days": NaN}',
        headers=team_a.headers(),
        content_type="application/json",
    )
    assert "NaN" in assert_envelope(response, 400, "bad_request")["message"]


def test_an_action_without_input_refuses_any_field(client, team_a):
    key_id = client.get("/api/v1/keys", headers=team_a.headers()).json["items"][0]["id"]
    response = client.post(
        f"/api/v1/keys/{key_id}/rotate", json={"force": True}, headers=team_a.headers()
    )
    assert "force" in assert_envelope(response, 400, "bad_request")["fields"]
    assert (
        client.post(f"/api/v1/keys/{key_id}/rotate", json={}, headers=team_a.headers()).status_code
        == 201
    )


def test_the_library_never_answers_for_itself(app, client, team_a):
    @app.get("/api/v1/boom")
    def boom():
        raise RuntimeError("a bug with a secret in it")

    assert_envelope(client.get("/api/v1/nothing-here", headers=team_a.headers()), 404, "not_found")
    wrong = client.put("/api/v1/keys", headers=team_a.headers())
    assert_envelope(wrong, 405, "method_not_allowed")
    assert "GET" in wrong.headers["Allow"]
    app.config["MAX_CONTENT_LENGTH"] = 1000
    too_big = client.post(
        "/api/v1/keys", data=b"{" + b" " * 5000 + b"}", headers=team_a.headers(),
        content_type="application/json",
    )  # fmt: skip
    assert_envelope(too_big, 413, "too_large")
    crashed = client.get("/api/v1/boom", headers=team_a.headers())
    error = assert_envelope(crashed, 500, "internal_error")
    assert "secret" not in crashed.get_data(as_text=True)
    assert error["message"] == "something went wrong on our side"


def test_keys_page_by_cursor_each_once(app, client, team_a):
    with app.app_context():
        from app.extensions import db
        from app.models import Team
        from app.tenancy import set_request_team

        set_request_team(team_a.id)
        team = db.session.get(Team, team_a.id)
        for n in range(7):
            keys.create_key(team, f"k{n}", ["read"])
        db.session.commit()
    seen, cursor = [], None
    while True:
        query = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/keys", query_string=query, headers=team_a.headers()).json
        assert len(page["items"]) <= 3
        seen += [k["id"] for k in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 9
