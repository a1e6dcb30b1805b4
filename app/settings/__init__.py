"""Team settings in the browser: your account, members and invites, API keys, the audit trail."""

from flask import Blueprint

bp = Blueprint("settings", __name__)

from app.settings import routes  # noqa: E402,F401
