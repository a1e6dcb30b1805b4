"""Teams, users and memberships."""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, update
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db
from app.models import ROLES, LoginSession, Membership, Team, User, utcnow
from app.services import Conflict, ServiceError, audit
from app.services.audit import Actor

_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}$")
MIN_PASSWORD_LENGTH = 10
# Verified against when the email is unknown, so both failures cost the same time.
_DUMMY_HASH = generate_password_hash("likeness-timing-equaliser")
# A login session's `last_seen_at` is written at most this often, not on every request.
TOUCH_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True)
class SessionLifetimes:
    """A login session ends when unused for `idle`, and in any case `absolute` after login."""

    idle: timedelta
    absolute: timedelta

    @classmethod
    def from_config(cls, config: Mapping) -> SessionLifetimes:
        return cls(
            idle=timedelta(seconds=config["SESSION_IDLE_TIMEOUT_SECONDS"]),
            absolute=timedelta(seconds=config["SESSION_ABSOLUTE_TIMEOUT_SECONDS"]),
        )


def normalise_email(email: str) -> str:
    """NFKC and case-folded, so visually equal addresses are one account."""
    return unicodedata.normalize("NFKC", email or "").strip().casefold()


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:50] or "team"


def create_team(name: str) -> Team:
    """Create a team with a unique slug derived from its name."""
    name = " ".join((name or "").split())
    if not name or len(name) > 100:
        raise ServiceError(
            "a team name is 1 to 100 characters", code="validation_error", status=422
        )
    base = slugify(name)
    slug, n = base, 1
    while db.session.scalar(select(func.count()).select_from(Team).where(Team.slug == slug)):
        n += 1
        slug = f"{base}-{n}"
    team = Team(name=name, slug=slug)
    db.session.add(team)
    db.session.flush()
    return team


def get_team_by_slug(slug: str) -> Team | None:
    return db.session.scalar(select(Team).where(Team.slug == slug))


def valid_email(email: str) -> str:
    """The normalised address, or a 422 if it is not one."""
    email = normalise_email(email)
    if not _EMAIL_RE.match(email):
        raise ServiceError("that is not an email address", code="validation_error", status=422)
    return email


def _check_password_rules(password: str) -> None:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise ServiceError(
            f"a password has at least {MIN_PASSWORD_LENGTH} characters",
            code="validation_error",
            status=422,
        )
    if len(password) > 1024:
        raise ServiceError(
            "a password has at most 1024 characters", code="validation_error", status=422
        )


def hash_password(password: str) -> str:
    # Werkzeug's default is scrypt (n=2**15, r=8, p=1): memory-hard and deliberately slow.
    return generate_password_hash(password)


def get_user_by_email(email: str) -> User | None:
    return db.session.scalar(select(User).where(User.email == normalise_email(email)))


def create_user(email: str, password: str) -> User:
    """Create an account; the email must be new and the password long enough."""
    email = valid_email(email)
    _check_password_rules(password)
    if db.session.scalar(select(User).where(User.email == email)):
        raise Conflict("an account with that email exists")
    user = User(email=email, password_hash=hash_password(password))
    db.session.add(user)
    db.session.flush()
    return user


def add_member(user: User, team: Team, role: str) -> Membership:
    if role not in ROLES:
        raise ServiceError(
            f"role must be one of {', '.join(ROLES)}", code="validation_error", status=422
        )
    membership = Membership(user=user, team=team, role=role)
    db.session.add(membership)
    db.session.flush()
    return membership


def authenticate(email: str, password: str) -> User | None:
    """The user with these credentials, or None, taking the same time either way."""
    password = (password or "")[:1024]  # hashing a megabyte would be a cheap way to load us
    user = get_user_by_email(email)
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


def change_password(user: User, current: str, new: str, *, actor: Actor) -> None:
    """Set a new password after checking the current one; every login session ends."""
    if not check_password_hash(user.password_hash, (current or "")[:1024]):
        raise ServiceError("the current password is wrong", code="validation_error", status=422)
    _check_password_rules(new)
    user.password_hash = hash_password(new)
    user.password_changed_at = utcnow()
    end_all_sessions(user.id)
    for membership in user.memberships:
        audit.record(
            actor,
            "auth.password_change",
            membership.team_id,
            target_type="user",
            target_id=user.id,
            target=user.email,
        )


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(user: User, ip: str | None, user_agent: str | None) -> str:
    """Record a new browser login; returns the token the session cookie will carry."""
    token = secrets.token_urlsafe(32)
    db.session.add(
        LoginSession(
            token_hash=_hash_token(token),
            user_id=user.id,
            ip=ip,
            user_agent=(user_agent or "")[:255] or None,
        )
    )
    return token


def session_user(user_id: str, token: str | None, lifetimes: SessionLifetimes) -> User | None:
    """The user of a live login session, or None if it ended, expired or never existed.

    A session expires when unused for the idle lifetime or older than the absolute one; its
    last use is written at most once per TOUCH_INTERVAL, so requests cost no write each.
    """
    if not token or not isinstance(token, str) or len(token) > 100:
        return None
    try:
        user_uuid = uuid.UUID(user_id)
    except ValueError:
        return None
    record = db.session.scalar(
        select(LoginSession).where(LoginSession.token_hash == _hash_token(token))
    )
    if record is None or record.revoked_at is not None or record.user_id != user_uuid:
        return None
    now = utcnow()
    if now >= record.created_at + lifetimes.absolute or now >= record.last_seen_at + lifetimes.idle:
        record.revoked_at = now  # over for good: nothing can bring this cookie back
        db.session.commit()
        return None
    if now - record.last_seen_at >= TOUCH_INTERVAL:
        # The condition keeps concurrent requests of one session from all writing.
        db.session.execute(
            update(LoginSession)
            .where(LoginSession.id == record.id, LoginSession.last_seen_at < now - TOUCH_INTERVAL)
            .values(last_seen_at=now)
            .execution_options(synchronize_session=False)
        )
        # The loader runs first in a request (login_required), so this commits nothing else.
        db.session.commit()
    return db.session.get(User, user_uuid)


def end_session(token: str | None) -> None:
    if token:
        db.session.execute(
            update(LoginSession)
            .where(LoginSession.token_hash == _hash_token(token), LoginSession.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )


def end_all_sessions(user_id: uuid.UUID) -> None:
    db.session.execute(
        update(LoginSession)
        .where(LoginSession.user_id == user_id, LoginSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def has_users() -> bool:
    return db.session.scalar(select(func.count()).select_from(User)) > 0


def memberships_of(user: User) -> list[Membership]:
    return sorted(user.memberships, key=lambda m: m.team.name.casefold())
