"""JSON API v1 for machines, authenticated with team-scoped API keys.

Every endpoint declares its input and output with the schemas of `app.api.schemas`
(flask-smorest): they validate the request and make the OpenAPI document."""

from app.api.openapi import ApiBlueprint

bp = ApiBlueprint("api", __name__, description="The JSON API, v1")

from app.api import auth, collections, duplicates, images, imports, search, team, uploads  # noqa: E402,F401  (routes register on import)
from app.api.parsing import refuse_unread_query  # noqa: E402

# After the key's check (auth registers first): an unknown key is 401 whatever the query.
bp.before_request(refuse_unread_query)
