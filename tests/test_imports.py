"""Bulk import from URLs: API (JSON and CSV), worker, report, CLI; hostile URLs refused."""

from __future__ import annotations

import csv
import io
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests import samples
from tests.conftest import wait_until


class Origin(BaseHTTPRequestHandler):
    """A local image host: /img/N.jpg, /text, /to-metadata (a redirect inward), /missing."""

    requests: list[str] = []

    def do_GET(self):  # noqa: N802 - the http.server API
        Origin.requests.append(self.path)
        if self.path.startswith("/img/"):
            seed = int(self.path.split("/")[-1].split(".")[0])
            self._send(200, samples.jpeg(seed, size=(160, 120)), "image/jpeg")
        elif self.path.startswith("/chunk/"):  # a PNG whose zTXt or iCCP inflates to 100 MB
            kind = self.path.split("/")[-1].encode()
            self._send(200, samples.png_with_compressed_chunk(kind), "image/png")
        elif self.path == "/text":
            self._send(200, b"<html>not an image</html>", "text/html")
        elif self.path == "/to-metadata":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
        else:
            self._send(404, b"no", "text/plain")

    def _send(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def origin():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Origin.requests = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


ALLOW_LOCAL = {"IMPORT_ALLOW_NETWORKS": ["127.0.0.1/32"], "IMPORT_READ_TIMEOUT": 5}
allow_local_origin = pytest.mark.parametrize("config_overrides", [ALLOW_LOCAL], ids=["local"])


def start(client, team, **body):
    return client.post("/api/v1/imports", json=body, headers=team.headers())


@allow_local_origin
def test_import_from_urls_fetches_ingests_and_reports(client, team_a, origin, run_jobs):
    urls = [
        f"{origin}/img/1.jpg",
        f"{origin}/img/2.jpg",
        f"{origin}/text",
        f"{origin}/missing",
        f"{origin}/to-metadata",
        f"{origin}/img/1.jpg",
    ]
    response = start(client, team_a, urls=urls, tags=["Imported"])
    assert response.status_code == 202
    batch = response.json
    assert batch["status"] == "queued" and batch["total"] == 6
    run_jobs()

    state = client.get(f"/api/v1/imports/{batch['id']}", headers=team_a.headers()).json
    assert (state["status"], state["done"], state["failed"]) == ("done", 3, 3)
    statuses = [(i["status"], bool(i["image_id"])) for i in state["items"]]
    assert statuses == [
        ("done", True),
        ("done", True),
        ("failed", False),
        ("failed", False),
        ("failed", False),
        ("done", True),
    ]
    assert state["items"][0]["image_id"] == state["items"][5]["image_id"]  # the same bytes
    errors = [item["error"] for item in state["items"]]
    assert "not an image" in errors[2]
    assert "404" in errors[3]
    assert "169.254.169.254" in errors[4] and "private or reserved" in errors[4]
    assert Origin.requests.count("/to-metadata") == 1

    image = client.get(f"/api/v1/images/{state['items'][0]['image_id']}", headers=team_a.headers())
    assert image.json["status"] == "ready" and image.json["tags"] == ["imported"]
    assert image.json["filename"] == "1.jpg"

    report = client.get(f"/api/v1/imports/{batch['id']}/report.csv", headers=team_a.headers())
    assert report.status_code == 200 and report.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(report.get_data(as_text=True))))
    assert list(rows[0]) == ["url", "status", "image_id", "error", "original_url", "thumbnail_url"]
    assert [r["status"] for r in rows] == ["done", "done", "failed", "failed", "failed", "done"]
    assert rows[0]["thumbnail_url"].endswith("variant=thumbnail") and rows[2]["thumbnail_url"] == ""


