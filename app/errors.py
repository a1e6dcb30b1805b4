"""Domain exceptions: what the services refuse, free of HTTP.

Services, imaging and the fetcher raise these; each face (API, pages, CLI) maps them once.
"""


class ServiceError(Exception):
    """A request the domain refuses; `code` and `status` map onto the API's error shape."""

    code = "bad_request"
    status = 400
    retry_after: int | None = None  # seconds, for a refusal that asking again later can cure

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status


class NotFound(ServiceError):
    code, status = "not_found", 404


class Conflict(ServiceError):
    code, status = "conflict", 409
