"""The cnn embedder as users meet it: copies are near, photographs are named, labels are found.

The photographs are scikit-image's samples (a cup of espresso, a tabby cat, a rocket, ...);
the contract suite for the embedder is in tests/test_plugin_contract.py. Everything here is
skipped without the cnn extra, and fails instead where LIKENESS_REQUIRE_CNN is set (CI).
"""

from __future__ import annotations

import io
import uuid

import pytest
from PIL import Image
from sqlalchemy import func, select, update

from app.extensions import db
from app.models import Embedding, Label
from app.plugin_api import distances
from app.services import processing
from tests import samples
from tests.cnn import CAT_LABELS, CNN, jpeg_of, photograph, requires_cnn

pytestmark = requires_cnn


@pytest.fixture(scope="module")
def cnn():
    return CNN({})


def decode(data: bytes, min_edge: int | None = None) -> Image.Image:
    """Decode like the pipeline: JPEG draft mode to no less than `min_edge`, then RGB."""
    image = Image.open(io.BytesIO(data))
    if min_edge is not None:
        image.draft("RGB", (min_edge, min_edge))
    return image.convert("RGB")


def test_a_resized_recompressed_copy_is_nearer_than_unrelated_images(cnn):
    coffee = photograph("coffee")
    original = decode(jpeg_of(coffee, 92))
    copy = decode(jpeg_of(coffee.resize((300, 200), Image.Resampling.LANCZOS), 60))
    unrelated = [photograph(name) for name in ("chelsea", "rocket", "astronaut")]
    unrelated += [samples.photo(seed) for seed in range(3)]
    vectors = cnn.embed_batch([original, copy, *unrelated])
    near, *far = distances(cnn.metric, vectors[1:], vectors[0])
    assert near < 0.6 * min(far)


def test_the_pipelines_reduced_jpeg_decode_changes_little(cnn):
    large = jpeg_of(photograph("coffee").resize((1600, 1067), Image.Resampling.LANCZOS))
    reduced = decode(large, cnn.input_size)
    assert min(reduced.size) >= cnn.input_size and reduced.width < 1600
    vectors = cnn.embed_batch([decode(large), reduced])
    assert distances(cnn.metric, vectors[1:], vectors[0])[0] < 0.15


def test_photographs_are_labelled_with_what_they_show(cnn):
    coffee, cat, rocket = cnn.labels([photograph(n) for n in ("coffee", "chelsea", "rocket")])
    assert coffee[0][0] == "espresso" and coffee[0][1] > 0.8
    assert {name for name, _ in cat} & CAT_LABELS
    assert all(score >= 0.2 for _, score in cat)
    # ImageNet names two classes "missile": a label is a name, so their scores add up.
    assert [name for name, _ in rocket] == ["missile"]


def test_the_label_threshold_is_a_setting(cnn):
    strict = CNN({"CNN_LABEL_THRESHOLD": 0.9})
    images = [photograph("coffee"), photograph("chelsea")]
    coffee, cat = strict.labels(images)
    assert [name for name, _ in coffee] == ["espresso"]
    assert cat == []  # no cat class is that sure of itself
    assert cnn.labels(images)[1]  # the default threshold does name it


def test_onnx_runtime_computes_what_pytorch_computes():
    """The CPU runs an ONNX graph exported from the PyTorch model: same vectors, same labels."""
    images = [photograph(n) for n in ("coffee", "chelsea", "astronaut")]
    onnx_vectors, onnx_labels = CNN({"CNN_RUNTIME": "onnx"}).embed_and_label(images)
    torch_vectors, torch_labels = CNN({"CNN_RUNTIME": "torch"}).embed_and_label(images)
    assert distances("angular", onnx_vectors, torch_vectors[0])[0] < 1e-3
    assert (distances("angular", torch_vectors, onnx_vectors[2])[2]) < 1e-3
    assert [[n for n, _ in per_image] for per_image in onnx_labels] == [
        [n for n, _ in per_image] for per_image in torch_labels
    ]


