from __future__ import annotations

from flask import (
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required
from werkzeug.exceptions import RequestEntityTooLarge

from app.errors import Conflict, Invalid, ServiceError
from app.gallery import bp
from app.models import IMAGE_STATUSES, Image
from app.services import accounts, collections, duplicates, reconcile, renditions
from app.services import images as image_service
from app.services.ingest import Incoming, ingest
from app.services.search import similar_images
from app.tenancy import current_team_id, get_owned
from app.views import (
    choose_team,
    current_actor,
    http_refusal,
    is_fragment_request,
    role_required,
    send_stored,
    send_variant,
    whole_number,
)

PAGE_SIZE = 60
SIMILAR_COUNT = 12
NEAR_DUPLICATE_COUNT = 20
PICKER_SIZE = 200
# The most images one poll of /fresh places above the grid; more, and the page loads again.
FRESH_LIMIT = 300
EDITORS = ("admin", "member")
# The gallery's filters as URL parameters (shareable), and the service's name for each.
FILTERS = {
    "q": "text",
    "tag": "tag",
    "label": "label",
    "status": "status",
    "collection": "collection_id",
}


@bp.before_request
def require_setup():
    if not accounts.is_set_up():
        return redirect(url_for("auth.setup"))
    return None


@bp.before_request
@login_required
def require_team():
    return choose_team()


@bp.app_context_processor
def gallery_helpers():
    return {"can_edit": lambda: getattr(g, "membership", None) and g.membership.role in EDITORS}


def filter_args() -> dict[str, str]:
    """The gallery filters of this request, as URL parameters (empty ones dropped)."""
    args = {}
    for name in FILTERS:
        value = " ".join(request.args.get(name, "").split())
        if value:
            args[name] = value
    return args


def service_filters(args: dict[str, str]) -> dict[str, str]:
    return {FILTERS[name]: value for name, value in args.items()}


@bp.post("/teams/switch")
def switch_team():
    """Make another of the user's teams the current one (an unknown team is a 404)."""
    wanted = request.form.get("team_id", "")
    if not any(str(m.team_id) == wanted for m in g.memberships):
        abort(404)
    session["team_id"] = wanted
    if request.headers.get("HX-Request"):
        return "", 204, {"HX-Redirect": url_for("gallery.index")}
    return redirect(url_for("gallery.index"))


def _results_context(args: dict[str, str], cursor: str | None = None) -> dict:
    filters = service_filters(args)
    images, next_cursor = image_service.list_images(PAGE_SIZE, cursor, details=False, **filters)
    return {
        "images": images,
        "next_cursor": next_cursor,
        "filter_args": args,
        "counts": image_service.count_images(**filters),
        "newest": image_service.encode_cursor(images[0]) if images else "",
    }


@bp.get("/")
def index():
    args = filter_args()
    cursor = request.args.get("cursor")
    context = _results_context(args, cursor)
    headers = {"Vary": "HX-Request, HX-History-Restore-Request"}
    if is_fragment_request():
        # The next page of the grid (infinite scroll), or the results of changed filters.
        if cursor:
            return render_template("gallery/_grid_items.html", **context), 200, headers
        # The address bar shows the filters in use, without the empty ones the form sent.
        headers["HX-Push-Url"] = url_for("gallery.index", **args)
        return render_template("gallery/_results.html", **context), 200, headers
    collection_page, _ = collections.list_collections(PICKER_SIZE)
    page = render_template(
        "gallery/index.html",
        **context,
        collections=[info.collection for info in collection_page],
        tags=image_service.tag_names(),
        labels=image_service.label_names(),
        statuses=IMAGE_STATUSES,
        upload_limit_mb=_upload_limit_mb(),
    )
    return page, 200, headers


def _upload_limit_mb() -> int:
    return current_app.config["MAX_UPLOAD_MB"]


@bp.get("/fresh")
def list_fresh_images():
    """Images newer than `since` in the current filters, placed above the grid, and the poller
    again: polling every few seconds while any image in view is still being processed."""
    args = filter_args()
    filters = service_filters(args)
    # Without `since` the page showed no image: every image of the filters is new to it.
    since = request.args.get("since", "")
    images, more = image_service.list_images(
        FRESH_LIMIT, details=False, newer_than=since or None, **filters
    )
    if more:
        # Placing the newest would move the poller past the others, never to be shown: htmx
        # loads the whole page again instead.
        return "", 200, {"HX-Refresh": "true"}
    newest = image_service.encode_cursor(images[0]) if images else since
    return render_template(
        "gallery/_fresh.html",
        images=images,
        # The tiles go at the top of the grid: the grid's own "more" sentinel stays at its end.
        next_cursor=None,
        filter_args=args,
        counts=image_service.count_images(**filters),
        newest=newest,
    )


@bp.post("/upload")
@role_required(*EDITORS)
def upload_images():
    """One or more files from the gallery's drop zone; JSON for the page's upload script."""
    try:
        files = request.files.getlist("file")
    except RequestEntityTooLarge:
        # Refused while reading the body, before ingest could say so: in the same words.
        limit = current_app.config["MAX_UPLOAD_MB"]
        return {"error": f"the file is larger than {limit} MB"}, 413
    if not files:
        return {"error": "choose an image to upload"}, 400
    try:
        tags = image_service.parse_tags(request.form.get("tags", ""))
        results = ingest(
            current_team_id(),
            [Incoming(file.stream, file.filename) for file in files],
            actor=current_actor(),
            tags=tags,
            user_id=current_user.id,
            collection_id=request.form.get("collection") or None,
        )
    except ServiceError as exc:
        status, _ = http_refusal(exc)
        return {"error": exc.message}, status
    items = [
        {
            "id": str(result.image.id),
            "existing": result.existing,
            "status": result.image.status,
            "message": (
                f"already in the library as {result.image.filename}"
                if result.existing
                else "uploaded"
            ),
            "html": render_template("gallery/_tile.html", image=result.image, filter_args={}),
        }
        for result in results
    ]
    created = any(not result.existing for result in results)
    return {"items": items}, 201 if created else 200


@bp.get("/images/<image_id>")
def show_image(image_id: str):
    image = get_owned(Image, image_id)
    args = filter_args()
    newer, older = image_service.adjacent_images(image, **service_filters(args))
    return render_template(
        "gallery/image.html",
        image=image,
        newer=newer,
        older=older,
        filter_args=args,
        collection=_collection_of(image),
        collections=_collection_choices(image),
        formats=renditions.FORMATS,
        default_quality=renditions.DEFAULT_QUALITY,
    )


def _collection_of(image: Image):
    return collections.get(image.collection_id) if image.collection_id else None


def _collection_choices(image: Image):
    """The first collections by name, and the image's own: without it the picker would show
    "None", and Move would take the image out."""
    page, _ = collections.list_collections(PICKER_SIZE)
    choices = [info.collection for info in page]
    if image.collection_id and all(c.id != image.collection_id for c in choices):
        choices.append(collections.get(image.collection_id))  # after the first by name
    return choices


@bp.get("/images/<image_id>/similar")
def list_similar(image_id: str):
    """'More like this', loaded when it scrolls into view."""
    image = get_owned(Image, image_id)
    try:
        matches = similar_images(image, SIMILAR_COUNT).matches
        refusal = None
    except (Conflict, Invalid) as exc:
        matches, refusal = [], exc.message
    return render_template(
        "gallery/_similar.html", image=image, matches=matches, refusal=refusal, kind="similar"
    )


@bp.get("/images/<image_id>/duplicates")
def list_near_duplicates(image_id: str):
    """Images whose perceptual hash is within a few bits of this one's: as many as the near
    tier of the duplicates review counts, so the two pages never disagree."""
    image = get_owned(Image, image_id)
    try:
        found = similar_images(image, NEAR_DUPLICATE_COUNT, "phash").matches
        matches = [m for m in found if m.distance <= duplicates.NEAR_BITS]
        refusal = None
    except (Conflict, Invalid) as exc:
        matches, refusal = [], exc.message
    return render_template(
        "gallery/_similar.html", image=image, matches=matches, refusal=refusal, kind="duplicates"
    )


def _edited(image: Image, changes: dict, fragment: str):
    """Apply an edit from the image page: the fragment again for htmx (with the refusal, if
    any), or back to the page for a plain form."""
    error = None
    try:
        image_service.edit_image(image, changes, actor=current_actor())
    except ServiceError as exc:
        error = exc
    if request.headers.get("HX-Request"):
        status = http_refusal(error)[0] if error else 200
        body = render_template(
            fragment,
            image=image,
            error=error.message if error else None,
            collection=_collection_of(image),
            collections=_collection_choices(image),
        )
        return body, status
    if error:
        flash(error.message, "error")
    else:
        flash("Saved.", "success")
    return redirect(url_for("gallery.show_image", image_id=image.id))


@bp.post("/images/<image_id>/tags")
@role_required(*EDITORS)
def edit_tags(image_id: str):
    image = get_owned(Image, image_id)
    return _edited(image, {"tags": request.form.get("tags", "")}, "gallery/_tags.html")


@bp.post("/images/<image_id>/collection")
@role_required(*EDITORS)
def move_to_collection(image_id: str):
    image = get_owned(Image, image_id)
    changes = {"collection_id": request.form.get("collection") or None}
    return _edited(image, changes, "gallery/_collection.html")


@bp.post("/images/<image_id>/delete")
@role_required(*EDITORS)
def delete_image(image_id: str):
    image = get_owned(Image, image_id)
    filename = image.filename
    image_service.delete_image(image, actor=current_actor())
    flash(f"Deleted {filename}.", "success")
    target = url_for("gallery.index")
    if request.headers.get("HX-Request"):
        return "", 204, {"HX-Redirect": target}
    return redirect(target)


@bp.get("/images/<image_id>/thumbnail")
def get_thumbnail(image_id: str):
    return send_variant(get_owned(Image, image_id), "thumbnail")


@bp.get("/images/<image_id>/preview")
def get_preview(image_id: str):
    image = get_owned(Image, image_id)
    return send_variant(image, "preview" if image.preview_key else "thumbnail")


@bp.get("/images/<image_id>/original")
def download_original(image_id: str):
    return send_variant(get_owned(Image, image_id), "original", as_attachment=True)


@bp.get("/images/<image_id>/download")
def download_copy(image_id: str):
    """A compressed copy in the format and quality asked for, made once and kept."""
    image = get_owned(Image, image_id)
    fmt = request.args.get("format", "webp")
    quality = None
    if fmt != "png":
        quality = whole_number(request.args.get("quality", ""))
        if quality is None or not 1 <= quality <= 95:
            raise Invalid("quality is a whole number from 1 to 95")
    rendition = renditions.derived(image, "original", fmt, quality, None)
    return send_stored(
        rendition.key, rendition.content_type, rendition.filename, as_attachment=True
    )


@bp.get("/images/<image_id>/status")
def get_status_badge(image_id: str):
    return render_template("gallery/_status_badge.html", image=get_owned(Image, image_id))


@bp.post("/images/<image_id>/retry")
@role_required(*EDITORS)
def retry_image(image_id: str):
    image = get_owned(Image, image_id)
    if image.status == "error":
        reconcile.retry_image(image, actor=current_actor())
    return render_template("gallery/_status_badge.html", image=image)
