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

import functools
import re
from typing import Any

import marshmallow as ma
from flask import url_for
from flask_smorest.fields import Upload
from marshmallow import fields, validate
from werkzeug.datastructures import FileStorage

from app.models import IMAGE_STATUSES
from app.services.duplicates import TIERS as DUPLICATE_TIERS
from app.services.renditions import FORMATS, WIDTHS
from app.services.search import MAX_K
from app.strict_json import MAX_SAFE_INTEGER

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


@functools.cache  # one class per item schema: the document names it once
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
        # `not: {}`: no value is valid, so the document tells clients (and generators) to
        # leave it out, as the API does.
        metadata={"description": "Refused: a person chooses their own password.", "not": {}},
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


# -- images ------------------------------------------------------------------------------------


class SameObject(fields.Nested):
    """A nested block made from the same object's attributes (an image's `urls`, a search
    result's `index`), so it is documented as the object it is."""

    def get_value(self, obj, attr, accessor=None, default=ma.missing):
        return obj


class FilePart(Upload):
    """A file part of a multipart body (documented as a binary string)."""

    def _deserialize(self, value: Any, attr, data, **kwargs) -> FileStorage:
        if not isinstance(value, FileStorage):
            raise ma.ValidationError("must be a file part (with a filename), not a text field")
        return value


class OneFilePart(FilePart):
    """Exactly one file part: a second one is refused, not ignored."""

    is_multiple = True  # webargs hands over every part of this name, to be counted here

    def _deserialize(self, value: Any, attr, data, **kwargs) -> FileStorage:
        parts = value if isinstance(value, list) else [value]
        if len(parts) != 1:
            raise ma.ValidationError("send exactly one file part")
        return super()._deserialize(parts[0], attr, data, **kwargs)


class LabelSchema(ma.Schema):
    name = fields.String(metadata={"example": "seashore"})
    score = fields.Float(metadata={"example": 0.81})


class ImageMetadataSchema(ma.Schema):
    exif = fields.Function(lambda image: (image.meta or {}).get("exif", {}))
    colors = fields.Function(
        lambda image: (image.meta or {}).get("colors", []),
        metadata={"example": ["#aabbcc"]},
    )
    custom = fields.Function(lambda image: (image.meta or {}).get("custom", {}))


def _file_url(variant: str):
    def url(image) -> str:
        return url_for("api.get_image_file", image_id=image.id, variant=variant, _external=True)

    return url


VARIANTS = ("original", "thumbnail", "preview")
ImageUrlsSchema = ma.Schema.from_dict(
    {variant: fields.Function(_file_url(variant)) for variant in VARIANTS}, name="ImageUrls"
)


def _uploaded_by(image) -> str | None:
    return image.uploaded_by


class ImageSchema(ma.Schema):
    """An image, as API.md shapes it."""

    id = fields.UUID()
    filename = fields.String(metadata={"example": "beach.jpg"})
    content_type = fields.String(metadata={"example": "image/jpeg"})
    size_bytes = fields.Integer()
    width = fields.Integer(allow_none=True)
    height = fields.Integer(allow_none=True)
    sha256 = fields.String()
    status = fields.String(metadata={"enum": list(IMAGE_STATUSES)})
    error = fields.String(allow_none=True)
    collection_id = fields.UUID(allow_none=True)
    tags = fields.Function(
        lambda image: [tag.name for tag in image.tags], metadata={"example": ["summer"]}
    )
    labels = fields.List(fields.Nested(LabelSchema))
    metadata = SameObject(ImageMetadataSchema)
    created_at = Timestamp()
    uploaded_by = fields.Function(_uploaded_by, allow_none=True)
    urls = SameObject(ImageUrlsSchema)
    existing = fields.Boolean(
        metadata={"description": "Present, true, when an upload matched an image already here."}
    )


