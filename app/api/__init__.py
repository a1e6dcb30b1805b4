"""JSON API v1 for machines, authenticated with team-scoped API keys."""

from flask import Blueprint

bp = Blueprint("api", __name__)

from app.api import auth, duplicates, images, imports, search, team, uploads  # noqa: E402,F401  (routes register on import)
