"""The team gallery: htmx pages and the partials they include."""

from flask import Blueprint

bp = Blueprint("gallery", __name__)

from app.gallery import collections, duplicates, imports, routes, search  # noqa: E402,F401
