"""The API's declared shapes: what each endpoint reads and what it answers.

One set of marshmallow schemas gives both the validation of every request (through
flask-smorest and `app.api.parsing`) and the OpenAPI document (`/api/v1/openapi.json`).
Conventions:

- Input schemas refuse unknown fields (marshmallow's default, enforced in every location by
  the parser); the schema declares types, required fields and numeric ranges, so breaking one
  is a 400 naming the field. Rules of the domain (an unknown scope, a name too long once its
  spaces are folded) stay in the services, which raise `ValidationFailed` (422).
- Output schemas read models (or `With`, a model seen with a few extra attributes) and are
  the only place a response body is built.
- Lists read `ListArgs` and answer `page_of(ItemSchema)`: `{"items": [...], "next_cursor"}`.
"""

from __future__ import annotations

import re
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

# -- fields ------------------------------------------------------------------------------------


class QueryInteger(fields.Integer):
    """A query parameter that is a plain decimal integer: `5`, not `+5`, ` 5`, `5.0`, `1_0` or
    `٥` (which `int()` would all take). With `low`/`high`, a value outside is refused naming
    the range."""

    PLAIN = re.compile(r"[0-9]{1,9}")

    def __init__(self, *, low: int, high: int, **kwargs):
        self.low, self.high = low, high
        kwargs.setdefault("metadata", {}).update(minimum=low, maximum=high)
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value: Any, attr, data, **kwargs) -> int:
        problem = f"must be a whole number from {self.low} to {self.high}"
        if not isinstance(value, str) or not self.PLAIN.fullmatch(value):
            raise ma.ValidationError(problem)
        number = int(value)
        if not self.low <= number <= self.high:
            raise ma.ValidationError(problem)
        return number


def BodyInteger(*, low: int, high: int, **kwargs) -> fields.Integer:  # noqa: N802 (a field)
    """An integer in a JSON body: a JSON number without a fraction (not `"7"`, `7.5` or
    `true`), within [low, high]."""
    return fields.Integer(
        strict=True,
        validate=validate.Range(low, high, error="must be from {min} to {max}"),
        **kwargs,
    )


