"""Configuration: one class of environment reads with defaults that need nothing installed."""

import os

BASE_DIR = os.path.abspath(os.path.dirname(__file__))


def _database_url(instance_path: str) -> str:
    url = (
        os.environ.get("DATABASE_URL") or f"sqlite:///{os.path.join(instance_path, 'likeness.db')}"
    )
    return normalise_database_url(url)


def normalise_database_url(url: str) -> str:
    """Accept Heroku's `postgres://` and plain `postgresql://`, using the psycopg 3 driver."""
    # Heroku still hands out the pre-SQLAlchemy-1.4 scheme.
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _mapping(value: str) -> dict[str, str]:
    """Parse `a=x,b=y` into a dict."""
    pairs = {}
    for part in _csv(value):
        key, sep, val = part.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise ValueError(f"expected NAME=VALUE, got {part!r}")
        pairs[key.strip()] = val.strip()
    return pairs


class Config:
    ENV = os.environ.get("LIKENESS_ENV", "production")
    INSTANCE_PATH = os.path.abspath(
        os.environ.get("LIKENESS_INSTANCE_PATH") or os.path.join(BASE_DIR, "instance")
    )
    SECRET_KEY = os.environ.get("SECRET_KEY")
    # Web and worker log one JSON object a line to stderr (`text` reads better in a terminal).
    LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
    LOG_FORMAT = os.environ.get("LOG_FORMAT") or ("text" if ENV == "development" else "json")

    SQLALCHEMY_DATABASE_URI = _database_url(INSTANCE_PATH)
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}

    # The embedded server that `make run` starts listens on this socket.
    REDIS_URL = os.environ.get("REDIS_URL") or f"unix://{os.path.join(INSTANCE_PATH, 'redis.sock')}"
    QUEUE_NAME = os.environ.get("QUEUE_NAME", "likeness")
    # rediss:// only: `none` for a managed Redis with a self-signed certificate (Heroku Redis);
    # REDIS_SSL_CA_CERTS names the CA file that signed the server's certificate.
    REDIS_SSL_CERT_REQS = os.environ.get("REDIS_SSL_CERT_REQS") or None
    REDIS_SSL_CA_CERTS = os.environ.get("REDIS_SSL_CA_CERTS") or None

    STORAGE_BACKEND = os.environ.get("STORAGE_BACKEND", "local")
    STORAGE_ROOT = os.environ.get("STORAGE_ROOT") or os.path.join(INSTANCE_PATH, "storage")
    # STORAGE_BACKEND=s3: credentials come from the standard AWS chain (AWS_* variables,
    # shared files, instance role) unless S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY are set.
    S3_BUCKET = os.environ.get("S3_BUCKET")
    S3_PREFIX = os.environ.get("S3_PREFIX", "")
    S3_REGION = os.environ.get("S3_REGION")
    S3_ENDPOINT_URL = os.environ.get("S3_ENDPOINT_URL")  # MinIO and other S3-compatible stores
    S3_ADDRESSING_STYLE = os.environ.get("S3_ADDRESSING_STYLE")  # path | virtual | auto
    S3_ACCESS_KEY_ID = os.environ.get("S3_ACCESS_KEY_ID")
    S3_SECRET_ACCESS_KEY = os.environ.get("S3_SECRET_ACCESS_KEY")
    S3_MAX_ATTEMPTS = int(os.environ.get("S3_MAX_ATTEMPTS", "3"))
    S3_CONNECT_TIMEOUT = float(os.environ.get("S3_CONNECT_TIMEOUT", "5"))
    S3_READ_TIMEOUT = float(os.environ.get("S3_READ_TIMEOUT", "60"))

    # Unset: every built-in embedder whose dependencies are installed (phash and color; cnn
    # with the cnn extra). A list names exactly the embedders to run.
    EMBEDDERS = _csv(os.environ["EMBEDDERS"]) if os.environ.get("EMBEDDERS") else None
    # The cnn embedder (plugins/embed_cnn.py): labels need this softmax probability.
    CNN_LABEL_THRESHOLD = float(os.environ.get("CNN_LABEL_THRESHOLD", "0.2"))
    CNN_RUNTIME = os.environ.get("CNN_RUNTIME", "auto")  # auto | onnx | torch
    CNN_THREADS = int(os.environ.get("CNN_THREADS", "1"))  # per process
    CNN_BATCH_SIZE = int(os.environ.get("CNN_BATCH_SIZE", "16"))
    # Each embedder prefers an index; `EMBEDDER_INDEXES=color=exact` overrides per embedder,
    # `VECTOR_INDEX=exact` for every embedder whose metric that index supports.
    EMBEDDER_INDEXES = _mapping(os.environ.get("EMBEDDER_INDEXES", ""))
    VECTOR_INDEX = os.environ.get("VECTOR_INDEX") or None
    # Chosen from `bench/search.py --tune` (README, Benchmarks): at 100k x 1280-d, 16 trees
    # build in ~23 s into files 1.07x the raw vectors, and inspecting 5000 nodes per query
    # finds 98.7% of the true top 10 in ~2 ms (32 trees: ~30 s, 1.12x, hardly better).
    ANNOY_N_TREES = int(os.environ.get("ANNOY_N_TREES", "16"))
    # Nodes inspected per query (at least n_trees * k, Annoy's own default).
    ANNOY_SEARCH_K = int(os.environ.get("ANNOY_SEARCH_K", "5000"))
    INDEX_CACHE_DIR = os.environ.get("INDEX_CACHE_DIR") or os.path.join(
        INSTANCE_PATH, "index-cache"
    )
    INDEX_DEBOUNCE_SECONDS = int(os.environ.get("INDEX_DEBOUNCE_SECONDS", "5"))
    # A (team, embedder) index is rebuilt once the embeddings it lacks (the "delta", which
    # searches scan exactly meanwhile) reach max(INDEX_REBUILD_MIN_DELTA, INDEX_REBUILD_FRACTION
    # of the team's images), or once no new embedding has come for INDEX_QUIET_SECONDS.
    INDEX_REBUILD_MIN_DELTA = int(os.environ.get("INDEX_REBUILD_MIN_DELTA", "100"))
    INDEX_REBUILD_FRACTION = float(os.environ.get("INDEX_REBUILD_FRACTION", "0.05"))
    INDEX_QUIET_SECONDS = int(os.environ.get("INDEX_QUIET_SECONDS", "60"))
    # A `similar` duplicate report of a team with more ready images than this, asked for by a
    # page or the API, is made by a worker while the request answers "being prepared": with
    # cnn's wide threshold it is one index query per image, minutes at 100,000 images, past
    # any web timeout. `exact` and `near` reports, and `flask duplicates`, are always made at once.
    DUPLICATE_REPORT_INLINE_IMAGES = int(os.environ.get("DUPLICATE_REPORT_INLINE_IMAGES", "20000"))
    INDEX_GRACE_SECONDS = int(os.environ.get("INDEX_GRACE_SECONDS", "600"))

    MAX_UPLOAD_MB = int(os.environ.get("MAX_UPLOAD_MB", "50"))
    MAX_CONTENT_LENGTH = MAX_UPLOAD_MB * 1024 * 1024 + 64 * 1024  # room for multipart framing
    MAX_IMAGE_PIXELS = int(os.environ.get("MAX_IMAGE_PIXELS", str(100_000_000)))
    # Animated GIF/WebP/PNG and multi-page TIFF: every frame is decoded once at upload.
    MAX_ANIMATION_FRAMES = int(os.environ.get("MAX_ANIMATION_FRAMES", "100"))
    MAX_ANIMATION_PIXELS = int(os.environ.get("MAX_ANIMATION_PIXELS", str(400_000_000)))
    # How long a direct (presigned) upload URL stays valid; the app refuses completion after.
    UPLOAD_URL_SECONDS = int(os.environ.get("UPLOAD_URL_SECONDS", "900"))
    THUMBNAIL_SIZE = int(os.environ.get("THUMBNAIL_SIZE", "320"))
    # On-demand versions (?format=&quality=&width=) are made in the web process: the largest
    # result it makes, how many it keeps per image (the oldest go), and how many it makes at
    # once across all web processes (more waiting answer 503, leaving the workers free).
    RENDITION_MAX_PIXELS = int(os.environ.get("RENDITION_MAX_PIXELS", str(25_000_000)))
    RENDITIONS_PER_IMAGE = int(os.environ.get("RENDITIONS_PER_IMAGE", "12"))
    RENDITION_SLOTS = int(os.environ.get("RENDITION_SLOTS", "1"))
    RENDITION_SLOT_SECONDS = int(os.environ.get("RENDITION_SLOT_SECONDS", "60"))

    # Bulk import by URL (app/services/fetch.py).
    IMPORT_MAX_BYTES = int(os.environ.get("IMPORT_MAX_BYTES") or MAX_UPLOAD_MB * 1024 * 1024)
    IMPORT_CONNECT_TIMEOUT = float(os.environ.get("IMPORT_CONNECT_TIMEOUT", "5"))
    IMPORT_READ_TIMEOUT = float(os.environ.get("IMPORT_READ_TIMEOUT", "30"))
    # The whole download of one URL, redirects included: a server that sends a byte now and
    # then never trips the read timeout, but trips this. Past it the item fails for good.
    IMPORT_DEADLINE_SECONDS = float(os.environ.get("IMPORT_DEADLINE_SECONDS", "120"))
    IMPORT_MAX_URLS = int(os.environ.get("IMPORT_MAX_URLS", "1000"))
    IMPORT_MAX_REDIRECTS = int(os.environ.get("IMPORT_MAX_REDIRECTS", "3"))
    # CIDRs that imports may reach although they are not public, e.g. `127.0.0.1/32`: for
    # tests and intranets only, since every address listed is open to anyone who can import.
    IMPORT_ALLOW_NETWORKS = _csv(os.environ.get("IMPORT_ALLOW_NETWORKS", ""))

    # Also how long a job of a worker that died (SIGKILL, lost host) counts as running: RQ
    # declares it abandoned, and the next sweep has it retried, once the timeout plus three
    # worker heartbeats (WORKER_HEARTBEAT_SECONDS) have passed.
    JOB_TIMEOUT_SECONDS = int(os.environ.get("JOB_TIMEOUT_SECONDS", "300"))
    # Images pending or processing longer than this, with no live job, are queued again by the
    # sweep that every worker schedules each RECONCILE_INTERVAL_SECONDS (and `flask reconcile`).
    RECONCILE_AFTER_SECONDS = int(os.environ.get("RECONCILE_AFTER_SECONDS", "300"))
    RECONCILE_INTERVAL_SECONDS = int(os.environ.get("RECONCILE_INTERVAL_SECONDS", "300"))
    # How often a worker checks its database, records for /healthz that it can run jobs and
    # makes sure the next sweep is scheduled. /healthz counts it for three heartbeats (a busy
    # worker for its job's timeout), and its scheduler lock passes to another worker then.
    WORKER_HEARTBEAT_SECONDS = int(os.environ.get("WORKER_HEARTBEAT_SECONDS", "10"))
    # On SIGTERM a busy worker lets its job run this long, then interrupts it and puts it back
    # on its queue. Heroku sends SIGKILL 30 s after SIGTERM: this leaves time to requeue.
    WORKER_SHUTDOWN_GRACE_SECONDS = float(os.environ.get("WORKER_SHUTDOWN_GRACE_SECONDS", "20"))

    # How many proxies in front of the app set X-Forwarded-For/-Proto; 0 trusts no such header.
    TRUSTED_PROXY_COUNT = int(os.environ.get("TRUSTED_PROXY_COUNT", "0"))
    # Strict-Transport-Security on HTTPS responses (behind a proxy: once TRUSTED_PROXY_COUNT
    # lets X-Forwarded-Proto say so); 0 sends none.
    HSTS_SECONDS = int(os.environ.get("HSTS_SECONDS", str(365 * 24 * 3600)))
    # Failed logins allowed per window: on one account from one address, from one address over
    # all accounts, and on one account from all addresses together. The last is the ceiling
    # against guessing from many addresses; it is far above the first, so that one address
    # (whose refused tries are not counted) can never lock the owner out of theirs.
    LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS = int(
        os.environ.get("LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS", "5")
    )
    LOGIN_MAX_FAILURES_PER_ADDRESS = int(os.environ.get("LOGIN_MAX_FAILURES_PER_ADDRESS", "30"))
    LOGIN_MAX_FAILURES_PER_ACCOUNT = int(os.environ.get("LOGIN_MAX_FAILURES_PER_ACCOUNT", "100"))
    LOGIN_THROTTLE_WINDOW_SECONDS = int(os.environ.get("LOGIN_THROTTLE_WINDOW_SECONDS", "900"))

    # API rate limits in flask-limiter's notation ("600 per minute", several joined by ";"):
    # per API key, per client address for requests without a valid key, and for requests that
    # add images and for searches on top of the first. An empty upload or search limit is none.
    API_RATE_LIMIT_ENABLED = os.environ.get("API_RATE_LIMIT_ENABLED", "1") not in ("0", "")
    API_RATE_LIMIT = os.environ.get("API_RATE_LIMIT", "600 per minute")
    API_RATE_LIMIT_ANONYMOUS = os.environ.get("API_RATE_LIMIT_ANONYMOUS", "60 per minute")
    API_RATE_LIMIT_UPLOADS = os.environ.get("API_RATE_LIMIT_UPLOADS", "120 per minute")
    API_RATE_LIMIT_SEARCHES = os.environ.get("API_RATE_LIMIT_SEARCHES", "120 per minute")
    API_RATE_LIMIT_STRATEGY = os.environ.get("API_RATE_LIMIT_STRATEGY", "fixed-window")

    # A login session ends when unused this long, and in any case this long after the login
    # (enforced on the server-side LoginSession record, whatever the cookie says).
    SESSION_IDLE_TIMEOUT_SECONDS = int(
        os.environ.get("SESSION_IDLE_TIMEOUT_SECONDS", str(7 * 24 * 3600))
    )
    SESSION_ABSOLUTE_TIMEOUT_SECONDS = int(
        os.environ.get("SESSION_ABSOLUTE_TIMEOUT_SECONDS", str(30 * 24 * 3600))
    )

    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = ENV != "development"
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_SECURE = ENV != "development"
    WTF_CSRF_TIME_LIMIT = None  # tied to the session instead of a clock
