"""One team's admin cannot take over, add or watch another team's people (issue 7, part 2).

Admins add people only by invite: the link holder sets the password of a new account, and an
existing account joins only when its owner proves it. The answer to the admin is the same
whether or not the email has an account. Sign-ins are the person's own events, not any team's.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import LoginSession, Membership, Team, User
from app.services import members
from app.services.audit import Actor
from tests import samples
from tests.conftest import PASSWORD, recorded_statements
from tests.test_accounts import without_csrf_tokens

NEWHIRE = "newhire@alpha.test"
ATTACKER_PASSWORD = "attacker-chosen"


def login(client, email, password=PASSWORD, address="127.0.0.1"):
    return client.post(
        "/login",
        data={"email": email, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )


def teams_of(app, email) -> set[str]:
    with app.app_context():
        return set(
            db.session.scalars(
                select(Team.name).join(Membership).join(User).where(User.email == email)
            )
        )


def account_exists(app, email) -> bool:
    with app.app_context():
        return db.session.scalar(select(User.id).where(User.email == email)) is not None


def add_member_api(client, team, body):
    return client.post("/api/v1/members", json=body, headers=team.headers())


def invite_path_from(response) -> str:
    """The path of the invite link in an API answer or a Settings page."""
    text = response.get_data(as_text=True)
    return re.search(r"(/invites/[A-Za-z0-9_-]+)", text).group(1)


def comparable(response) -> dict:
    """An invite answer less what differs from one invite to the next (token, time, address)."""
    body = dict(response.json)
    body["invite_url"] = re.sub(r"/invites/[A-Za-z0-9_-]+", "/invites/TOKEN", body["invite_url"])
    body.pop("expires_at", None)
    body.pop("email", None)
    return {"status": response.status_code, **body}


# --- step 1 and 2: no admin sets a password ------------------------------------------------


@pytest.mark.parametrize("side", ["team_a", "team_b"])
def test_api_refuses_a_password_for_a_new_member(app, client, team_a, team_b, person, side):
    team = {"team_a": team_a, "team_b": team_b}[side]
    person(team, "admin")  # someone exists, so /login answers rather than offering /setup
    response = add_member_api(
        client, team, {"email": NEWHIRE, "role": "viewer", "password": ATTACKER_PASSWORD}
    )
    assert response.status_code == 400
    assert response.json["error"]["code"] == "bad_request"
    assert "password" in response.json["error"]["message"]
    assert not account_exists(app, NEWHIRE)
    assert login(app.test_client(), NEWHIRE, ATTACKER_PASSWORD).status_code == 401


@pytest.mark.parametrize("side", ["team_a", "team_b"])
def test_settings_refuses_a_password_for_a_new_member(app, team_a, team_b, person, side):
    admin = person({"team_a": team_a, "team_b": team_b}[side], "admin")
    page = admin.client.get("/settings/members").get_data(as_text=True)
    assert 'name="password"' not in page  # the form no longer asks for one
    response = admin.client.post(
        "/settings/members",
        data={"email": NEWHIRE, "role": "viewer", "password": ATTACKER_PASSWORD, "mode": "add"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 422 and b"password" in response.data
    assert not account_exists(app, NEWHIRE)
    assert login(app.test_client(), NEWHIRE, ATTACKER_PASSWORD).status_code == 401


def test_the_issue_scenario_through_the_api(app, client, team_a, team_b, upload):
    """B invites first, A invites second: the new hire's own password opens only team A."""
    upload(team_a, [(samples.jpeg(1), "alpha-secret.jpg")])
    from_b = add_member_api(client, team_b, {"email": NEWHIRE, "role": "viewer"})
    from_a = add_member_api(client, team_a, {"email": NEWHIRE, "role": "member"})
    assert from_b.status_code == from_a.status_code == 201
    assert not account_exists(app, NEWHIRE)  # an invite creates no account

    # The real new hire gets A's link from A's admin and chooses the password.
    newhire = app.test_client()
    joined = newhire.post(invite_path_from(from_a), data={"password": "the hire's own"})
    assert joined.status_code == 302
    assert teams_of(app, NEWHIRE) == {"Team A"}
    assert "alpha-secret.jpg" in newhire.get("/").get_data(as_text=True)

    # B's admin holds B's link: it now needs the account's password, which B does not know.
    b_admin = app.test_client()
    refused = b_admin.post(invite_path_from(from_b), data={"password": ATTACKER_PASSWORD})
    assert refused.status_code == 422
    assert teams_of(app, NEWHIRE) == {"Team A"}
    assert login(app.test_client(), NEWHIRE, ATTACKER_PASSWORD).status_code == 401


