"""What a view returns when the answer has no body."""

from flask import Response


def no_content() -> Response:
    """204: done, nothing to show (a JSON `""` would be a body)."""
    return Response(status=204)
