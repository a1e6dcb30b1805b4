from __future__ import annotations

from urllib.parse import urlsplit

from flask import abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from app.auth import bp
from app.auth.current import client_ip, current_actor
from app.extensions import db, login_manager
from app.models import User
from app.services import ServiceError, accounts, audit, members, throttle
from app.services.audit import Actor

SESSION_TOKEN = "login_token"


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    # The signed cookie alone is not enough: its login session must still be live (not ended
    # by logout or a password change, not idle or old past its lifetimes).
    return accounts.session_user(
        user_id,
        session.get(SESSION_TOKEN),
        accounts.SessionLifetimes.from_config(current_app.config),
    )


@login_manager.unauthorized_handler
def unauthorized():
    login_url = url_for("auth.login", next=request.full_path.rstrip("?"))
    if request.headers.get("HX-Request"):
        return "", 401, {"HX-Redirect": login_url}
    return redirect(login_url)


def safe_next(target: str | None) -> str | None:
    """`target` if it is a path on this site, else None (no scheme, host or `//` tricks)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    if any(ord(ch) < 32 or ch == "\\" for ch in target):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def start_login(user: User, team_id=None) -> None:
    """A fresh session (new id, nothing carried over) for a user who just proved who they are."""
    session.clear()
    session[SESSION_TOKEN] = accounts.start_session(
        user, client_ip(), request.headers.get("User-Agent")
    )
    if team_id is not None:
        session["team_id"] = str(team_id)
    db.session.commit()
    login_user(user)


def _throttle_limits() -> throttle.Limits:
    return throttle.Limits.from_config(current_app.config)


def _record_login(action: str, email: str, user: User | None) -> None:
    actor = Actor.for_user(user, client_ip()) if user else Actor("anonymous", email, ip=client_ip())
    teams = [m.team_id for m in user.memberships] if user else [None]
    for team_id in teams:
        audit.record(actor, action, team_id, target_type="user", target=email)
    db.session.commit()


@bp.route("/login", methods=["GET", "POST"])
def login():
    if not accounts.has_users():
        return redirect(url_for("auth.setup"))
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("auth/login.html", next=next_url)

    email = accounts.normalise_email(request.form.get("email", ""))[:254]
    limits = _throttle_limits()
    wait = throttle.retry_after(email, client_ip(), limits)
    if wait:
        flash(f"Too many failed attempts. Try again in {wait // 60 + 1} minutes.", "error")
        page = render_template("auth/login.html", next=next_url)
        return page, 429, {"Retry-After": str(wait)}
    user = accounts.authenticate(email, request.form.get("password", ""))
    if user is None or not user.memberships:
        throttle.record_failure(email, client_ip(), limits)
        _record_login("auth.login_failed", email, accounts.get_user_by_email(email))
        # One message, status and (through the dummy hash) timing for every failure.
        flash("Wrong email or password.", "error")
        return render_template("auth/login.html", next=next_url), 401
    throttle.record_success(email, client_ip(), limits)
    _record_login("auth.login", email, user)
    start_login(user)
    return redirect(next_url or url_for("gallery.index"))


@bp.post("/logout")
@login_required
def logout():
    user = current_user._get_current_object()
    for membership in user.memberships:
        audit.record(current_actor(), "auth.logout", membership.team_id, target_type="user")
    accounts.end_session(session.get(SESSION_TOKEN))
    db.session.commit()
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    if accounts.has_users():
        abort(404)  # first run only
    if request.method == "POST":
        try:
            team = accounts.create_team(request.form.get("team", ""))
            user = accounts.create_user(
                request.form.get("email", ""), request.form.get("password", "")
            )
            accounts.add_member(user, team, "admin")
            audit.record(
                Actor.for_user(user, client_ip()),
                "team.create",
                team.id,
                target_type="team",
                target_id=team.id,
                target=team.name,
            )
            db.session.commit()
        except ServiceError as exc:
            db.session.rollback()
            flash(exc.message, "error")
            return render_template("auth/setup.html", form=request.form), 422
        start_login(user, team.id)
        return redirect(url_for("gallery.index"))
    return render_template("auth/setup.html", form={})


@bp.route("/invites/<token>", methods=["GET", "POST"])
def accept_invite(token: str):
    invite = members.find_invite(token)
    has_account = accounts.get_user_by_email(invite.email) is not None
    if request.method == "POST":
        # For an existing account the form is a password check: throttled like the login.
        limits = _throttle_limits()
        if has_account and (wait := throttle.retry_after(invite.email, client_ip(), limits)):
            flash(f"Too many failed attempts. Try again in {wait // 60 + 1} minutes.", "error")
            page = render_template("auth/invite.html", invite=invite, has_account=has_account)
            return page, 429, {"Retry-After": str(wait)}
        try:
            invite, user = members.accept_invite(
                token, request.form.get("password", ""), client_ip()
            )
            db.session.commit()
        except ServiceError as exc:
            db.session.rollback()
            if has_account:
                throttle.record_failure(invite.email, client_ip(), limits)
            flash(exc.message, "error")
            page = render_template("auth/invite.html", invite=invite, has_account=has_account)
            return page, exc.status
        start_login(user, invite.team_id)
        return redirect(url_for("gallery.index"))
    return render_template("auth/invite.html", invite=invite, has_account=has_account)
