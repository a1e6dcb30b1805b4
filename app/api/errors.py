"""Every JSON error comes from here: {"error": {"code": ..., "message": ..., "fields"?: ...}}."""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import HTTPException

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "expired",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """Raise in an API view to answer with this status, code and message; `fields` maps each
    invalid field (dotted path) to what is wrong with it."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        *,
        fields: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code or CODES[status]
        self.fields = fields


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    headers=None,
    fields: dict[str, str] | None = None,
):
    error = {"code": code or CODES.get(status, "error"), "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}, status, headers or {}


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def http_error_response(exc: HTTPException):
    messages = {
        404: "no such resource",
        405: f"{request.method} is not allowed here",
        413: "the request body is too large",
    }
    status = exc.code or 500
    message = messages.get(status) or exc.description or exc.name
    if status == 404 and "//" in request.path:
        message += ": the path has an empty segment (//); is an id missing?"
    headers = {}
    if status == 405 and getattr(exc, "valid_methods", None):
        headers["Allow"] = ", ".join(exc.valid_methods)
    return error_response(status, message, headers=headers)
