"""The gallery's pages and fragments through the Flask client: layout and security headers,
filters, upload, the image page and its fragments, error pages, roles and hostile strings."""

from __future__ import annotations

import io
import re
import uuid

import pytest
from werkzeug.http import parse_options_header

from app.extensions import db
from app.models import Image, Label
from app.services import collections, duplicates
from app.services.audit import Actor
from tests import samples

HOSTILE = "<img src=x onerror=alert(1)>"
HX_INJECTION = '" hx-get="/evil" hx-trigger="load'
HOSTILE_NAME = f"{HOSTILE}{HX_INJECTION}.jpg"


def assert_escaped(html: str) -> None:
    """No hostile markup or attribute made it through as markup."""
    assert "<img src=x onerror" not in html
    assert 'hx-get="/evil"' not in html
    assert 'hx-trigger="load' not in html


def assert_safe_page(html: str) -> None:
    """What the Content-Security-Policy would block is not there to begin with."""
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    assert not re.search(r"\sstyle=", html), "inline style"
    assert "<style" not in html


def gallery_upload(client, files, **form):
    data = {"file": [(io.BytesIO(content), name) for content, name in files], **form}
    return client.post("/upload", data=data, content_type="multipart/form-data")


@pytest.fixture
def admin(person, team_a):
    return person(team_a, "admin")


@pytest.fixture
def viewer(person, team_a):
    return person(team_a, "viewer")


def test_pages_send_a_strict_csp_and_no_inline_script_or_style(admin, upload, team_a):
    upload(team_a, [(samples.jpeg(1), "one.jpg")])
    image_id = admin.client.get("/").data.decode().split('id="image-')[1].split('"')[0]
    for path in ("/", f"/images/{image_id}", "/settings/", "/no-such-page"):
        response = admin.client.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert_safe_page(response.data.decode())
    # htmx injects no indicator <style> and evaluates nothing.
    page = admin.client.get("/").data.decode()
    assert '"includeIndicatorStyles": false' in page and '"allowEval": false' in page
    assert "X-CSRFToken" in page  # every htmx request carries the token


def test_stored_files_keep_their_sandbox_policy(admin, upload, team_a):
    image_id = upload(team_a, [(samples.jpeg(1), "one.jpg")]).json["items"][0]["id"]
    response = admin.client.get(f"/images/{image_id}/thumbnail")
    assert response.headers["Content-Security-Policy"] == "sandbox"


def test_layout_nav_and_error_pages_keep_the_team(admin, team_a, team_b, upload):
    other = upload(team_b, [(samples.jpeg(3), "theirs.jpg")]).json["items"][0]["id"]
    for path in ("/no-such-page", f"/images/{other}", "/images/not-an-id"):
        response = admin.client.get(path)
        assert response.status_code == 404
        html = response.data.decode()
        assert "Team A" in html and ">Settings<" in html and ">Gallery<" in html
        assert "couldn&#39;t find" in html or "couldn't find" in html
        assert "theirs.jpg" not in html


def test_forbidden_page_says_why_inside_the_layout(viewer, upload, team_a):
    image_id = upload(team_a, [(samples.jpeg(1), "one.jpg")]).json["items"][0]["id"]
    response = viewer.client.post(f"/images/{image_id}/delete")
    assert response.status_code == 403
    html = response.data.decode()
    assert "can&#39;t do that" in html and "viewer in Team A" in html and ">Settings<" in html


def test_a_crash_is_a_friendly_500_that_leaks_nothing(app, person, team_a):
    def crash():
        raise RuntimeError("secret internals")

    app.add_url_rule("/crash-for-test", view_func=crash)  # before the app's first request
    admin = person(team_a, "admin")
    response = admin.client.get("/crash-for-test")
    assert response.status_code == 500
    html = response.data.decode()
    assert "went wrong on our side" in html and "secret internals" not in html
    assert "Team A" in html


