"""The minimal gallery: first-run setup, login, the grid and its live status badges."""

from __future__ import annotations

import re

import pytest

from app.extensions import db
from app.services import accounts
from tests import samples

PASSWORD = "correct horse battery"


@pytest.fixture
def member(app, team_a):
    with app.app_context():
        user = accounts.create_user("Ann@Example.com", PASSWORD)
        accounts.add_member(user, db.session.merge(team_a.team), "member")
        db.session.commit()
    return "ann@example.com"


def test_first_visit_goes_to_setup_which_creates_team_and_admin(app, client):
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"].endswith("/setup")
    assert client.get("/login").headers["Location"].endswith("/setup")
    response = client.post(
        "/setup", data={"team": "Acme Photos", "email": "Boss@Acme.test", "password": PASSWORD}
    )
    assert response.status_code == 302
    page = client.get("/")
    assert page.status_code == 200
    assert b"Acme Photos" in page.data and b"boss@acme.test" in page.data
    with app.app_context():
        (membership,) = accounts.memberships_of(accounts.authenticate("boss@acme.test", PASSWORD))
        assert membership.role == "admin" and membership.team.slug == "acme-photos"
    # Setup is for the first run only.
    assert client.get("/setup").status_code == 404
    assert (
        client.post(
            "/setup", data={"team": "X", "email": "x@x.test", "password": PASSWORD}
        ).status_code
        == 404
    )


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"team": "", "email": "a@b.test", "password": PASSWORD}, b"team name"),
        ({"team": "T", "email": "not-an-email", "password": PASSWORD}, b"email"),
        ({"team": "T", "email": "a@b.test", "password": "short"}, b"10 characters"),
    ],
)
def test_setup_refuses_bad_input_and_creates_nothing(app, client, form, message):
    response = client.post("/setup", data=form)
    assert response.status_code == 422
    assert message in response.data
    with app.app_context():
        assert not accounts.has_users()


def test_login_and_logout(client, member):
    assert client.get("/").headers["Location"].startswith("/login")
    bad = client.post("/login", data={"email": member, "password": "wrong password!"})
    unknown = client.post("/login", data={"email": "who@example.com", "password": PASSWORD})
    assert bad.status_code == unknown.status_code == 401
    assert b"Wrong email or password" in bad.data and b"Wrong email or password" in unknown.data
    ok = client.post("/login", data={"email": "ANN@example.com ", "password": PASSWORD})
    assert ok.status_code == 302 and ok.headers["Location"] == "/"
    assert client.get("/").status_code == 200
    client.post("/logout")
    assert client.get("/").status_code == 302


@pytest.mark.parametrize(
    ("next_url", "expected"),
    [
        ("/images/abc/status", "/images/abc/status"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("https:evil.example", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/%0d%0aSet-Cookie:x=1", "/%0d%0aSet-Cookie:x=1"),
    ],
)
def test_login_next_only_goes_to_this_site(client, member, next_url, expected):
    response = client.post("/login", data={"email": member, "password": PASSWORD, "next": next_url})
    assert response.status_code == 302
    assert response.headers["Location"] == expected


def test_unauthenticated_htmx_request_gets_hx_redirect(client, member):
    response = client.get("/images/whatever/status", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login?next=")


def test_grid_shows_thumbnails_and_badges_that_stop_polling(
    client, member, team_a, upload, run_jobs
):
    item = upload(team_a, [(samples.jpeg(1), "<b>sunset<i>.jpg")]).json["items"][0]
    client.post("/login", data={"email": member, "password": PASSWORD})
    page = client.get("/").data.decode()
    assert "&lt;b&gt;sunset&lt;i&gt;.jpg" in page and "<b>sunset" not in page
    assert f"/images/{item['id']}/thumbnail" in page
    badge = re.search(r'<span class="badge[^>]*>', page).group(0)
    assert 'data-status="pending"' in badge and 'hx-trigger="every 2s"' in badge
    thumbnail = client.get(f"/images/{item['id']}/thumbnail")
    assert thumbnail.status_code == 200 and thumbnail.mimetype == "image/webp"

    run_jobs()
    fragment = client.get(
        f"/images/{item['id']}/status", headers={"HX-Request": "true"}
    ).data.decode()
    assert 'data-status="ready"' in fragment and "hx-trigger" not in fragment


def test_grid_pages_with_htmx_fragments(client, member, team_a, upload, app):
    from app.gallery import routes

    routes.PAGE_SIZE, old = 2, routes.PAGE_SIZE
    try:
        for i in range(3):
            upload(team_a, [(samples.jpeg(10 + i), f"{i}.jpg")])
        client.post("/login", data={"email": member, "password": PASSWORD})
        page = client.get("/")
        assert "HX-Request" in page.headers["Vary"]
        html = page.data.decode()
        assert html.count('class="tile"') == 2 and 'hx-trigger="revealed"' in html
        more_url = re.search(r'hx-get="([^"]+)"\s+hx-trigger="revealed"', html).group(1)
        fragment = client.get(
            more_url.replace("&amp;", "&"), headers={"HX-Request": "true"}
        ).data.decode()
        assert "<html" not in fragment and fragment.count('class="tile"') == 1
        assert "revealed" not in fragment
    finally:
        routes.PAGE_SIZE = old


def test_csrf_is_required_for_browser_forms(app, client, member):
    app.config["WTF_CSRF_ENABLED"] = True
    response = client.post("/login", data={"email": member, "password": PASSWORD})
    assert response.status_code == 400
    page = client.get("/login").data.decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post(
        "/login", data={"email": member, "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302