def test_local_addresses_are_refused_without_explicit_allowance(client, team_a, origin, run_jobs):
    batch = start(
        client,
        team_a,
        urls=[
            f"{origin}/img/1.jpg",
            "http://[::ffff:127.0.0.1]/x",
            "http://2130706433/",
            "http://169.254.169.254/",
        ],
    ).json
    run_jobs()
    state = client.get(f"/api/v1/imports/{batch['id']}", headers=team_a.headers()).json
    assert [i["status"] for i in state["items"]] == ["failed"] * 4
    assert Origin.requests == []  # nothing reached the local server


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"urls": ["file:///etc/passwd"]}, 422),
        ({"urls": ["ftp://example.com/a.jpg"]}, 422),
        ({"urls": ["javascript:alert(1)"]}, 422),
        ({"urls": ["http://example.com/a.jpg", ""]}, 422),
        ({"urls": [42]}, 400),  # a wrong type: 400 naming the field
        ({"urls": ["http://example.com/" + "a" * 3000]}, 422),
        ({"urls": []}, 422),
        ({"urls": "http://example.com/a.jpg"}, 400),
        ({"urls": ["http://example.com/a.jpg"], "team_id": "x"}, 400),
        ({"urls": ["http://example.com/a.jpg"], "tags": "x" * 100}, 422),
        (
            {
                "urls": ["http://example.com/a.jpg"],
                "collection_id": "00000000-0000-0000-0000-000000000000",
            },
            404,  # no such collection in the team
        ),
        ({"urls": ["http://example.com/a.jpg"], "collection_id": "not-an-id"}, 400),
    ],
)
def test_bad_import_requests_are_refused_and_create_nothing(app, client, team_a, body, status):
    response = start(client, team_a, **body)
    assert response.status_code == status and response.json["error"]["message"]
    with app.app_context():
        from app.extensions import db
        from app.models import ImportBatch
        from app.tenancy import unscoped

        with unscoped():
            assert db.session.query(ImportBatch).count() == 0


@allow_local_origin
def test_an_invalid_image_is_a_final_item_failure_not_a_retry(client, team_a, origin, run_jobs):
    urls = [f"{origin}/chunk/zTXt", f"{origin}/chunk/iCCP", f"{origin}/img/5.jpg"]
    batch = start(client, team_a, urls=urls).json
    run_jobs()
    state = client.get(f"/api/v1/imports/{batch['id']}", headers=team_a.headers()).json
    assert (state["status"], state["done"], state["failed"]) == ("done", 1, 2)
    for item in state["items"][:2]:
        assert item["status"] == "failed" and "damaged" in item["error"]
    # Each URL was fetched once: nothing was retried.
    assert sorted(Origin.requests) == ["/chunk/iCCP", "/chunk/zTXt", "/img/5.jpg"]


@pytest.mark.parametrize("config_overrides", [{"IMPORT_MAX_URLS": 3}], ids=["max3"])
def test_a_batch_is_limited_in_size(client, team_a):
    urls = [f"http://example.com/{n}.jpg" for n in range(4)]
    response = start(client, team_a, urls=urls)
    assert response.status_code == 422 and "at most 3" in response.json["error"]["message"]


@allow_local_origin
def test_csv_import_with_filenames_and_tags(client, team_a, origin, run_jobs):
    data = (
        "\ufeffURL,filename,tags\n"
        f'{origin}/img/3.jpg,holiday.jpg,"beach, sun"\n'
        "\n"
        f"{origin}/img/4.jpg,,\n"
    ).encode()
    response = client.post(
        "/api/v1/imports",
        data={"file": (io.BytesIO(data), "list.csv"), "tags": "batch"},
        headers=team_a.headers(),
        content_type="multipart/form-data",
    )
    assert response.status_code == 202 and response.json["total"] == 2
    run_jobs()
    state = client.get(f"/api/v1/imports/{response.json['id']}", headers=team_a.headers()).json
    assert state["done"] == 2
    first = client.get(f"/api/v1/images/{state['items'][0]['image_id']}", headers=team_a.headers())
    assert first.json["filename"] == "holiday.jpg" and first.json["tags"] == [
        "batch",
        "beach",
        "sun",
    ]


