"""Settings additions: pending invites listed and revocable; a copy button for a new key;
hostile key names shown as text."""

from __future__ import annotations

import re

import pytest
from markupsafe import escape

HOSTILE = "<img src=x onerror=alert(1)>"
HX_INJECTION = '" hx-get="/settings/members" hx-trigger="load'


def _invite(admin, email: str) -> str:
    answer = admin.post("/settings/members", data={"email": email, "role": "viewer"})
    assert answer.status_code == 200, answer.data
    return re.search(r"/invites/([\w-]+)</code>", answer.get_data(as_text=True)).group(1)


def _invite_ids(page: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r"/settings/invites/([0-9a-f-]{36})/revoke", page)))


def test_pending_invites_are_listed_and_a_revoked_link_stops_working(app, team_a, person):
    admin = person(team_a, "admin").client
    token = _invite(admin, "new@example.com")
    page = admin.get("/settings/members")
    body = page.get_data(as_text=True)
    assert (
        page.status_code == 200 and "new@example.com" in body and "No pending invites" not in body
    )
    (invite_id,) = _invite_ids(body)
    assert app.test_client().get(f"/invites/{token}").status_code == 200

    revoked = admin.post(f"/settings/invites/{invite_id}/revoke", headers={"HX-Request": "1"})
    text = revoked.get_data(as_text=True)
    assert revoked.status_code == 200 and "<html" not in text
    assert "The invite for new@example.com no longer works." in text
    assert "No pending invites." in text
    assert app.test_client().get(f"/invites/{token}").status_code == 404
    again = admin.post(f"/settings/invites/{invite_id}/revoke")
    assert again.status_code == 409 and "revoked already" in again.get_data(as_text=True)
    audit = admin.get("/settings/audit").get_data(as_text=True)
    assert "member.invite_revoke" in audit


def test_revoking_without_javascript_redirects_with_a_message(app, team_a, person):
    admin = person(team_a, "admin").client
    _invite(admin, "plain@example.com")
    (invite_id,) = _invite_ids(admin.get("/settings/members").get_data(as_text=True))
    answer = admin.post(f"/settings/invites/{invite_id}/revoke")
    assert answer.status_code == 302
    assert "no longer works" in admin.get("/settings/members").get_data(as_text=True)


def test_accepted_invites_leave_the_list(app, team_a, person):
    admin = person(team_a, "admin").client
    token = _invite(admin, "joiner@example.com")
    joined = app.test_client().post(
        f"/invites/{token}", data={"password": "a long enough password"}
    )
    assert joined.status_code == 302, joined.data
    assert _invite_ids(admin.get("/settings/members").get_data(as_text=True)) == []


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_only_admins_revoke_invites(app, team_a, person, role):
    admin = person(team_a, "admin").client
    _invite(admin, "x@example.com")
    (invite_id,) = _invite_ids(admin.get("/settings/members").get_data(as_text=True))
    assert (
        person(team_a, role).client.post(f"/settings/invites/{invite_id}/revoke").status_code == 403
    )
    assert invite_id in admin.get("/settings/members").get_data(as_text=True)


def test_another_teams_invite_is_not_found(app, team_a, team_b, person):
    admin = person(team_a, "admin").client
    _invite(admin, "secret@example.com")
    (invite_id,) = _invite_ids(admin.get("/settings/members").get_data(as_text=True))
    intruder = person(team_b, "admin").client
    assert intruder.post(f"/settings/invites/{invite_id}/revoke").status_code == 404
    assert intruder.post("/settings/invites/not-an-id/revoke").status_code == 404
    assert "secret@example.com" not in intruder.get("/settings/members").get_data(as_text=True)
    assert invite_id in admin.get("/settings/members").get_data(as_text=True)


@pytest.mark.parametrize("name", [HOSTILE, HX_INJECTION])
def test_new_key_has_a_copy_button_and_hostile_names_are_text(app, team_a, person, name):
    admin = person(team_a, "admin").client
    created = admin.post(
        "/settings/keys", data={"name": name, "scopes": "read-only"}, headers={"HX-Request": "1"}
    )
    body = created.get_data(as_text=True)
    assert created.status_code == 200
    assert 'data-copy-target="new-key"' in body and 'id="new-key">lk_' in body
    page = admin.get("/settings/keys").get_data(as_text=True)
    for text in (body, page):
        assert name not in text and 'hx-get="/settings/members"' not in text
        assert str(escape(name)) in text
    assert "data-copy-target" not in page  # the secret is shown once, and so is its button
    assert "/static/pages.js" in page
