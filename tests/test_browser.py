"""The gallery in a real headless Chromium, driven by Playwright, against a live server."""

from __future__ import annotations

import contextlib
import os
import threading

import pytest
from werkzeug.serving import make_server

from config import BASE_DIR
from tests import samples
from tests.conftest import wait_until

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# Every browser test's screenshots, kept after the run (CI's artifacts; the README's pictures).
SCREENSHOTS = os.environ.get(
    "LIKENESS_SCREENSHOTS", os.path.join(BASE_DIR, "test-artifacts", "screenshots")
)
PASSWORD = "correct horse battery"

pytestmark = pytest.mark.browser

if not os.path.exists(CHROMIUM):
    if os.environ.get("LIKENESS_REQUIRE_BROWSER"):
        raise RuntimeError(
            f"browser tests required but {CHROMIUM} is missing (apt-get install chromium)"
        )
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402


@pytest.fixture
def config_overrides():
    return {"WTF_CSRF_ENABLED": True}  # the browser sends real tokens


@pytest.fixture
def served():
    """(path, status) of every request the live server answered, in order."""
    return []


@pytest.fixture
def live_server(app, served):
    def recording(environ, start_response):
        def start(status, headers, exc_info=None):
            served.append((environ["PATH_INFO"], int(status.split()[0])))
            return start_response(status, headers, exc_info)

        return app(environ, start)

    server = make_server("127.0.0.1", 0, recording, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)
    # Every page finds what it loads, the icon a browser asks for by itself included.
    assert [path for path, status in served if status == 404] == []


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def test_pages_name_an_icon_that_is_served(live_server, page, served):
    page.goto(live_server + "/setup")
    icon = wait_until(
        lambda: [hit for hit in served if "icon" in hit[0]], 10, "the browser asked for no icon"
    )
    # The browser may ask again (a 304 then): every ask is for the SVG, and it is there.
    assert {path for path, _status in icon} == {"/static/favicon.svg"}
    assert icon[0][1] == 200 and all(status in (200, 304) for _path, status in icon)


def test_first_run_setup_then_live_status_badges(live_server, page, upload, run_jobs, app):
    page.goto(live_server + "/")
    expect(page).to_have_url(live_server + "/setup")
    page.get_by_label("Team name").fill("Acme Photos")
    page.get_by_label("Your email").fill("boss@acme.test")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create team").click()
    expect(page).to_have_url(live_server + "/")
    expect(page.locator(".team")).to_have_text("Acme Photos")
    expect(page.get_by_text("No images yet")).to_be_visible()

    # Images arrive through the API while the page is open; the worker runs later.
    from app.extensions import db
    from app.models import Team
    from app.services import keys

    with app.app_context():
        team = db.session.query(Team).one()
        _, key = keys.create_key(team, "test", ["read", "write"])
        db.session.commit()

    upload({"X-API-Key": key}, [(samples.jpeg(1), "one.jpg"), (samples.jpeg(2), "two.jpg")])
    page.reload()
    tiles = page.locator(".tile")
    expect(tiles).to_have_count(2)
    expect(page.locator(".badge[data-status=pending]")).to_have_count(2)
    # Thumbnails exist at upload time and really load in the browser.
    for img in page.locator(".tile img").all():
        expect(img).to_have_js_property("complete", True)
        assert img.evaluate("i => i.naturalWidth") > 0

    run_jobs()
    # htmx polls every 2 s and swaps in the settled badge; polling then stops.
    expect(page.locator(".badge[data-status=ready]")).to_have_count(2, timeout=8_000)
    assert page.locator(".badge[hx-trigger]").count() == 0


def test_wrong_password_then_login_and_logout(live_server, page, runner):
    make_team(runner, ("ann@example.com", "member"))
    page.goto(live_server + "/")
    expect(page).to_have_url(f"{live_server}/login?next=/")
    page.get_by_label("Email").fill("ann@example.com")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    # The email stays as typed; only the password is asked for again.
    expect(page.get_by_label("Email")).to_have_value("ann@example.com")
    expect(page.get_by_label("Password")).to_be_focused()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(live_server + "/")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(live_server + "/login")
    page.goto(live_server + "/")
    expect(page).to_have_url(f"{live_server}/login?next=/")


@contextlib.contextmanager
def htmx_settled(page):
    """Wait, after the block, until the htmx swap it caused has settled.

    The page must have loaded first: htmx (a deferred script) attaches its handlers once the
    document is ready, and a change made before then sends nothing, so nothing would settle.
    The wait is bounded, a failure rather than a run that never ends."""
    page.wait_for_load_state("load")
    page.evaluate(
        """() => { window.__settled = false;
             document.body.addEventListener(
               "htmx:afterSettle", () => { window.__settled = true }, {once: true}) }"""
    )
    yield
    page.wait_for_function("() => window.__settled === true", timeout=15_000)


@pytest.fixture
def another_page(browser):
    """Pages in browsers of their own (separate cookies): other people, at other desks."""
    contexts = []

    def make():
        context = browser.new_context()
        contexts.append(context)
        new_page = context.new_page()
        new_page.set_default_timeout(10_000)
        return new_page

    yield make
    for context in contexts:
        context.close()


