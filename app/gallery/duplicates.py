"""Duplicate review in the browser: groups by tier with the suggested keeper marked, keep or
delete per image, "not duplicates", and many groups resolved at once."""

from __future__ import annotations

from flask import flash, g, redirect, request, url_for

from app.errors import ServiceError, Unavailable
from app.gallery import bp
from app.services import duplicates
from app.views import current_actor, fragment_or_page, http_status, role_required

PAGE_SIZE = 20
TIER_NAMES = {
    "exact": "Exact: the same pixels",
    "near": "Near: almost the same picture",
    "similar": "Similar: alike in content",
}


def _tier() -> str:
    tier = request.values.get("tier") or duplicates.DEFAULT_TIER
    return tier if tier in duplicates.TIERS else duplicates.DEFAULT_TIER


def _page(status: int = 200, **context):
    tier = _tier()
    preparing = False
    try:
        groups, next_cursor = duplicates.list_groups(
            g.membership.team_id, tier, limit=PAGE_SIZE, cursor=request.args.get("cursor") or None
        )
        refusal = None
    except ServiceError as exc:  # a tier this deployment cannot compute, a bad cursor
        groups, next_cursor, refusal = [], None, exc.message
        # A large team's similar report is made by a worker: the page asks again by itself.
        preparing = isinstance(exc, Unavailable) and exc.retry_after is not None
    return fragment_or_page(
        "gallery/_duplicate_groups.html",
        "gallery/duplicates.html",
        status,
        tier=tier,
        tiers=TIER_NAMES,
        groups=groups,
        next_cursor=next_cursor,
        refusal=refusal,
        preparing=preparing,
        **context,
    )


@bp.get("/duplicates")
def list_duplicates():
    return _page()


def _finish(message: str, error: bool = False, status: int = 200):
    if error:
        return _page(status, error=message)
    if request.headers.get("HX-Request"):
        return _page(message=message)
    flash(message, "error" if error else "info")
    return redirect(url_for("gallery.list_duplicates", tier=_tier()))


def _resolve_one(group_id: str, body) -> str:
    outcome = duplicates.resolve(g.membership.team_id, group_id, body, actor=current_actor())
    if "not_duplicates" in outcome:
        return f"{len(outcome['not_duplicates'])} images marked as not duplicates."
    return f"Kept {len(outcome['kept'])}, deleted {len(outcome['deleted'])}."


@bp.post("/duplicates/<group_id>/resolve")
@role_required("admin", "member")
def resolve_duplicates(group_id: str):
    if request.form.get("action") == "dismiss":
        body = {"not_duplicates": True}
    else:
        members = request.form.getlist("members")
        keep = [i for i in request.form.getlist("keep") if i in members]
        body = {"keep": keep, "delete": [i for i in members if i not in keep]}
    try:
        message = _resolve_one(group_id, body)
    except ServiceError as exc:
        if http_status(exc) == 404:
            raise
        return _finish(exc.message, error=True, status=http_status(exc))
    return _finish(message)


@bp.post("/duplicates/resolve")
@role_required("admin", "member")
def resolve_many_duplicates():
    """The ticked groups at once: each keeps its suggested keeper, or is marked not
    duplicates. Each group is its own change: one that changed meanwhile is reported and
    left, the others are resolved."""
    group_ids = request.form.getlist("group_ids")
    if not group_ids:
        return _finish("Tick the groups to resolve first.", error=True, status=422)
    dismiss = request.form.get("action") == "dismiss"
    done, refused = 0, []
    for group_id in group_ids:
        try:
            body = (
                {"not_duplicates": True}
                if dismiss
                else duplicates.suggested_resolution(g.membership.team_id, group_id)
            )
            _resolve_one(group_id, body)
            done += 1
        except ServiceError as exc:
            refused.append(exc.message)
    verb = "marked as not duplicates" if dismiss else "resolved keeping the suggested image"
    message = f"{done} group{'s' if done != 1 else ''} {verb}."
    if refused:
        message += f" {len(refused)} not: {refused[0]}"
    return _finish(
        message, error=bool(refused) and not done, status=409 if refused and not done else 200
    )