@allow_local_origin
def test_csv_filenames_are_normalised_like_an_uploads(app, client, team_a, origin, run_jobs):
    long_name = "x" * 10_000 + ".jpg"
    data = (
        f"url,filename\n{origin}/img/6.jpg,{long_name}\n{origin}/img/7.jpg,a\u202eb.jpg\n"
    ).encode()
    response = client.post(
        "/api/v1/imports",
        data={"file": (io.BytesIO(data), "list.csv")},
        headers=team_a.headers(),
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    from app.extensions import db
    from app.models import ImportItem
    from app.tenancy import unscoped

    with app.app_context(), unscoped():
        names = [i.filename for i in db.session.query(ImportItem).order_by(ImportItem.position)]
    assert names == ["x" * 251 + ".jpg", "ab.jpg"]
    run_jobs()
    state = client.get(f"/api/v1/imports/{response.json['id']}", headers=team_a.headers()).json
    assert state["done"] == 2
    image = client.get(f"/api/v1/images/{state['items'][0]['image_id']}", headers=team_a.headers())
    assert image.json["filename"] == "x" * 251 + ".jpg"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"link\nhttp://example.com/a.jpg\n", "url"),
        (b"url\n\xff\xfe\n", "UTF-8"),
        (b"url\nfile:///etc/passwd\n", "http"),
        (b"url,tags\nhttp://example.com/a.jpg,sun\nhttp://example.com/b\x00.jpg,\n", "NUL"),
    ],
)
def test_bad_csv_is_refused(client, team_a, content, message):
    response = client.post(
        "/api/v1/imports",
        data={"file": (io.BytesIO(content), "list.csv")},
        headers=team_a.headers(),
        content_type="multipart/form-data",
    )
    assert response.status_code in (400, 422) and message in response.json["error"]["message"]


def test_report_cells_cannot_become_spreadsheet_formulas(app, client, team_a, run_jobs):
    batch = start(client, team_a, urls=["http://example.com/=cmd|' /C calc'!A0"]).json
    from app.extensions import db
    from app.models import ImportItem
    from app.tenancy import unscoped

    with app.app_context(), unscoped():
        item = db.session.query(ImportItem).one()
        item.status, item.error = "failed", '=HYPERLINK("http://evil")'
        db.session.commit()
    report = client.get(f"/api/v1/imports/{batch['id']}/report.csv", headers=team_a.headers())
    rows = list(csv.reader(io.StringIO(report.get_data(as_text=True))))
    assert rows[1][3].startswith("'=")


def test_import_needs_write_and_is_audited(client, team_a):
    refused = client.post(
        "/api/v1/imports",
        json={"urls": ["http://example.com/a.jpg"]},
        headers=team_a.headers(team_a.read_key),
    )
    assert refused.status_code == 403
    start(client, team_a, urls=["http://example.com/a.jpg"])
    events = client.get("/api/v1/audit?action=import", headers=team_a.headers()).json["items"]
    assert [e["action"] for e in events] == ["import.create"]


