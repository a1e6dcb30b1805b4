# ruff: noqa: F401, F811 - fixtures are imported from test_browser and test_imports
"""Collections, API keys, imports, duplicates and search by image in a real headless Chromium
against a live server and a real (in-process, burst) worker. Screenshots of the duplicates and
search pages are saved under test-artifacts/screenshots/."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from tests import samples
from tests.test_browser import (
    SCREENSHOTS,
    browser,
    htmx_settled,
    live_server,
    make_team,
    page,
    served,
    sign_in,
)
from tests.test_imports import ALLOW_LOCAL, origin

pytestmark = pytest.mark.browser


@pytest.fixture
def config_overrides():
    return {"WTF_CSRF_ENABLED": True, **ALLOW_LOCAL}


@pytest.fixture
def team_admin(runner, app):
    """A team with an admin, and an API key of the team to upload with."""
    make_team(runner, ("boss@example.com", "admin"))
    from app.extensions import db
    from app.models import Team
    from app.services import keys

    with app.app_context():
        team = db.session.query(Team).one()
        _, key = keys.create_key(team, "test", ["read", "write"])
        db.session.commit()
    return {"X-API-Key": key}


def _screenshot(page, name: str) -> None:
    os.makedirs(SCREENSHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SCREENSHOTS, name), full_page=True)


def test_create_a_collection_and_move_images_into_it(live_server, page, team_admin, upload):
    upload(team_admin, [(samples.jpeg(1), "one.jpg"), (samples.jpeg(2), "two.jpg")])
    sign_in(page, live_server, "boss@example.com")
    page.get_by_role("link", name="Collections", exact=True).click()
    expect(page.get_by_text("No collections yet")).to_be_visible()
    page.get_by_label("Name").fill("Holiday")
    page.get_by_label("Description").fill("the summer one")
    page.get_by_role("button", name="Create collection").click()
    expect(page.get_by_role("status")).to_contain_text("Collection “Holiday” created.")

    page.get_by_role("link", name="Gallery", exact=True).click()
    page.get_by_label("Select one.jpg").check()
    page.get_by_label("Select two.jpg").check()
    page.locator("#bulk-form").get_by_label("Collection").select_option(label="Holiday")
    page.get_by_role("button", name="Add selected").click()
    expect(page.locator("#bulk-form [role=status]")).to_contain_text(
        "2 images now in “Holiday” (2 in it)."
    )

    page.get_by_role("link", name="Collections", exact=True).click()
    page.get_by_role("link", name="Holiday").click()
    expect(page.locator("#collection-grid .tile")).to_have_count(2)
    _screenshot(page, "collection.png")
    # Deleting is refused while it holds images, with the reason.
    page.get_by_text("Rename, describe or delete").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete collection").click()
    expect(page.get_by_role("alert")).to_contain_text("still holds 2 images")


def test_create_an_api_key_copy_it_and_revoke_it(live_server, browser, team_admin, client):
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        sign_in(page, live_server, "boss@example.com")
        page.goto(live_server + "/settings/keys")
        page.get_by_label("Name").fill("copied")
        page.get_by_role("button", name="Create key").click()
        key = page.locator("#new-key").inner_text().strip()
        assert key.startswith("lk_")
        page.get_by_role("button", name="Copy key").click()
        expect(page.get_by_role("button", name="Copied")).to_be_visible()
        assert page.evaluate("navigator.clipboard.readText()") == key
        assert client.get("/api/v1/images", headers={"X-API-Key": key}).status_code == 200

        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("row", name="copied").get_by_role("button", name="Revoke").click()
        expect(page.get_by_role("row", name="copied")).to_contain_text("revoked")
        assert client.get("/api/v1/images", headers={"X-API-Key": key}).status_code == 401
    finally:
        context.close()


def test_an_import_shows_its_progress_until_done(live_server, page, team_admin, origin, run_jobs):
    sign_in(page, live_server, "boss@example.com")
    page.get_by_role("link", name="Imports", exact=True).click()
    page.get_by_label("Image URLs").fill(
        f"{origin}/img/1.jpg\n{origin}/img/2.jpg\n{origin}/missing"
    )
    page.get_by_role("button", name="Start import").click()
    progress = page.locator(".import-progress")
    expect(progress).to_have_attribute("data-status", "queued")
    expect(progress).to_contain_text("0 of 3")
    run_jobs()
    # The line polls every 2 s, and stops once the batch is done.
    expect(progress).to_have_attribute("data-status", "done", timeout=8_000)
    expect(progress).to_contain_text("3 of 3: 2 imported, 1 failed")
    assert progress.get_attribute("hx-trigger") is None
    _screenshot(page, "imports.png")
    with page.expect_download() as download:
        progress.get_by_role("link", name="Report (CSV)").click()
    with open(download.value.path(), encoding="utf-8") as f:
        report = f.read()
    assert report.count("\n") == 4 and f"{origin}/missing,failed" in report


def test_resolve_a_duplicates_group(live_server, page, team_admin, upload, run_jobs):
    original = samples.jpeg(1)
    upload(
        team_admin,
        [(original, "photo.jpg"), (samples.resized_copy(original), "small copy.jpg")],
    )
    upload(team_admin, [(samples.jpeg(5), "other.jpg")])
    run_jobs()
    sign_in(page, live_server, "boss@example.com")
    page.get_by_role("link", name="Duplicates", exact=True).click()
    group = page.locator(".dup-group")
    expect(group).to_have_count(1)
    expect(group.locator(".tile.keeper")).to_contain_text("photo.jpg")
    expect(group.get_by_label("Keep photo.jpg")).to_be_checked()
    expect(group.get_by_label("Keep small copy.jpg")).not_to_be_checked()
    for img in group.locator("img").all():
        expect(img).to_have_js_property("complete", True)
    _screenshot(page, "duplicates.png")
    # Nothing ticked to keep: the refusal (a 400, which the page does not swap in) is shown.
    group.get_by_label("Keep photo.jpg").uncheck()
    page.once("dialog", lambda dialog: dialog.accept())
    group.get_by_role("button", name="Keep ticked, delete the rest").click()
    expect(page.get_by_role("alert")).to_contain_text("keep at least one image")
    expect(group).to_have_count(1)
    group.get_by_label("Keep photo.jpg").check()
    page.once("dialog", lambda dialog: dialog.accept())
    group.get_by_role("button", name="Keep ticked, delete the rest").click()
    expect(page.get_by_role("status")).to_contain_text("Kept 1, deleted 1.")
    expect(page.locator(".dup-group")).to_have_count(0)


@pytest.mark.parametrize(
    "config_overrides",
    [{"WTF_CSRF_ENABLED": True, **ALLOW_LOCAL, "DUPLICATE_REPORT_INLINE_IMAGES": 1}],
)
def test_a_large_teams_similar_report_appears_once_a_worker_made_it(
    live_server, page, team_admin, upload, run_jobs, config_overrides
):
    original = samples.jpeg(1)
    upload(
        team_admin,
        [(original, "photo.jpg"), (samples.resized_copy(original), "small copy.jpg")],
    )
    run_jobs()
    sign_in(page, live_server, "boss@example.com")
    page.goto(live_server + "/duplicates?tier=similar")
    expect(page.get_by_role("status")).to_contain_text("Preparing this team's similar report")
    expect(page.locator(".dup-group")).to_have_count(0)
    run_jobs()  # the worker makes the report; the page asks again every 5 s by itself
    expect(page.locator(".dup-group")).to_have_count(1, timeout=12_000)
    expect(page.get_by_text("Preparing this team's similar report")).to_have_count(0)


def test_search_by_a_dropped_file(live_server, page, team_admin, upload, run_jobs):
    original = samples.jpeg(1)
    upload(
        team_admin,
        [(original, "photo.jpg"), (samples.jpeg(3), "third.jpg"), (samples.jpeg(4), "fourth.jpg")],
    )
    run_jobs()
    sign_in(page, live_server, "boss@example.com")
    page.get_by_role("link", name="Search by image").click()
    # A file dropped on the zone: built in the page from bytes, as a desktop drop gives it.
    query = list(samples.resized_copy(original, factor=0.6))
    with htmx_settled(page):
        page.evaluate(
            """bytes => {
                 const file = new File([new Uint8Array(bytes)], "query.jpg", {type: "image/jpeg"});
                 const data = new DataTransfer();
                 data.items.add(file);
                 const zone = document.querySelector(".search-drop");
                 zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true}));
                 zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
               }""",
            query,
        )
    matches = page.locator("#search-matches .tile")
    expect(matches).to_have_count(3)
    expect(matches.first).to_contain_text("photo.jpg")
    expect(matches.first.locator(".score")).to_contain_text("% alike")
    for img in matches.locator("img").all():
        expect(img).to_have_js_property("complete", True)
    _screenshot(page, "search.png")

    # The same by the file picker, without a drop.
    page.locator("#search-file").set_input_files(
        files=[{"name": "q.jpg", "mimeType": "image/jpeg", "buffer": original}]
    )
    expect(page.locator("#search-results")).to_contain_text("Closest to q.jpg")
