"""Who belongs to a team, with which role; invites; the last admin stays an admin."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import contains_eager

from app.errors import Conflict, NotFound, ValidationFailed
from app.extensions import db
from app.models import ROLES, ApiKey, Invite, Membership, Team, User, utcnow
from app.services import accounts, audit, paging, throttle
from app.services.audit import SYSTEM, Actor
from app.services.transaction import transactional, unit_of_work
from app.tenancy import team_scope, unscoped

INVITE_DAYS = 7


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)}")


def list_members(team_id: uuid.UUID) -> list[Membership]:
    # Memberships are read across teams for the team switcher, so they are not a TeamOwned
    # model: this explicit filter is the team criterion.
    query = select(Membership).join(User).where(Membership.team_id == team_id).order_by(User.email)
    return list(db.session.scalars(query))


def member_page(
    team_id: uuid.UUID, limit: int, cursor: str | None = None
) -> tuple[list[Membership], str | None]:
    """One page of the team's members by email, and the cursor of the next page."""
    # Memberships are read across teams for the team switcher, so they are not a TeamOwned
    # model: this explicit filter is the team criterion.
    query = (
        select(Membership)
        .join(User)
        .where(Membership.team_id == team_id)
        .order_by(User.email, Membership.user_id)
        .options(contains_eager(Membership.user))
    )
    if cursor:
        email, user_id = paging.decode_text_and_id(cursor)
        query = query.where(
            or_(User.email > email, and_(User.email == email, Membership.user_id > user_id))
        )
    rows = list(db.session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return rows, paging.encode(last.user.email, str(last.user_id)) if last else None


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


@transactional
def operator_add_member(
    team: Team, email: str, role: str, password: str | None = None, *, actor: Actor = SYSTEM
) -> Membership:
    """For operators only (the command line): add an existing account to the team, or create
    it when a password is given. Team admins never do this; they send invites (`create_invite`)."""
    _check_role(role)
    user = accounts.get_user_by_email(accounts.valid_email(email))
    if user is None:
        if not password:
            raise ValidationFailed(
                "no account has that email: give a password to create one, or send an invite"
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


@transactional
def set_role(
    team_id: uuid.UUID, user_id: str | uuid.UUID, role: str, *, actor: Actor = SYSTEM
) -> Membership:
    """Change a member's role; the team's last admin cannot be demoted."""
    _check_role(role)
    _lock_team(team_id)
    membership = get_membership(team_id, user_id)
    if membership.role == "admin" and role != "admin" and _admin_count(team_id) <= 1:
        raise Conflict("the last admin of a team cannot be demoted; make someone else admin first")
    if role != "admin":
        _revoke_invites_by(team_id, membership.user_id)
    membership.role = role
    _record(actor, "member.role_change", membership, role=role)
    return membership


@transactional
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
    _revoke_invites_by(team_id, membership.user_id)
    _record(actor, "member.remove", membership)
    db.session.delete(membership)
    return membership


def _revoke_invites_by(team_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Someone no longer an admin of the team: the links they sent stop working, or they could
    let themselves (or anyone) back in with the role they no longer hold."""
    with team_scope(team_id):
        db.session.execute(
            update(Invite)
            .where(
                Invite.team_id == team_id,
                Invite.created_by_id == user_id,
                Invite.accepted_at.is_(None),
                Invite.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
        )


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transactional
def create_invite(
    team: Team, email: str, role: str, created_by: User | None, *, actor: Actor = SYSTEM
) -> tuple[Invite, str]:
    """An invite for one address; returns it with the token for the link (not stored).

    This is how a team admin adds anyone: the link holder sets the password of a new account,
    or proves an existing one. The work and the answer are the same whether or not the email
    has an account, so an admin learns nothing about other teams' people from it.
    """
    _check_role(role)
    email = accounts.valid_email(email)
    # One query either way: whether this address is already in the team (the admin can see
    # that in the member list), never whether it has an account.
    if db.session.scalar(
        select(Membership.id)
        .join(User, User.id == Membership.user_id)
        .where(Membership.team_id == team.id, User.email == email)
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


def pending_invites(team_id: uuid.UUID) -> list[Invite]:
    """The team's invites not yet accepted, revoked or expired, newest first."""
    return list(
        db.session.scalars(
            select(Invite)
            .where(
                Invite.team_id == team_id,
                Invite.accepted_at.is_(None),
                Invite.revoked_at.is_(None),
                Invite.expires_at > utcnow(),
            )
            .order_by(Invite.created_at.desc())
        )
    )


@transactional
def revoke_invite(team_id: uuid.UUID, invite_id: object, *, actor: Actor) -> Invite:
    """Make a pending invite's link stop working; one accepted or revoked already is a
    Conflict, another team's (or no) invite is NotFound."""
    try:
        parsed = uuid.UUID(str(invite_id))
    except ValueError:
        raise NotFound("no such invite") from None
    invite = db.session.scalar(select(Invite).where(Invite.id == parsed, Invite.team_id == team_id))
    if invite is None or invite.team_id != team_id:
        raise NotFound("no such invite")
    if invite.accepted_at is not None:
        raise Conflict(f"the invite for {invite.email} was accepted already")
    if invite.revoked_at is not None:
        raise Conflict(f"the invite for {invite.email} was revoked already")
    invite.revoked_at = utcnow()
    audit.record(
        actor,
        "member.invite_revoke",
        team_id,
        target_type="invite",
        target_id=invite.id,
        target=invite.email,
    )
    return invite


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


def accept_invite(
    token: str,
    password: str,
    *,
    signed_in: User | None,
    ip: str | None,
    user_agent: str | None,
    limits: throttle.Limits,
) -> tuple[Invite, User, str | None]:
    """Join the invite's team; returns the invite, the user and the token of a new login
    session (None when the owner was signed in already and keeps their session).

    The link alone proves nothing about an account: the owner of an existing one proves it
    (signed in as it, or its password, throttled like a login), and for a new address the
    link holder chooses the password. A wrong password is the account owner's event, as a
    failed login is.
    """
    invite = find_invite(token)
    email = invite.email
    user = accounts.get_user_by_email(email)
    owner_signed_in = user is not None and signed_in is not None and signed_in.id == user.id
    if not owner_signed_in:
        accounts.refuse_if_throttled(email, ip, limits)
        if refusal := _password_refusal(user, password):
            with unit_of_work():
                accounts.record_failed_check(email, user, ip, limits, via="invite")
            raise refusal
    with unit_of_work():
        # Claimed first, in one statement: of two requests with one link (a double click),
        # the second waits for the first's row lock, then finds the link used.
        with team_scope(invite.team_id):
            claimed = db.session.execute(
                update(Invite)
                .where(
                    Invite.id == invite.id,
                    Invite.accepted_at.is_(None),
                    Invite.revoked_at.is_(None),
                )
                .values(accepted_at=utcnow())
            )
        if claimed.rowcount != 1:
            raise NotFound("this invite link is not valid or was already used")
        if not owner_signed_in:
            if user is None:
                user = accounts.create_user(email, password)
            throttle.record_success(email, ip, limits)
            audit.record_personal(Actor.for_user(user, ip), "auth.login", user, email, via="invite")
        if not db.session.scalar(
            select(Membership).where(
                Membership.team_id == invite.team_id, Membership.user_id == user.id
            )
        ):
            membership = accounts.add_member(user, invite.team, invite.role)
            _record(Actor.for_user(user, ip), "member.join", membership, role=invite.role)
        session_token = None if owner_signed_in else accounts.start_session(user, ip, user_agent)
    return invite, user, session_token


def _password_refusal(user: User | None, password: str) -> ValidationFailed | None:
    """Why this password does not let the link holder in, or None. The rules come first, for
    both kinds of address: an existing account's password follows them too, so the answer
    says nothing about whether there is one."""
    try:
        accounts.check_password_rules(password)
    except ValidationFailed as exc:
        return exc
    if user is not None and not accounts.password_matches(user, password):
        return ValidationFailed("that is not the password of the account for this address")
    return None
