"""Teams, users and memberships."""

from __future__ import annotations

import re
import unicodedata

from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db
from app.models import ROLES, Membership, Team, User
from app.services import Conflict, ServiceError

_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}$")
MIN_PASSWORD_LENGTH = 10
# Verified against when the email is unknown, so both failures cost the same time.
_DUMMY_HASH = generate_password_hash("likeness-timing-equaliser")


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


def create_user(email: str, password: str) -> User:
    """Create an account; the email must be new and the password long enough."""
    email = normalise_email(email)
    if not _EMAIL_RE.match(email):
        raise ServiceError("that is not an email address", code="validation_error", status=422)
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise ServiceError(
            f"a password has at least {MIN_PASSWORD_LENGTH} characters",
            code="validation_error",
            status=422,
        )
    if db.session.scalar(select(User).where(User.email == email)):
        raise Conflict("an account with that email exists")
    user = User(email=email, password_hash=generate_password_hash(password))
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
    user = db.session.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        check_password_hash(_DUMMY_HASH, password or "")
        return None
    return user if check_password_hash(user.password_hash, password or "") else None


def has_users() -> bool:
    return db.session.scalar(select(func.count()).select_from(User)) > 0


def memberships_of(user: User) -> list[Membership]:
    return sorted(user.memberships, key=lambda m: m.team.name.casefold())
