"""Imports by URL and CSV at their edges: unreadable URLs and redirects, a deadline over many
addresses, unreadable or oversized CSVs, the limit on tags, a collection deleted mid-download.

Real HTTP servers on 127.0.0.1 (allowed through IMPORT_ALLOW_NETWORKS), the real worker.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network

import pytest

from app.errors import ValidationFailed
from app.extensions import db
from app.models import Image, ImportBatch
from app.net.fetch import FetchError, FetchPolicy, fetch
from app.services import collections, imports
from app.services.audit import Actor
from app.tenancy import team_scope, unscoped
from tests import samples

LOCAL = ip_network("127.0.0.1/32")

ALICE = Actor("user", "alice@a.example")
PHOTO = samples.jpeg(41, size=(160, 120))


@pytest.fixture
def config_overrides():
    return {"IMPORT_ALLOW_NETWORKS": ["127.0.0.1/32"], "IMPORT_READ_TIMEOUT": 5}


class Host(ThreadingHTTPServer):
    """An image host on 127.0.0.1 that runs `before_answer` before it answers a request."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.before_answer: Callable[[str], None] = lambda path: None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_port}{path}"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        self.server.before_answer(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(PHOTO)))
        self.end_headers()
        self.wfile.write(PHOTO)

    def log_message(self, *args):
        pass


@pytest.fixture
def host():
    server = Host()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@contextlib.contextmanager
def acting_for(app, team):
    with app.app_context(), team_scope(team.id):
        yield


def test_a_collection_deleted_while_an_item_downloads_leaves_its_image_in_none(
    app, team_a, host, run_jobs
):
    """README: an import still on its way when its (empty) collection is deleted lands in no
    collection; the download is the long part of the way, so that is when it happens."""
    with acting_for(app, team_a):
        trip = collections.create_collection(team_a.id, "Trip", actor=ALICE).collection.id
        batch_id = imports.create_batch(
            team_a.id,
            [imports.ItemRequest(host.url("/photo.jpg"))],
            [],
            actor=ALICE,
            collection_id=trip,
        ).id

    def delete_the_collection(path):
        with acting_for(app, team_a):
            collections.delete_collection(trip, actor=ALICE)

    host.before_answer = delete_the_collection
    run_jobs()
    with acting_for(app, team_a):
        batch = db.session.get(ImportBatch, batch_id)
        [item] = batch.items
        assert item.status == "done", item.error
        assert db.session.get(Image, item.image_id).collection_id is None
        assert imports.progress(batch) == {"status": "done", "total": 1, "done": 1, "failed": 0}


def _no_batches(app) -> bool:
    with app.app_context(), unscoped():
        return db.session.query(ImportBatch).count() == 0


@pytest.mark.parametrize("url", ["http://[::1", "https://[::1/a.jpg", "http://a]/", "http://["])
def test_a_url_urlsplit_cannot_read_is_refused_not_a_server_error(app, client, team_a, url):
    body = {"urls": ["http://example.com/a.jpg", url]}
    response = client.post("/api/v1/imports", json=body, headers=team_a.headers())
    assert response.status_code == 422, response.json
    assert "item 2" in response.json["error"]["message"]
    assert _no_batches(app)


def test_a_csv_url_urlsplit_cannot_read_is_refused_in_the_gallery_too(app, team_a, person):
    admin = person(team_a)
    data = {"file": (io.BytesIO(b"url\nhttp://[::1\n"), "urls.csv")}
    response = admin.client.post("/imports", data=data, content_type="multipart/form-data")
    assert response.status_code == 422
    assert b"item 1" in response.data
    assert _no_batches(app)


