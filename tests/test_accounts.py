"""Browser accounts: hashing, normalised emails, throttled logins, sessions that really end."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app import create_app
from app.errors import Conflict
from app.extensions import db
from app.models import LoginSession, Team, User, utcnow
from app.services import accounts
from tests.conftest import PASSWORD, make_config


def login(client, email, password=PASSWORD, **headers):
    return client.post("/login", data={"email": email, "password": password}, headers=headers)


def session_cookie(client) -> str:
    cookie = client.get_cookie("session")
    return cookie.value if cookie else ""


def app_with_account(app_env, team, email, role="member", **overrides):
    """A second app over the same database, configured differently, with one account in it."""
    configured = create_app(make_config(app_env, **overrides))
    with configured.app_context():
        user = accounts.create_user(email, PASSWORD)
        accounts.add_member(user, db.session.get(Team, team.id), role)
        db.session.commit()
    return configured


def test_passwords_are_stored_with_a_slow_salted_hash(app, team_a, person):
    someone = person(team_a, "member", email="hash@example.com")
    with app.app_context():
        stored = db.session.scalar(select(User.password_hash).where(User.email == someone.email))
    assert stored.startswith("scrypt:") and PASSWORD not in stored


def test_emails_are_nfkc_normalised_and_case_folded(app, team_a, person):
    person(team_a, "member", email="bob@example.com")
    with app.app_context(), pytest.raises(Conflict):
        accounts.create_user("ＢＯＢ@Example.COM", "another long password")  # fullwidth letters
    assert login(app.test_client(), "ＢＯＢ@EXAMPLE.com").status_code == 302


def without_csrf_tokens(response) -> str:
    """The page, less its CSRF tokens: they carry a timestamp, the one part that may differ."""
    page = re.sub(r'"X-CSRFToken": "[^"]+"', "", response.get_data(as_text=True))
    return re.sub(r'name="csrf_token" value="[^"]+"', "", page)


def test_unknown_email_and_wrong_password_look_the_same(app, team_a, person, monkeypatch):
    person(team_a, "member", email="real@example.com")
    client = app.test_client()
    checks: list[tuple] = []
    scrypt = hashlib.scrypt

    def counted_scrypt(password, *, salt, n, r, p, maxmem=0, dklen=64):
        checks.append((n, r, p, maxmem, dklen, len(salt)))
        return scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)

    monkeypatch.setattr(hashlib, "scrypt", counted_scrypt)
    work, pages = {}, {}
    for kind, email in (("wrong", "real@example.com"), ("unknown", "ghost@example.com")):
        checks.clear()
        response = login(client, email, "not the password")
        work[kind] = list(checks)
        # The form keeps the email as typed, whichever it is.
        assert f'value="{email}"' in response.get_data(as_text=True)
        pages[kind] = (response.status_code, without_csrf_tokens(response).replace(email, "EMAIL"))
    assert pages["wrong"] == pages["unknown"]
    assert pages["wrong"][0] == 401
    # The time of a failed login is one scrypt check (~50 ms; the rest takes about one): an
    # unknown email pays for exactly the check a wrong password does, at the same cost.
    assert work["wrong"] == work["unknown"]
    assert len(work["wrong"]) == 1


THROTTLE = {
    "LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS": 3,
    "LOGIN_MAX_FAILURES_PER_ADDRESS": 6,
    "LOGIN_MAX_FAILURES_PER_ACCOUNT": 10,
    "LOGIN_THROTTLE_WINDOW_SECONDS": 2,
}
tight_throttle = pytest.mark.parametrize("config_overrides", [THROTTLE], ids=["throttle"])
# For tests that never wait for the window to pass: a slow machine must not let it pass early.
long_window = pytest.mark.parametrize(
    "config_overrides",
    [{**THROTTLE, "LOGIN_THROTTLE_WINDOW_SECONDS": 60}],
    ids=["throttle"],
)


@tight_throttle
def test_login_is_throttled_per_account_and_address_then_allowed_again(app, team_a, person):
    person(team_a, "member", email="target@example.com")
    client = app.test_client()
    for _ in range(3):
        assert login(client, "target@example.com", "guess guess guess").status_code == 401
    blocked = login(client, "target@example.com")  # even the right password waits
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 2
    assert b"Too many failed attempts" in blocked.data
    time.sleep(2.2)  # the window passes: no permanent lockout
    assert login(client, "target@example.com").status_code == 302


@long_window
def test_login_is_throttled_per_client_address(app, team_a, person):
    person(team_a, "member", email="victim@example.com")
    client = app.test_client()
    for n in range(6):  # spread over accounts so no single account trips
        login(client, f"spray{n}@example.com", "guess guess guess")
    assert login(client, "victim@example.com").status_code == 429
    # A spoofed X-Forwarded-For changes nothing when no proxy is trusted.
    assert (
        login(client, "victim@example.com", **{"X-Forwarded-For": "203.0.113.9"}).status_code == 429
    )
    other_address = app.test_client()
    response = other_address.post(
        "/login",
        data={"email": "victim@example.com", "password": PASSWORD},
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    )
    assert response.status_code == 302


def login_from(client, address, email, password=PASSWORD):
    return client.post(
        "/login",
        data={"email": email, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )


@long_window
def test_an_attacker_cannot_lock_the_owner_out_from_another_address(app, team_a, person):
    person(team_a, "member", email="owner@example.com")
    attacker = app.test_client()
    answers = [
        login_from(attacker, "203.0.113.66", "owner@example.com", "guess guess guess").status_code
        for _ in range(20)
    ]
    assert answers == [401] * 3 + [429] * 17  # refused ones are not even checked
    # The attacker's address waits, even with the right password ...
    assert login_from(attacker, "203.0.113.66", "owner@example.com").status_code == 429
    # ... while the owner, from their own address, signs in as usual.
    assert login_from(app.test_client(), "198.51.100.7", "owner@example.com").status_code == 302


@long_window
def test_failures_from_many_addresses_reach_the_higher_per_account_ceiling(app, team_a, person):
    person(team_a, "member", email="popular@example.com")
    for n in range(5):  # two guesses from each of five addresses: no pair or address trips
        for _ in range(2):
            response = login_from(
                app.test_client(), f"203.0.113.{n}", "popular@example.com", "guess guess!"
            )
            assert response.status_code == 401
    blocked = login_from(app.test_client(), "198.51.100.7", "popular@example.com")
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1


@long_window
def test_a_successful_login_clears_its_own_address_counter(app, team_a, person):
    person(team_a, "member", email="typo@example.com")
    client = app.test_client()
    for _ in range(2):
        response = login_from(client, "198.51.100.7", "typo@example.com", "typo typo typo")
        assert response.status_code == 401
    assert login_from(client, "198.51.100.7", "typo@example.com").status_code == 302
    for _ in range(2):  # two more typos: had the counter stayed, the third would be refused
        response = login_from(app.test_client(), "198.51.100.7", "typo@example.com", "typo!!!!!")
        assert response.status_code == 401
    assert login_from(app.test_client(), "198.51.100.7", "typo@example.com").status_code == 302


def test_forwarded_for_is_trusted_only_behind_a_configured_proxy(app_env, team_a):
    proxied = app_with_account(
        app_env,
        team_a,
        "proxied@example.com",
        TRUSTED_PROXY_COUNT=1,
        LOGIN_MAX_FAILURES_PER_ADDRESS=2,
    )
    client = proxied.test_client()
    for n in range(2):
        login(client, f"x{n}@example.com", "nope nope nope", **{"X-Forwarded-For": "203.0.113.1"})
    limited = login(client, "proxied@example.com", **{"X-Forwarded-For": "203.0.113.1"})
    assert limited.status_code == 429
    # Behind the proxy, another client address is another bucket.
    assert (
        login(client, "proxied@example.com", **{"X-Forwarded-For": "203.0.113.2"}).status_code
        == 302
    )


def test_session_cookie_flags(app_env, team_a):
    production_like = app_with_account(
        app_env, team_a, "cookie@example.com", SESSION_COOKIE_SECURE=True
    )
    response = login(production_like.test_client(), "cookie@example.com")
    header = response.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Secure" in header


def test_secure_cookies_are_the_default_outside_development(monkeypatch):
    import importlib

    import config

    monkeypatch.setenv("LIKENESS_ENV", "production")
    assert importlib.reload(config).Config.SESSION_COOKIE_SECURE is True
    monkeypatch.setenv("LIKENESS_ENV", "development")
    assert importlib.reload(config).Config.SESSION_COOKIE_SECURE is False
    monkeypatch.delenv("LIKENESS_ENV")
    importlib.reload(config)


def test_login_starts_a_new_session(app, team_a, person):
    person(team_a, "member", email="fixation@example.com")
    client = app.test_client()
    client.get("/login")
    planted = session_cookie(client)  # a pre-login cookie an attacker could have set
    assert login(client, "fixation@example.com").status_code == 302
    assert session_cookie(client) != planted
    victim_view = app.test_client()
    victim_view.set_cookie("session", planted)
    assert victim_view.get("/").status_code == 302  # the planted session is not signed in


def test_logout_ends_a_copied_session_cookie(app, team_a, person):
    someone = person(team_a, "member")
    copied = session_cookie(someone.client)
    someone.client.post("/logout")
    thief = app.test_client()
    thief.set_cookie("session", copied)
    response = thief.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_password_change_ends_other_sessions_and_keeps_this_one(app, team_a, person):
    someone = person(team_a, "member", email="changer@example.com")
    other_device = app.test_client()
    assert login(other_device, "changer@example.com").status_code == 302
    response = someone.client.post(
        "/settings/password",
        data={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
    )
    assert response.status_code == 302
    assert someone.client.get("/").status_code == 200  # this browser stays signed in
    assert other_device.get("/").status_code == 302  # the other one is signed out
    assert login(app.test_client(), "changer@example.com").status_code == 401
    assert (
        login(app.test_client(), "changer@example.com", "a brand new passphrase").status_code == 302
    )


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"current_password": "wrong wrong wrong", "new_password": "a brand new one!"}, b"current"),
        ({"current_password": PASSWORD, "new_password": "short"}, b"10 characters"),
    ],
)
def test_password_change_refuses_bad_input(app, team_a, person, form, message):
    someone = person(team_a, "member", email="keeper@example.com")
    response = someone.client.post("/settings/password", data=form)
    assert response.status_code == 422 and message in response.data
    assert login(app.test_client(), "keeper@example.com").status_code == 302


def test_htmx_requests_send_the_csrf_token_in_a_header(app_env, team_a):
    protected = app_with_account(
        app_env, team_a, "csrf@example.com", "admin", WTF_CSRF_ENABLED=True
    )
    client = protected.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    client.post(
        "/login", data={"email": "csrf@example.com", "password": PASSWORD, "csrf_token": token}
    )
    gallery = client.get("/").get_data(as_text=True)
    header_token = re.search(r'"X-CSRFToken": "([^"]+)"', gallery).group(1)
    form = {"name": "from htmx", "scopes": "read-only"}
    refused = client.post("/settings/keys", data=form, headers={"HX-Request": "true"})
    assert refused.status_code == 400
    accepted = client.post(
        "/settings/keys", data=form, headers={"HX-Request": "true", "X-CSRFToken": header_token}
    )
    assert accepted.status_code == 200 and b"lk_" in accepted.data


def test_unauthenticated_api_requests_get_json_401(client):
    response = client.get("/api/v1/team")
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"


# --- session lifetimes --------------------------------------------------------------------


def latest_session(app, email) -> LoginSession:
    with app.app_context():
        return db.session.scalar(
            select(LoginSession)
            .join(User, User.id == LoginSession.user_id)
            .where(User.email == email)
            .order_by(LoginSession.created_at.desc())
        )


def set_session_times(app, session_id, **times) -> None:
    """Move a login session back in time by editing its row (no sleeping)."""
    with app.app_context():
        db.session.execute(
            update(LoginSession).where(LoginSession.id == session_id).values(**times)
        )
        db.session.commit()


def signed_in(client) -> bool:
    response = client.get("/")
    return response.status_code == 200


def test_an_idle_session_expires(app, team_a, person):
    someone = person(team_a, "member", email="idle@example.com")
    record = latest_session(app, someone.email)
    now = utcnow()
    set_session_times(app, record.id, last_seen_at=now - timedelta(days=7) + timedelta(minutes=5))
    assert signed_in(someone.client)  # idle for a little under 7 days: still signed in
    set_session_times(app, record.id, last_seen_at=now - timedelta(days=7, minutes=1))
    response = someone.client.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    set_session_times(app, record.id, last_seen_at=utcnow())  # no way back for the cookie
    assert not signed_in(someone.client)


def test_a_busy_session_still_ends_at_its_absolute_lifetime(app, team_a, person):
    someone = person(team_a, "member", email="busy@example.com")
    record = latest_session(app, someone.email)
    set_session_times(app, record.id, created_at=utcnow() - timedelta(days=29, hours=23))
    assert signed_in(someone.client)
    set_session_times(app, record.id, created_at=utcnow() - timedelta(days=30, minutes=1))
    assert not signed_in(someone.client)  # in use every minute, and still over
    assert login(someone.client, someone.email).status_code == 302  # a new login is a new session
    assert signed_in(someone.client)


@pytest.mark.parametrize(
    "config_overrides",
    [{"SESSION_IDLE_TIMEOUT_SECONDS": 3600, "SESSION_ABSOLUTE_TIMEOUT_SECONDS": 4 * 3600}],
    ids=["short"],
)
def test_session_lifetimes_are_configurable(app, team_a, person):
    idle = person(team_a, "member", email="idle@example.com")
    record = latest_session(app, idle.email)
    set_session_times(app, record.id, last_seen_at=utcnow() - timedelta(minutes=61))
    assert not signed_in(idle.client)
    old = person(team_a, "member", email="old@example.com")
    record = latest_session(app, old.email)
    set_session_times(app, record.id, created_at=utcnow() - timedelta(hours=4, minutes=1))
    assert not signed_in(old.client)


def test_last_seen_is_written_at_most_once_a_minute(app, team_a, person):
    someone = person(team_a, "member", email="seen@example.com")
    record = latest_session(app, someone.email)
    assert signed_in(someone.client)
    first = latest_session(app, someone.email).last_seen_at
    assert signed_in(someone.client)
    assert latest_session(app, someone.email).last_seen_at == first  # no write per request
    earlier = utcnow() - timedelta(minutes=2)
    set_session_times(app, record.id, last_seen_at=earlier)
    assert signed_in(someone.client)
    assert latest_session(app, someone.email).last_seen_at > earlier + timedelta(minutes=1)
