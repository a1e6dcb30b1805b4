"""Login throttling: failures counted per account and per client address in Redis.

Counters expire after a window, so there is no permanent lockout; success clears the
account's counter. If Redis cannot be reached, logins are not throttled (and that is logged):
being unable to sign in at all would be worse.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import redis

from app.queue import get_redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    per_account: int
    per_address: int
    window_seconds: int


def _keys(email: str, address: str | None) -> tuple[str, str]:
    account = hashlib.sha256(email.encode()).hexdigest()[:32]
    return f"likeness:login-fail:account:{account}", f"likeness:login-fail:ip:{address or '-'}"


def retry_after(email: str, address: str | None, limits: Limits) -> int:
    """Seconds until this account or address may try again; 0 when it may now."""
    account_key, address_key = _keys(email, address)
    try:
        conn = get_redis()
        pipe = conn.pipeline()
        pipe.get(account_key).ttl(account_key).get(address_key).ttl(address_key)
        account_count, account_ttl, address_count, address_ttl = pipe.execute()
    except redis.RedisError:
        log.warning("login throttle unavailable: Redis cannot be reached")
        return 0
    waits = []
    if int(account_count or 0) >= limits.per_account:
        waits.append(max(int(account_ttl), 1))
    if int(address_count or 0) >= limits.per_address:
        waits.append(max(int(address_ttl), 1))
    return max(waits, default=0)


def record_failure(email: str, address: str | None, limits: Limits) -> None:
    """Count a failed login against the account and the address, for one window."""
    try:
        pipe = get_redis().pipeline()
        for key in _keys(email, address):
            # The window starts at the first failure and is not extended by later ones.
            pipe.set(key, 0, ex=limits.window_seconds, nx=True)
            pipe.incr(key)
        pipe.execute()
    except redis.RedisError:
        log.warning("login throttle unavailable: Redis cannot be reached")


def clear_account(email: str) -> None:
    try:
        get_redis().delete(_keys(email, None)[0])
    except redis.RedisError:
        log.warning("login throttle unavailable: Redis cannot be reached")
