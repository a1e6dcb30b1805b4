"""The one way request bodies are parsed as JSON: strict, bounded, and never a crash.

Python's `json` module accepts more than JSON: NaN and Infinity, numbers of any size (1e400
becomes infinity), unpaired surrogates (which PostgreSQL refuses), duplicate member names, and
it recurses once per nesting level (5,000 levels is a RecursionError). What is refused here
follows I-JSON (RFC 7493), the profile of JSON meant for exchange between programs, plus NUL,
which no database text column can store. Every refusal is an `InvalidJSON` (a ValueError, so
`request.get_json(silent=True)` returns None for it) whose message names the problem.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flask.json.provider import DefaultJSONProvider

MAX_DEPTH = 64
# I-JSON: integers beyond what an IEEE 754 double holds exactly do not survive other parsers.
MAX_SAFE_INTEGER = 2**53 - 1


class InvalidJSON(ValueError):
    """A body that is not strict JSON; the message says why."""


def _refuse_constant(name: str) -> Any:
    raise InvalidJSON(f"{name} is not a JSON number; send finite numbers only")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJSON(f"the number {text[:40]} is too large to be a finite number")
    return value


def _safe_int(text: str) -> int:
    if len(text.lstrip("-")) > 16 or abs(value := int(text)) > MAX_SAFE_INTEGER:
        raise InvalidJSON(f"the number {text[:40]} is beyond ±{MAX_SAFE_INTEGER:,}")
    return value


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        names = [name for name, _ in pairs]
        duplicate = next(name for name in names if names.count(name) > 1)
        raise InvalidJSON(f"the member {duplicate[:40]!r} appears more than once in an object")
    return result


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise InvalidJSON("strings must not contain NUL (\\u0000)")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            message = "strings must not contain unpaired surrogates (\\ud800-\\udfff)"
            raise InvalidJSON(message) from None


def _check_tree(value: Any) -> None:
    """Depth and strings, walked without recursion: the value may be as deep as the parser
    allowed."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise InvalidJSON(f"the JSON is nested more than {MAX_DEPTH} levels deep")
            if isinstance(item, dict):
                for key in item:
                    _check_text(key)
                pending.extend((child, depth + 1) for child in item.values())
            else:
                pending.extend((child, depth + 1) for child in item)


def loads_strict(data: str | bytes | bytearray) -> Any:
    """Parse a JSON text strictly (UTF-8 only, see the module docstring) or raise InvalidJSON."""
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJSON("the body is not UTF-8 text") from None
    try:
        value = json.loads(
            data,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_safe_int,
            object_pairs_hook=_unique_members,
        )
    except InvalidJSON:
        raise
    except RecursionError:
        raise InvalidJSON(f"the JSON is nested more than {MAX_DEPTH} levels deep") from None
    except json.JSONDecodeError as exc:
        raise InvalidJSON(
            f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    _check_tree(value)
    return value


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON, reading with `loads_strict`: `request.get_json` anywhere is strict."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads_strict(s)
