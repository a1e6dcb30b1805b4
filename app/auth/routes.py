from __future__ import annotations

from urllib.parse import urlsplit

from flask import abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, logout_user

from app.auth import bp
from app.errors import ServiceError
from app.extensions import login_manager
from app.models import User
from app.services import accounts, members, throttle
from app.services.accounts import SessionLifetimes
from app.views import SESSION_TOKEN, client_ip, http_status, use_session, user_agent


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    # The signed cookie alone is not enough: its login session must still be live (not ended
    # by logout or a password change, not idle or old past its lifetimes).
    return accounts.session_user(
        user_id,
        session.get(SESSION_TOKEN),
        SessionLifetimes.from_config(current_app.config),
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


def throttle_limits() -> throttle.Limits:
    return throttle.Limits.from_config(current_app.config)


def _refused(template: str, exc: ServiceError, **context):
    """The form again with the refusal shown; a throttled one says when to come back."""
    flash(exc.message, "error")
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
    return render_template(template, **context), http_status(exc), headers


@bp.route("/login", methods=["GET", "POST"])
def login():
    if not accounts.is_set_up():
        return redirect(url_for("auth.setup"))
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("auth/login.html", next=next_url)
    try:
        user, token = accounts.sign_in(
            request.form.get("email", ""),
            request.form.get("password", ""),
            ip=client_ip(),
            user_agent=user_agent(),
            limits=throttle_limits(),
        )
    except ServiceError as exc:
        email = request.form.get("email", "")[:254]
        return _refused("auth/login.html", exc, next=next_url, email=email)
    use_session(user, token)
    return redirect(next_url or url_for("gallery.index"))


@bp.post("/logout")
@login_required
def logout():
    accounts.sign_out(current_user._get_current_object(), session.get(SESSION_TOKEN), client_ip())
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    if accounts.is_set_up():
        abort(404)  # first run only
    if request.method == "POST":
        try:
            team, user, token = accounts.set_up(
                request.form.get("team", ""),
                request.form.get("email", ""),
                request.form.get("password", ""),
                ip=client_ip(),
                user_agent=user_agent(),
            )
        except ServiceError as exc:
            flash(exc.message, "error")
            return render_template("auth/setup.html", form=request.form), http_status(exc)
        use_session(user, token, team.id)
        return redirect(url_for("gallery.index"))
    return render_template("auth/setup.html", form={})


@bp.route("/invites/<token>", methods=["GET", "POST"])
def accept_invite(token: str):
    # Loaded first, before anything else touches the database (the loader may commit).
    signed_in = current_user._get_current_object() if current_user.is_authenticated else None
    invite = members.find_invite(token)
    # The owner, signed in, just confirms; anyone else sees one form for every address,
    # whether or not it has an account, so the page does not tell which.
    context = {"invite": invite, "owner_signed_in": signed_in and signed_in.email == invite.email}
    if request.method == "POST":
        try:
            invite, user, session_token = members.accept_invite(
                token,
                request.form.get("password", ""),
                signed_in=signed_in,
                ip=client_ip(),
                user_agent=user_agent(),
                limits=throttle_limits(),
            )
        except ServiceError as exc:
            return _refused("auth/invite.html", exc, **context)
        if session_token is None:  # the owner, signed in already: same session, new team
            session["team_id"] = str(invite.team_id)
        else:
            use_session(user, session_token, invite.team_id)
        return redirect(url_for("gallery.index"))
    return render_template("auth/invite.html", **context)