def test_squatting_an_email_gives_no_way_into_the_other_team(app, client, team_a, team_b, upload):
    """B invites the address and accepts its own link; A's later invite keeps A's data safe."""
    upload(team_a, [(samples.jpeg(1), "alpha-secret.jpg")])
    from_b = add_member_api(client, team_b, {"email": NEWHIRE, "role": "admin"})
    squatter = app.test_client()
    squatted = squatter.post(invite_path_from(from_b), data={"password": ATTACKER_PASSWORD})
    assert squatted.status_code == 302
    assert teams_of(app, NEWHIRE) == {"Team B"}

    from_a = add_member_api(client, team_a, {"email": NEWHIRE, "role": "member"})
    assert from_a.status_code == 201
    assert teams_of(app, NEWHIRE) == {"Team B"}  # A's invite added nobody

    # The squatter, signed in with its password, cannot switch to A or see its images.
    assert login(squatter, NEWHIRE, ATTACKER_PASSWORD).status_code == 302
    assert squatter.post("/teams/switch", data={"team_id": str(team_a.id)}).status_code == 404
    assert "alpha-secret.jpg" not in squatter.get("/").get_data(as_text=True)

    # The real new hire, with A's link, cannot join through the squatted account either: the
    # link asks for that account's password. A's admin has to sort it out with an operator.
    real = app.test_client()
    refused = real.post(invite_path_from(from_a), data={"password": "the hire's own"})
    assert refused.status_code == 422
    assert teams_of(app, NEWHIRE) == {"Team B"}
    assert "alpha-secret.jpg" not in real.get("/").get_data(as_text=True)


# --- existing accounts join only with their owner's consent --------------------------------


@pytest.mark.parametrize("body_extra", [{}, {"invite": True}], ids=["plain", "invite"])
def test_an_admin_cannot_add_another_teams_admin_without_consent(
    app, client, team_a, team_b, person, body_extra
):
    a_admin = person(team_a, "admin", email="boss@alpha.test")
    response = add_member_api(
        client, team_b, {"email": a_admin.email, "role": "admin", **body_extra}
    )
    assert response.status_code == 201 and "/invites/" in response.json["invite_url"]
    assert teams_of(app, a_admin.email) == {"Team A"}
    listed = client.get("/api/v1/members", headers=team_b.headers()).json["items"]
    assert a_admin.email not in [m["email"] for m in listed]

    # B's admin holds the link; without A's admin's password it adds nobody.
    link = invite_path_from(response)
    assert app.test_client().post(link, data={"password": "a guess of B's"}).status_code == 422
    assert teams_of(app, a_admin.email) == {"Team A"}

    # A's admin, handed the link, accepts with their password: that is consent.
    assert app.test_client().post(link, data={"password": PASSWORD}).status_code == 302
    assert teams_of(app, a_admin.email) == {"Team A", "Team B"}


