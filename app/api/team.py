"""The key's team: its summary, members, API keys and audit trail."""

from __future__ import annotations

from flask import g, request, url_for

from app.api import bp
from app.api.auth import scope_required
from app.api.body import json_body, no_body
from app.api.errors import ApiError
from app.api.images import int_arg, refuse_unknown_args
from app.models import ApiKey, AuditEvent, Membership, Team
from app.services import accounts, audit, keys, members
from app.tenancy import current_team_id
from app.views import current_actor


def iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _team() -> Team:
    return accounts.get_team(current_team_id())


@bp.get("/team")
@scope_required("read")
def get_team():
    summary = accounts.team_summary(current_team_id())
    return {
        "id": str(summary.team.id),
        "name": summary.team.name,
        "slug": summary.team.slug,
        "image_count": summary.image_count,
        "storage_bytes": summary.storage_bytes,
    }


def key_json(key: ApiKey, /, **extra) -> dict:
    return {
        "id": str(key.id),
        "name": key.name,
        "prefix": key.prefix,
        "scopes": key.scopes,
        "created_at": iso(key.created_at),
        "created_by": key.created_by.email if key.created_by else None,
        "expires_at": iso(key.expires_at),
        "last_used_at": iso(key.last_used_at),
        "revoked_at": iso(key.revoked_at),
        **extra,
    }


@bp.get("/keys")
@scope_required("admin")
def list_keys():
    refuse_unknown_args()
    return {"items": [key_json(k) for k in keys.list_keys()], "next_cursor": None}


@bp.post("/keys")
@scope_required("admin")
def create_key():
    body = json_body(("name", "scopes"), ("expires_in_days",))
    key, full = keys.create_key(
        _team(),
        body["name"],
        keys.parse_scopes(body["scopes"]),
        created_by=g.api_key.created_by,
        creator_role=g.api_creator_role,
        expires_in_days=body.get("expires_in_days"),
        actor=current_actor(),
    )
    return key_json(key, key=full), 201


@bp.delete("/keys/<key_id>")
@scope_required("admin")
def revoke_key(key_id):
    key = keys.get_key(key_id)
    keys.revoke_key(key, actor=current_actor())
    return "", 204


@bp.post("/keys/<key_id>/rotate")
@scope_required("admin")
def rotate_key(key_id):
    key = keys.get_key(key_id)
    no_body()
    new_key, full = keys.rotate_key(
        key,
        created_by=g.api_key.created_by,
        creator_role=g.api_creator_role,
        actor=current_actor(),
    )
    return key_json(new_key, key=full), 201


def member_json(membership: Membership) -> dict:
    return {
        "user_id": str(membership.user_id),
        "email": membership.user.email,
        "role": membership.role,
        "joined_at": iso(membership.created_at),
    }


@bp.get("/members")
@scope_required("admin")
def list_members():
    refuse_unknown_args()
    items = [member_json(m) for m in members.list_members(current_team_id())]
    return {"items": items, "next_cursor": None}


@bp.post("/members")
@scope_required("admin")
def add_member():
    """Always an invite, whether or not the email has an account (the answer does not say)."""
    body = json_body(("email", "role"), ("invite", "password"))
    if "password" in body:
        raise ApiError(
            400,
            "field password is not accepted: a team admin does not set passwords; the person "
            "chooses theirs with the invite link (or signs in with the account they have)",
        )
    if "invite" in body and body["invite"] is not True:
        raise ApiError(400, "field invite may only be true: members are added by invite")
    invite, token = members.create_invite(
        _team(), body["email"], body["role"], g.api_key.created_by, actor=current_actor()
    )
    link = url_for("auth.accept_invite", token=token, _external=True)
    return {
        "invite_url": link,
        "email": invite.email,
        "role": invite.role,
        "expires_at": iso(invite.expires_at),
    }, 201


@bp.patch("/members/<user_id>")
@scope_required("admin")
def change_member_role(user_id):
    body = json_body(("role",))
    membership = members.set_role(current_team_id(), user_id, body["role"], actor=current_actor())
    return member_json(membership)


@bp.delete("/members/<user_id>")
@scope_required("admin")
def remove_member(user_id):
    members.remove_member(current_team_id(), user_id, actor=current_actor())
    return "", 204


def event_json(event: AuditEvent) -> dict:
    target = event.target or (
        f"{event.target_type} {event.target_id}" if event.target_type else None
    )
    return {
        "id": event.id,
        "at": iso(event.at),
        "actor": event.actor,
        "actor_type": event.actor_type,
        "action": event.action,
        "target": target,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "ip": event.ip,
        "details": event.details or {},
    }


@bp.get("/audit")
@scope_required("admin")
def list_audit():
    refuse_unknown_args("limit", "cursor", "actor", "action")
    events, next_cursor = audit.list_events(
        int_arg("limit", 50, 1, 200),
        request.args.get("cursor") or None,
        actor=request.args.get("actor") or None,
        action=request.args.get("action") or None,
    )
    return {"items": [event_json(e) for e in events], "next_cursor": next_cursor}
