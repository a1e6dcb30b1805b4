# ruff: noqa: F811  (the browser fixtures come from test_browser and are named as parameters)
"""The gallery in a real headless Chromium with a live server and a real worker process:
upload by drag and drop, live badges, the image page, keyboard navigation, roles, 375 px."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect  # noqa: E402  (after test_browser's skip)

from tests import samples
from tests.test_browser import (  # noqa: F401  (fixtures)
    SCREENSHOTS,
    browser,
    config_overrides,
    live_server,
    make_team,
    page,
    served,
    sign_in,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def artifacts():
    """Where screenshots are kept after the run, with the other browser tests' ones."""
    folder = Path(SCREENSHOTS)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def csp_violations(page):
    """Console errors the Content-Security-Policy raised on the page."""
    found = []
    page.on(
        "console",
        lambda message: (
            found.append(message.text)
            if "Content Security Policy" in message.text
            or "Content-Security-Policy" in message.text
            else None
        ),
    )
    return found


def drop_files(page, selector, files):
    """Drop files on an element as a person dragging them from their desktop would."""
    payload = [
        {"name": name, "b64": base64.b64encode(data).decode(), "type": kind}
        for data, name, kind in files
    ]
    transfer = page.evaluate_handle(
        """files => {
             const transfer = new DataTransfer();
             for (const f of files) {
               const bytes = Uint8Array.from(atob(f.b64), c => c.charCodeAt(0));
               transfer.items.add(new File([bytes], f.name, {type: f.type}));
             }
             return transfer;
           }""",
        payload,
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def wider_than_the_window(page) -> list[str]:
    """The elements that stick out to the right (a page that scrolls sideways has some)."""
    return page.evaluate(
        """() => [...document.querySelectorAll("body *")]
             .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
             .map(e => e.tagName + "." + e.className + "#" + e.id)"""
    )


def no_horizontal_scroll(page) -> bool:
    fits = page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    assert fits, wider_than_the_window(page)
    return fits


def test_drop_two_images_see_them_ready_then_similar_and_near_duplicate(
    live_server, page, runner, start_worker, artifacts, csp_violations
):
    make_team(runner, ("boss@example.com", "admin"))
    start_worker()
    sign_in(page, live_server, "boss@example.com")
    expect(page.get_by_text("No images yet")).to_be_visible()

    original = samples.jpeg(7, (800, 600))
    drop_files(
        page,
        "#dropzone",
        [
            (original, "harbour.jpg", "image/jpeg"),
            (samples.resized_copy(original), "harbour-small.jpg", "image/jpeg"),
        ],
    )
    # A row and a progress bar per file; the tiles are in the grid at once, without a reload.
    expect(page.locator("#uploads li")).to_have_count(2)
    expect(page.locator("#uploads li.done")).to_have_count(2)
    expect(page.locator("#uploads progress")).to_have_count(2)
    expect(page.locator("#grid .tile")).to_have_count(2)
    expect(page.get_by_text("No images yet")).to_have_count(0)
    # The real worker processes them; the badges turn ready by themselves.
    expect(page.locator(".badge[data-status=ready]")).to_have_count(2, timeout=30_000)
    expect(page.locator("#counts")).to_have_text(re.compile(r"^\s*2 images\s*$"))
    page.screenshot(path=artifacts / "gallery.png", full_page=True)

    # An exact re-upload says so, and a file that is not an image gets the server's reason.
    page.locator("#file-picker").set_input_files(
        [
            {"name": "again.jpg", "mimeType": "image/jpeg", "buffer": original},
            {"name": "notes.png", "mimeType": "image/png", "buffer": b"just some text"},
        ]
    )
    expect(page.locator("#uploads li", has_text="again.jpg")).to_contain_text(
        "already in the library as harbour.jpg"
    )
    expect(page.locator("#uploads li.failed", has_text="notes.png")).to_contain_text("not")
    expect(page.locator("#grid .tile")).to_have_count(2)

    # Live search: the URL can be shared and reloaded.
    page.get_by_label("Search").fill("small")
    expect(page).to_have_url(f"{live_server}/?q=small", timeout=5_000)
    expect(page.locator("#grid .tile")).to_have_count(1)
    page.reload()
    expect(page.get_by_label("Search")).to_have_value("small")
    expect(page.locator("#grid .tile")).to_have_count(1)
    page.goto(live_server + "/")

    page.locator(".tile", has_text="harbour.jpg").get_by_role("link").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("harbour.jpg")
    # Both lists load when scrolled into view.
    page.get_by_role("heading", name="Near-duplicates").scroll_into_view_if_needed()
    similar = page.locator("#similar")
    expect(similar).to_contain_text("harbour-small.jpg")
    expect(similar).to_contain_text("% alike")
    duplicates = page.locator("#duplicates")
    expect(duplicates).to_contain_text("harbour-small.jpg")
    expect(duplicates).to_contain_text("apart")
    preview = page.locator(".preview img")
    expect(preview).to_have_js_property("complete", True)
    assert preview.evaluate("i => i.naturalWidth") > 0
    page.screenshot(path=artifacts / "image-page.png", full_page=True)

    # The arrow keys go to the other image and back (both were uploaded at once: which one is
    # newer, on the left, depends on which upload finished first).
    there, back = ("ArrowLeft", "ArrowRight")
    if page.locator("a[rel=prev]").count() == 0:
        there, back = back, there
    page.wait_for_load_state("domcontentloaded")  # the page's script listens from then on
    page.keyboard.press(there)
    expect(page.get_by_role("heading", level=1)).to_have_text("harbour-small.jpg")
    page.wait_for_load_state("domcontentloaded")
    page.keyboard.press(back)
    expect(page.get_by_role("heading", level=1)).to_have_text("harbour.jpg")
    # Not while typing in a field.
    page.get_by_label("Edit tags").fill("boats, sea")
    page.get_by_label("Edit tags").press("ArrowLeft")
    expect(page.get_by_role("heading", level=1)).to_have_text("harbour.jpg")
    page.get_by_role("button", name="Save tags").click()
    expect(page.locator("#tags .chips")).to_contain_text("boats")

    # 375 px wide: everything fits, nothing scrolls sideways.
    page.set_viewport_size({"width": 375, "height": 800})
    assert no_horizontal_scroll(page)
    page.screenshot(path=artifacts / "image-page-375.png", full_page=True)
    page.goto(live_server + "/")
    expect(page.locator("#grid .tile")).to_have_count(2)
    assert no_horizontal_scroll(page)
    page.screenshot(path=artifacts / "gallery-375.png", full_page=True)
    assert csp_violations == []
    assert os.path.getsize(artifacts / "gallery.png") > 10_000


def test_viewer_sees_no_upload_control_and_cannot_upload(live_server, page, runner, client):
    make_team(runner, ("viewer@example.com", "viewer"))
    sign_in(page, live_server, "viewer@example.com")
    expect(page.get_by_text("No images yet")).to_be_visible()
    expect(page.locator("#dropzone")).to_have_count(0)
    expect(page.get_by_label("choose files")).to_have_count(0)
    # Posting anyway, with the page's own CSRF token, is refused.
    status = page.evaluate(
        """async () => {
             const token = JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"];
             const body = new FormData();
             body.append("file", new File([new Uint8Array([1, 2, 3])], "x.jpg"));
             const response = await fetch("/upload", {method: "POST", body,
                                          headers: {"X-CSRFToken": token}});
             return response.status;
           }"""
    )
    assert status == 403


def test_error_pages_keep_the_layout(live_server, page, runner, served):
    make_team(runner, ("boss@example.com", "admin"))
    sign_in(page, live_server, "boss@example.com")
    response = page.goto(live_server + "/images/00000000-0000-0000-0000-000000000000")
    assert response.status == 404
    expect(page.get_by_role("heading", level=1)).to_contain_text("couldn't find")
    expect(page.get_by_role("link", name="Settings")).to_be_visible()
    expect(page.locator(".team")).to_have_text("Team")
    page.get_by_role("link", name="Back to the gallery").click()
    expect(page).to_have_url(live_server + "/")
    # The one 404 was the page asked for (the live server checks that nothing else was).
    missing = [hit for hit in served if hit[1] == 404]
    assert [path for path, _ in missing] == ["/images/00000000-0000-0000-0000-000000000000"]
    served.remove(missing[0])
