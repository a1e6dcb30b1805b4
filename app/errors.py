"""Domain exceptions: what the services refuse, said in the domain's terms, free of HTTP.

Services, imaging and the fetcher raise these and never choose a status code; each face maps
them once: the HTTP faces (API and pages) through `app.views.http_refusal`, the command line
by turning them into click's error messages (`app.cli.common`).
"""

from __future__ import annotations


class ServiceError(Exception):
    """A request the domain refuses; `message` is fit to show to whoever asked."""

    retry_after: int | None = None  # seconds, for a refusal that asking again later can cure

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Invalid(ServiceError):
    """The request is malformed: an unknown parameter value, a cursor we never gave out, an
    empty file."""


class ValidationFailed(ServiceError):
    """A value breaks one of the domain's rules: a name too long, an unknown role or scope."""


class InvalidImage(ValidationFailed):
    """The bytes are not one whole, sane image of an allowed format."""


class Unauthenticated(ServiceError):
    """The credentials given prove nothing (a wrong email or password)."""


class Forbidden(ServiceError):
    """Whoever asks may not do this (a scope their role lacks, a link that is not valid)."""


class NotFound(ServiceError):
    """No such thing, as far as the asker's team can see."""


class Conflict(ServiceError):
    """The thing is not in a state that allows this (already done, the last admin, ...)."""


class TooLarge(ServiceError):
    """More bytes than the limit allows."""


class UnsupportedMediaType(ServiceError):
    """A kind of file the library does not take."""


class Throttled(ServiceError):
    """Too many attempts: try again after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(ServiceError):
    """Something this needs is busy or cannot be reached; asking again later may work."""

    def __init__(self, message: str, *, retry_after: int | None = None):
        super().__init__(message)
        if retry_after is not None:
            self.retry_after = retry_after