def make_team(runner, *people, name="Team"):
    """The team `name` with each (email, role) of `people` signed up with PASSWORD."""
    result = runner.invoke(args=["teams", "create", name])
    assert result.exit_code == 0, result.output
    slug = name.lower().replace(" ", "-")
    for email, role in people:
        result = runner.invoke(
            args=["users", "create", email, "--team", slug, "--role", role, "--password", PASSWORD]
        )
        assert result.exit_code == 0, result.output


def sign_in(page, live_server, email, password=PASSWORD):
    page.goto(live_server + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(live_server + "/")


def join(page, link, password):
    """Open an invite link and answer its one form; the page it lands on."""
    page.goto(link)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Join the team").click()
    return page


def test_admin_manages_keys_and_members_in_settings(
    live_server, page, runner, client, another_page
):
    make_team(runner, ("boss@example.com", "admin"))
    runner.invoke(args=["teams", "create", "Other Team"])
    runner.invoke(
        args=["members", "add", "boss@example.com", "--team", "other-team", "--role", "viewer"]
    )
    sign_in(page, live_server, "boss@example.com")
    page.get_by_label("Current team").select_option(label="Team")
    # The switch reloads the page; until then the old page (its select already showing "Team")
    # would take the next click. The role shown is the new team's once it has loaded.
    expect(page.locator(".who")).to_contain_text("· admin")
    expect(page.get_by_label("Current team").locator("option:checked")).to_have_text("Team")

    page.get_by_role("link", name="Settings").click()
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("uploader")
    page.get_by_label("Access").select_option("upload")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key")
    expect(secret).to_contain_text("lk_")
    key = secret.inner_text().strip()
    assert client.get("/api/v1/images", headers={"X-API-Key": key}).status_code == 200

    page.once("dialog", lambda dialog: dialog.accept())  # hx-confirm
    page.get_by_role("row", name="uploader").get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("row", name="uploader")).to_contain_text("revoked")
    expect(page.locator("#new-key")).to_have_count(0)  # shown once, gone after the swap
    assert client.get("/api/v1/images", headers={"X-API-Key": key}).status_code == 401

    page.get_by_role("link", name="Members").click()
    page.get_by_label("Email").fill("new@example.com")
    page.get_by_role("button", name="Create invite link").click()
    link = page.locator("code.secret").inner_text().strip()
    join(another_page(), link, "long enough pw")  # the new person, in their own browser
    page.get_by_role("link", name="Members").click()
    row = page.get_by_role("row", name="new@example.com")
    expect(row).to_be_visible()
    # The swap must settle before the next change, or that one goes to a replaced element.
    with htmx_settled(page):
        row.get_by_label("Role of new@example.com").select_option("viewer")
    expect(page.get_by_role("row", name="new@example.com").get_by_role("combobox")).to_have_value(
        "viewer"
    )

    # A refusal comes back as a fragment that is shown, not dropped.
    page.get_by_label("Role of boss@example.com").select_option("member")
    expect(page.get_by_role("alert")).to_contain_text("last admin")
    expect(page.get_by_label("Role of boss@example.com")).to_have_value("admin")

    # The switcher moves the whole UI to the other team, where boss is only a viewer.
    page.get_by_label("Current team").select_option(label="Other Team")
    expect(page).to_have_url(live_server + "/")
    expect(page.get_by_label("Current team")).to_have_value(
        page.get_by_label("Current team")
        .locator("option", has_text="Other Team")
        .get_attribute("value")
    )
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_role("link", name="API keys")).to_have_count(0)


def two_teams_with_admins(runner, app, upload):
    """Alpha (with an image only it should ever see) and Beta, each with its admin."""
    for name in ("Alpha", "Beta"):
        make_team(runner, (f"boss@{name.lower()}.test", "admin"), name=name)
    from app.extensions import db
    from app.models import Team
    from app.services import accounts, keys

    with app.app_context():
        _, key = keys.create_key(accounts.get_team_by_slug("alpha"), "k", ["read", "write"])
        db.session.commit()
        assert db.session.query(Team).count() == 2
    upload({"X-API-Key": key}, [(samples.jpeg(1), "alpha-secret.jpg")])


def invite_in_settings(page, live_server, email, role="viewer"):
    """An admin adds someone in Settings; the invite link shown to them."""
    page.goto(live_server + "/settings/members")
    expect(page.get_by_label("Password")).to_have_count(0)  # admins set no passwords
    page.get_by_label("Email").fill(email)
    page.locator("form.row select[name=role]").select_option(role)
    page.get_by_role("button", name="Create invite link").click()
    expect(page.locator("code.secret")).to_contain_text("/invites/")
    return page.locator("code.secret").inner_text().strip()