class TextOrTextList(fields.Field):
    """Either one string (comma separated, as a form field sends it) or a list of strings, left
    as given for the service to split and normalise (`tags`, `scopes`)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("metadata", {}).setdefault(
            "oneOf", [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
        )
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr, data, **kwargs) -> str | list[str]:
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        raise ma.ValidationError("must be a string or a list of strings")


class StrictBoolean(fields.Boolean):
    """A JSON true or false, not 1, "yes" or "on"."""

    def _deserialize(self, value: Any, attr, data, **kwargs) -> bool:
        if not isinstance(value, bool):
            raise ma.ValidationError("must be true or false")
        return value


class Timestamp(fields.DateTime):
    """ISO 8601 in UTC with a `Z`, as every timestamp of the API is written."""

    def _serialize(self, value, attr, obj, **kwargs) -> str | None:
        return value.isoformat().replace("+00:00", "Z") if value is not None else None


def refused(message: str):
    """A validator for a field that is named only to be refused with a reason."""

    def refuse(value: Any) -> None:
        raise ma.ValidationError(message)

    return refuse


class With:
    """A model seen with a few more attributes: what a response shows beside the model's own
    (the full text of a key just made, `existing` on a re-upload)."""

    def __init__(self, model: Any, **extra: Any):
        self._model = model
        self.__dict__.update(extra)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


# -- errors ------------------------------------------------------------------------------------


class ErrorDetailSchema(ma.Schema):
    code = fields.String(required=True, metadata={"example": "bad_request"})
    message = fields.String(required=True, metadata={"example": "limit: must be a whole number"})
    fields_ = fields.Dict(
        data_key="fields",
        keys=fields.String(),
        values=fields.String(),
        metadata={"description": "Each invalid field (dotted path) and what is wrong with it."},
    )


class ErrorSchema(ma.Schema):
    """Every error the API answers, whatever the status."""

    error = fields.Nested(ErrorDetailSchema, required=True)


# -- lists -------------------------------------------------------------------------------------

MAX_LIMIT = 200


class ListArgs(ma.Schema):
    """The query of every list: a page size and the cursor the previous page gave."""

    limit = QueryInteger(low=1, high=MAX_LIMIT, load_default=50)
    # The services check a cursor (length, shape) before it reaches a query.
    cursor = fields.String(metadata={"description": "`next_cursor` of the previous page; opaque."})


def page_of(item_schema: type[ma.Schema]) -> type[ma.Schema]:
    """The schema of one page of a list of `item_schema`."""
    name = item_schema.__name__.removesuffix("Schema") + "PageSchema"
    return ma.Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item_schema), required=True),
            "next_cursor": fields.String(
                required=True,
                allow_none=True,
                metadata={"description": "Pass as `cursor` for the next page; null at the end."},
            ),
        },
        name=name,
    )


class EmptySchema(ma.Schema):
    """Actions that take no input: no body, or an empty JSON object, and nothing else."""


# -- team, keys, members, audit ---------------------------------------------------------------


class TeamSchema(ma.Schema):
    id = fields.UUID(attribute="team.id")
    name = fields.String(attribute="team.name")
    slug = fields.String(attribute="team.slug")
    image_count = fields.Integer()
    storage_bytes = fields.Integer()


class KeySchema(ma.Schema):
    """An API key without its secret."""

    id = fields.UUID()
    name = fields.String()
    prefix = fields.String()
    scopes = fields.List(fields.String(validate=validate.OneOf(["read", "write", "admin"])))
    created_at = Timestamp()
    created_by = fields.Function(
        lambda key: key.created_by.email if key.created_by else None, allow_none=True
    )
    expires_at = Timestamp(allow_none=True)
    last_used_at = Timestamp(allow_none=True)
    revoked_at = Timestamp(allow_none=True)


class NewKeySchema(KeySchema):
    """A key just made or rotated: the one time its full text is shown."""

    key = fields.String(metadata={"description": "The full key; it is never shown again."})


class CreateKeySchema(ma.Schema):
    name = fields.String(required=True, metadata={"example": "ci"})
    scopes = TextOrTextList(
        required=True,
        metadata={
            "description": "Scope names (read, write, admin) or a preset: read-only, upload, full.",
            "example": ["read", "write"],
        },
    )
    expires_in_days = BodyInteger(low=1, high=3650, allow_none=True)


class MemberSchema(ma.Schema):
    user_id = fields.UUID()
    email = fields.String(attribute="user.email")
    role = fields.String()
    joined_at = Timestamp(attribute="created_at")


ROLES = ["viewer", "member", "admin"]


class AddMemberSchema(ma.Schema):
    email = fields.String(required=True, metadata={"example": "ada@example.com"})
    role = fields.String(required=True, metadata={"enum": ROLES})
    invite = StrictBoolean(
        validate=validate.Equal(True, error="may only be true: members are added by invite")
    )
    password = fields.Raw(
        load_only=True,
        metadata={"description": "Refused: a person chooses their own password."},
        validate=refused(
            "is not accepted: a team admin does not set passwords; the person chooses theirs "
            "with the invite link (or signs in with the account they have)"
        ),
    )


class InviteSchema(ma.Schema):
    invite_url = fields.String()
    email = fields.String()
    role = fields.String()
    expires_at = Timestamp()


class ChangeRoleSchema(ma.Schema):
    role = fields.String(required=True, metadata={"enum": ROLES})


class AuditArgs(ListArgs):
    actor = fields.String(
        validate=validate.Length(max=200),
        metadata={"description": "An actor's label, user or key id, or a key's prefix."},
    )
    action = fields.String(
        validate=validate.Length(max=100),
        metadata={"description": "An action (`image.delete`) or its family (`image`)."},
    )


class AuditEventSchema(ma.Schema):
    id = fields.Integer()
    at = Timestamp()
    actor = fields.String()
    actor_type = fields.String()
    action = fields.String()
    target = fields.Method("target_label", allow_none=True)
    target_type = fields.String(allow_none=True)
    target_id = fields.String(allow_none=True)
    ip = fields.String(allow_none=True)
    details = fields.Function(lambda event: event.details or {})

    def target_label(self, event) -> str | None:
        if event.target:
            return event.target
        return f"{event.target_type} {event.target_id}" if event.target_type else None
