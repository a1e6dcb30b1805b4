"""API keys: `lk_<prefix>_<secret>`, stored as a hash of the secret, found by prefix."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import and_, select, update
from sqlalchemy.orm import selectinload

from app.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.extensions import db
from app.models import ROLES, SCOPES, ApiKey, Membership, Team, User, utcnow
from app.services import audit, paging
from app.services.audit import SYSTEM, Actor
from app.services.transaction import transactional, unit_of_work
from app.tenancy import find_owned, unscoped

ROLE_SCOPES = {"admin": {"read", "write", "admin"}, "member": {"read", "write"}, "viewer": {"read"}}
PRESETS = {"read-only": ["read"], "upload": ["read", "write"], "full": ["read", "write", "admin"]}
MAX_KEY_LENGTH = 128
# `last_used_at` is written at most this often per key, so busy keys cost no write per request.
TOUCH_INTERVAL = timedelta(minutes=1)
_KEY_RE = re.compile(r"lk_([0-9a-f]{10})_([A-Za-z0-9_-]{43})")
if set(ROLE_SCOPES) != set(ROLES):  # a role added without its scopes: fail at import
    raise RuntimeError("ROLE_SCOPES must name every role of app.models.ROLES")


def _hash_secret(secret: str) -> str:
    # The secret is 32 random bytes: a fast hash is enough, a slow one would only cost requests.
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(value: str | list[str]) -> list[str]:
    """Scopes from a list or comma-separated text; a preset name stands for its scopes."""
    if isinstance(value, str) and value.strip() in PRESETS:
        return list(PRESETS[value.strip()])
    if not isinstance(value, (str, list)) or not all(isinstance(s, str) for s in value):
        raise ValidationFailed("scopes is a list of scope names or a preset")
    scopes = value.split(",") if isinstance(value, str) else list(value)
    scopes = sorted({s.strip() for s in scopes if s.strip()})
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        raise ValidationFailed(f"scopes must be some of {', '.join(SCOPES)}")
    return scopes


def _label(key: ApiKey) -> str:
    return f"{key.prefix} ({key.name})"


def _record(actor: Actor, action: str, key: ApiKey, **details) -> None:
    audit.record(
        actor,
        action,
        key.team_id,
        target_type="key",
        target_id=key.id,
        target=_label(key),
        **details,
    )


@transactional
def create_key(
    team: Team,
    name: str,
    scopes: list[str],
    *,
    actor: Actor = SYSTEM,
    created_by: User | None = None,
    creator_role: str | None = None,
    expires_in_days: int | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its full text, which is never stored or shown again."""
    key, full = _new_key(team, name, scopes, created_by, creator_role, expires_in_days)
    _record(actor, "key.create", key, scopes=key.scopes)
    return key, full


