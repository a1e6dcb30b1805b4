from __future__ import annotations

from flask import current_app, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required

from app.errors import NotFound, ServiceError, ValidationFailed
from app.services import accounts, audit, keys, members, throttle
from app.settings import bp
from app.views import (
    choose_team,
    current_actor,
    fragment_or_page,
    http_status,
    role_required,
    use_session,
    user_agent,
    whole_number,
)

AUDIT_PAGE_SIZE = 50
PASSWORDS_ARE_THEIRS = (
    "a team admin does not set passwords: send the invite link, and the person chooses "
    "their own password (or signs in with the account they have)"
)


@bp.before_request
@login_required
def require_team():
    return choose_team()


def _team():
    return g.membership.team


def _account_page(status: int = 200):
    events = audit.personal_events(current_user._get_current_object())
    return render_template("settings/account.html", sign_ins=events), status


@bp.get("/")
def account():
    return _account_page()


@bp.post("/password")
def change_password():
    user = current_user._get_current_object()
    try:
        token = accounts.change_password(
            user,
            request.form.get("current_password", ""),
            request.form.get("new_password", ""),
            actor=current_actor(),
            user_agent=user_agent(),
            limits=throttle.Limits.from_config(current_app.config),
        )
    except ServiceError as exc:
        flash(exc.message, "error")
        page, status = _account_page(http_status(exc))
        return page, status, {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
    # Every session of this account ended with the change; this browser has the new one.
    use_session(user, token, session.get("team_id"))
    flash("Password changed. Other sessions are signed out.", "info")
    return redirect(url_for("settings.account"))


# --- members -----------------------------------------------------------------------------


def _members_page(status: int = 200, **context):
    context.setdefault("members", members.list_members(_team().id))
    context.setdefault("invites", members.pending_invites(_team().id))
    return fragment_or_page("settings/_members.html", "settings/members.html", status, **context)


@bp.get("/members")
@role_required("admin")
def list_members():
    return _members_page()


@bp.post("/members")
@role_required("admin")
def add_member():
    """Always an invite: the person sets their own password, or proves their account."""
    if request.form.get("password"):
        return _members_page(422, error=PASSWORDS_ARE_THEIRS)
    try:
        invite, token = members.create_invite(
            _team(),
            request.form.get("email", ""),
            request.form.get("role", "member"),
            current_user,
            actor=current_actor(),
        )
    except ServiceError as exc:
        return _members_page(http_status(exc), error=exc.message)
    link = url_for("auth.accept_invite", token=token, _external=True)
    return _members_page(invite_link=link, invite=invite)


@bp.post("/members/<user_id>/role")
@role_required("admin")
def change_role(user_id: str):
    try:
        role = request.form.get("role", "")
        members.set_role(_team().id, user_id, role, actor=current_actor())
    except NotFound:
        raise
    except ServiceError as exc:
        return _members_page(http_status(exc), error=exc.message)
    if user_id == str(current_user.id) and role != "admin":
        return _leave_members_panel(f"You are now {role} in this team.")
    return _members_page()


@bp.post("/members/<user_id>/remove")
@role_required("admin")
def remove_member(user_id: str):
    try:
        members.remove_member(_team().id, user_id, actor=current_actor())
    except NotFound:
        raise
    except ServiceError as exc:
        return _members_page(http_status(exc), error=exc.message)
    if user_id == str(current_user.id):
        return _leave_members_panel("You left the team.", url_for("gallery.index"))
    return _members_page()


def _leave_members_panel(message: str, target: str | None = None):
    """After an admin changed their own role away from admin (or left): the panel is no longer
    theirs to use, so the page goes elsewhere rather than show buttons that would refuse."""
    flash(message, "info")
    target = target or url_for("settings.account")
    if request.headers.get("HX-Request"):
        return "", 204, {"HX-Redirect": target}
    return redirect(target)


@bp.post("/invites/<invite_id>/revoke")
@role_required("admin")
def revoke_invite(invite_id: str):
    try:
        invite = members.revoke_invite(_team().id, invite_id, actor=current_actor())
    except NotFound:
        raise
    except ServiceError as exc:
        return _members_page(http_status(exc), error=exc.message)
    message = f"The invite for {invite.email} no longer works."
    if request.headers.get("HX-Request"):
        return _members_page(message=message)
    flash(message, "info")
    return redirect(url_for("settings.list_members"))


# --- API keys ----------------------------------------------------------------------------


def _keys_page(status: int = 200, **context):
    context.setdefault("api_keys", keys.list_keys())
    context.setdefault("presets", keys.PRESETS)
    return fragment_or_page("settings/_keys.html", "settings/keys.html", status, **context)


@bp.get("/keys")
@role_required("admin")
def list_keys():
    return _keys_page()


@bp.post("/keys")
@role_required("admin")
def create_key():
    typed = request.form.get("expires_in_days", "").strip()
    days = whole_number(typed) if typed else None
    try:
        if typed and days is None:
            raise ValidationFailed("expiry is a whole number of days")
        key, full = keys.create_key(
            _team(),
            request.form.get("name", ""),
            keys.parse_scopes(request.form.get("scopes", "read-only")),
            created_by=current_user,
            creator_role=g.membership.role,
            expires_in_days=days,
            actor=current_actor(),
        )
    except ServiceError as exc:
        return _keys_page(http_status(exc), error=exc.message)
    return _keys_page(new_key=full, new_key_name=key.name)


@bp.post("/keys/<key_id>/revoke")
@role_required("admin")
def revoke_key(key_id: str):
    keys.revoke_key(keys.get_key(key_id), actor=current_actor())
    return _keys_page()


@bp.post("/keys/<key_id>/rotate")
@role_required("admin")
def rotate_key(key_id: str):
    key = keys.get_key(key_id)
    try:
        new_key, full = keys.rotate_key(
            key,
            created_by=current_user,
            creator_role=g.membership.role,
            actor=current_actor(),
        )
    except ServiceError as exc:
        return _keys_page(http_status(exc), error=exc.message)
    return _keys_page(new_key=full, new_key_name=new_key.name)


# --- audit -------------------------------------------------------------------------------


@bp.get("/audit")
@role_required("admin")
def list_audit():
    actor = request.args.get("actor", "").strip()[:300] or None
    action = request.args.get("action", "").strip()[:50] or None
    events, next_cursor = audit.list_events(
        AUDIT_PAGE_SIZE, request.args.get("cursor") or None, actor=actor, action=action
    )
    return fragment_or_page(
        "settings/_audit_rows.html",
        "settings/audit.html",
        events=events,
        next_cursor=next_cursor,
        actor=actor or "",
        action=action or "",
    )
