"""flask-smorest set up for Likeness: the API blueprint's class, the OpenAPI document at
/api/v1/openapi.json and its docs page at /api/docs (Swagger UI, served from the files of the
`swagger-ui-bundle` package: no CDN, works offline)."""

from __future__ import annotations

import http
from collections.abc import Callable

import flask_smorest
import swagger_ui_bundle
from flask import Blueprint, Flask, render_template

from app.api.errors import CODES
from app.api.parsing import ApiArgumentsParser
from app.api.schemas import ErrorSchema

SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer", "description": "The API key as a Bearer token"},
}
DESCRIPTION = """\
The JSON API of Likeness. Every request carries a team's API key, in the `X-API-Key` header or
as `Authorization: Bearer <key>`; each operation names the scope it needs in `x-scopes`
(read, write or admin). Every error is `{"error": {"code", "message"}}`, with `fields` naming
each invalid field of a refused request. Lists take `limit` (1-200) and `cursor` and answer
`{"items", "next_cursor"}`.
"""


class ApiBlueprint(flask_smorest.Blueprint):
    """The API's blueprint: strict argument parsing, and a `multipart` location for bodies of
    file and text parts described by one schema."""

    ARGUMENTS_PARSER = ApiArgumentsParser()
    DEFAULT_LOCATION_CONTENT_TYPE_MAPPING = {
        **flask_smorest.Blueprint.DEFAULT_LOCATION_CONTENT_TYPE_MAPPING,
        "multipart": "multipart/form-data",
    }

    def _store_endpoint_docs(self, endpoint, obj, parameters, tags, **options):
        super()._store_endpoint_docs(endpoint, obj, parameters, tags, **options)
        # The view's name (`list_images`) is the operation's id: generated clients name their
        # methods after it.
        for method, doc in self._docs[endpoint].items():
            if method != "parameters":
                doc.setdefault("manual_doc", {}).setdefault("operationId", endpoint)

    def errors(self, *statuses: int) -> Callable:
        """Document the error responses an operation can give (beyond 400 for refused
        arguments and 401/403 from `scope_required`, which document themselves)."""

        def decorator(view):
            for status in statuses:
                view = self.alt_response(status, response=http.HTTPStatus(status).name)(view)
            return view

        return decorator


class LikenessApi(flask_smorest.Api):
    ERROR_SCHEMA = ErrorSchema

    def _register_error_handlers(self):
        # The application's handlers (app/__init__.py) answer every error, JSON for the API and
        # HTML for pages; flask-smorest's would take over HTTP errors for the pages too.
        pass

    def _register_responses(self):
        """Error responses documented in our envelope, with our codes as examples."""
        for status, code in CODES.items():
            phrase = http.HTTPStatus(status).phrase
            example = {"error": {"code": code, "message": phrase.lower()}}
            if status == 400:
                example["error"].update(
                    message="limit: must be a whole number from 1 to 200",
                    fields={"limit": "must be a whole number from 1 to 200"},
                )
            response = {
                "description": phrase,
                "content": {"application/json": {"schema": ErrorSchema, "example": example}},
            }
            if status in (429, 503):
                response["headers"] = {
                    "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}
                }
            self.spec.components.response(http.HTTPStatus(status).name, response, lazy=True)
        self.spec.components.response(
            self.DEFAULT_ERROR_RESPONSE_NAME,
            {
                "description": "Any other error, in the same envelope",
                "content": {"application/json": {"schema": ErrorSchema}},
            },
            lazy=True,
        )


def init_api(app: Flask, api_blueprint: ApiBlueprint) -> None:
    """Serve `api_blueprint` at /api/v1 with its OpenAPI document and docs page."""
    app.config.update(
        API_TITLE="Likeness",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="v1/openapi.json",
        API_SPEC_OPTIONS={
            "info": {"description": DESCRIPTION},
            "security": [{"ApiKey": []}, {"Bearer": []}],
        },
    )
    api = LikenessApi(app)
    for name, scheme in SECURITY_SCHEMES.items():
        api.spec.components.security_scheme(name, scheme)
    api.register_blueprint(api_blueprint, url_prefix="/api/v1")
    app.register_blueprint(docs_page)


# The docs page is ours rather than flask-smorest's, whose template has an inline script that
# the Content-Security-Policy (scripts from this server only) would block.
docs_page = Blueprint(
    "api_docs",
    __name__,
    static_folder=str(swagger_ui_bundle.swagger_ui_path),
    static_url_path="/api/docs/assets",
)


@docs_page.get("/api/docs")
def show_api_docs():
    return render_template("api_docs.html")
