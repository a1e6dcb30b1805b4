"""Cursors come back from clients: a tampered one is a 400, never a 500 (API and pages)."""

from __future__ import annotations

import base64
import json
import uuid

import pytest


def opaque(raw: bytes | str) -> str:
    raw = raw.encode() if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


WHEN = "2024-05-01T10:00:00+00:00"
IMAGE_CURSORS = {
    "number-for-id": opaque(json.dumps([WHEN, 5])),
    "object-for-id": opaque(json.dumps([WHEN, {"hex": "0" * 32}])),
    "number-for-time": opaque(json.dumps([5, str(uuid.uuid4())])),
    "object": opaque(json.dumps({"a": WHEN, "b": str(uuid.uuid4())})),
    "three-items": opaque(json.dumps([WHEN, str(uuid.uuid4()), 1])),
    "naive-time": opaque(json.dumps(["2024-05-01T10:00:00", str(uuid.uuid4())])),
    "nested": opaque("[" * 5000 + "]" * 5000),
    "not-a-number": opaque(f'[NaN, "{uuid.uuid4()}"]'),
    "long": opaque(json.dumps([WHEN + " " * 5000, str(uuid.uuid4())])),
    "not-base64": "%%%",
    # Times that parse, but have no UTC time: the calendar ends on either side.
    "year-1-east-of-utc": opaque(json.dumps(["0001-01-01T00:00:00+01:00", str(uuid.uuid4())])),
    "year-9999-west-of-utc": opaque(json.dumps(["9999-12-31T23:59:59-01:00", str(uuid.uuid4())])),
    "nul-in-time": opaque(json.dumps([WHEN + "\x00", str(uuid.uuid4())])),
}
AUDIT_CURSORS = {
    "30-digits": opaque("1" * 30),
    "beyond-bigint": opaque(str(2**63)),
    "arabic-digits": opaque("\u0661\u0662\u0663"),
    "signed": opaque("+12"),
    "empty": opaque(" "),
    "not-base64": "%%%",
}


@pytest.mark.parametrize("cursor", IMAGE_CURSORS.values(), ids=IMAGE_CURSORS.keys())
def test_a_tampered_image_cursor_is_400(client, team_a, person, cursor):
    response = client.get(f"/api/v1/images?cursor={cursor}", headers=team_a.headers())
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "bad_request"
    assert "cursor" in response.json["error"]["message"]
    page = person(team_a, "viewer").client.get(f"/?cursor={cursor}")
    assert page.status_code == 400


@pytest.mark.parametrize("cursor", AUDIT_CURSORS.values(), ids=AUDIT_CURSORS.keys())
def test_a_tampered_audit_cursor_is_400(client, team_a, person, cursor):
    response = client.get(f"/api/v1/audit?cursor={cursor}", headers=team_a.headers())
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "bad_request"
    assert "cursor" in response.json["error"]["message"]
    page = person(team_a, "admin").client.get(f"/settings/audit?cursor={cursor}")
    assert page.status_code == 400


def test_cursors_given_out_still_work(client, team_a, upload):
    from tests import samples

    for n in range(3):
        upload(team_a, [(samples.jpeg(40 + n, (32, 32)), f"{n}.jpg")])
    first = client.get("/api/v1/images?limit=2", headers=team_a.headers()).json
    rest = client.get(
        f"/api/v1/images?limit=2&cursor={first['next_cursor']}", headers=team_a.headers()
    ).json
    assert len(first["items"]) == 2 and len(rest["items"]) == 1
    events = client.get("/api/v1/audit?limit=1", headers=team_a.headers()).json
    more = client.get(
        f"/api/v1/audit?limit=1&cursor={events['next_cursor']}", headers=team_a.headers()
    )
    assert more.status_code == 200 and more.json["items"][0]["id"] < events["items"][0]["id"]


@pytest.mark.parametrize(
    ("path", "cursor"),
    [
        ("/api/v1/members", opaque(json.dumps(["a\x00@example.com", str(uuid.uuid4())]))),
        ("/api/v1/keys", opaque(json.dumps(["9999-12-31T23:59:59-01:00", str(uuid.uuid4())]))),
        ("/api/v1/imports", opaque(json.dumps(["0001-01-01T00:00:00+01:00", str(uuid.uuid4())]))),
    ],
    ids=["members-nul-in-email", "keys-year-9999", "imports-year-1"],
)
def test_a_tampered_cursor_of_the_other_lists_is_400(client, team_a, path, cursor):
    response = client.get(f"{path}?cursor={cursor}", headers=team_a.headers())
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "bad_request"
