"""The README's walkthrough, run as a newcomer runs it.

`make run` starts on a fresh instance with a free port; the first visit's `/setup` makes the
team "Acme Photos" through the form, as a browser would; then every shell block of README.md
marked `<!-- walkthrough -->` runs, in order, in one bash (`set -euo pipefail`), from the
repository folder, with what a second terminal beside `make run` has.
"""

from __future__ import annotations

import ast
import http.cookiejar
import json
import os
import re
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest
from PIL import Image

from config import BASE_DIR
from tests.make_run import MakeRun, free_port, temporary_instance

pytestmark = pytest.mark.slow

WALKTHROUGH = re.compile(r"<!-- walkthrough -->\n```sh\n(.*?)```", re.S)
SAMPLES = os.path.join(BASE_DIR, "samples")


def walkthrough() -> str:
    with open(os.path.join(BASE_DIR, "README.md"), encoding="utf-8") as f:
        blocks = WALKTHROUGH.findall(f.read())
    assert len(blocks) >= 3, "README.md lost its walkthrough markers"
    return "set -euo pipefail\n" + "\n".join(blocks)


def set_up_first_team(site: str, team: str) -> None:
    """Fill in and send the /setup form the first visit shows, CSRF token and cookie included."""
    browser = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    with browser.open(f"{site}/", timeout=10) as page:
        assert page.url == f"{site}/setup"
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.read().decode())[1]
    form = {"csrf_token": token, "team": team, "email": "boss@acme.test", "password": "x" * 12}
    with browser.open(f"{site}/setup", urllib.parse.urlencode(form).encode(), timeout=10) as done:
        assert done.url == f"{site}/", done.url  # signed in, in the gallery


@pytest.fixture
def samples_folder():
    """The walkthrough writes its pictures into samples/ (ignored by git); a folder that was
    there before is left as it was found, apart from the files the walkthrough writes."""
    existed = os.path.exists(SAMPLES)
    yield SAMPLES
    if not existed:
        shutil.rmtree(SAMPLES, ignore_errors=True)


def test_the_readme_walkthrough_runs_verbatim(samples_folder):
    with temporary_instance() as instance:
        run = MakeRun(instance, free_port())
        try:
            assert run.wait_healthy()["status"] == "ok"
            site = f"http://127.0.0.1:{run.port}"
            set_up_first_team(site, "Acme Photos")
            shell = subprocess.run(
                ["bash", "-c", walkthrough()],
                cwd=BASE_DIR,
                env=run.env,
                capture_output=True,
                text=True,
                timeout=300,
            )
        finally:
            run.ctrl_c()
    assert shell.returncode == 0, shell.stdout + shell.stderr
    lines = shell.stdout.splitlines()

    assert "acme-photos  Acme Photos  1 member" in lines  # the team /setup made, and only it
    assert "1 team" in lines
    health = next(json.loads(line) for line in lines if line.startswith('{"checks"'))
    assert health["status"] == "ok"
    assert "['pending', 'pending', 'pending']" in lines
    # /similar of the photo: its resized copy first, close to identical, then the other one.
    similar = next(ast.literal_eval(line) for line in lines if line.startswith("[('"))
    (copy, copy_score), (other, other_score) = similar
    assert (copy, other) == ("photo-small.jpg", "other.jpg")
    assert copy_score >= 0.95 > other_score
    assert "the original, byte for byte" in lines
    assert lines[-1] == "204"

    # Downloads went beside the inputs, not over them.
    with Image.open(os.path.join(samples_folder, "photo.jpg")) as photo:
        assert photo.format == "JPEG" and photo.size == (1600, 1200)
    with Image.open(os.path.join(samples_folder, "photo-thumbnail.webp")) as thumbnail:
        assert thumbnail.format == "WEBP" and max(thumbnail.size) == 320
