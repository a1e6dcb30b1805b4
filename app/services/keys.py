"""API keys: `lk_<prefix>_<secret>`, stored as a hash of the secret, found by prefix."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy import select

from app.extensions import db
from app.models import ROLES, SCOPES, ApiKey, Team, User, utcnow
from app.services import ServiceError
from app.tenancy import unscoped

ROLE_SCOPES = {"admin": {"read", "write", "admin"}, "member": {"read", "write"}, "viewer": {"read"}}
MAX_KEY_LENGTH = 128
assert set(ROLE_SCOPES) == set(ROLES)


def _hash_secret(secret: str) -> str:
    # The secret is 32 random bytes: a fast hash is enough, a slow one would only cost requests.
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(value: str | list[str]) -> list[str]:
    scopes = value.split(",") if isinstance(value, str) else list(value)
    scopes = sorted({s.strip() for s in scopes if s.strip()})
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        raise ServiceError(
            f"scopes must be some of {', '.join(SCOPES)}", code="validation_error", status=422
        )
    return scopes


def create_key(
    team: Team,
    name: str,
    scopes: list[str],
    *,
    created_by: User | None = None,
    creator_role: str | None = None,
    expires_in_days: int | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its full text, which is never stored or shown again."""
    name = " ".join((name or "").split())
    if not name or len(name) > 100:
        raise ServiceError("a key name is 1 to 100 characters", code="validation_error", status=422)
    scopes = parse_scopes(scopes)
    if creator_role is not None and not set(scopes) <= ROLE_SCOPES[creator_role]:
        raise ServiceError(
            f"a {creator_role} cannot create a key with scope "
            f"{', '.join(sorted(set(scopes) - ROLE_SCOPES[creator_role]))}",
            code="forbidden",
            status=403,
        )
    if expires_in_days is not None and not 1 <= expires_in_days <= 3650:
        raise ServiceError("expires_in_days is 1 to 3650", code="validation_error", status=422)
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
    if not raw or len(raw) > MAX_KEY_LENGTH:
        return None
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != "lk" or not parts[1] or not parts[2]:
        return None
    with unscoped():
        key = db.session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    if key is None or not hmac.compare_digest(key.secret_hash, _hash_secret(parts[2])):
        return None
    now = utcnow()
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        return None
    return key