def test_gallery_empty_states_say_what_to_do(admin, viewer):
    assert "Drop some images above" in admin.client.get("/").data.decode()
    html = viewer.client.get("/").data.decode()
    assert "ask an admin" in html and 'id="dropzone"' not in html
    filtered = admin.client.get("/?q=nothing").data.decode()
    assert "No images match these filters" in filtered


def test_filters_counts_and_search_fragment(app, admin, upload, team_a, run_jobs):
    upload(team_a, [(samples.jpeg(1), "beach.jpg")])
    upload(team_a, [(samples.jpeg(2), "forest.jpg")])
    run_jobs()
    upload(team_a, [(samples.jpeg(4), "city.jpg")])  # still pending
    with app.app_context():
        image_id = db.session.query(Image).filter_by(filename="forest.jpg").one().id
        db.session.add(
            Label(team_id=team_a.id, image_id=image_id, embedder="cnn", name="Pine", score=0.9)
        )
        db.session.commit()
    client = admin.client
    client.post(f"/images/{image_id}/tags", data={"tags": "trees, summer"})

    page = client.get("/")
    html = page.data.decode()
    assert "3 images" in html and "1 pending" in html
    assert 'hx-push-url="true"' in html and 'hx-trigger="input changed delay:300ms' in html
    assert "Vary" in page.headers and "HX-Request" in page.headers["Vary"]
    assert "<option selected>" not in html

    def tiles(response):
        return re.findall(r'class="filename" title="([^"]+)"', response.data.decode())

    assert tiles(client.get("/?q=BEACH")) == ["beach.jpg"]
    assert tiles(client.get("/?tag=trees")) == ["forest.jpg"]
    assert tiles(client.get("/?label=pine")) == ["forest.jpg"]
    assert tiles(client.get("/?status=pending")) == ["city.jpg"]
    assert sorted(tiles(client.get("/?status=ready&q=.jpg"))) == ["beach.jpg", "forest.jpg"]
    # The shared URL of a search shows the search filled in.
    assert 'value="summer"' in client.get("/?q=summer").data.decode()

    fragment = client.get("/?q=forest", headers={"HX-Request": "true"})
    body = fragment.data.decode()
    assert fragment.headers["HX-Push-Url"] == "/?q=forest"
    assert "<html" not in body and body.lstrip().startswith('<section id="results"')
    assert "1 image match" in body and tiles(fragment) == ["forest.jpg"]
    # The back button's restore wants the page.
    restore = client.get(
        "/?q=forest", headers={"HX-Request": "true", "HX-History-Restore-Request": "true"}
    )
    assert "<html" in restore.data.decode()
    assert client.get("/?status=sideways").status_code == 400


def test_collection_filter_and_unknown_collection(app, admin, team_a, upload):
    with app.app_context():
        info = collections.create_collection(team_a.id, "Trips", actor=Actor.system())
        collection_id = str(info.collection.id)
    upload(team_a, [(samples.jpeg(1), "out.jpg")])
    response = gallery_upload(admin.client, [(samples.jpeg(2), "in.jpg")], collection=collection_id)
    assert response.status_code == 201
    html = admin.client.get(f"/?collection={collection_id}").data.decode()
    assert "in.jpg" in html and "out.jpg" not in html and ">Trips</option>" in html
    # Uploads from a collection's view go into it.
    assert f'name="collection" value="{collection_id}"' in html
    assert admin.client.get("/?collection=00000000-0000-0000-0000-000000000000").status_code == 404


