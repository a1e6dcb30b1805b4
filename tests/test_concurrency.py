"""Identical uploads arriving at the same moment still make exactly one image."""

from __future__ import annotations

import threading

import urllib3
from sqlalchemy import func, select
from werkzeug.serving import make_server

from app.extensions import db
from app.models import Image
from app.tenancy import unscoped
from tests import samples
from tests.invariants import check_invariants


def test_concurrent_identical_uploads_make_one_image(app, team_a, team_b, instance_path):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/api/v1/images"
    data = samples.jpeg(1, size=(1200, 900))
    start = threading.Barrier(20)
    answers = []

    def post(n: int) -> None:
        start.wait()
        response = urllib3.request(
            "POST",
            url,
            headers=team_a.headers(),
            fields={"file": (f"copy-{n}.jpg", data, "image/jpeg")},
            timeout=60,
        )
        answers.append((response.status, response.json()))

    try:
        workers = [threading.Thread(target=post, args=(n,)) for n in range(20)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
    finally:
        server.shutdown()
        thread.join(5)

    assert [status for status, _ in answers] == [201] * 20, answers
    items = [body["items"][0] for _, body in answers]
    assert len({item["id"] for item in items}) == 1
    assert sum(not item.get("existing", False) for item in items) == 1
    with app.app_context(), unscoped():
        assert db.session.scalar(select(func.count()).select_from(Image)) == 1
    originals = [p for p in (instance_path / "storage").rglob("original")]
    assert len(originals) == 1  # the losers' objects were removed
    check_invariants(app, [team_a, team_b])
