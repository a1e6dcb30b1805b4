"""How the API reads its input: webargs, as flask-smorest drives it, made strict.

- JSON bodies are parsed by the one strict parser (`app.strict_json`): no NaN, no Infinity,
  no duplicate members, bounded numbers and depth.
- A body sent as something other than JSON to an endpoint that reads JSON is refused, never
  silently taken for an empty object.
- Unknown fields are refused in every location (webargs ignores unknown query parameters by
  default): a misspelt `limti` or a `team_id` is a 400, not a silent no-op.
  An endpoint that reads no query at all refuses any query parameter too
  (`refuse_unread_query`): webargs looks only where a schema reads.
- A field that takes one value may be sent once: `?limit=5&limit=500` is refused.
- `multipart` is one location for a whole multipart body, file parts and text parts together,
  so that one schema describes (and documents) it.
- Every refusal is an `ApiError` 400 whose message names each invalid field and whose
  `fields` maps them to what is wrong.
"""

from __future__ import annotations

from typing import Any, NoReturn

import marshmallow as ma
from flask import Request, current_app, request
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from webargs.multidictproxy import MultiDictProxy
from werkzeug.datastructures import CombinedMultiDict, MultiDict

from app.api.errors import ApiError
from app.strict_json import InvalidJSON, loads_strict

SEND_JSON = "send a JSON object with Content-Type: application/json"
NOT_AN_OBJECT = "must be a JSON object"


class ApiArgumentsParser(FlaskParser):
    DEFAULT_VALIDATION_STATUS = 400
    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "json": ma.RAISE,
        "query": ma.RAISE,
        "querystring": ma.RAISE,
        "form": ma.RAISE,
        "files": ma.RAISE,
        "multipart": ma.RAISE,
    }
    __location_map__ = {**FlaskParser.__location_map__, "multipart": "load_multipart"}

    def load_json(self, req: Request, schema: ma.Schema) -> Any:
        data = req.get_data(cache=True)
        if not data:
            return core.missing  # loads as {}: the schema says whether that will do
        if not is_json_request(req):
            raise ApiError(400, SEND_JSON)
        try:
            body = loads_strict(data)
        except InvalidJSON as exc:
            raise ApiError(400, f"the JSON body was refused: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, f"body: {NOT_AN_OBJECT}", fields={"body": NOT_AN_OBJECT})
        return body

    def load_querystring(self, req: Request, schema: ma.Schema) -> Any:
        return self._single_values_once(req.args, schema)

    def load_multipart(self, req: Request, schema: ma.Schema) -> Any:
        return self._single_values_once(CombinedMultiDict([req.files, req.form]), schema)

    def _single_values_once(self, values: MultiDict, schema: ma.Schema) -> MultiDictProxy:
        """The values as webargs reads them, but a field that takes one value sent more than
        once (`?limit=5&limit=500`) is refused, not silently read as its first value."""
        proxy = self._makeproxy(values, schema)
        repeated = sorted(
            name
            for name in values
            if name not in proxy.multiple_keys and len(values.getlist(name)) > 1
        )
        if repeated:
            fields = dict.fromkeys(repeated, "send this field once")
            raise ApiError(400, f"{', '.join(repeated)}: send once", fields=fields)
        return proxy

    def handle_error(
        self,
        error: ma.ValidationError,
        req: Request,
        schema: ma.Schema,
        *,
        error_status_code: int | None,
        error_headers: Any,
    ) -> NoReturn:
        # webargs keys the messages by location first ({"json": {"limit": [...]}}): a field's
        # name is what a client recognises, so the location is dropped.
        fields: dict[str, str] = {}
        for by_location in error.messages.values():
            fields.update(invalid_fields(by_location))
        message = "; ".join(f"{name}: {problem}" for name, problem in fields.items())
        raise ApiError(400, message, fields=fields)


# What marshmallow says about the whole input rather than one field.
WHOLE_INPUT = "_schema"


def invalid_fields(messages: Any, path: str = "") -> dict[str, str]:
    """marshmallow's nested error messages as {"dotted.field.path": "what is wrong"}."""
    if isinstance(messages, dict):
        flat = {}
        for name, inner in messages.items():
            if name == WHOLE_INPUT:
                flat[path or "body"] = _whole_input_problem(inner)
            else:
                flat.update(invalid_fields(inner, f"{path}.{name}" if path else str(name)))
        return flat
    if isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages):
        return {path or "body": " ".join(messages)}
    return {path or "body": str(messages)}


def _whole_input_problem(messages: Any) -> str:
    text = " ".join(messages) if isinstance(messages, list) else str(messages)
    if text == "Invalid input type.":
        return NOT_AN_OBJECT
    return text


def refuse_unread_query() -> None:
    """Refuse query parameters sent to an endpoint that declares none (`DELETE
    /images/{id}?force=1` would otherwise do what it does without them, silently)."""
    if not request.args or request.endpoint is None:
        return
    view = current_app.view_functions[request.endpoint]
    declared = getattr(view, "_apidoc", {}).get("arguments", {}).get("parameters", [])
    if any(parameter.get("in") == "query" for parameter in declared):
        return  # its schema refuses what it does not know
    names = sorted(request.args)
    refusal = "this endpoint takes no query parameters"
    raise ApiError(400, f"{', '.join(names)}: {refusal}", fields=dict.fromkeys(names, refusal))