def test_infinite_scroll_keeps_filters(admin, upload, team_a, monkeypatch):
    monkeypatch.setattr("app.gallery.routes.PAGE_SIZE", 2)
    for i in range(3):
        upload(team_a, [(samples.jpeg(20 + i), f"keep{i}.jpg")])
    upload(team_a, [(samples.jpeg(30), "other.jpg")])
    html = admin.client.get("/?q=keep").data.decode()
    more = re.search(r'class="more" hx-get="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert "q=keep" in more
    rest = admin.client.get(more, headers={"HX-Request": "true"}).data.decode()
    assert rest.count('class="tile"') == 1 and "keep0.jpg" in rest and "other.jpg" not in rest


def test_poller_brings_new_images_and_stops_when_nothing_is_pending(
    admin, upload, team_a, run_jobs
):
    upload(team_a, [(samples.jpeg(1), "first.jpg")])
    html = admin.client.get("/").data.decode()
    poller = re.search(r'<li class="poller"[^>]*>', html, re.S).group(0)
    assert "every 3s" in poller
    fresh_url = re.search(r'hx-get="([^"]+)"', poller).group(1).replace("&amp;", "&")
    assert admin.client.get(fresh_url).data.decode().count('class="tile"') == 0

    upload(team_a, [(samples.jpeg(2), "second.jpg")])  # through the API, from elsewhere
    fresh = admin.client.get(fresh_url).data.decode()
    assert "second.jpg" in fresh and "first.jpg" not in fresh
    assert 'hx-swap-oob="true"' in fresh and "2 images" in fresh

    run_jobs()
    settled = admin.client.get(fresh_url).data.decode()
    poller = re.search(r'<li class="poller"[^>]*>', settled, re.S).group(0)
    assert "every" not in poller and 'hx-trigger="refresh"' in poller


def test_upload_route_places_tiles_and_says_what_happened(app, admin, run_jobs):
    response = gallery_upload(
        admin.client, [(samples.jpeg(1), "a.jpg"), (samples.jpeg(2), "b.jpg")]
    )
    assert response.status_code == 201
    items = response.json["items"]
    assert [i["existing"] for i in items] == [False, False]
    assert all('class="tile"' in i["html"] and "every 2s" in i["html"] for i in items)
    with app.app_context():
        image = db.session.get(Image, uuid.UUID(items[0]["id"]))
        assert image.uploaded_by_user.email == admin.email

    again = gallery_upload(admin.client, [(samples.jpeg(1), "copy.jpg")])
    assert again.status_code == 200
    assert again.json["items"][0]["existing"] is True
    assert "already in the library as a.jpg" in again.json["items"][0]["message"]


@pytest.mark.parametrize(
    ("content", "status", "message"),
    [
        (b"hello, not an image", 415, "not"),
        (samples.png_header(100_000, 100_000), 422, "pixels"),
    ],
    ids=["not-an-image", "bomb"],
)
def test_upload_refusals_carry_the_servers_message(admin, content, status, message):
    response = gallery_upload(admin.client, [(content, f"{HOSTILE}.png")])
    assert response.status_code == status
    assert message in response.json["error"]
    assert admin.client.get("/").data.decode().count('class="tile"') == 0


def test_upload_too_large_is_refused_with_the_limit(app, admin):
    app.config["MAX_UPLOAD_MB"] = 1
    response = gallery_upload(
        admin.client, [(samples.padded(samples.jpeg(1), 1024 * 1024 + 10), "big.jpg")]
    )
    assert response.status_code == 413
    assert response.json["error"].startswith("the file is larger than 1 MB")


def test_a_body_over_the_request_limit_gets_the_same_message(app, admin):
    app.config["MAX_CONTENT_LENGTH"] = 512 * 1024
    response = gallery_upload(
        admin.client, [(samples.padded(samples.jpeg(1), 600 * 1024), "a.jpg")]
    )
    assert response.status_code == 413
    assert response.json["error"] == "the file is larger than 50 MB"


def test_upload_needs_the_csrf_token_and_an_editor(app, admin, viewer):
    assert gallery_upload(viewer.client, [(samples.jpeg(1), "v.jpg")]).status_code == 403
    app.config["WTF_CSRF_ENABLED"] = True
    assert gallery_upload(admin.client, [(samples.jpeg(1), "a.jpg")]).status_code == 400


def test_image_page_shows_details_and_editors_get_controls(
    app, admin, viewer, upload, team_a, run_jobs
):
    photo = samples.camera_jpeg()
    image_id = upload(team_a, [(photo, "camera.jpg")]).json["items"][0]["id"]
    run_jobs()
    html = admin.client.get(f"/images/{image_id}").data.decode()
    assert f"/images/{image_id}/preview" in html and "camera.jpg" in html
    assert "Colours" in html and "<rect" in html and "EXIF" in html
    assert "Camera" in html and "Canon" in html
    assert 'name="tags"' in html and "Delete camera.jpg" in html and "Download copy" in html
    assert f"/images/{image_id}/similar" in html and f"/images/{image_id}/duplicates" in html
    preview = admin.client.get(f"/images/{image_id}/preview")
    assert preview.status_code == 200 and preview.mimetype == "image/webp"

    viewed = viewer.client.get(f"/images/{image_id}").data.decode()
    assert 'name="tags"' not in viewed and "Delete" not in viewed and "Download copy" in viewed
    assert viewer.client.post(f"/images/{image_id}/tags", data={"tags": "x"}).status_code == 403
    assert viewer.client.post(f"/images/{image_id}/collection", data={}).status_code == 403


def test_previous_and_next_follow_the_filter(admin, upload, team_a):
    ids = [
        upload(team_a, [(samples.jpeg(40 + i), f"{name}.jpg")]).json["items"][0]["id"]
        for i, name in enumerate(["cat1", "dog", "cat2", "cat3"])
    ]
    cat1, _dog, cat2, cat3 = ids  # newest last
    html = admin.client.get(f"/images/{cat2}?q=cat").data.decode()
    prev = re.search(r'rel="prev" href="([^"]+)"', html).group(1)
    nxt = re.search(r'rel="next" href="([^"]+)"', html).group(1)
    assert prev == f"/images/{cat3}?q=cat" and nxt == f"/images/{cat1}?q=cat"
    unfiltered = admin.client.get(f"/images/{cat2}").data.decode()
    assert f'href="/images/{_dog}"' in unfiltered
    newest = admin.client.get(f"/images/{cat3}?q=cat").data.decode()
    assert 'rel="prev"' not in newest and 'aria-keyshortcuts="ArrowRight"' in newest


def test_inline_tag_editing(admin, upload, team_a):
    image_id = upload(team_a, [(samples.jpeg(1), "one.jpg")]).json["items"][0]["id"]
    response = admin.client.post(
        f"/images/{image_id}/tags",
        data={"tags": "Sea, SUMMER  2024"},
        headers={"HX-Request": "true"},
    )
    body = response.data.decode()
    assert response.status_code == 200 and "<html" not in body
    assert ">sea</a>" in body and ">summer 2024</a>" in body
    refused = admin.client.post(
        f"/images/{image_id}/tags", data={"tags": "x" * 80}, headers={"HX-Request": "true"}
    )
    assert refused.status_code == 422 and "at most 64" in refused.data.decode()
    # Without JavaScript: the form posts and comes back to the page.
    plain = admin.client.post(f"/images/{image_id}/tags", data={"tags": "plain"})
    assert plain.status_code == 302 and plain.headers["Location"] == f"/images/{image_id}"
    assert ">plain</a>" in admin.client.get(f"/images/{image_id}").data.decode()


def test_collection_picker(app, admin, upload, team_a, team_b):
    image_id = upload(team_a, [(samples.jpeg(1), "one.jpg")]).json["items"][0]["id"]
    with app.app_context():
        mine = str(
            collections.create_collection(team_a.id, "Mine", actor=Actor.system()).collection.id
        )
        theirs = str(
            collections.create_collection(team_b.id, "Theirs", actor=Actor.system()).collection.id
        )
    moved = admin.client.post(
        f"/images/{image_id}/collection", data={"collection": mine}, headers={"HX-Request": "true"}
    )
    assert moved.status_code == 200 and f'value="{mine}" selected' in moved.data.decode()
    refused = admin.client.post(
        f"/images/{image_id}/collection",
        data={"collection": theirs},
        headers={"HX-Request": "true"},
    )
    assert refused.status_code == 404 and "Theirs" not in refused.data.decode()
    cleared = admin.client.post(f"/images/{image_id}/collection", data={"collection": ""})
    assert cleared.status_code == 302
    with app.app_context():
        assert db.session.get(Image, uuid.UUID(image_id)).collection_id is None


def test_more_like_this_and_near_duplicates(admin, upload, team_a, run_jobs):
    original = samples.jpeg(7, (800, 600))
    ids = [
        upload(team_a, [(data, name)]).json["items"][0]["id"]
        for data, name in [
            (original, "original.jpg"),
            (samples.resized_copy(original), "copy.jpg"),
            (samples.jpeg(99), "unrelated.jpg"),
        ]
    ]
    waiting = admin.client.get(f"/images/{ids[0]}/similar").data.decode()
    assert "not yet processed" in waiting
    run_jobs()
    similar = admin.client.get(
        f"/images/{ids[0]}/similar", headers={"HX-Request": "true"}
    ).data.decode()
    assert "copy.jpg" in similar and "% alike" in similar and "original.jpg" not in similar
    duplicates = admin.client.get(f"/images/{ids[0]}/duplicates").data.decode()
    assert "copy.jpg" in duplicates and "apart" in duplicates and "unrelated.jpg" not in duplicates


def test_the_image_pages_near_duplicates_are_the_review_pages_near_tier(
    admin, upload, team_a, run_jobs, monkeypatch
):
    original = samples.jpeg(7, (800, 600))
    brighter = samples.photo(7, (800, 600)).point(lambda v: min(255, int(v * 1.2)))
    ids = [
        upload(team_a, [(data, name)]).json["items"][0]["id"]
        for data, name in [
            (original, "original.jpg"),
            (samples.encode(brighter, "JPEG", quality=85), "brighter.jpg"),
        ]
    ]
    run_jobs()

    def seen_on_the_image_page() -> int | None:
        page = admin.client.get(f"/images/{ids[0]}/duplicates").data.decode()
        found = re.search(r"(\d+) bits? apart", page)
        return int(found.group(1)) if found else None

    def grouped_by_the_review() -> bool:
        answer = admin.client.get("/duplicates?tier=near", headers={"HX-Request": "true"})
        return "brighter.jpg" in answer.data.decode()

    bits = seen_on_the_image_page()
    assert bits is not None and 0 < bits <= duplicates.NEAR_BITS, bits
    assert grouped_by_the_review()
    monkeypatch.setattr(duplicates, "NEAR_BITS", bits - 1)  # a stricter deployment
    assert seen_on_the_image_page() is None
    assert not grouped_by_the_review()


def test_downloads_of_the_original_and_a_compressed_copy(admin, upload, team_a):
    original = samples.jpeg(1)
    image_id = upload(team_a, [(original, "holiday.jpg")]).json["items"][0]["id"]
    response = admin.client.get(f"/images/{image_id}/original")
    assert response.data == original
    assert response.headers["Content-Disposition"].startswith("attachment")
    copy = admin.client.get(f"/images/{image_id}/download?format=jpeg&quality=40")
    assert copy.status_code == 200 and copy.mimetype == "image/jpeg"
    assert (
        copy.headers["Content-Disposition"].startswith("attachment")
        and "holiday" in copy.headers["Content-Disposition"]
    )
    assert len(copy.data) < len(original)
    png = admin.client.get(f"/images/{image_id}/download?format=png")
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert admin.client.get(f"/images/{image_id}/download?format=jpeg&quality=0").status_code == 400
    assert admin.client.get(f"/images/{image_id}/download?format=bmp&quality=50").status_code == 400


def test_delete_with_confirmation(app, admin, upload, team_a):
    image_id = upload(team_a, [(samples.jpeg(1), "gone.jpg")]).json["items"][0]["id"]
    html = admin.client.get(f"/images/{image_id}").data.decode()
    assert '<details class="confirm">' in html  # the button is behind a second step
    response = admin.client.post(f"/images/{image_id}/delete")
    assert response.status_code == 302 and response.headers["Location"] == "/"
    page = admin.client.get("/").data.decode()
    assert "Deleted gone.jpg." in page and 'id="image-' not in page
    assert admin.client.get(f"/images/{image_id}").status_code == 404


def test_hostile_strings_are_escaped_everywhere(app, admin, upload, team_a, run_jobs):
    with app.app_context():
        info = collections.create_collection(
            team_a.id, HOSTILE + HX_INJECTION, actor=Actor.system()
        )
        collection_id = str(info.collection.id)
    uploaded = gallery_upload(
        admin.client,
        [(samples.jpeg(1), HOSTILE_NAME), (samples.jpeg(2), "neighbour.jpg")],
        tags=f"{HOSTILE}, {HX_INJECTION.replace(',', '')}",
        collection=collection_id,
    )
    assert uploaded.status_code == 201
    for item in uploaded.json["items"]:
        assert_escaped(item["html"])
    image_id = uploaded.json["items"][0]["id"]
    run_jobs()
    client = admin.client
    responses = [
        client.get("/"),
        client.get(f"/?collection={collection_id}"),
        client.get("/?q=onerror", headers={"HX-Request": "true"}),
        client.get(f"/?tag={HOSTILE}"),
        client.get(f"/images/{image_id}"),
        client.get(f"/images/{uploaded.json['items'][1]['id']}/similar"),
        client.get(f"/images/{image_id}/status"),
        client.post(
            f"/images/{image_id}/tags", data={"tags": HOSTILE}, headers={"HX-Request": "true"}
        ),
        client.post(
            f"/images/{image_id}/collection",
            data={"collection": collection_id},
            headers={"HX-Request": "true"},
        ),
    ]
    for response in responses:
        html = response.data.decode()
        assert response.status_code == 200, html[:500]
        assert_escaped(html)
    assert "&lt;img src=x onerror=alert(1)&gt;" in responses[0].data.decode()
    assert "onerror" in responses[2].data.decode()  # the search found it, escaped
    for path in (
        f"/images/{image_id}/original",
        f"/images/{image_id}/download?format=webp&quality=50",
    ):
        disposition = client.get(path).headers["Content-Disposition"]
        kind, options = parse_options_header(disposition)
        # One attachment whose name is the stored name, quoted: nothing breaks out of the value.
        assert kind == "attachment" and "\n" not in disposition and "\r" not in disposition
        assert set(options) <= {"filename", "filename*"}
        assert options["filename"].startswith(HOSTILE[:10])


def test_an_error_shows_its_reason_and_a_retry_for_editors(app, admin, viewer, upload, team_a):
    image_id = upload(team_a, [(samples.jpeg(1), "broken.jpg")]).json["items"][0]["id"]
    with app.app_context():
        image = db.session.get(Image, uuid.UUID(image_id))
        image.status, image.error = "error", f"embedder failed: {HOSTILE}"
        db.session.commit()
    html = admin.client.get("/").data.decode()
    assert 'class="error-reason">embedder failed: &lt;img' in html
    assert f'hx-post="/images/{image_id}/retry"' in html
    assert_escaped(html)
    assert "retry" not in viewer.client.get("/").data.decode().lower()
    badge = admin.client.post(f"/images/{image_id}/retry", headers={"HX-Request": "true"})
    assert badge.status_code == 200 and 'data-status="pending"' in badge.data.decode()
    assert "every 2s" in badge.data.decode()
