"""Login throttling: failed logins counted in Redis per (account, address), per address and
per account.

An address that fails on one account waits after a few tries (per account and address); an
address that sprays many accounts waits too (per address). Failures on one account from every
address together have a much higher ceiling (per account): one address can never reach it
alone, because its refused tries are not counted, so an attacker at one address cannot lock the
owner out of theirs. Counters expire after a window, so there is no permanent lockout; a
successful login clears its (account, address) counter. If Redis cannot be reached, logins are
not throttled (and that is logged): being unable to sign in at all would be worse.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import redis

from app.extensions import redis_connection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    per_account_and_address: int
    per_address: int
    per_account: int
    window_seconds: int

    @classmethod
    def from_config(cls, config: Mapping) -> Limits:
        return cls(
            per_account_and_address=config["LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS"],
            per_address=config["LOGIN_MAX_FAILURES_PER_ADDRESS"],
            per_account=config["LOGIN_MAX_FAILURES_PER_ACCOUNT"],
            window_seconds=config["LOGIN_THROTTLE_WINDOW_SECONDS"],
        )


def _counters(email: str, address: str | None, limits: Limits) -> list[tuple[str, int]]:
    """Each counter's Redis key with its limit: (account, address), address, account."""
    account = hashlib.sha256(email.encode()).hexdigest()[:32]
    address = address or "-"
    return [
        (f"likeness:login-fail:pair:{account}:{address}", limits.per_account_and_address),
        (f"likeness:login-fail:ip:{address}", limits.per_address),
        (f"likeness:login-fail:account:{account}", limits.per_account),
    ]


def retry_after(email: str, address: str | None, limits: Limits) -> int:
    """Seconds until this address may try this account again; 0 when it may now."""
    counters = _counters(email, address, limits)
    try:
        pipe = redis_connection.client.pipeline()
        for key, _limit in counters:
            pipe.get(key).ttl(key)
        replies = pipe.execute()
    except redis.RedisError:
        log.warning("login throttle unavailable: Redis cannot be reached")
        return 0
    waits = [
        max(int(ttl), 1)
        for (_key, limit), count, ttl in zip(counters, replies[::2], replies[1::2], strict=True)
        if int(count or 0) >= limit
    ]
    return max(waits, default=0)


def record_failure(email: str, address: str | None, limits: Limits) -> None:
    """Count a failed login against every counter, for one window."""
    try:
        pipe = redis_connection.client.pipeline()
        for key, _limit in _counters(email, address, limits):
            # The window starts at the first failure and is not extended by later ones.
            pipe.set(key, 0, ex=limits.window_seconds, nx=True)
            pipe.incr(key)
        pipe.execute()
    except redis.RedisError:
        log.warning("login throttle unavailable: Redis cannot be reached")


def record_success(email: str, address: str | None, limits: Limits) -> None:
    """The owner got in from this address: forget its typos there (the other counters stay)."""
    try:
        redis_connection.client.delete(_counters(email, address, limits)[0][0])
    except redis.RedisError:
        log.warning("login throttle unavailable: Redis cannot be reached")