def test_settings_add_of_an_existing_account_is_an_invite(app, team_a, team_b, person):
    a_admin = person(team_a, "admin", email="boss@alpha.test")
    b_admin = person(team_b, "admin")
    response = b_admin.client.post(
        "/settings/members",
        data={"email": a_admin.email, "role": "admin", "mode": "add"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200 and "/invites/" in response.get_data(as_text=True)
    assert teams_of(app, a_admin.email) == {"Team A"}


def test_signed_in_owner_accepts_an_invite_without_retyping_the_password(
    app, client, team_a, team_b, person
):
    owner = person(team_a, "member", email="owner@alpha.test")
    link = invite_path_from(
        add_member_api(client, team_b, {"email": owner.email, "role": "viewer"})
    )
    page = owner.client.get(link).get_data(as_text=True)
    assert 'name="password"' not in page and "owner@alpha.test" in page
    assert owner.client.post(link).status_code == 302
    assert teams_of(app, owner.email) == {"Team A", "Team B"}
    with app.app_context():  # the same login session goes on, now looking at team B
        sessions = db.session.scalar(
            select(func.count())
            .select_from(LoginSession)
            .where(LoginSession.user_id == owner.user_id)
        )
    assert sessions == 1
    page = owner.client.get("/").get_data(as_text=True)
    assert "selected>Team B</option>" in page


def test_someone_else_signed_in_must_still_prove_the_invited_account(
    app, client, team_a, team_b, person
):
    owner = person(team_a, "member", email="owner@alpha.test")
    other = person(team_b, "admin", email="other@beta.test")
    link = invite_path_from(add_member_api(client, team_b, {"email": owner.email, "role": "admin"}))
    assert other.client.post(link).status_code == 422
    assert other.client.post(link, data={"password": "not the owner's"}).status_code == 422
    assert teams_of(app, owner.email) == {"Team A"}


# --- the answer does not say whether an email has an account --------------------------------


@pytest.mark.parametrize("body_extra", [{}, {"invite": True}], ids=["plain", "invite"])
def test_api_answer_is_the_same_for_existing_and_unknown_emails(
    app, client, team_a, team_b, person, body_extra
):
    person(team_a, "admin", email="exists@alpha.test")
    client.get("/api/v1/team", headers=team_b.headers())  # the key's once-a-minute touch
    statements, stop = recorded_statements(app)
    try:
        existing = add_member_api(
            client, team_b, {"email": "exists@alpha.test", "role": "member", **body_extra}
        )
        existing_statements = list(statements)
        statements.clear()
        unknown = add_member_api(
            client, team_b, {"email": "nobody@alpha.test", "role": "member", **body_extra}
        )
    finally:
        stop()
    assert comparable(existing) == comparable(unknown)
    assert existing.json["email"] == "exists@alpha.test"
    # The same work, statement for statement: no timing difference to measure.
    assert existing_statements == statements


def test_settings_answer_is_the_same_for_existing_and_unknown_emails(app, team_a, team_b, person):
    person(team_a, "admin", email="exists@alpha.test")
    b_admin = person(team_b, "admin")
    pages = {}
    for email in ("exists@alpha.test", "nobody@alpha.test"):
        response = b_admin.client.post(
            "/settings/members",
            data={"email": email, "role": "member"},
            headers={"HX-Request": "true"},
        )
        # Less the CSRF tokens, whose timestamp differs when the two fall in different seconds.
        text = without_csrf_tokens(response).replace(email, "EMAIL")
        pages[email] = (response.status_code, re.sub(r"/invites/[A-Za-z0-9_-]+", "LINK", text))
        # The panel lists pending invites: revoke this one, so both answers start alike.
        with app.app_context():
            for invite in members.pending_invites(team_b.id):
                members.revoke_invite(team_b.id, invite.id, actor=Actor.system())
    assert pages["exists@alpha.test"] == pages["nobody@alpha.test"]


def test_invite_page_is_the_same_for_existing_and_unknown_emails(
    app, client, team_a, team_b, person
):
    person(team_a, "admin", email="exists@alpha.test")
    pages = []
    for email in ("exists@alpha.test", "nobody@alpha.test"):
        link = invite_path_from(add_member_api(client, team_b, {"email": email, "role": "viewer"}))
        page = app.test_client().get(link)
        pages.append((page.status_code, without_csrf_tokens(page).replace(email, "EMAIL")))
    assert pages[0] == pages[1]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"email": "x@example.com", "role": "member", "invite": False}, "invite"),
        ({"email": "x@example.com", "role": "member", "invite": "yes"}, "invite"),
    ],
)
def test_members_api_refuses_anything_but_an_invite(app, client, team_a, body, message):
    response = add_member_api(client, team_a, body)
    assert response.status_code == 400 and message in response.json["error"]["message"]
    assert not account_exists(app, "x@example.com")


