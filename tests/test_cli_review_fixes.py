"""Commands that met an outage with a traceback: each now says what is wrong, with status 1."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("config_overrides", [{"REDIS_URL": "redis://127.0.0.1:1/0"}])
def test_reconcile_says_when_the_queue_cannot_be_reached(app, runner):
    result = runner.invoke(args=["reconcile"])
    assert result.exit_code == 1, result.output
    assert "Error: the job queue (Redis) cannot be reached just now" in result.output
    assert isinstance(result.exception, SystemExit)  # a message, not a traceback
