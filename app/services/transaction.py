"""A service action is one unit of work: it commits at its end, or rolls back if anything in it
fails, and only after the commit does what must not happen before it (queueing a job, removing
the files of a deleted row).

Units nest: an action called inside another joins it, and the outermost alone commits or rolls
back. So `set_up` creates a team and its first admin with the very functions the command line
calls on their own, in one transaction. Faces and jobs never touch the session: they call one
action and it owns its transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from app.extensions import db

P = ParamSpec("P")
R = TypeVar("R")

# Kept in the session's own `info`, so each session (one per application context: a request,
# a job, a command) has its own unit.
_AFTER_COMMIT = "likeness.after_commit"


@contextmanager
def unit_of_work(*, outermost: bool = False) -> Iterator[None]:
    """Commit at the end of the block, roll back if it raises; then run what `after_commit`
    queued. Inside another unit, join it. With `outermost`, refuse to join: for work that
    retries its own transaction after a conflict (a rollback would undo the enclosing unit's
    work too)."""
    info = db.session.info
    if _AFTER_COMMIT in info:
        if outermost:
            raise RuntimeError("this unit of work retries its transaction: it cannot be nested")
        yield
        return
    followers: list[Callable[[], object]] = []
    info[_AFTER_COMMIT] = followers
    try:
        yield
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    finally:
        info.pop(_AFTER_COMMIT, None)
    for follow in followers:
        follow()


def transactional(action: Callable[P, R]) -> Callable[P, R]:
    """Run the service function as one unit of work (joining an enclosing one)."""

    @functools.wraps(action)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with unit_of_work():
            return action(*args, **kwargs)

    return run


def after_commit(follow: Callable[[], object]) -> None:
    """Do `follow` once the enclosing unit has committed; never if it rolls back."""
    followers = db.session.info.get(_AFTER_COMMIT)
    if followers is None:
        raise RuntimeError("after_commit is for work inside a unit of work")
    followers.append(follow)
