"""A NUL in a query string or a form field is a 400 naming the field, before anything reads it.

PostgreSQL cannot hold nor compare text with a NUL: each of these reached the database and
answered 500 there (the sign-in form to anyone), while SQLite took them. JSON bodies refuse NUL
too (tests/test_json_bodies.py)."""

from __future__ import annotations

import io

import pytest

from app.extensions import db
from app.models import ApiKey, AuditEvent, Collection, ImportBatch
from tests import samples

API_QUERIES = [
    "/api/v1/images?tag=a%00b",
    "/api/v1/images?q=cat%00",
    "/api/v1/images?ta%00g=a",
    "/api/v1/search?q=a&tag=%00",
    "/api/v1/audit?actor=a%00b",
    "/api/v1/audit?action=image%00",
    "/api/v1/duplicates?tier=near%00",
]


@pytest.mark.parametrize("path", API_QUERIES)
def test_api_queries_with_a_nul_are_400_naming_the_field(client, team_a, path):
    response = client.get(path, headers=team_a.headers())
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "bad_request"
    assert "holds a NUL character" in response.json["error"]["message"]


def test_api_forms_with_a_nul_create_nothing(app, client, team_a):
    upload = client.post(
        "/api/v1/images",
        data={"file": (io.BytesIO(samples.jpeg(1)), "a.jpg"), "tags": "sun\x00set"},
        headers=team_a.headers(),
        content_type="multipart/form-data",
    )
    assert upload.status_code == 400 and "'tags' holds a NUL" in upload.json["error"]["message"]
    csv = io.BytesIO(b"url\nhttps://example.com/a.jpg\n")
    imported = client.post(
        "/api/v1/imports",
        data={"file": (csv, "urls.csv"), "tags": "a\x00"},
        headers=team_a.headers(),
        content_type="multipart/form-data",
    )
    assert imported.status_code == 400
    assert client.get("/api/v1/images", headers=team_a.headers()).json["items"] == []
    with app.app_context():
        assert db.session.query(ImportBatch).count() == 0


PAGE_QUERIES = ["/?tag=a%00b", "/?label=a%00b", "/fresh?tag=a%00b", "/settings/audit?actor=a%00b"]


@pytest.mark.parametrize("path", PAGE_QUERIES)
@pytest.mark.parametrize("htmx", [False, True])
def test_page_queries_with_a_nul_are_400(team_a, person, path, htmx):
    admin = person(team_a, "admin")
    response = admin.client.get(path, headers={"HX-Request": "true"} if htmx else {})
    assert response.status_code == 400
    assert b"holds a NUL character" in response.data


def test_the_sign_in_form_with_a_nul_is_400_for_anyone(client, team_a, person):
    person(team_a, "viewer")  # an account exists: the sign-in form is what answers
    response = client.post("/login", data={"email": "a\x00@b.test", "password": "x"})
    assert response.status_code == 400 and b"holds a NUL character" in response.data


def test_page_forms_with_a_nul_change_nothing(app, team_a, person):
    admin = person(team_a, "admin")
    with app.app_context():
        keys_before = db.session.query(ApiKey).count()
        events_before = db.session.query(AuditEvent).count()
    answers = [
        admin.client.post("/settings/keys", data={"name": "k\x00y", "scopes": "read"}),
        admin.client.post("/settings/members", data={"email": "a\x00@b.test", "role": "viewer"}),
        admin.client.post("/imports", data={"urls": "https://example.com/a\x00.jpg"}),
        admin.client.post("/collections", data={"name": "Al\x00ps"}),
    ]
    assert [a.status_code for a in answers] == [400] * len(answers)
    with app.app_context():
        assert db.session.query(ApiKey).count() == keys_before
        assert db.session.query(AuditEvent).count() == events_before
        assert db.session.query(ImportBatch).count() == 0
        assert db.session.query(Collection).count() == 0


def test_a_multipart_part_without_a_name_is_no_crash(client, team_a):
    """A part with no name (as a fuzzer sent): refused as a field the endpoint does not know."""
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; filename="a.jpg"\r\n\r\n'.encode()
        + samples.jpeg(1)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = client.post(
        "/api/v1/images",
        data=body,
        headers={**team_a.headers(), "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "bad_request"
