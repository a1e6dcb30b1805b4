"""JSON API v1 for machines, authenticated with team-scoped API keys.

Every endpoint declares its input and output with the schemas of `app.api.schemas`
(flask-smorest): they validate the request and make the OpenAPI document."""

from app.api.openapi import ApiBlueprint

bp = ApiBlueprint("api", __name__, description="The JSON API, v1")

from app.api import auth, collections, duplicates, images, imports, search, team, uploads  # noqa: E402,F401  (routes register on import)
