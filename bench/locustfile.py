"""What `make load` (bench/load.py) sends: locust users of the JSON API, one class per phase.

Read from the environment: LOAD_API_KEY (a full key of the seeded team) and LOAD_IDS_FILE (the
seeded image ids, one a line). `HealthzUser` and `SimilarUser` measure one endpoint each, for
the throughput ratio; `MixedUser` is the mixed load, each request named by its endpoint.
"""

from __future__ import annotations

import io
import os
import random
import threading

import numpy as np
from locust import HttpUser, constant, task
from PIL import Image as PILImage

API_KEY = os.environ.get("LOAD_API_KEY", "")
with open(os.environ.get("LOAD_IDS_FILE", "/dev/null")) as ids_file:
    IMAGE_IDS = [line.strip() for line in ids_file if line.strip()]

_counter = iter(range(10**9))
_lock = threading.Lock()


def new_jpeg(size=(320, 240)) -> bytes:
    """A JPEG no upload has sent before (distinct bytes: a new image, not an existing one)."""
    with _lock:
        n = next(_counter)
    rng = np.random.default_rng([os.getpid(), n])
    pixels = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    picture = PILImage.fromarray(pixels, "RGB").resize(size, PILImage.Resampling.BILINEAR)
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=85)
    return out.getvalue()


class ApiUser(HttpUser):
    abstract = True
    wait_time = constant(0)  # closed loop: each user sends its next request at once

    def on_start(self):
        self.client.headers["X-API-Key"] = API_KEY

    def some_image(self) -> str:
        return random.choice(IMAGE_IDS)


class HealthzUser(ApiUser):
    @task
    def healthz(self):
        self.client.get("/healthz", name="healthz")


class SimilarUser(ApiUser):
    @task
    def similar(self):
        self.client.get(f"/api/v1/images/{self.some_image()}/similar?k=20", name="similar")


class MixedUser(ApiUser):
    """The mixed load: mostly reads, as a gallery and its API clients would send."""

    @task(4)
    def list_images(self):
        self.client.get("/api/v1/images?limit=50", name="list")

    @task(4)
    def get_image(self):
        self.client.get(f"/api/v1/images/{self.some_image()}", name="get")

    @task(6)
    def thumbnail(self):
        self.client.get(
            f"/api/v1/images/{self.some_image()}/file?variant=thumbnail", name="thumbnail"
        )

    @task(3)
    def similar(self):
        self.client.get(f"/api/v1/images/{self.some_image()}/similar?k=20", name="similar")

    @task(2)
    def search_text(self):
        word = f"seed-{random.randrange(100):02d}"  # filenames seed-NNNNN.jpg
        self.client.get(f"/api/v1/search?q={word}&limit=20", name="search text")

    @task(1)
    def search_file(self):
        self.client.post(
            "/api/v1/search",
            files={"file": ("query.jpg", new_jpeg(), "image/jpeg")},
            data={"k": "20"},
            name="search file",
        )

    @task(1)
    def upload(self):
        with self.client.post(
            "/api/v1/images",
            files={"file": ("load.jpg", new_jpeg(), "image/jpeg")},
            name="upload",
            catch_response=True,
        ) as response:
            if response.status_code != 201:
                response.failure(f"{response.status_code}: {response.text[:200]}")
            elif response.json()["items"][0].get("existing"):
                response.failure("an upload of new bytes was taken for an existing image")
