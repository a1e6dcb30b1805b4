"""The key's team: its summary, members, API keys and audit trail."""

from __future__ import annotations

from flask import g, url_for

from app.api import bp
from app.api.auth import scope_required
from app.api.responses import no_content
from app.api.schemas import (
    AddMemberSchema,
    AuditArgs,
    AuditEventSchema,
    ChangeRoleSchema,
    CreateKeySchema,
    EmptySchema,
    InviteSchema,
    KeySchema,
    ListArgs,
    MemberSchema,
    NewKeySchema,
    TeamSchema,
    With,
    page_of,
)
from app.models import Team
from app.services import accounts, audit, keys, members
from app.tenancy import current_team_id
from app.views import current_actor


def _team() -> Team:
    return accounts.get_team(current_team_id())


@bp.get("/team", tags=["team"])
@scope_required("read")
@bp.response(200, TeamSchema)
def get_team():
    """The key's team, with its image count and the bytes it stores."""
    return accounts.team_summary(current_team_id())


@bp.get("/keys", tags=["keys"])
@scope_required("admin")
@bp.arguments(ListArgs, location="query", as_kwargs=True)
@bp.response(200, page_of(KeySchema))
def list_keys(limit, cursor=None):
    """The team's API keys, newest first, without their secrets."""
    items, next_cursor = keys.key_page(limit, cursor)
    return {"items": items, "next_cursor": next_cursor}


@bp.post("/keys", tags=["keys"])
@scope_required("admin")
@bp.arguments(CreateKeySchema, example={"name": "ci", "scopes": "upload", "expires_in_days": 90})
@bp.response(201, NewKeySchema)
@bp.errors(422)
def create_key(body):
    """Make a key; its full text is in the answer, and never shown again."""
    key, full = keys.create_key(
        _team(),
        body["name"],
        keys.parse_scopes(body["scopes"]),
        created_by=g.api_key.created_by,
        creator_role=g.api_creator_role,
        expires_in_days=body.get("expires_in_days"),
        actor=current_actor(),
    )
    return With(key, key=full)


@bp.delete("/keys/<key_id>", tags=["keys"])
@scope_required("admin")
@bp.response(204)
@bp.errors(404)
def revoke_key(key_id):
    """Revoke a key: it fails from the very next request on."""
    keys.revoke_key(keys.get_key(key_id), actor=current_actor())
    return no_content()


@bp.post("/keys/<key_id>/rotate", tags=["keys"])
@scope_required("admin")
@bp.arguments(EmptySchema, required=False)
@bp.response(201, NewKeySchema)
@bp.errors(404, 409)
def rotate_key(body, key_id):
    """A new secret with the same name, scopes and expiry period; the old key is revoked."""
    new_key, full = keys.rotate_key(
        keys.get_key(key_id),
        created_by=g.api_key.created_by,
        creator_role=g.api_creator_role,
        actor=current_actor(),
    )
    return With(new_key, key=full)


@bp.get("/members", tags=["members"])
@scope_required("admin")
@bp.arguments(ListArgs, location="query", as_kwargs=True)
@bp.response(200, page_of(MemberSchema))
def list_members(limit, cursor=None):
    """The team's members by email."""
    items, next_cursor = members.member_page(current_team_id(), limit, cursor)
    return {"items": items, "next_cursor": next_cursor}


@bp.post("/members", tags=["members"])
@scope_required("admin")
@bp.arguments(AddMemberSchema, example={"email": "ada@example.com", "role": "member"})
@bp.response(201, InviteSchema)
@bp.errors(409, 422)
def add_member(body):
    """Invite someone: always an invite, whether or not the email has an account (the answer
    does not say)."""
    invite, token = members.create_invite(
        _team(), body["email"], body["role"], g.api_key.created_by, actor=current_actor()
    )
    return With(invite, invite_url=url_for("auth.accept_invite", token=token, _external=True))


@bp.patch("/members/<user_id>", tags=["members"])
@scope_required("admin")
@bp.arguments(ChangeRoleSchema, example={"role": "viewer"})
@bp.response(200, MemberSchema)
@bp.errors(404, 409, 422)
def change_member_role(body, user_id):
    """Change a member's role (the last admin stays an admin)."""
    return members.set_role(current_team_id(), user_id, body["role"], actor=current_actor())


@bp.delete("/members/<user_id>", tags=["members"])
@scope_required("admin")
@bp.response(204)
@bp.errors(404, 409)
def remove_member(user_id):
    """Remove someone from the team (not the last admin)."""
    members.remove_member(current_team_id(), user_id, actor=current_actor())
    return no_content()


@bp.get("/audit", tags=["audit"])
@scope_required("admin")
@bp.arguments(AuditArgs, location="query", as_kwargs=True)
@bp.response(200, page_of(AuditEventSchema))
def list_audit(limit, cursor=None, actor=None, action=None):
    """The team's audit trail, newest first."""
    events, next_cursor = audit.list_events(
        limit, cursor or None, actor=actor or None, action=action or None
    )
    return {"items": events, "next_cursor": next_cursor}