def _timestamp(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


class ImageUrlTemplates:
    """The file URLs of any image from one `url_for` per variant: what `ImageUrlsSchema` makes,
    for a hot path that shows many images in one request (a placeholder id, split once)."""

    PLACEHOLDER = "00000000-0000-4000-8000-00000000beef"

    def __init__(self):
        self.parts = {
            variant: _file_url(variant)(With(None, id=self.PLACEHOLDER)).split(self.PLACEHOLDER)
            for variant in VARIANTS
        }

    def of(self, image_id: str) -> dict[str, str]:
        return {variant: image_id.join(parts) for variant, parts in self.parts.items()}


def image_document(image, urls: ImageUrlTemplates) -> dict[str, Any]:
    """What `ImageSchema().dump(image)` answers, built directly: marshmallow costs more than
    the rest of /similar together. `image` is an `Image` or a search's `ImageView`;
    tests/test_api_schemas_fast.py proves the answers equal."""
    meta = image.meta or {}
    image_id = str(image.id)
    return {
        "id": image_id,
        "filename": image.filename,
        "content_type": image.content_type,
        "size_bytes": image.size_bytes,
        "width": image.width,
        "height": image.height,
        "sha256": image.sha256,
        "status": image.status,
        "error": image.error,
        "collection_id": str(image.collection_id) if image.collection_id is not None else None,
        "tags": image.tag_names,
        "labels": [{"name": name, "score": score} for name, score in image.label_scores],
        "metadata": {
            "exif": meta.get("exif", {}),
            "colors": meta.get("colors", []),
            "custom": meta.get("custom", {}),
        },
        "created_at": _timestamp(image.created_at),
        "uploaded_by": image.uploaded_by,
        "urls": urls.of(image_id),
    }


# A text query is refused when it is empty or only spaces (the document says so: `pattern`);
# one of punctuation only is taken, and matches nothing. The spaces are spelt out: `\s` means
# more characters to Python (U+0085, U+2028...) than to the document's regular expressions.
HAS_A_WORD = validate.Regexp(
    r"[ \t\n\r\f\v]*[^ \t\n\r\f\v]", error="q must not be empty or only spaces"
)


class ImageListArgs(ListArgs):
    status = fields.String(validate=validate.OneOf(IMAGE_STATUSES))
    tag = fields.String(validate=validate.Length(max=200))
    q = fields.String(
        validate=[validate.Length(max=1000), HAS_A_WORD],
        metadata={"description": "Words over filename, tags, labels and collection name."},
    )
    collection_id = fields.UUID(metadata={"description": "Only the images of this collection."})


class UploadImagesSchema(ma.Schema):
    file = fields.List(
        FilePart(),
        required=True,
        validate=validate.Length(min=1),
        metadata={"description": "One or more image files."},
    )
    tags = fields.String(metadata={"description": "Comma separated.", "example": "summer,beach"})
    collection_id = fields.UUID(metadata={"description": "Put the new images in this collection."})


class UploadedImagesSchema(ma.Schema):
    items = fields.List(fields.Nested(ImageSchema))


class CustomMetadataEditSchema(ma.Schema):
    custom = fields.Dict(
        keys=fields.String(),
        required=True,
        metadata={"description": "Replaces the image's custom metadata."},
    )


class EditImageSchema(ma.Schema):
    filename = fields.String()
    tags = TextOrTextList()
    collection_id = fields.UUID(
        allow_none=True, metadata={"description": "A collection of the team, or null for none."}
    )
    metadata = fields.Nested(CustomMetadataEditSchema)

    @ma.validates_schema
    def something_to_change(self, data, **kwargs):
        if not data:
            raise ma.ValidationError(
                "send at least one of filename, tags, collection_id, metadata.custom"
            )


class ImageFileArgs(ma.Schema):
    variant = fields.String(load_default="original", validate=validate.OneOf(VARIANTS))
    format = fields.String(validate=validate.OneOf(list(FORMATS)))
    quality = QueryInteger(low=1, high=95)
    width = QueryInteger(
        low=1,
        high=100_000,
        metadata={
            "description": f"One of {', '.join(map(str, WIDTHS))}; never upscaled.",
            "enum": list(WIDTHS),
        },
    )


class SimilarArgs(ma.Schema):
    k = QueryInteger(low=1, high=MAX_K, load_default=20)
    embedder = fields.String(validate=validate.Length(max=100))


class MatchSchema(ma.Schema):
    image = fields.Nested(ImageSchema)
    distance = fields.Float(metadata={"example": 0.1})
    score = fields.Float(metadata={"example": 0.9})


class IndexStateSchema(ma.Schema):
    version = fields.Integer(attribute="index_version", allow_none=True)
    fresh = fields.Boolean()


class SimilarSchema(ma.Schema):
    items = fields.List(fields.Nested(MatchSchema), attribute="matches")
    embedder = fields.String()
    index = SameObject(IndexStateSchema)


def similar_document(result) -> dict[str, Any]:
    """What `SimilarSchema().dump(result)` answers, built directly (see `image_document`)."""
    urls = ImageUrlTemplates()
    return {
        "items": [
            {
                "image": image_document(match.image, urls),
                "distance": float(match.distance),
                "score": float(match.score),
            }
            for match in result.matches
        ],
        "embedder": result.embedder,
        "index": {"version": result.index_version, "fresh": result.fresh},
    }


# -- direct uploads ----------------------------------------------------------------------------


class CreateUploadSchema(ma.Schema):
    filename = fields.String(required=True, metadata={"example": "beach.jpg"})
    content_type = fields.String(required=True, metadata={"example": "image/jpeg"})
    size_bytes = BodyInteger(
        low=1,
        high=MAX_SAFE_INTEGER,
        required=True,
        metadata={"description": "The exact size; above the upload limit is 413."},
    )
    tags = TextOrTextList()
    collection_id = fields.UUID(allow_none=True)


class PresignedUploadSchema(ma.Schema):
    url = fields.String()
    method = fields.String(metadata={"example": "POST"})
    fields_ = fields.Dict(
        data_key="fields",
        attribute="fields",
        keys=fields.String(),
        values=fields.String(),
        metadata={"description": "Send these as text parts before the `file` part."},
    )
    headers = fields.Dict(keys=fields.String(), values=fields.String())


class UploadTicketSchema(ma.Schema):
    image_id = fields.UUID(attribute="id")
    upload = fields.Nested(PresignedUploadSchema)
    expires_at = Timestamp()


class DirectUploadPartsSchema(ma.Schema):
    """What the signed upload URL of local storage takes: the `fields` it was given, then the
    file."""

    content_type = fields.String(data_key="Content-Type")
    file = OneFilePart(required=True)


# -- imports -----------------------------------------------------------------------------------


class ImportUrlsSchema(ma.Schema):
    urls = fields.List(
        fields.String(),
        required=True,
        metadata={"example": ["https://example.com/a.jpg"]},
    )
    tags = TextOrTextList()
    collection_id = fields.UUID(allow_none=True)


class ImportCsvSchema(ma.Schema):
    file = OneFilePart(
        required=True,
        metadata={"description": "CSV with a `url` column, optional `filename` and `tags`."},
    )
    tags = fields.String(metadata={"description": "Comma separated, for every row."})
    collection_id = fields.UUID()


class ImportSchema(ma.Schema):
    id = fields.UUID(attribute="batch.id")
    status = fields.String(metadata={"enum": ["queued", "running", "done"]})
    total = fields.Integer()
    done = fields.Integer()
    failed = fields.Integer()
    collection_id = fields.UUID(attribute="batch.collection_id", allow_none=True)
    created_at = Timestamp(attribute="batch.created_at")


class ImportItemSchema(ma.Schema):
    url = fields.String()
    status = fields.String(metadata={"enum": ["queued", "done", "failed"]})
    image_id = fields.UUID(allow_none=True)
    error = fields.String(allow_none=True)


class ImportDetailSchema(ImportSchema):
    """An import with one page of its items (`limit`, `cursor` as for any list)."""

    items = fields.List(fields.Nested(ImportItemSchema))
    next_cursor = fields.String(allow_none=True)


# -- search and duplicates ---------------------------------------------------------------------


class SearchByImageSchema(ma.Schema):
    file = OneFilePart(required=True, metadata={"description": "The image (not stored)."})
    k = QueryInteger(low=1, high=MAX_K, metadata={"description": "How many; 20 if not sent."})
    embedder = fields.String(validate=validate.Length(max=100))


class SearchByImageQuery(ma.Schema):
    """`k` and `embedder` may come in the query string instead of the form."""

    k = QueryInteger(low=1, high=MAX_K)
    embedder = fields.String(validate=validate.Length(max=100))


class TextSearchArgs(ImageListArgs):
    q = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=1000), HAS_A_WORD],
        metadata={"description": "Words over filename, tags, labels and collection."},
    )


