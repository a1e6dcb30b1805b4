"""Ways back into a team or an account that should be closed: invites of an admin no longer
admin, unthrottled password guesses, /setup after an operator made a team, and addresses
longer than their column."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import Invite, User
from app.services import accounts
from tests.conftest import PASSWORD
from tests.test_teams_and_roles import invite_path, role_of

LONG_EMAIL = "a" * 64 + "@" + "b" * 240 + ".example"  # 313 characters: the column holds 254


# --- an address longer than the column is a 422, never a database error -----------------


def test_an_email_longer_than_its_column_is_refused_everywhere(app, client, team_a, person):
    admin = person(team_a, "admin")
    page = admin.client.post("/settings/members", data={"email": LONG_EMAIL, "role": "member"})
    assert page.status_code == 422, page.status_code
    api = client.post(
        "/api/v1/members", json={"email": LONG_EMAIL, "role": "member"}, headers=team_a.headers()
    )
    assert api.status_code == 422, api.json
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Invite)) == 0


def test_setup_refuses_an_email_longer_than_its_column(app):
    response = app.test_client().post(
        "/setup", data={"team": "Acme", "email": LONG_EMAIL, "password": PASSWORD}
    )
    assert response.status_code == 422
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 0


# --- an invite is worth no more than its maker's standing in the team ---------------------


def test_a_removed_admins_invites_stop_working(app, team_a, person):
    staying = person(team_a, "admin")
    leaving = person(team_a, "admin")
    link = invite_path(leaving, "sock-puppet@example.com", "admin")
    staying.client.post(f"/settings/members/{leaving.user_id}/remove")
    accepted = app.test_client().post(link, data={"password": "sock puppet password"})
    assert accepted.status_code == 404
    assert role_of(app, team_a, "sock-puppet@example.com") is None


def test_a_demoted_admins_invites_stop_working(app, team_a, person):
    staying = person(team_a, "admin")
    demoted = person(team_a, "admin")
    link = invite_path(demoted, "sock-puppet@example.com", "admin")
    staying.client.post(f"/settings/members/{demoted.user_id}/role", data={"role": "viewer"})
    accepted = app.test_client().post(link, data={"password": "sock puppet password"})
    assert accepted.status_code == 404
    assert role_of(app, team_a, "sock-puppet@example.com") is None


# --- the current password asked on a password change is throttled like a login ------------


@pytest.mark.parametrize(
    "config_overrides", [{"LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS": 3}], ids=["three-tries"]
)
def test_guessing_the_current_password_in_settings_is_throttled(app, team_a, person):
    """A borrowed session (an unlocked laptop) must not be a place to guess the password
    without limit, and then change it and keep the account."""
    someone = person(team_a, "member", email="unlocked@example.com")
    for n in range(3):
        wrong = someone.client.post(
            "/settings/password",
            data={"current_password": f"guess number {n}", "new_password": "taken over now"},
        )
        assert wrong.status_code == 422
    blocked = someone.client.post(
        "/settings/password",
        data={"current_password": PASSWORD, "new_password": "taken over now"},
    )
    assert blocked.status_code == 429 and "Retry-After" in blocked.headers
    # The password did not change, and the failures count against signing in too.
    assert app.test_client().post(
        "/login", data={"email": someone.email, "password": "taken over now"}
    ).status_code in (401, 429)
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == someone.email))
        assert accounts.password_matches(user, PASSWORD)


# --- /setup is for a fresh instance, not one whose teams the operator made -----------------


def test_setup_is_closed_once_an_operator_has_made_a_team(app, runner):
    """An operator who starts on the command line (a team, then an invite for its first
    admin) has no user until the invite is accepted: no stranger may make themselves a team
    and an account meanwhile."""
    assert runner.invoke(args=["teams", "create", "Acme Photos"]).exit_code == 0
    stranger = app.test_client()
    assert stranger.get("/setup").status_code == 404
    made = stranger.post(
        "/setup", data={"team": "Squatters", "email": "me@evil.example", "password": PASSWORD}
    )
    assert made.status_code == 404
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 0
    # The way in is the login page (or an invite), not a redirect to a page that refuses.
    assert stranger.get("/login").status_code == 200
    assert stranger.get("/").headers["Location"].startswith("/login")


def test_leaving_one_team_keeps_the_invites_sent_for_another(app, team_a, team_b, person):
    admin_of_both = person(team_a, "admin", email="both-teams@example.com")
    person(team_b, "admin", email="both-teams@example.com")
    person(team_b, "admin")
    staying_in_a = person(team_a, "admin")
    admin_of_both.client.post("/teams/switch", data={"team_id": str(team_b.id)})
    link_for_b = invite_path(admin_of_both, "newcomer@example.com", "member")
    staying_in_a.client.post(f"/settings/members/{admin_of_both.user_id}/remove")
    joined = app.test_client().post(link_for_b, data={"password": "newcomer password"})
    assert joined.status_code == 302
    assert role_of(app, team_b, "newcomer@example.com") == "member"
