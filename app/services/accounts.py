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

from app.errors import Conflict, Throttled, Unauthenticated, ValidationFailed
from app.extensions import db
from app.models import ROLES, Image, LoginSession, Membership, Team, User, utcnow
from app.services import audit, throttle
from app.services.audit import Actor
from app.services.transaction import transactional, unit_of_work

_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}$")
MAX_EMAIL_LENGTH = 254  # the longest address there is (RFC 5321), and the column's length
MIN_PASSWORD_LENGTH = 10
# Verified against when the email is unknown, so both failures cost the same time.
_DUMMY_HASH = generate_password_hash("likeness-timing-equaliser")
# A login session's `last_seen_at` is written at most this often, not on every request.
TOUCH_INTERVAL = timedelta(minutes=1)
WRONG_CREDENTIALS = "Wrong email or password."


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


@transactional
def create_team(name: str) -> Team:
    """Create a team with a unique slug derived from its name; a name already taken (ignoring
    case and spacing) is refused, as a second team of it would only be mistaken for the first."""
    name = " ".join((name or "").split())
    if not name or len(name) > 100:
        raise ValidationFailed("a team name is 1 to 100 characters")
    base = slugify(name)
    # Equal names make equal slugs: only the teams of this slug, numbered or not, can match.
    namesakes = db.session.scalars(
        select(Team).where((Team.slug == base) | Team.slug.startswith(f"{base}-", autoescape=True))
    ).all()
    for team in namesakes:
        if team.name.casefold() == name.casefold():
            raise Conflict(f"a team named {team.name!r} already exists (slug {team.slug})")
    slug, n = base, 1
    while db.session.scalar(select(func.count()).select_from(Team).where(Team.slug == slug)):
        n += 1
        slug = f"{base}-{n}"
    team = Team(name=name, slug=slug)
    db.session.add(team)
    db.session.flush()
    return team


def list_teams() -> list[tuple[Team, int]]:
    """Every team, by slug, with its number of members."""
    members = (
        select(Membership.team_id, func.count().label("members"))
        .group_by(Membership.team_id)
        .subquery()
    )
    rows = db.session.execute(
        select(Team, func.coalesce(members.c.members, 0))
        .outerjoin(members, members.c.team_id == Team.id)
        .order_by(Team.slug)
    )
    return [(team, count) for team, count in rows]


def get_team_by_slug(slug: str) -> Team | None:
    return db.session.scalar(select(Team).where(Team.slug == slug))


def get_team(team_id: uuid.UUID) -> Team | None:
    """The team with this id, or None."""
    return db.session.get(Team, team_id)


@dataclass(frozen=True)
class TeamSummary:
    team: Team
    image_count: int
    storage_bytes: int


def team_summary(team_id: uuid.UUID) -> TeamSummary:
    """The team with how many images it holds and the bytes of their originals."""
    count, size = db.session.execute(
        select(func.count(Image.id), func.coalesce(func.sum(Image.size_bytes), 0)).where(
            Image.team_id == team_id
        )
    ).one()
    return TeamSummary(get_team(team_id), count, int(size))


def valid_email(email: str) -> str:
    """The normalised address, or a 422 if it is not one."""
    email = normalise_email(email)
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL_RE.match(email):
        raise ValidationFailed("that is not an email address")
    return email


def check_password_rules(password: str) -> None:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1024:
        raise ValidationFailed("a password has at most 1024 characters")


def hash_password(password: str) -> str:
    # Werkzeug's default is scrypt (n=2**15, r=8, p=1): memory-hard and deliberately slow.
    return generate_password_hash(password)


def get_user_by_email(email: str) -> User | None:
    return db.session.scalar(select(User).where(User.email == normalise_email(email)))


@transactional
def create_user(email: str, password: str) -> User:
    """Create an account; the email must be new and the password long enough."""
    email = valid_email(email)
    check_password_rules(password)
    if db.session.scalar(select(User).where(User.email == email)):
        raise Conflict("an account with that email exists")
    user = User(email=email, password_hash=hash_password(password))
    db.session.add(user)
    db.session.flush()
    return user


@transactional
def add_member(user: User, team: Team, role: str) -> Membership:
    """Make the user a member of the team with this role."""
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)}")
    membership = Membership(user=user, team=team, role=role)
    db.session.add(membership)
    db.session.flush()
    return membership


def password_matches(user: User | None, password: str) -> bool:
    """Whether `password` is the account's, taking the same time when there is no account."""
    password = (password or "")[:1024]  # hashing a megabyte would be a cheap way to load us
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return False
    return check_password_hash(user.password_hash, password)


def authenticate(email: str, password: str) -> User | None:
    """The user with these credentials, or None, taking the same time either way."""
    user = get_user_by_email(email)
    return user if password_matches(user, password) else None


