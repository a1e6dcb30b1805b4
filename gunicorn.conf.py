"""gunicorn's settings for the `web` process; gunicorn reads this file from the working folder."""

import os


def on_starting(server):
    # Fail fast: without a secret, sessions, CSRF tokens and signed upload URLs cannot work.
    if not os.environ.get("SECRET_KEY") and os.environ.get("LIKENESS_ENV") != "development":
        raise SystemExit("SECRET_KEY must be set (or LIKENESS_ENV=development)")