def test_beta_then_alpha_invite_a_new_hire_whose_own_password_opens_only_alpha(
    live_server, page, runner, app, upload, another_page
):
    two_teams_with_admins(runner, app, upload)
    beta_admin, alpha_admin, new_hire = page, another_page(), another_page()
    sign_in(beta_admin, live_server, "boss@beta.test")
    beta_link = invite_in_settings(beta_admin, live_server, "newhire@alpha.test")
    sign_in(alpha_admin, live_server, "boss@alpha.test")
    alpha_link = invite_in_settings(alpha_admin, live_server, "newhire@alpha.test", "member")

    join(new_hire, alpha_link, "the hire's own passphrase")
    expect(new_hire).to_have_url(live_server + "/")
    expect(new_hire.locator(".team")).to_have_text("Alpha")
    expect(new_hire.get_by_text("alpha-secret.jpg")).to_be_visible()

    # Beta's admin, holding Beta's link, cannot set or guess the account's password with it.
    join(beta_admin, beta_link, "attacker-chosen")
    expect(beta_admin.get_by_role("alert")).to_contain_text("not the password")
    sign_in(beta_admin, live_server, "boss@beta.test")  # still just Beta's admin
    expect(beta_admin.locator(".team")).to_have_text("Beta")
    failed = another_page()
    failed.goto(live_server + "/login")
    failed.get_by_label("Email").fill("newhire@alpha.test")
    failed.get_by_label("Password").fill("attacker-chosen")
    failed.get_by_role("button", name="Log in").click()
    expect(failed.get_by_role("alert")).to_have_text("Wrong email or password.")

    # The new hire sees that wrong password among their own sign-ins; Beta's log does not.
    new_hire.get_by_role("link", name="Settings").click()
    expect(new_hire.get_by_role("heading", name="Recent sign-ins")).to_be_visible()
    expect(new_hire.get_by_role("row", name="Wrong password")).to_have_count(2)
    beta_admin.goto(live_server + "/settings/audit")
    expect(beta_admin.get_by_text("member.invite")).to_be_visible()
    expect(beta_admin.get_by_text("auth.login")).to_have_count(0)


def test_alpha_admin_joins_beta_only_by_accepting_and_a_squatter_gets_nothing_of_alpha(
    live_server, page, runner, app, upload, another_page
):
    two_teams_with_admins(runner, app, upload)
    beta_admin, alpha_admin = page, another_page()
    sign_in(beta_admin, live_server, "boss@beta.test")
    sign_in(alpha_admin, live_server, "boss@alpha.test")

    # Beta adds Alpha's admin: only an invite. Alpha's admin is in no new team until accepting.
    link = invite_in_settings(beta_admin, live_server, "boss@alpha.test", "admin")
    alpha_admin.reload()
    expect(alpha_admin.get_by_label("Current team")).to_have_count(0)
    alpha_admin.goto(link)  # signed in as the invited account: a confirmation, no password
    expect(alpha_admin.get_by_label("Password")).to_have_count(0)
    alpha_admin.get_by_role("button", name="Join the team").click()
    expect(alpha_admin.get_by_label("Current team").locator("option")).to_have_text(
        ["Alpha", "Beta"]
    )

    # Beta squats an Alpha address with its own invite, then Alpha invites the real person.
    squat_link = invite_in_settings(beta_admin, live_server, "intern@alpha.test")
    squatter = join(another_page(), squat_link, "attacker-chosen")
    expect(squatter.locator(".team")).to_have_text("Beta")
    with alpha_admin.expect_navigation(url=live_server + "/"):  # the switcher reloads the page
        alpha_admin.get_by_label("Current team").select_option(label="Alpha")
    alpha_link = invite_in_settings(alpha_admin, live_server, "intern@alpha.test")
    intern = join(another_page(), alpha_link, "the intern's own")
    expect(intern.get_by_role("alert")).to_contain_text("not the password")
    squatter.reload()
    expect(squatter.locator(".team")).to_have_text("Beta")  # no switcher: Alpha is not theirs
    expect(squatter.get_by_text("alpha-secret.jpg")).to_have_count(0)


def test_the_api_docs_page_works_offline_from_this_server_alone(live_server, page, team_a):
    """Swagger UI renders the document with nothing fetched from elsewhere and nothing the
    Content-Security-Policy refuses; with a key typed in, "Try it out" calls the API."""
    requested, refused = [], []
    page.on("request", lambda request: requested.append(request.url))
    page.on(
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    page.goto(live_server + "/api/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    assert page.locator(".opblock").count() >= 25  # one per operation
    expect(page.get_by_text("/api/v1/images/{image_id}/similar")).to_be_visible()
    assert [url for url in requested if not url.startswith(live_server)] == []
    assert refused == []
    page.get_by_role("button", name="Authorize").click()
    api_key = page.locator(".auth-container").first  # ApiKey: the X-API-Key header
    api_key.locator("input").fill(team_a.key)
    api_key.get_by_role("button", name="Authorize", exact=True).click()
    api_key.get_by_role("button", name="Close").click()
    team = page.locator("#operations-team-get_team")
    team.locator(".opblock-summary").click()
    team.get_by_role("button", name="Try it out").click()
    team.get_by_role("button", name="Execute").click()
    answer = team.locator(".live-responses-table tbody .response-col_status").first
    expect(answer).to_have_text("200")
    expect(team.locator(".live-responses-table")).to_contain_text("Team A")
