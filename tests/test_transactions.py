"""A service action is one unit of work: it commits at its end or rolls back, units nest into
the outermost, and what must follow a commit (queueing a job) happens only after it."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import Team
from app.services.transaction import after_commit, transactional, unit_of_work


def committed_team_names() -> list[str]:
    """What another connection (a worker, say) sees: only committed rows."""
    with db.engine.connect() as connection:
        return sorted(connection.scalars(select(Team.name)))


def add_team(name: str) -> Team:
    team = Team(name=name, slug=name.lower())
    db.session.add(team)
    return team


def test_a_unit_commits_at_its_end_and_only_then_runs_what_follows(app):
    with app.app_context():
        seen_by_follower = []
        with unit_of_work():
            add_team("Alpha")
            after_commit(lambda: seen_by_follower.append(committed_team_names()))
            db.session.flush()
            assert committed_team_names() == [] and seen_by_follower == []
        assert seen_by_follower == [["Alpha"]]


def test_a_failing_unit_rolls_back_and_runs_nothing_after(app):
    with app.app_context():
        followed = []
        with pytest.raises(ValueError), unit_of_work():
            add_team("Beta")
            after_commit(lambda: followed.append(True))
            db.session.flush()
            raise ValueError("refused")
        assert followed == [] and committed_team_names() == []
        assert db.session.scalars(select(Team)).all() == []  # the session is usable again


def test_nested_units_join_the_outermost(app):
    @transactional
    def inner(name: str) -> None:
        add_team(name)

    with app.app_context():
        with pytest.raises(ValueError), unit_of_work():
            inner("Gamma")
            assert committed_team_names() == []  # the inner unit did not commit on its own
            raise ValueError("the outer unit fails after the inner one ended")
        assert committed_team_names() == []  # and its work went with the outer one
        inner("Delta")  # on its own, it is a unit of its own
        assert committed_team_names() == ["Delta"]


def test_a_unit_that_retries_its_transaction_refuses_to_be_nested(app):
    refused = pytest.raises(RuntimeError, match="cannot be nested")
    with app.app_context(), unit_of_work(), refused, unit_of_work(outermost=True):
        pass


def test_after_commit_outside_a_unit_is_a_mistake(app):
    with app.app_context(), pytest.raises(RuntimeError, match="inside a unit of work"):
        after_commit(lambda: None)
