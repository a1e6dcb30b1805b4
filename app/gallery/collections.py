"""Collections in the browser: the list, one collection's page, and moving images in and out
(from the gallery grid by selecting several)."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, url_for

from app.errors import ServiceError, ValidationFailed
from app.gallery import bp
from app.services import collections
from app.services import images as image_service
from app.views import current_actor, fragment_or_page, http_status, role_required

PAGE_SIZE = 60
# The gallery's "move to" list shows this many; more is a rare team.
LISTED = 500
COLLECTIONS_PAGE = 100  # the collections page, a page at a time by name


@bp.context_processor
def collection_choices():
    """For the gallery's bulk bar: the team's collections, read only if a template asks."""
    return {"collection_choices": lambda: collections.list_collections(LISTED)[0]}


def _is_htmx() -> bool:
    return bool(request.headers.get("HX-Request"))


def _list_page(status: int = 200, **context):
    if "infos" not in context:
        cursor = request.args.get("cursor") or None
        context["infos"], context["next_cursor"] = collections.list_collections(
            COLLECTIONS_PAGE, cursor
        )
    return fragment_or_page(
        "gallery/_collections.html", "gallery/collections.html", status, **context
    )


@bp.get("/collections")
def list_collections():
    return _list_page()


@bp.post("/collections")
@role_required("admin", "member")
def create_collection():
    try:
        info = collections.create_collection(
            g.membership.team_id,
            request.form.get("name", ""),
            request.form.get("description", ""),
            actor=current_actor(),
        )
    except ServiceError as exc:
        return _list_page(http_status(exc), error=exc.message, form=request.form)
    message = f"Collection “{info.collection.name}” created."
    if _is_htmx():
        return _list_page(message=message)
    flash(message, "info")
    return redirect(url_for("gallery.list_collections"))


def _collection_page(collection_id: str, status: int = 200, **context):
    info = context.pop("info", None) or collections.get_collection(collection_id)
    images, next_cursor = image_service.list_images(
        PAGE_SIZE, request.args.get("cursor") or None, collection_id=collection_id
    )
    return fragment_or_page(
        "gallery/_collection_detail.html",
        "gallery/collection.html",
        status,
        info=info,
        images=images,
        next_cursor=next_cursor,
        **context,
    )


@bp.get("/collections/<collection_id>")
def show_collection(collection_id: str):
    if _is_htmx() and request.args.get("cursor"):  # the next page of its grid
        info = collections.get_collection(collection_id)
        images, next_cursor = image_service.list_images(
            PAGE_SIZE, request.args["cursor"], collection_id=collection_id
        )
        return (
            render_template(
                "gallery/_collection_tiles.html", info=info, images=images, next_cursor=next_cursor
            ),
            200,
            {"Vary": "HX-Request"},
        )
    return _collection_page(collection_id)


def _after_change(collection_id: str, message: str):
    if _is_htmx():
        return _collection_page(collection_id, message=message)
    flash(message, "info")
    return redirect(url_for("gallery.show_collection", collection_id=collection_id))


@bp.post("/collections/<collection_id>")
@role_required("admin", "member")
def update_collection(collection_id: str):
    changes = {f: request.form[f] for f in collections.EDITABLE if f in request.form}
    try:
        info = collections.update_collection(collection_id, changes, actor=current_actor())
    except ServiceError as exc:
        if http_status(exc) == 404:
            raise
        return _collection_page(collection_id, http_status(exc), error=exc.message)
    return _after_change(collection_id, f"Saved “{info.collection.name}”.")


@bp.post("/collections/<collection_id>/delete")
@role_required("admin", "member")
def delete_collection(collection_id: str):
    info = collections.get_collection(collection_id)
    try:
        collections.delete_collection(collection_id, actor=current_actor())
    except ServiceError as exc:
        if http_status(exc) == 404:
            raise
        return _collection_page(collection_id, http_status(exc), error=exc.message, info=info)
    message = f"Collection “{info.collection.name}” deleted."
    if _is_htmx():
        return "", 204, {"HX-Redirect": url_for("gallery.list_collections")}
    flash(message, "info")
    return redirect(url_for("gallery.list_collections"))


@bp.post("/collections/<collection_id>/images/remove")
@role_required("admin", "member")
def remove_from_collection(collection_id: str):
    image_ids = request.form.getlist("image_ids")
    if not image_ids:
        return _collection_page(collection_id, 422, error="Select the images to remove first.")
    info = collections.remove_images(collection_id, image_ids, actor=current_actor())
    return _after_change(collection_id, f"Removed from “{info.collection.name}”.")


@bp.post("/collections/move")
@role_required("admin", "member")
def move_images():
    """The gallery's bulk bar: put the selected images in a collection, or take them out."""
    image_ids = request.form.getlist("image_ids")
    target = request.form.get("collection_id", "")
    removing = request.form.get("action") == "remove"
    status, error, message = 200, None, None
    try:
        if not image_ids:
            raise ValidationFailed("Select one or more images first.")
        if not target:
            raise ValidationFailed("Choose a collection.")
        change = collections.remove_images if removing else collections.add_images
        info = change(target, image_ids, actor=current_actor())
        # The images that went in or out, not those ticked: some may already have been where
        # they were asked to be.
        count = info.changed
        message = (
            f"{count} image{'s' if count != 1 else ''} "
            f"{'taken out of' if removing else 'now in'} “{info.collection.name}” "
            f"({info.image_count} in it)."
        )
    except ServiceError as exc:
        status, error = http_status(exc), exc.message
    if _is_htmx():
        return render_template("gallery/_bulk_bar.html", message=message, error=error), status
    flash(error or message, "error" if error else "info")
    return redirect(url_for("gallery.index"))
