"""The audit trail: who did what to which object, from where and when."""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass

from sqlalchemy import or_, select

from app.errors import Invalid
from app.extensions import db
from app.models import ApiKey, AuditEvent, User
from app.tenancy import unscoped


@dataclass(frozen=True)
class Actor:
    """Whoever acts: a signed-in user, an API key, the system (CLI, jobs) or nobody known."""

    kind: str  # user | key | system | anonymous
    label: str
    user_id: uuid.UUID | None = None
    key_id: uuid.UUID | None = None
    ip: str | None = None

    @classmethod
    def for_user(cls, user: User, ip: str | None = None) -> Actor:
        return cls("user", user.email, user_id=user.id, ip=ip)

    @classmethod
    def for_key(cls, key: ApiKey, ip: str | None = None) -> Actor:
        return cls("key", f"key {key.prefix} ({key.name})", key_id=key.id, ip=ip)

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls("system", label)


def record(
    actor: Actor,
    action: str,
    team_id: uuid.UUID | None,
    *,
    target_type: str | None = None,
    target_id: object = None,
    target: str | None = None,
    **details,
) -> AuditEvent:
    """Add an event to the session; it is written with the change it describes."""
    event = AuditEvent(
        team_id=team_id,
        actor_type=actor.kind,
        actor_user_id=actor.user_id,
        actor_key_id=actor.key_id,
        actor=actor.label[:300],
        action=action,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        target=target[:300] if target else None,
        ip=actor.ip,
        details=details,
    )
    db.session.add(event)
    return event


SYSTEM = Actor.system()
# Operators at the command line; also the creator of an import made there.
COMMAND_LINE = Actor.system("command line")


def record_personal(
    actor: Actor, action: str, user: User | None, email: str, **details
) -> AuditEvent:
    """An event about one account (a sign-in, a password change), in no team's log.

    The account's owner reads it (Settings → Account) and operators do (`flask audit user`);
    the teams the person belongs to do not, since it happened in none of them. `user` is None
    for an email no account has.
    """
    event = record(
        actor,
        action,
        None,
        target_type="user",
        target_id=user.id if user else None,
        target=email,
        **details,
    )
    event.user_id = user.id if user else None
    return event


def personal_events(user: User, limit: int = 20) -> list[AuditEvent]:
    """The account's own events, newest first."""
    with unscoped():  # they belong to no team
        return list(
            db.session.scalars(
                select(AuditEvent)
                .where(AuditEvent.user_id == user.id, AuditEvent.team_id.is_(None))
                .order_by(AuditEvent.id.desc())
                .limit(limit)
            )
        )


def events_about_email(email: str, limit: int) -> list[AuditEvent]:
    """For operators: the personal events of the account with this email, or of the email
    itself when no account has it (failed sign-ins), newest first."""
    user = db.session.scalar(select(User).where(User.email == email))
    about = (
        AuditEvent.user_id == user.id
        if user is not None
        else (AuditEvent.user_id.is_(None) & (AuditEvent.target == email))
    )
    with unscoped():
        return list(
            db.session.scalars(
                select(AuditEvent)
                .where(about, AuditEvent.team_id.is_(None))
                .order_by(AuditEvent.id.desc())
                .limit(limit)
            )
        )


def record_image(actor: Actor, action: str, image, **details) -> AuditEvent:
    """An event about one image, named by its filename."""
    return record(
        actor,
        action,
        image.team_id,
        target_type="image",
        target_id=image.id,
        target=image.filename,
        **details,
    )


def _cursor(event_id: int) -> str:
    return base64.urlsafe_b64encode(str(event_id).encode()).decode().rstrip("=")


# Event ids are BIGINT (SQLite INTEGER): a cursor past that would overflow the query.
_MAX_EVENT_ID = 2**63 - 1
_CURSOR_DIGITS = re.compile(r"[0-9]{1,19}")


def _parse_cursor(cursor: str) -> int:
    refused = Invalid("the cursor is not one this API gave out")
    if len(cursor) > 40:
        raise refused
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise refused from None
    if not _CURSOR_DIGITS.fullmatch(value) or int(value) > _MAX_EVENT_ID:
        raise refused
    return int(value)


def list_events(
    limit: int,
    cursor: str | None = None,
    *,
    actor: str | None = None,
    action: str | None = None,
) -> tuple[list[AuditEvent], str | None]:
    """The current team's events, newest first; `actor` matches the label or its id."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit + 1)
    if cursor:
        query = query.where(AuditEvent.id < _parse_cursor(cursor))
    if action:
        # `image.delete` matches itself; `image` matches every image action.
        query = query.where(
            (AuditEvent.action == action)
            | AuditEvent.action.startswith(f"{action}.", autoescape=True)
        )
    if actor:
        matches = [
            AuditEvent.actor == actor,
            AuditEvent.actor.startswith(f"key {actor} ", autoescape=True),  # a key's prefix
        ]
        if (actor_id := _uuid_or_none(actor)) is not None:
            matches += [AuditEvent.actor_user_id == actor_id, AuditEvent.actor_key_id == actor_id]
        query = query.where(or_(*matches))
    events = list(db.session.scalars(query))
    more = len(events) > limit
    events = events[:limit]
    return events, _cursor(events[-1].id) if more else None


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
