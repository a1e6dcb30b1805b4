from __future__ import annotations

from flask import g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required

from app.api.images import send_variant
from app.gallery import bp
from app.models import Image
from app.services import accounts
from app.services import images as image_service
from app.tenancy import get_owned, set_request_team

PAGE_SIZE = 60


@bp.before_request
def require_setup():
    if not accounts.has_users():
        return redirect(url_for("auth.setup"))
    return None


@bp.before_request
@login_required
def choose_team():
    memberships = accounts.memberships_of(current_user)
    if not memberships:
        return redirect(url_for("auth.login"))
    wanted = session.get("team_id")
    membership = next((m for m in memberships if str(m.team_id) == wanted), memberships[0])
    session["team_id"] = str(membership.team_id)
    g.membership = membership
    set_request_team(membership.team_id)
    return None


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
