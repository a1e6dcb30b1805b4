"""Team isolation in one place: every ORM query of team-owned rows is confined to the current team.

Requests set the team from the session or the API key (`team_scope`); the `do_orm_execute` hook
below adds `team_id = <current team>` to every SELECT, UPDATE and DELETE that touches a
`TeamOwned` model, relationship loads included. In a request, querying team-owned rows with no
team chosen is a programming error and raises, rather than silently seeing every team. Jobs and
CLI commands (no request) work across teams and name the team explicitly.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from flask import abort, has_request_context
from sqlalchemy import event, select
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria

from app.extensions import db
from app.models import TeamOwned

_UNSCOPED = object()
_current_team: ContextVar[object] = ContextVar("likeness_current_team", default=None)

T = TypeVar("T")


class TenancyError(RuntimeError):
    """Team-owned rows were queried inside a request before a team was chosen."""


@contextmanager
def team_scope(team_id: uuid.UUID) -> Iterator[None]:
    """Confine every query in this block to one team."""
    token = _current_team.set(team_id)
    try:
        yield
    finally:
        _current_team.reset(token)


@contextmanager
def unscoped() -> Iterator[None]:
    """Deliberately query across teams (API-key lookup, login); keep such blocks tiny."""
    token = _current_team.set(_UNSCOPED)
    try:
        yield
    finally:
        _current_team.reset(token)


def set_request_team(team_id: uuid.UUID | None) -> None:
    """Choose the team for the rest of this request; `init_app` clears it around each request."""
    _current_team.set(team_id)


def _clear_request_team(*_args) -> None:
    # Threads serve many requests one after another: nothing may carry over.
    _current_team.set(None)


def current_team_id() -> uuid.UUID | None:
    value = _current_team.get()
    return value if isinstance(value, uuid.UUID) else None


def find_owned(model: type[T], object_id: str | uuid.UUID) -> T | None:
    """The team-owned row with this id in the current team, or None (bad ids included)."""
    try:
        object_id = object_id if isinstance(object_id, uuid.UUID) else uuid.UUID(str(object_id))
    except ValueError:
        return None
    row = db.session.scalar(select(model).where(model.id == object_id))
    # The criteria hook already confines the query; this check is the belt to its braces.
    if row is None or row.team_id != current_team_id():
        return None
    return row


def get_owned(model: type[T], object_id: str | uuid.UUID) -> T:
    """The team-owned row with this id in the current team, or a 404."""
    row = find_owned(model, object_id)
    if row is None:
        abort(404)
    return row


def _touches_team_rows(state: ORMExecuteState) -> bool:
    return any(issubclass(mapper.class_, TeamOwned) for mapper in state.all_mappers)


def _confine_to_team(state: ORMExecuteState) -> None:
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.is_column_load:
        return  # refreshing attributes of a row already loaded under the criteria
    scope = _current_team.get()
    if scope is _UNSCOPED:
        return
    if scope is None:
        if has_request_context() and _touches_team_rows(state):
            raise TenancyError("team-owned rows queried in a request with no team chosen")
        return
    state.statement = state.statement.options(
        with_loader_criteria(TeamOwned, lambda cls: cls.team_id == scope, include_aliases=True)
    )


def init_app(app) -> None:
    """Register the hook (once per process: it applies to every Session) and the request reset."""
    if not event.contains(Session, "do_orm_execute", _confine_to_team):
        event.listen(Session, "do_orm_execute", _confine_to_team)
    app.before_request(_clear_request_team)
    app.teardown_request(_clear_request_team)
