"""A team's collections: list, create, read, rename, delete, and put images in or take them out.

The rules are the service's (`app.services.collections`): a name is unique in the team in any
case or spacing (409), a collection is deleted only when empty (409), an image is in at most
one collection (adding moves it), and a request naming any id the team lacks is 404 with
nothing changed.
"""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from app.api import bp
from app.api.auth import scope_required
from app.api.responses import no_content
from app.api.schemas import ListArgs, Timestamp, page_of
from app.services import collections
from app.tenancy import current_team_id
from app.views import current_actor


class CollectionSchema(ma.Schema):
    """A collection and how many images it holds (a `CollectionInfo`)."""

    id = fields.UUID(attribute="collection.id")
    name = fields.String(attribute="collection.name", metadata={"example": "Summer 2026"})
    description = fields.String(attribute="collection.description")
    image_count = fields.Integer(metadata={"minimum": 0})
    created_at = Timestamp(attribute="collection.created_at")
    updated_at = Timestamp(attribute="collection.updated_at")


# Lengths are checked again by the service once spaces and invisible characters are folded
# (422); these bounds keep absurd input from getting that far.
def _name(**kwargs) -> fields.String:
    return fields.String(
        validate=validate.Length(min=1, max=4 * collections.MAX_NAME),
        metadata={"description": f"1 to {collections.MAX_NAME} characters, unique in the team."},
        **kwargs,
    )


def _description() -> fields.String:
    return fields.String(
        allow_none=True,
        validate=validate.Length(max=4 * collections.MAX_DESCRIPTION),
        metadata={"description": f"At most {collections.MAX_DESCRIPTION} characters."},
    )


class CreateCollectionSchema(ma.Schema):
    name = _name(required=True)
    description = _description()


class UpdateCollectionSchema(ma.Schema):
    name = _name()
    description = _description()


class ImageIdsSchema(ma.Schema):
    image_ids = fields.List(
        fields.UUID(),
        required=True,
        validate=validate.Length(
            min=1, max=collections.MAX_IMAGE_IDS, error="must name from {min} to {max} images"
        ),
        metadata={"description": "Ids of the team's images; any other id is 404."},
    )


@bp.get("/collections", tags=["collections"])
@scope_required("read")
@bp.arguments(ListArgs, location="query", as_kwargs=True)
@bp.response(200, page_of(CollectionSchema))
def list_collections(limit, cursor=None):
    """The team's collections by name, each with its image count."""
    items, next_cursor = collections.list_collections(limit, cursor)
    return {"items": items, "next_cursor": next_cursor}


@bp.post("/collections", tags=["collections"])
@scope_required("write")
@bp.arguments(CreateCollectionSchema, example={"name": "Summer 2026", "description": "Beach"})
@bp.response(201, CollectionSchema)
@bp.errors(409, 422)
def create_collection(body):
    """Make a collection; a name the team already has, in any case or spacing, is 409."""
    return collections.create_collection(
        current_team_id(), body["name"], body.get("description"), actor=current_actor()
    )


@bp.get("/collections/<collection_id>", tags=["collections"])
@scope_required("read")
@bp.response(200, CollectionSchema)
@bp.errors(404)
def get_collection(collection_id):
    """One collection with its image count."""
    return collections.get_collection(collection_id)


@bp.patch("/collections/<collection_id>", tags=["collections"])
@scope_required("write")
# Without a body (or with {}) nothing changes: the collection as it is.
@bp.arguments(UpdateCollectionSchema, required=False, example={"name": "Summer 2026 (beach)"})
@bp.response(200, CollectionSchema)
@bp.errors(404, 409, 422)
def update_collection(body, collection_id):
    """Rename it or change its description; another collection's name is 409."""
    return collections.update_collection(collection_id, body, actor=current_actor())


@bp.delete("/collections/<collection_id>", tags=["collections"])
@scope_required("write")
@bp.response(204)
@bp.errors(404, 409)
def delete_collection(collection_id):
    """Delete an empty collection; one that holds images is 409."""
    collections.delete_collection(collection_id, actor=current_actor())
    return no_content()


@bp.post("/collections/<collection_id>/images", tags=["collections"])
@scope_required("write")
@bp.arguments(ImageIdsSchema)
@bp.response(200, CollectionSchema)
@bp.errors(404)
def add_collection_images(body, collection_id):
    """Put images in the collection, moving those in another; any unknown id is 404 and
    nothing changes."""
    return collections.add_images(collection_id, body["image_ids"], actor=current_actor())


@bp.delete("/collections/<collection_id>/images", tags=["collections"])
@scope_required("write")
@bp.arguments(ImageIdsSchema)
@bp.response(200, CollectionSchema)
@bp.errors(404)
def remove_collection_images(body, collection_id):
    """Take images out of the collection (those not in it are left as they are); any unknown
    id is 404 and nothing changes."""
    return collections.remove_images(collection_id, body["image_ids"], actor=current_actor())
