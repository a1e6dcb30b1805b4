from __future__ import annotations

from flask import abort, g, redirect, render_template, request, session, url_for
from flask_login import login_required

from app.gallery import bp
from app.models import Image
from app.services import accounts, reconcile
from app.services import images as image_service
from app.tenancy import get_owned
from app.views import choose_team, current_actor, role_required, send_variant

PAGE_SIZE = 60


@bp.before_request
def require_setup():
    if not accounts.has_users():
        return redirect(url_for("auth.setup"))
    return None


@bp.before_request
@login_required
def require_team():
    return choose_team()


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


@bp.get("/")
def index():
    images, next_cursor = image_service.list_images(PAGE_SIZE, request.args.get("cursor"))
    template = (
        "gallery/_grid_items.html" if request.headers.get("HX-Request") else "gallery/index.html"
    )
    response = render_template(template, images=images, next_cursor=next_cursor)
    return response, 200, {"Vary": "HX-Request"}


@bp.get("/images/<image_id>/thumbnail")
def get_thumbnail(image_id: str):
    return send_variant(get_owned(Image, image_id), "thumbnail")


@bp.get("/images/<image_id>/status")
def get_status_badge(image_id: str):
    return render_template("gallery/_status_badge.html", image=get_owned(Image, image_id))


@bp.post("/images/<image_id>/retry")
@role_required("admin", "member")
def retry_image(image_id: str):
    image = get_owned(Image, image_id)
    if image.status == "error":
        reconcile.retry_image(image, actor=current_actor())
    return render_template("gallery/_status_badge.html", image=image)
