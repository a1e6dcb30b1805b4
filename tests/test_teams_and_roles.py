"""Roles per team, members and invites, the team switcher, and the last admin rule."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from app.extensions import db
from app.models import Invite, Membership, User, utcnow
from app.services import members
from tests import samples
from tests.conftest import PASSWORD

ADMIN_PAGES = ["/settings/members", "/settings/keys", "/settings/audit"]


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_only_admins_reach_member_key_and_audit_settings(team_a, person, role):
    someone = person(team_a, role)
    assert someone.client.get("/settings/").status_code == 200
    for page in ADMIN_PAGES:
        assert someone.client.get(page).status_code == 403, page
    refused = someone.client.post("/settings/keys", data={"name": "x", "scopes": "full"})
    assert refused.status_code == 403


def test_admin_pages_render(team_a, person):
    admin = person(team_a, "admin")
    for page in ADMIN_PAGES:
        response = admin.client.get(page)
        assert response.status_code == 200 and b"Settings" in response.data, page


def role_of(app, team, email):
    with app.app_context():
        return db.session.scalar(
            select(Membership.role)
            .join(User)
            .where(Membership.team_id == team.id, User.email == email)
        )


def invite_path(admin, email, role):
    """An admin invites `email` in the browser; the path of the link shown to them."""
    response = admin.client.post(
        "/settings/members", data={"email": email, "role": role, "mode": "invite"}
    )
    return re.search(r"(/invites/[A-Za-z0-9_-]+)", response.get_data(as_text=True)).group(1)


def test_admin_adds_a_member_changes_the_role_and_removes_them(app, team_a, person):
    admin = person(team_a, "admin")
    added = admin.client.post(
        "/settings/members",
        data={"email": "New@Example.com", "role": "viewer"},
        headers={"HX-Request": "true"},
    )
    assert added.status_code == 200 and b"new@example.com" in added.data
    assert role_of(app, team_a, "new@example.com") is None  # invited, not yet a member
    link = re.search(r"(/invites/[A-Za-z0-9_-]+)", added.get_data(as_text=True)).group(1)
    newcomer = app.test_client()
    assert newcomer.post(link, data={"password": "long enough pw"}).status_code == 302
    assert role_of(app, team_a, "new@example.com") == "viewer"
    assert (
        app.test_client()
        .post("/login", data={"email": "new@example.com", "password": "long enough pw"})
        .status_code
        == 302
    )

    with app.app_context():
        user_id = db.session.scalar(
            select(Membership.user_id).where(
                Membership.team_id == team_a.id, Membership.role == "viewer"
            )
        )
    admin.client.post(f"/settings/members/{user_id}/role", data={"role": "member"})
    assert role_of(app, team_a, "new@example.com") == "member"
    admin.client.post(f"/settings/members/{user_id}/remove")
    assert role_of(app, team_a, "new@example.com") is None
    assert newcomer.get("/").status_code == 302  # no team left: back to the login page


def test_the_last_admin_cannot_be_demoted_or_removed(app, team_a, person):
    admin = person(team_a, "admin")
    demote = admin.client.post(f"/settings/members/{admin.user_id}/role", data={"role": "member"})
    assert demote.status_code == 409 and b"last admin" in demote.data
    remove = admin.client.post(f"/settings/members/{admin.user_id}/remove")
    assert remove.status_code == 409
    assert role_of(app, team_a, admin.email) == "admin"
    api = app.test_client()
    response = api.patch(
        f"/api/v1/members/{admin.user_id}", json={"role": "viewer"}, headers=team_a.headers()
    )
    assert response.status_code == 409 and response.json["error"]["code"] == "conflict"
    assert (
        api.delete(f"/api/v1/members/{admin.user_id}", headers=team_a.headers()).status_code == 409
    )
    # With a second admin, the first may step down.
    person(team_a, "admin")
    stepped_down = admin.client.post(
        f"/settings/members/{admin.user_id}/role", data={"role": "member"}
    )
    assert stepped_down.status_code == 302  # to their account page: the panel is not theirs
    assert role_of(app, team_a, admin.email) == "member"


def test_invite_link_joins_once_and_expires(app, team_a, person):
    admin = person(team_a, "admin")
    response = admin.client.post(
        "/settings/members", data={"email": "Guest@Example.com", "role": "viewer", "mode": "invite"}
    )
    link = re.search(r"http://localhost(/invites/[A-Za-z0-9_-]+)", response.get_data(as_text=True))
    assert link, response.data
    guest = app.test_client()
    page = guest.get(link.group(1))
    assert page.status_code == 200 and b"Team A" in page.data and b"viewer" in page.data
    short = guest.post(link.group(1), data={"password": "short"})
    assert short.status_code == 422
    joined = guest.post(link.group(1), data={"password": "guest password"})
    assert joined.status_code == 302
    assert guest.get("/").status_code == 200  # signed in, in the team
    assert role_of(app, team_a, "guest@example.com") == "viewer"
    assert app.test_client().get(link.group(1)).status_code == 404  # used up

    late_link = invite_path(admin, "late@example.com", "member")
    with app.app_context():
        db.session.execute(update(Invite).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    expired = app.test_client().post(late_link, data={"password": "late password!"})
    assert expired.status_code == 404 and b"expired" in expired.data
    assert role_of(app, team_a, "late@example.com") is None


@pytest.mark.parametrize("existing", [False, True], ids=["new address", "existing account"])
def test_an_invite_submitted_twice_at_once_joins_once(
    app, team_a, team_b, person, monkeypatch, existing
):
    """A double click on the invite form: the second request, overtaken by the first while it
    checked the password, is told the link was used (it was a 500: the same account or the
    same membership created twice)."""
    if existing:
        person(team_b, "member", email="twice@example.com")
    link = invite_path(person(team_a, "admin"), "twice@example.com", "member")
    real_refusal = members._password_refusal
    overtaken = []

    def first_request_finishes_meanwhile(user, password):
        if not overtaken:
            overtaken.append(None)  # the first request checks its password through here too
            overtaken[0] = app.test_client().post(link, data={"password": PASSWORD})
        return real_refusal(user, password)

    monkeypatch.setattr(members, "_password_refusal", first_request_finishes_meanwhile)
    second = app.test_client().post(link, data={"password": PASSWORD})
    assert overtaken[0].status_code == 302  # the first joined
    assert second.status_code == 404 and b"already used" in second.data
    assert role_of(app, team_a, "twice@example.com") == "member"
    with app.app_context():
        assert (
            db.session.scalar(
                select(func.count()).select_from(User).where(User.email == "twice@example.com")
            )
            == 1
        )


def test_invite_for_an_existing_account_needs_its_password(app, team_a, team_b, person):
    existing = person(team_b, "member", email="both@example.com")
    admin = person(team_a, "admin")
    link = invite_path(admin, existing.email, "member")
    assert app.test_client().post(link, data={"password": "not theirs!!"}).status_code == 422
    assert role_of(app, team_a, existing.email) is None
    assert app.test_client().post(link, data={"password": PASSWORD}).status_code == 302
    assert role_of(app, team_a, existing.email) == "member"


def test_team_switcher_changes_what_the_gallery_shows(app, team_a, team_b, person, upload):
    upload(team_a, [(samples.jpeg(1), "only-in-a.jpg")])
    upload(team_b, [(samples.jpeg(2), "only-in-b.jpg")])
    someone = person(team_a, "member", email="two-teams@example.com")
    person(team_b, "viewer", email="two-teams@example.com")
    someone.client.post("/logout")
    someone.client.post("/login", data={"email": someone.email, "password": PASSWORD})
    first = someone.client.get("/").get_data(as_text=True)
    assert 'aria-label="Current team"' in first
    current, other = (
        ("only-in-a.jpg", team_b) if "only-in-a.jpg" in first else ("only-in-b.jpg", team_a)
    )
    assert someone.client.post("/teams/switch", data={"team_id": str(other.id)}).status_code == 302
    switched = someone.client.get("/").get_data(as_text=True)
    assert current not in switched and ("only-in-a.jpg" in switched or "only-in-b.jpg" in switched)


def test_removing_a_member_revokes_the_keys_they_made(app, team_a, person):
    first_admin = person(team_a, "admin")
    second_admin = person(team_a, "admin")
    made = second_admin.client.post("/settings/keys", data={"name": "theirs", "scopes": "upload"})
    key = re.search(r"lk_[0-9a-f]{10}_[A-Za-z0-9_-]{43}", made.get_data(as_text=True)).group(0)
    api = app.test_client()
    assert api.get("/api/v1/images", headers={"X-API-Key": key}).status_code == 200
    first_admin.client.post(f"/settings/members/{second_admin.user_id}/remove")
    assert api.get("/api/v1/images", headers={"X-API-Key": key}).status_code == 401


def test_members_api(app, client, team_a):
    invited = client.post(
        "/api/v1/members",
        json={"email": "api@example.com", "role": "member"},
        headers=team_a.headers(),
    )
    assert invited.status_code == 201 and invited.json["role"] == "member"
    assert client.get("/api/v1/members", headers=team_a.headers()).json["items"] == []
    link = re.search(r"(/invites/[A-Za-z0-9_-]+)", invited.json["invite_url"]).group(1)
    assert app.test_client().post(link, data={"password": "api password!"}).status_code == 302
    listed = client.get("/api/v1/members", headers=team_a.headers()).json["items"]
    assert [(m["email"], m["role"]) for m in listed] == [("api@example.com", "member")]
    user_id = listed[0]["user_id"]
    changed = client.patch(
        f"/api/v1/members/{user_id}", json={"role": "viewer"}, headers=team_a.headers()
    )
    assert changed.status_code == 200 and changed.json["role"] == "viewer"
    invite = client.post(
        "/api/v1/members",
        json={"email": "inv@example.com", "role": "viewer", "invite": True},
        headers=team_a.headers(),
    )
    assert invite.status_code == 201 and "/invites/" in invite.json["invite_url"]
    assert client.delete(f"/api/v1/members/{user_id}", headers=team_a.headers()).status_code == 204
    assert client.get("/api/v1/members", headers=team_a.headers()).json["items"] == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"email": "x@example.com", "role": "owner"}, 422),
        ({"email": "x@example.com", "role": "member", "password": "long enough pw"}, 400),
        ({"email": "x@example.com", "role": "member", "team_id": "whatever"}, 400),
        ({"email": "not an email", "role": "member"}, 422),
        ({"role": "member"}, 400),
    ],
)
def test_members_api_refuses_bad_input(app, client, team_a, body, status):
    response = client.post("/api/v1/members", json=body, headers=team_a.headers())
    assert response.status_code == status and "error" in response.json
    assert client.get("/api/v1/members", headers=team_a.headers()).json["items"] == []


def test_members_need_the_admin_scope(client, team_a):
    response = client.get("/api/v1/members", headers=team_a.headers(team_a.read_key))
    assert response.status_code == 403 and "admin" in response.json["error"]["message"]


def test_members_cli(app, runner, team_a):
    slug = team_a.team.slug
    out = runner.invoke(
        args=[
            "members",
            "add",
            "cli@example.com",
            "--team",
            slug,
            "--role",
            "admin",
            "--password",
            "cli password!",
        ]
    )
    assert out.exit_code == 0 and out.output.strip().splitlines()[-1] == "cli@example.com"
    out = runner.invoke(
        args=["members", "set-role", "cli@example.com", "--team", slug, "--role", "viewer"]
    )
    assert out.exit_code != 0 and "last admin" in out.output
    runner.invoke(
        args=[
            "members",
            "add",
            "two@example.com",
            "--team",
            slug,
            "--role",
            "admin",
            "--password",
            "cli password!",
        ]
    )
    out = runner.invoke(
        args=["members", "set-role", "cli@example.com", "--team", slug, "--role", "viewer"]
    )
    assert out.exit_code == 0 and out.output.strip().splitlines()[-1] == "cli@example.com viewer"
    out = runner.invoke(args=["members", "list", "--team", slug])
    assert out.output.strip().splitlines()[-1] == "2 members"
    out = runner.invoke(args=["members", "add", "later@example.com", "--team", slug, "--invite"])
    assert out.exit_code == 0 and out.output.strip().splitlines()[-1].startswith("/invites/")
    out = runner.invoke(args=["members", "remove", "cli@example.com", "--team", slug])
    assert out.exit_code == 0 and out.output.strip().splitlines()[-1] == "cli@example.com"
    out = runner.invoke(args=["members", "remove", "nobody@example.com", "--team", slug])
    assert out.exit_code != 0 and "no such member" in out.output


@pytest.mark.parametrize(
    "config_overrides", [{"LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS": 3}], ids=["three-tries"]
)
def test_invite_password_checks_are_throttled_like_logins(app, team_a, team_b, person):
    existing = person(team_b, "member", email="guessed@example.com")
    admin = person(team_a, "admin")
    link = invite_path(admin, existing.email, "member")
    guesser = app.test_client()
    for _ in range(3):
        assert guesser.post(link, data={"password": "guess guess guess"}).status_code == 422
    blocked = guesser.post(link, data={"password": PASSWORD})
    assert blocked.status_code == 429 and "Retry-After" in blocked.headers
    assert role_of(app, team_a, existing.email) is None


def test_an_admin_who_steps_down_or_leaves_is_taken_off_the_members_panel(app, team_a, person):
    """Not shown the admin's panel again, whose every button would now refuse."""
    person(team_a, "admin")  # another admin: stepping down is allowed
    admin = person(team_a, "admin")
    down = admin.client.post(
        f"/settings/members/{admin.user_id}/role",
        data={"role": "member"},
        headers={"HX-Request": "true"},
    )
    assert down.status_code == 204 and down.headers["HX-Redirect"] == "/settings/"
    assert role_of(app, team_a, admin.email) == "member"
    assert "You are now member in this team." in admin.client.get("/settings/").get_data(
        as_text=True
    )
    leaver = person(team_a, "admin")
    left = leaver.client.post(f"/settings/members/{leaver.user_id}/remove")
    assert left.status_code == 302 and left.headers["Location"] == "/"
    assert role_of(app, team_a, leaver.email) is None
