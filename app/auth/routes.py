from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from flask import abort, flash, redirect, render_template, request, session, url_for
from flask_login import login_required, login_user, logout_user

from app.auth import bp
from app.extensions import db, login_manager
from app.models import User
from app.services import ServiceError, accounts


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    try:
        return db.session.get(User, uuid.UUID(user_id))
    except ValueError:
        return None


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


@bp.route("/login", methods=["GET", "POST"])
def login():
    if not accounts.has_users():
        return redirect(url_for("auth.setup"))
    next_url = safe_next(request.values.get("next"))
    if request.method == "POST":
        user = accounts.authenticate(
            request.form.get("email", ""), request.form.get("password", "")
        )
        if user is not None and user.memberships:
            session.clear()  # a fresh session at login
            login_user(user)
            return redirect(next_url or url_for("gallery.index"))
        flash("Wrong email or password.", "error")
        return render_template("auth/login.html", next=next_url), 401
    return render_template("auth/login.html", next=next_url)


@bp.post("/logout")
@login_required
def logout():
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
            db.session.commit()
        except ServiceError as exc:
            db.session.rollback()
            flash(exc.message, "error")
            return render_template("auth/setup.html", form=request.form), 422
        session.clear()
        login_user(user)
        session["team_id"] = str(team.id)
        return redirect(url_for("gallery.index"))
    return render_template("auth/setup.html", form={})
