"""Who belongs to a team, with which role; invites; the last admin stays an admin."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import func, select, update

from app.extensions import db
from app.models import ROLES, ApiKey, Invite, Membership, Team, User, utcnow
from app.services import Conflict, NotFound, ServiceError, accounts, audit
from app.services.audit import SYSTEM, Actor
from app.tenancy import team_scope, unscoped

INVITE_DAYS = 7


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ServiceError(
            f"role must be one of {', '.join(ROLES)}", code="validation_error", status=422
        )


def list_members(team_id: uuid.UUID) -> list[Membership]:
    # Memberships are read across teams for the team switcher, so they are not a TeamOwned
    # model: this explicit filter is the team criterion.
    query = select(Membership).join(User).where(Membership.team_id == team_id).order_by(User.email)
    return list(db.session.scalars(query))


def get_membership(team_id: uuid.UUID, user_id: str | uuid.UUID) -> Membership:
    try:
        user_uuid = user_id if isinstance(user_id, uuid.UUID) else uuid.UUID(str(user_id))
    except ValueError:
        raise NotFound("no such member") from None
    membership = db.session.scalar(
        select(Membership).where(Membership.team_id == team_id, Membership.user_id == user_uuid)
    )
    if membership is None:
        raise NotFound("no such member")
    return membership


def _record(actor: Actor, action: str, membership: Membership, **details) -> None:
    audit.record(
        actor,
        action,
        membership.team_id,
        target_type="user",
        target_id=membership.user_id,
        target=membership.user.email,
        **details,
    )


def add_member(
    team: Team, email: str, role: str, password: str | None = None, *, actor: Actor = SYSTEM
) -> Membership:
    """Add an existing account to the team, or create it when a password is given."""
    _check_role(role)
    user = accounts.get_user_by_email(accounts.valid_email(email))
    if user is None:
        if not password:
            raise ServiceError(
                "no account has that email: give a password to create one, or send an invite",
                code="validation_error",
                status=422,
            )
        user = accounts.create_user(email, password)
    elif db.session.scalar(
        select(Membership).where(Membership.team_id == team.id, Membership.user_id == user.id)
    ):
        raise Conflict("that account is already a member of this team")
    membership = accounts.add_member(user, team, role)
    _record(actor, "member.add", membership, role=role)
    return membership


def _lock_team(team_id: uuid.UUID) -> None:
    # Serialises role changes of one team on PostgreSQL, so two admins demoting each other at
    # once cannot leave the team with none (SQLite serialises writers by itself).
    db.session.execute(select(Team.id).where(Team.id == team_id).with_for_update())


def _admin_count(team_id: uuid.UUID) -> int:
    return db.session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(Membership.team_id == team_id, Membership.role == "admin")
    )


def set_role(
    team_id: uuid.UUID, user_id: str | uuid.UUID, role: str, *, actor: Actor = SYSTEM
) -> Membership:
    """Change a member's role; the team's last admin cannot be demoted."""
    _check_role(role)
    _lock_team(team_id)
    membership = get_membership(team_id, user_id)
    if membership.role == "admin" and role != "admin" and _admin_count(team_id) <= 1:
        raise Conflict("the last admin of a team cannot be demoted; make someone else admin first")
    membership.role = role
    _record(actor, "member.role_change", membership, role=role)
    return membership


def remove_member(
    team_id: uuid.UUID, user_id: str | uuid.UUID, *, actor: Actor = SYSTEM
) -> Membership:
    """Remove a member and revoke the keys they made for this team; never the last admin."""
    _lock_team(team_id)
    membership = get_membership(team_id, user_id)
    if membership.role == "admin" and _admin_count(team_id) <= 1:
        raise Conflict("the last admin of a team cannot be removed")
    with team_scope(team_id):
        db.session.execute(
            update(ApiKey)
            .where(ApiKey.created_by_id == membership.user_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    _record(actor, "member.remove", membership)
    db.session.delete(membership)
    return membership


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_invite(
    team: Team, email: str, role: str, created_by: User | None, *, actor: Actor = SYSTEM
) -> tuple[Invite, str]:
    """An invite for one address; returns it with the token for the link (not stored)."""
    _check_role(role)
    email = accounts.valid_email(email)
    user = accounts.get_user_by_email(email)
    if user is not None and db.session.scalar(
        select(Membership).where(Membership.team_id == team.id, Membership.user_id == user.id)
    ):
        raise Conflict("that account is already a member of this team")
    token = secrets.token_urlsafe(32)
    invite = Invite(
        team_id=team.id,
        email=email,
        role=role,
        token_hash=_hash_token(token),
        created_by_id=created_by.id if created_by else None,
        expires_at=utcnow() + timedelta(days=INVITE_DAYS),
    )
    db.session.add(invite)
    db.session.flush()
    audit.record(
        actor,
        "member.invite",
        team.id,
        target_type="invite",
        target_id=invite.id,
        target=email,
        role=role,
    )
    return invite, token


def find_invite(token: str) -> Invite:
    """The open invite for this token, across teams (the link is the credential)."""
    if not token or len(token) > 100:
        raise NotFound("this invite link is not valid")
    with unscoped():
        invite = db.session.scalar(select(Invite).where(Invite.token_hash == _hash_token(token)))
    if invite is None or invite.revoked_at is not None or invite.accepted_at is not None:
        raise NotFound("this invite link is not valid or was already used")
    if invite.expires_at <= utcnow():
        raise NotFound("this invite link has expired; ask for a new one")
    return invite


def accept_invite(token: str, password: str, ip: str | None = None) -> tuple[Invite, User]:
    """Join the invite's team: an existing account proves its password, a new one sets it."""
    invite = find_invite(token)
    user = accounts.get_user_by_email(invite.email)
    if user is None:
        user = accounts.create_user(invite.email, password)
    elif accounts.authenticate(invite.email, password) is None:
        raise ServiceError(
            "that is not the password of the account for this invite",
            code="validation_error",
            status=422,
        )
    if not db.session.scalar(
        select(Membership).where(
            Membership.team_id == invite.team_id, Membership.user_id == user.id
        )
    ):
        accounts.add_member(user, invite.team, invite.role)
    invite.accepted_at = utcnow()
    return invite, user