def refuse_if_throttled(email: str, ip: str | None, limits: throttle.Limits) -> None:
    """Raise Throttled while this address must wait before checking this account's password."""
    if wait := throttle.retry_after(email, ip, limits):
        raise Throttled(
            f"Too many failed attempts. Try again in {wait // 60 + 1} minutes.", retry_after=wait
        )


def record_failed_check(
    email: str, user: User | None, ip: str | None, limits: throttle.Limits, **details
) -> None:
    """Count a wrong password against the throttle and tell the account's owner about it."""
    throttle.record_failure(email, ip, limits)
    anonymous = Actor("anonymous", email, ip=ip)  # whoever typed it has proved nothing
    audit.record_personal(anonymous, "auth.login_failed", user, email, **details)


def sign_in(
    email: str, password: str, *, ip: str | None, user_agent: str | None, limits: throttle.Limits
) -> tuple[User, str]:
    """Check the credentials (throttled) and start a login session; returns the user and the
    token for the session cookie. Every outcome is one of the person's own events."""
    email = normalise_email(email)[:254]
    refuse_if_throttled(email, ip, limits)
    with unit_of_work():
        user = get_user_by_email(email)
        accepted = password_matches(user, password) and bool(user.memberships)
        if accepted:
            throttle.record_success(email, ip, limits)
            audit.record_personal(Actor.for_user(user, ip), "auth.login", user, email)
            token = start_session(user, ip, user_agent)
        else:
            record_failed_check(email, user, ip, limits)
    if not accepted:
        # Refused once the failure is recorded. One message and (through the dummy hash)
        # timing for every failure.
        raise Unauthenticated(WRONG_CREDENTIALS)
    return user, token


@transactional
def sign_out(user: User, token: str | None, ip: str | None) -> None:
    """End this login session; the person's own event, not their teams'."""
    end_session(token)
    audit.record_personal(Actor.for_user(user, ip), "auth.logout", user, user.email)


def change_password(
    user: User,
    current: str,
    new: str,
    *,
    actor: Actor,
    user_agent: str | None,
    limits: throttle.Limits,
) -> str:
    """Set a new password after checking the current one (throttled like a login: a borrowed
    session is no place to guess it); every login session ends, and the token of a new one
    for this browser is returned."""
    refuse_if_throttled(user.email, actor.ip, limits)
    if not password_matches(user, current):
        with unit_of_work():
            record_failed_check(user.email, user, actor.ip, limits, via="password_change")
        raise ValidationFailed("the current password is wrong")
    check_password_rules(new)
    with unit_of_work():
        user.password_hash = hash_password(new)
        user.password_changed_at = utcnow()
        end_all_sessions(user.id)
        audit.record_personal(actor, "auth.password_change", user, user.email)
        token = start_session(user, actor.ip, user_agent)
    throttle.record_success(user.email, actor.ip, limits)
    return token


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
        with unit_of_work():
            record.revoked_at = now  # over for good: nothing can bring this cookie back
        return None
    if now - record.last_seen_at >= TOUCH_INTERVAL:
        # The condition keeps concurrent requests of one session from all writing. The loader
        # runs first in a request (login_required), so this commits nothing else.
        with unit_of_work():
            db.session.execute(
                update(LoginSession)
                .where(
                    LoginSession.id == record.id, LoginSession.last_seen_at < now - TOUCH_INTERVAL
                )
                .values(last_seen_at=now)
                .execution_options(synchronize_session=False)
            )
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


@transactional
def set_up(
    team_name: str, email: str, password: str, *, ip: str | None, user_agent: str | None
) -> tuple[Team, User, str]:
    """First run: the first team and its first admin, signed in; returns them and the token."""
    team = create_team(team_name)
    user = create_user(email, password)
    add_member(user, team, "admin")
    audit.record(
        Actor.for_user(user, ip),
        "team.create",
        team.id,
        target_type="team",
        target_id=team.id,
        target=team.name,
    )
    return team, user, start_session(user, ip, user_agent)


@transactional
def create_account(email: str, password: str, team: Team, role: str) -> User:
    """For operators (the command line): a new account, a member of `team` with `role`."""
    user = create_user(email, password)
    add_member(user, team, role)
    return user


def has_users() -> bool:
    return db.session.scalar(select(func.count()).select_from(User)) > 0


def is_set_up() -> bool:
    """Whether the first run is over: someone has an account, or an operator made a team (on
    the command line, before its first member accepts an invite); then /setup is closed."""
    return has_users() or db.session.scalar(select(func.count()).select_from(Team)) > 0


def memberships_of(user: User) -> list[Membership]:
    return sorted(user.memberships, key=lambda m: m.team.name.casefold())
