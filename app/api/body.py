"""Reading a request's JSON body: the one strict parser, its refusals as 400s that say why."""

from __future__ import annotations

from typing import Any

from flask import request

from app.api.errors import ApiError
from app.strict_json import InvalidJSON, loads_strict


def read_json() -> Any:
    """The request's JSON body, parsed strictly; None when the request carries no JSON."""
    if not request.is_json:
        return None
    data = request.get_data(cache=True)
    if not data:
        return None
    try:
        return loads_strict(data)
    except InvalidJSON as exc:
        raise ApiError(400, f"the JSON body was refused: {exc}") from None


def json_body(required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    """The request's JSON object; unknown fields (team_id, id, ...) are refused, not ignored."""
    body = read_json()
    if not isinstance(body, dict):
        raise ApiError(400, "send a JSON object with Content-Type: application/json")
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise ApiError(400, f"unsupported field {', '.join(unknown)}")
    missing = [name for name in required if name not in body]
    if missing:
        raise ApiError(400, f"missing field {', '.join(missing)}")
    return body


def no_body() -> None:
    """For actions that take no input: nothing, or an empty JSON object, and nothing else."""
    if request.get_data():
        json_body(())
