# ruff: noqa: F811 - `origin` is a fixture imported from test_imports
"""The Imports page: paste URLs or upload a CSV, progress per batch that stops polling when
done, the report; hostile URLs and filenames shown as text."""

from __future__ import annotations

import csv
import io
import re

import pytest
from markupsafe import escape

from tests.test_imports import ALLOW_LOCAL, origin  # noqa: F401 - the local image host

HOSTILE = "<img src=x onerror=alert(1)>"
HX_INJECTION = '" hx-get="/settings/keys" hx-trigger="load'

allow_local_origin = pytest.mark.parametrize("config_overrides", [ALLOW_LOCAL], ids=["local"])


def _batch_ids(page: str) -> list[str]:
    return re.findall(r'href="/imports/([0-9a-f-]{36})"', page)


@allow_local_origin
def test_pasted_urls_import_with_progress_that_stops_polling_when_done(
    app,
    team_a,
    person,
    origin,
    run_jobs,
):
    member = person(team_a, "member").client
    empty = member.get("/imports")
    assert empty.status_code == 200 and "HX-Request" in empty.headers["Vary"]
    assert "No imports yet" in empty.get_data(as_text=True)

    urls = f"{origin}/img/1.jpg\n\n  {origin}/img/2.jpg  \n{origin}/missing\n"
    started = member.post("/imports", data={"urls": urls, "tags": "web"})
    assert started.status_code == 302
    listing = member.get("/imports").get_data(as_text=True)
    (batch_id,) = _batch_ids(listing)
    assert 'hx-trigger="every 2s"' in listing and "0 of 3" in listing

    run_jobs()
    fragment = member.get(f"/imports/{batch_id}", headers={"HX-Request": "true"})
    body = fragment.get_data(as_text=True)
    assert fragment.status_code == 200 and "<html" not in body
    assert 'data-status="done"' in body and "hx-trigger" not in body
    assert "3 of 3: 2 imported, 1 failed" in body
    assert f"/imports/{batch_id}/report.csv" in body

    page = member.get(f"/imports/{batch_id}").get_data(as_text=True)
    assert "<html" in page and f"{origin}/missing" in page and "404" in page

    report = member.get(f"/imports/{batch_id}/report.csv")
    assert report.status_code == 200 and report.mimetype == "text/csv"
    assert "attachment" in report.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(report.get_data(as_text=True))))
    assert [r["status"] for r in rows] == ["done", "done", "failed"]
    assert rows[0]["thumbnail_url"].endswith(f"/images/{rows[0]['image_id']}/thumbnail")
    original = member.get(rows[0]["original_url"].removeprefix("http://localhost"))
    assert original.status_code == 200 and original.mimetype == "image/jpeg"


@allow_local_origin
def test_csv_upload_by_htmx_starts_a_batch(app, team_a, person, origin, run_jobs):
    admin = person(team_a, "admin").client
    data = f"url,filename,tags\n{origin}/img/3.jpg,three.jpg,csv\n".encode()
    answer = admin.post(
        "/imports",
        data={"file": (io.BytesIO(data), "list.csv")},
        headers={"HX-Request": "true"},
        content_type="multipart/form-data",
    )
    body = answer.get_data(as_text=True)
    assert answer.status_code == 200 and "<html" not in body
    assert "Import of 1 URL started." in body


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"urls": "ftp://example.com/a.jpg"}, "only http and https URLs"),
        ({"urls": "   \n  "}, "the import has no URLs"),
        (
            {"urls": "http://example.com/a.jpg", "file": (io.BytesIO(b"url\nx\n"), "a.csv")},
            "not both",
        ),
        ({"file": (io.BytesIO(b"link\nhttp://x/a.jpg\n"), "a.csv")}, "with a &#39;url&#39; column"),
        ({"file": (io.BytesIO(b"\xff\xfe\x00"), "a.csv")}, "must be UTF-8"),
    ],
)
def test_bad_imports_are_refused_with_a_reason_and_create_nothing(
    app, team_a, person, form, message
):
    member = person(team_a, "member").client
    answer = member.post("/imports", data=form, content_type="multipart/form-data")
    assert answer.status_code in (400, 422)
    body = answer.get_data(as_text=True)
    assert message in body and "No imports yet" in body


def test_viewers_follow_imports_but_cannot_start_one(app, team_a, person):
    viewer = person(team_a, "viewer").client
    page = viewer.get("/imports").get_data(as_text=True)
    assert "Start import" not in page
    assert viewer.post("/imports", data={"urls": "http://example.com/a.jpg"}).status_code == 403


@pytest.mark.parametrize("hostile", [HOSTILE, HX_INJECTION])
def test_hostile_urls_and_filenames_are_shown_as_text(app, team_a, team_b, person, hostile):
    member = person(team_a, "member").client
    url = "http://example.com/a.jpg?q=" + hostile
    out = io.StringIO()
    csv.writer(out).writerows([["url", "filename"], [url, hostile + ".jpg"]])
    answer = member.post(
        "/imports",
        data={"file": (io.BytesIO(out.getvalue().encode()), "list.csv")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 302, answer.data
    (batch_id,) = _batch_ids(member.get("/imports").get_data(as_text=True))
    for page in (
        member.get(f"/imports/{batch_id}"),
        member.get(f"/imports/{batch_id}", headers={"HX-Request": "1"}),
        member.get("/imports"),
    ):
        body = page.get_data(as_text=True)
        assert hostile not in body and 'hx-get="/settings/keys"' not in body
    assert str(escape(url)) in member.get(f"/imports/{batch_id}").get_data(as_text=True)

    intruder = person(team_b, "admin").client
    for path in (f"/imports/{batch_id}", f"/imports/{batch_id}/report.csv"):
        assert intruder.get(path).status_code == 404
    assert batch_id not in intruder.get("/imports").get_data(as_text=True)


@allow_local_origin
def test_an_imported_images_hostile_filename_is_text(app, team_a, person, origin, run_jobs):
    member = person(team_a, "member").client
    out = io.StringIO()
    csv.writer(out).writerows([["url", "filename"], [f"{origin}/img/4.jpg", HOSTILE + ".jpg"]])
    member.post(
        "/imports",
        data={"file": (io.BytesIO(out.getvalue().encode()), "list.csv")},
        content_type="multipart/form-data",
    )
    run_jobs()
    (batch_id,) = _batch_ids(member.get("/imports").get_data(as_text=True))
    page = member.get(f"/imports/{batch_id}").get_data(as_text=True)
    assert "1 imported" in page and HOSTILE not in page
    assert f'alt="{escape(HOSTILE)}.jpg"' in page