def _new_key(
    team: Team,
    name: str,
    scopes: list[str],
    created_by: User | None,
    creator_role: str | None,
    expires_in_days: int | None,
) -> tuple[ApiKey, str]:
    name = " ".join((name or "").split())
    if not name or len(name) > 100:
        raise ValidationFailed("a key name is 1 to 100 characters")
    scopes = parse_scopes(scopes)
    allowed = ROLE_SCOPES.get(creator_role, set()) if creator_role is not None else set(SCOPES)
    if not set(scopes) <= allowed:
        raise Forbidden(
            f"a {creator_role} cannot create a key with scope "
            f"{', '.join(sorted(set(scopes) - allowed))}"
        )
    if expires_in_days is not None and (
        isinstance(expires_in_days, bool)
        or not isinstance(expires_in_days, int)
        or not 1 <= expires_in_days <= 3650
    ):
        raise ValidationFailed("expires_in_days is 1 to 3650")
    prefix, secret = secrets.token_hex(5), secrets.token_urlsafe(32)
    key = ApiKey(
        team_id=team.id,
        name=name,
        prefix=prefix,
        secret_hash=_hash_secret(secret),
        scopes=scopes,
        created_by_id=created_by.id if created_by else None,
        expires_at=utcnow() + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    db.session.add(key)
    db.session.flush()
    return key, f"lk_{prefix}_{secret}"


def authenticate_key(raw: str | None) -> ApiKey | None:
    """The live key this text names, or None: malformed, unknown, wrong, revoked or expired."""
    found = authenticate(raw)
    return found[0] if found is not None else None


def authenticate(raw: str | None) -> tuple[ApiKey, str | None] | None:
    """`authenticate_key` with the role its creator holds in its team today, read in the same
    statement: None for a key made on the command line (it has no creator), "" for a creator
    who has left the team."""
    if not raw or len(raw) > MAX_KEY_LENGTH:
        return None
    match = _KEY_RE.fullmatch(raw)
    if match is None:
        return None
    prefix, secret = match.groups()
    with unscoped():
        row = db.session.execute(
            select(ApiKey, Membership.role)
            .outerjoin(
                Membership,
                and_(
                    Membership.team_id == ApiKey.team_id,
                    Membership.user_id == ApiKey.created_by_id,
                ),
            )
            .where(ApiKey.prefix == prefix)
        ).first()
    if row is None:
        return None
    key, role = row
    if not hmac.compare_digest(key.secret_hash, _hash_secret(secret)):
        return None
    now = utcnow()
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        return None
    return key, (None if key.created_by_id is None else role or "")


def effective_scopes(key: ApiKey, role: str | None) -> set[str]:
    """The key's scopes, cut down to what its creator's role (from `authenticate`) allows today.

    A key made by someone later demoted loses what the new role lacks; keys made by the
    system (CLI) have no creator and keep their scopes.
    """
    if role is None:
        return set(key.scopes)
    return set(key.scopes) & ROLE_SCOPES.get(role, set())


def touch(key: ApiKey, ip: str | None) -> None:
    """Record use (time and address), at most once per TOUCH_INTERVAL per key."""
    now = utcnow()
    if key.last_used_at is not None and now - key.last_used_at < TOUCH_INTERVAL:
        return
    # The condition in the UPDATE keeps concurrent requests from all writing.
    with unit_of_work(), unscoped():
        db.session.execute(
            update(ApiKey)
            .where(
                ApiKey.id == key.id,
                (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < now - TOUCH_INTERVAL),
            )
            .values(last_used_at=now, last_used_ip=ip)
            .execution_options(synchronize_session=False)
        )


def list_keys() -> list[ApiKey]:
    """The current team's keys, newest first."""
    return list(db.session.scalars(select(ApiKey).order_by(ApiKey.created_at.desc())))


def key_page(limit: int, cursor: str | None = None) -> tuple[list[ApiKey], str | None]:
    """One page of the current team's keys, newest first, and the cursor of the next page."""
    query = (
        select(ApiKey)
        .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
        .options(selectinload(ApiKey.created_by))
    )
    if cursor:
        created_at, key_id = paging.decode_time_and_id(cursor)
        query = query.where(paging.sorts_before(ApiKey.created_at, ApiKey.id, created_at, key_id))
    rows = list(db.session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, paging.encode_time_and_id(rows[-1].created_at, rows[-1].id) if more else None


def get_key(key_id: str | uuid.UUID) -> ApiKey:
    """One of the current team's keys, or NotFound."""
    key = find_owned(ApiKey, key_id)
    if key is None:
        raise NotFound("no such key")
    return key


@transactional
def revoke_key(key: ApiKey, *, actor: Actor = SYSTEM) -> None:
    """Revoke now; the very next request with this key is refused. Revoking twice is a no-op."""
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        _record(actor, "key.revoke", key)


@transactional
def rotate_key(
    key: ApiKey, *, created_by: User | None, creator_role: str | None, actor: Actor = SYSTEM
) -> tuple[ApiKey, str]:
    """A new secret with the same name, scopes and expiry period; the old key is revoked."""
    if key.revoked_at is not None:
        raise Conflict("a revoked key cannot be rotated")
    days = None
    if key.expires_at is not None:
        days = max(1, round((key.expires_at - key.created_at).total_seconds() / 86400))
    team = db.session.get(Team, key.team_id)
    new_key, full = _new_key(team, key.name, key.scopes, created_by, creator_role, days)
    new_key.rotated_from_id = key.id
    key.revoked_at = utcnow()
    _record(actor, "key.rotate", new_key, replaces=key.prefix)
    return new_key, full