@allow_local_origin
def test_cli_imports_a_csv_and_a_folder(app, runner, client, team_a, origin, tmp_path):
    listing = tmp_path / "urls.csv"
    listing.write_text(f"url\n{origin}/img/5.jpg\n{origin}/text\n")
    result = runner.invoke(args=["import", str(listing), "--team", team_a.team.slug])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].endswith(": 1 done, 1 failed")

    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(samples.jpeg(6))
    (folder / "nested" / "b.jpg").write_bytes(samples.jpeg(7))
    (folder / "notes.txt").write_text("not an image")
    (folder / "again.jpg").write_bytes(samples.jpeg(6))
    result = runner.invoke(
        args=["import", str(folder), "--team", team_a.team.slug, "--tags", "from disk"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "2 imported, 1 already present, 1 failed"
    listed = client.get("/api/v1/images?tag=from%20disk", headers=team_a.headers()).json["items"]
    assert sorted(i["filename"] for i in listed) == ["a.jpg", "b.jpg"]


def test_cli_folder_import_skips_hidden_folders_pipes_and_folder_links(
    app, runner, client, team_a, tmp_path
):
    folder = tmp_path / "photos"
    (folder / ".thumbnails").mkdir(parents=True)
    (folder / ".thumbnails" / "small.jpg").write_bytes(samples.jpeg(11))  # a viewer's
    (folder / "a.jpg").write_bytes(samples.jpeg(12))
    os.mkfifo(folder / "pipe.jpg")  # reading it would wait forever
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "linked.jpg").write_bytes(samples.jpeg(13))
    (folder / "linked.jpg").symlink_to(elsewhere / "linked.jpg")  # picked by a link: taken
    (folder / "loop").symlink_to(folder)  # a link to a folder: not followed
    result = runner.invoke(args=["import", str(folder), "--team", team_a.team.slug])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "2 imported, 0 already present, 0 failed"
    listed = client.get("/api/v1/images", headers=team_a.headers()).json["items"]
    assert sorted(i["filename"] for i in listed) == ["a.jpg", "linked.jpg"]


@allow_local_origin
def test_reconcile_requeues_import_items_whose_job_was_lost(
    app, client, runner, team_a, origin, run_jobs
):
    from app.queue import get_import_queue, get_queue

    batch = start(client, team_a, urls=[f"{origin}/img/{n}.jpg" for n in range(12)]).json
    with app.app_context():
        assert get_queue().job_ids == []  # imports wait on their own queue, one URL per job
        assert len(get_import_queue().job_ids) == 12
        get_import_queue().empty()  # Redis lost them
    result = runner.invoke(args=["reconcile", "--older-than", "0"])
    assert result.output.strip().splitlines()[-1] == "12 jobs queued again"
    run_jobs()
    state = client.get(f"/api/v1/imports/{batch['id']}", headers=team_a.headers()).json
    assert (state["status"], state["done"]) == ("done", 12)
    again = runner.invoke(args=["reconcile", "--older-than", "0"])
    assert again.output.strip().splitlines()[-1] == "0 jobs queued again"


class SlowOrigin(BaseHTTPRequestHandler):
    """Serves /slow/N one byte every DRIP seconds, for a minute; counts requests per path."""

    DRIP = 0.5
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 - the http.server API
        SlowOrigin.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        try:
            for _ in range(int(60 / self.DRIP)):
                self.wfile.write(b"\xff")
                self.wfile.flush()
                time.sleep(self.DRIP)
        except OSError:
            pass  # the client gave up

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_origin():
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowOrigin)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    SlowOrigin.requests = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


SLOW_IMPORTS = {
    "IMPORT_ALLOW_NETWORKS": "127.0.0.1/32",
    "IMPORT_READ_TIMEOUT": 30,  # each byte comes well within it: only a deadline stops a drip
    "IMPORT_DEADLINE_SECONDS": 1,
}


@pytest.mark.slow
def test_a_slow_url_fails_on_its_deadline_and_uploads_go_first(
    app, client, team_a, team_b, upload, slow_origin, start_worker
):
    start_worker(**SLOW_IMPORTS)
    urls = [f"{slow_origin}/slow/{n}" for n in range(20)]  # a minute each without a deadline
    batch = start(client, team_a, urls=urls).json
    wait_until(lambda: SlowOrigin.requests, 90, "the worker never started the import")

    image = upload(team_b, [(samples.jpeg(30), "meanwhile.jpg")]).json["items"][0]

    def ready():
        response = client.get(f"/api/v1/images/{image['id']}", headers=team_b.headers())
        return response.json["status"] == "ready"

    wait_until(ready, 8, "an upload waited behind a slow import")
    state = client.get(f"/api/v1/imports/{batch['id']}", headers=team_a.headers()).json
    assert state["status"] != "done"  # the upload did not wait for the import to finish

    def two_failed():
        state = client.get(f"/api/v1/imports/{batch['id']}", headers=team_a.headers()).json
        return state if state["failed"] >= 2 else None

    state = wait_until(two_failed, 15, "slow items never failed")
    failed = [item for item in state["items"] if item["status"] == "failed"]
    assert all("longer than 1 s" in item["error"] for item in failed), failed
    # A timeout is final for its item: no retry fetched it again.
    assert len(SlowOrigin.requests) == len(set(SlowOrigin.requests))
