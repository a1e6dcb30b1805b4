"""What operators and load balancers ask: `/healthz`."""

from flask import Blueprint

bp = Blueprint("ops", __name__)

from app.ops import operations, routes  # noqa: E402,F401