def test_the_network_is_loaded_once_per_process_on_one_thread(cnn):
    import torch

    from plugins.embed_cnn import network_for

    cnn.embed_batch([photograph("coffee")])
    CNN({}).embed_batch([photograph("chelsea")])  # another instance, e.g. another app
    assert network_for("auto", 1) is network_for("auto", 1)
    assert network_for("auto", 1).runtime == "onnx"  # no GPU here
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize(
    ("setting", "value"),
    [("CNN_RUNTIME", "tensorflow"), ("CNN_THREADS", 0), ("CNN_LABEL_THRESHOLD", 0)],
)
def test_bad_settings_are_refused_when_the_embedder_is_built(setting, value):
    with pytest.raises(ValueError, match=setting):
        CNN({setting: value})


# --- end to end: upload, process, read, search ----------------------------------------------


@pytest.fixture
def config_overrides():
    return {"EMBEDDERS": ["phash", "color", "cnn"]}


def test_uploaded_photographs_get_labels_that_search_finds(
    app, client, team_a, team_b, upload, run_jobs
):
    coffee = photograph("coffee")
    files = [
        (jpeg_of(coffee), "IMG_0001.jpg"),
        (jpeg_of(photograph("chelsea")), "IMG_0002.jpg"),
        (jpeg_of(coffee.resize((300, 200), Image.Resampling.LANCZOS), 60), "small.jpg"),
        (samples.jpeg(1), "IMG_0003.jpg"),
    ]
    created = upload(team_a, files)
    assert created.status_code == 201, created.json
    assert all(item["labels"] == [] for item in created.json["items"])  # not processed yet
    cup, cat, copy, other = (item["id"] for item in created.json["items"])
    run_jobs()

    image = client.get(f"/api/v1/images/{cup}", headers=team_a.headers()).json
    assert image["status"] == "ready"
    assert image["labels"][0]["name"] == "espresso" and image["labels"][0]["score"] > 0.8
    scores = [label["score"] for label in image["labels"]]
    assert scores == sorted(scores, reverse=True)
    assert set(image["labels"][0]) == {"name", "score"}

    def found(team, text):
        response = client.get("/api/v1/images", query_string={"q": text}, headers=team.headers())
        assert response.status_code == 200, response.json
        return {item["id"] for item in response.json["items"]}

    assert found(team_a, "Espresso") == {cup, copy}  # case-insensitive, a part of a name
    assert cat in found(team_a, "cat") and cup not in found(team_a, "cat")
    assert found(team_a, "IMG_000") == {cup, cat, other}  # file names still match
    assert found(team_b, "espresso") == set()  # another team's labels find nothing

    similar = client.get(f"/api/v1/images/{copy}/similar?k=3", headers=team_a.headers()).json
    assert similar["embedder"] == "cnn"  # the best enabled embedder by default
    assert similar["items"][0]["image"]["id"] == cup
    assert similar["items"][0]["image"]["labels"][0]["name"] == "espresso"


def test_processing_again_replaces_the_labels_and_deleting_the_image_removes_them(
    app, client, team_a, upload, run_jobs
):
    (item,) = upload(team_a, [(jpeg_of(photograph("coffee")), "cup.jpg")]).json["items"]
    run_jobs()
    url = f"/api/v1/images/{item['id']}"
    labelled = client.get(url, headers=team_a.headers()).json["labels"]
    assert labelled
    with app.app_context():
        # As if an older version of the embedder had computed the vector and the labels.
        db.session.execute(update(Label).values(name=Label.name.concat(" (old)"), score=0.5))
        db.session.execute(update(Embedding).where(Embedding.embedder == "cnn").values(version="0"))
        db.session.commit()
        assert processing.process_image(uuid.UUID(item["id"])) == "ready"
        assert processing.process_image(uuid.UUID(item["id"])) == "ready"  # nothing left to do
    assert client.get(url, headers=team_a.headers()).json["labels"] == labelled

    assert client.delete(url, headers=team_a.headers()).status_code == 204
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Label)) == 0