# --- sign-ins are the person's own events --------------------------------------------------


def team_audit(client, team) -> str:
    response = client.get("/api/v1/audit", query_string={"limit": 200}, headers=team.headers())
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_a_teams_audit_log_does_not_show_its_members_sign_ins(app, client, team_a, team_b, person):
    someone = person(team_a, "member", email="traveller@alpha.test")
    person(team_b, "viewer", email="traveller@alpha.test")  # a member of both teams
    traveller = app.test_client()
    assert login(traveller, someone.email, "wrong password", "198.51.100.7").status_code == 401
    assert login(traveller, someone.email, PASSWORD, "198.51.100.7").status_code == 302
    traveller.post("/settings/password", data={"current_password": "x", "new_password": "y"})
    changed = traveller.post(
        "/settings/password",
        data={"current_password": PASSWORD, "new_password": "a new passphrase"},
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    )
    assert changed.status_code == 302
    traveller.post("/logout", environ_base={"REMOTE_ADDR": "198.51.100.7"})
    for team in (team_a, team_b):
        log = team_audit(client, team)
        assert "198.51.100.7" not in log
        assert '"auth.' not in log


def test_the_person_sees_their_own_sign_ins_in_settings(app, team_a, team_b, person):
    someone = person(team_a, "member", email="me@alpha.test")
    login(app.test_client(), someone.email, "wrong password", "203.0.113.50")
    login(app.test_client(), someone.email, PASSWORD, "198.51.100.7")
    page = someone.client.get("/settings/").get_data(as_text=True)
    assert "Recent sign-ins" in page
    assert "198.51.100.7" in page and "203.0.113.50" in page
    # Someone else's sign-ins are not on this person's page.
    other = person(team_a, "admin", email="other@alpha.test")
    login(app.test_client(), other.email, PASSWORD, "192.0.2.99")
    assert "192.0.2.99" not in someone.client.get("/settings/").get_data(as_text=True)


def test_operators_read_a_persons_sign_ins_on_the_command_line(app, runner, team_a, person):
    someone = person(team_a, "member", email="me@alpha.test")
    login(app.test_client(), someone.email, "wrong password", "203.0.113.50")
    login(app.test_client(), someone.email, PASSWORD, "198.51.100.7")
    result = runner.invoke(args=["audit", "user", "ME@alpha.test"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert any("auth.login_failed" in line and "203.0.113.50" in line for line in lines)
    assert any("auth.login" in line and "198.51.100.7" in line for line in lines)
    assert re.fullmatch(r"\d+ events", lines[-1])
    missing = runner.invoke(args=["audit", "user", "nobody@alpha.test"])
    assert missing.exit_code == 0 and missing.output.strip().splitlines()[-1] == "0 events"


def test_team_logs_keep_the_actions_taken_in_the_team(app, client, team_a, team_b, person):
    person(team_a, "member", email="joiner@alpha.test")
    response = add_member_api(client, team_b, {"email": "joiner@alpha.test", "role": "viewer"})
    app.test_client().post(invite_path_from(response), data={"password": PASSWORD})
    b_log = client.get("/api/v1/audit", headers=team_b.headers()).json["items"]
    actions = [e["action"] for e in b_log]
    assert actions[:2] == ["member.join", "member.invite"]
    assert b_log[0]["actor"] == "joiner@alpha.test" and b_log[0]["details"] == {"role": "viewer"}
    assert '"member.' not in team_audit(client, team_a)