class DuplicateArgs(ma.Schema):
    tier = fields.String(validate=validate.OneOf(DUPLICATE_TIERS), load_default=None)
    # Its meaning (and so its type) depends on the tier: the service reads it.
    threshold = fields.String(
        validate=validate.Length(max=20),
        metadata={"description": "near: a number of bits (0-16); similar: a distance (0-1)."},
    )
    # Pages like every list of the API: `limit` 1-200, 50 by default.
    limit = QueryInteger(low=1, high=MAX_LIMIT, load_default=50)
    cursor = fields.String()


class DuplicateGroupSchema(ma.Schema):
    id = fields.String()
    tier = fields.String(metadata={"enum": list(DUPLICATE_TIERS)})
    images = fields.List(fields.Nested(ImageSchema))
    suggested_keep = fields.Function(lambda group: str(group.suggested_keep.id))


class DuplicatePageSchema(ma.Schema):
    groups = fields.List(fields.Nested(DuplicateGroupSchema))
    next_cursor = fields.String(allow_none=True)


class ResolveDuplicatesSchema(ma.Schema):
    """Either `keep` and `delete` (together, the group's images) or `not_duplicates: true`."""

    keep = fields.List(fields.String())
    delete = fields.List(fields.String())
    not_duplicates = StrictBoolean()


class ResolvedDuplicatesSchema(ma.Schema):
    group_id = fields.String()
    kept = fields.List(fields.Nested(ImageSchema))
    deleted = fields.List(fields.String())
    not_duplicates = fields.List(fields.String())
