"""Query strings and form fields refuse NUL, as JSON bodies do (app/strict_json.py).

No field of the application means a NUL, and PostgreSQL cannot hold one in text nor compare
text with one: left in, a NUL in a filter, a form field or a cursor reached the database and
failed there (a 500, and on the sign-in form for anyone). Refused where the parameters are
parsed, so that no view, service or parser downstream needs to know: 400 naming the field.
"""

from __future__ import annotations

from flask import Request
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.exceptions import BadRequest


class NulFreeMultiDict(ImmutableMultiDict):
    """The parameters of a request, refused whole when any name or text value holds a NUL
    (uploaded files are values of another type, checked as images)."""

    def __init__(self, mapping=None):
        super().__init__(mapping)
        for name, value in self.items(multi=True):
            # A multipart file part may come without a name (None).
            if "\x00" in (name or "") or (isinstance(value, str) and "\x00" in value):
                shown = name.replace("\x00", "\\x00")
                raise BadRequest(f"field '{shown}' holds a NUL character; no field accepts one")


class StrictRequest(Request):
    parameter_storage_class = NulFreeMultiDict