class Redirector(BaseHTTPRequestHandler):
    """Answers every request with a redirect to a Location no URL parser accepts."""

    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - the http.server API
        Redirector.hits.append(self.path)
        self.send_response(302)
        self.send_header("Location", "http://[::1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def redirector():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    Redirector.hits = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_a_redirect_to_an_unreadable_location_is_a_bad_url(redirector):
    policy = FetchPolicy(
        max_bytes=1024, connect_timeout=1, read_timeout=1, allowed_networks=(LOCAL,)
    )
    with pytest.raises(FetchError) as caught:
        fetch(f"{redirector}/x.jpg", policy)
    assert caught.value.reason == "bad_url", caught.value.message


def test_an_item_redirected_to_an_unreadable_location_fails_for_good_at_once(
    app, client, team_a, redirector, run_jobs
):
    """A server's broken answer is no transient failure: the item is not left queued for
    retries that would ask the same server the same thing again."""
    body = {"urls": [f"{redirector}/x.jpg"]}
    batch = client.post("/api/v1/imports", json=body, headers=team_a.headers()).json
    run_jobs()
    state = client.get(f"/api/v1/imports/{batch['id']}", headers=team_a.headers()).json
    assert (state["status"], state["failed"]) == ("done", 1)
    assert "URL" in state["items"][0]["error"]
    assert Redirector.hits == ["/x.jpg"]


def test_the_imports_tags_and_a_rows_tags_together_keep_the_limit_on_tags(app, client, team_a):
    """Each list alone has at most 50 tags; the image gets both, so both together are held to
    the limit every other way of tagging an image keeps, before anything is created."""
    batch_tags = ",".join(f"batch{n}" for n in range(30))
    row_tags = ",".join(f"row{n}" for n in range(30))
    csv_body = f'url,tags\nhttp://example.com/a.jpg,"{row_tags}"\n'.encode()
    data = {"file": (io.BytesIO(csv_body), "urls.csv"), "tags": batch_tags}
    response = client.post(
        "/api/v1/imports", data=data, headers=team_a.headers(), content_type="multipart/form-data"
    )
    assert response.status_code == 422, response.json
    assert "item 1" in response.json["error"]["message"]
    assert _no_batches(app)


def test_tags_the_import_and_a_row_share_count_once(client, team_a):
    tags = ",".join(f"tag{n}" for n in range(50))
    csv_body = f'url,tags\nhttp://example.com/a.jpg,"{tags}"\n'.encode()
    data = {"file": (io.BytesIO(csv_body), "urls.csv"), "tags": tags}
    response = client.post(
        "/api/v1/imports", data=data, headers=team_a.headers(), content_type="multipart/form-data"
    )
    assert response.status_code == 202, response.json


@pytest.fixture
def unresponsive_addresses():
    """127.0.0.2 to 127.0.0.7, each with a listener on one port whose accept queue is full, so
    that a connection to any of them hangs in the handshake."""
    for _attempt in range(20):
        sockets = []
        try:
            first = socket.socket()
            sockets.append(first)
            first.bind(("127.0.0.2", 0))
            port = first.getsockname()[1]
            for n in range(3, 8):
                listener = socket.socket()
                sockets.append(listener)
                listener.bind((f"127.0.0.{n}", port))
        except OSError:
            for sock in sockets:
                sock.close()
            continue
        break
    addresses = [f"127.0.0.{n}" for n in range(2, 8)]
    for listener, address in zip(list(sockets), addresses, strict=True):
        listener.listen(0)
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex((address, port))
            sockets.append(filler)
    time.sleep(0.1)
    yield port, addresses
    for sock in sockets:
        sock.close()


def test_a_name_with_many_unresponsive_addresses_still_ends_at_the_deadline(
    unresponsive_addresses,
):
    """Each address gets the connect timeout; a DNS answer of many addresses that never
    answer must not stretch the download past its deadline, one connect timeout at a time."""
    port, addresses = unresponsive_addresses
    policy = FetchPolicy(
        max_bytes=1024,
        connect_timeout=0.5,
        read_timeout=0.5,
        deadline=1,
        allowed_networks=(ip_network("127.0.0.0/8"),),
    )
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetch(f"http://many.example:{port}/a.jpg", policy, resolve=lambda host, p: addresses)
    elapsed = time.monotonic() - started
    assert caught.value.reason == "timeout", caught.value.message
    assert elapsed < 1.8, f"took {elapsed:.1f} s for a deadline of 1 s"


@pytest.mark.parametrize(
    "content",
    [
        b"url" + b"x" * 200_000 + b"\nhttp://example.com/a.jpg\n",  # a header field too long
        b'"' + b"u" * 200_000,  # one unclosed quote from the start
    ],
    ids=["long-header", "unclosed-quote"],
)
def test_a_csv_whose_header_row_cannot_be_read_is_refused_not_a_server_error(
    app, client, team_a, content
):
    response = client.post(
        "/api/v1/imports",
        data={"file": (io.BytesIO(content), "list.csv")},
        headers=team_a.headers(),
        content_type="multipart/form-data",
    )
    assert response.status_code == 400, response.json
    assert "CSV" in response.json["error"]["message"]
    assert _no_batches(app)


def test_a_csv_with_far_more_rows_than_an_import_takes_is_refused_without_reading_them_all(
    app,
):
    """2 MB of one-character rows is a million items: refused for the count, but only after
    building every one of them (seconds of CPU and a quarter of a gigabyte) unless reading
    stops at the limit."""
    data = b"url\n" + b"a\n" * (imports.MAX_CSV_BYTES // 2 - 4)
    with app.test_request_context():
        tracemalloc.start()
        try:
            with pytest.raises(ValidationFailed) as caught:
                imports.parse_csv(data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert "at most 1000 URLs" in caught.value.message
    assert peak < 40 * 1024 * 1024, f"{peak / 1024 / 1024:.0f} MB"


def test_a_csv_of_exactly_the_limit_is_read_whole(app):
    rows = "".join(f"http://example.com/{n}.jpg\n" for n in range(5))
    with app.test_request_context():
        app.config["IMPORT_MAX_URLS"] = 5
        assert len(imports.parse_csv(f"url\n{rows}\n\n".encode())) == 5
        with pytest.raises(ValidationFailed):
            imports.parse_csv(f"url\n{rows}http://example.com/6.jpg\n".encode())
