"""Real S3 endpoints for tests: moto in server mode, and stores that fail on purpose.

Both listen on 127.0.0.1 only. A test module that needs the fixtures loads this module as a
plugin (`pytest_plugins = ["tests.s3server"]`), so the whole session shares one moto server.
Those modules import the helpers too, before pytest could rewrite asserts here: PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

CREDENTIALS = {"S3_ACCESS_KEY_ID": "testing", "S3_SECRET_ACCESS_KEY": "testing"}
REGION = "us-east-1"


def s3_config(endpoint: str, bucket: str, **overrides: Any) -> dict[str, Any]:
    """Plugin configuration for the s3 backend against `endpoint`."""
    return {
        "S3_BUCKET": bucket,
        "S3_ENDPOINT_URL": endpoint,
        "S3_REGION": REGION,
        **CREDENTIALS,
        **overrides,
    }


@functools.cache
def admin_client(endpoint: str):
    """A plain boto3 client for arranging and inspecting buckets behind the backend's back."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=CREDENTIALS["S3_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["S3_SECRET_ACCESS_KEY"],
    )


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server running in this process for the whole session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint) -> Iterator[str]:
    """A fresh, empty bucket on the moto server; emptied and removed after the test."""
    client = admin_client(moto_endpoint)
    name = f"test-{uuid.uuid4().hex}"
    client.create_bucket(Bucket=name)
    yield name
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


class FailingStore:
    """An HTTP server on 127.0.0.1 that answers every request with 503, or never answers.

    It records each request it receives as (method, path), so a test can count attempts.
    """

    def __init__(self, behaviour: str = "503"):
        if behaviour not in ("503", "stall"):
            raise ValueError(f"unknown behaviour {behaviour!r}")
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        store = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                with store._lock:
                    store.requests.append((self.command, self.path))
                # A client that asks to "Expect: 100-continue" holds the body back; like S3, answer
                # at once instead of inviting it.
                length = int(self.headers.get("Content-Length") or 0)
                if length and self.headers.get("Expect", "").lower() != "100-continue":
                    self.rfile.read(length)
                if behaviour == "stall":
                    store._release.wait(30)
                    return
                body = b"<Error><Code>ServiceUnavailable</Code><Message>down</Message></Error>"
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FailingStore:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()
