"""The example plugin's own tests: the Likeness contract suite, plus what is its own."""

from __future__ import annotations

import numpy as np
import pytest
from likeness_example_plugin import GreyThumbnailEmbedder
from PIL import Image

from app.plugin_testing import EmbedderContract


class TestGreyThumbnailEmbedder(EmbedderContract):
    plugin_class = GreyThumbnailEmbedder


class TestGreyThumbnailEmbedderOfSide4(EmbedderContract):
    plugin_class = GreyThumbnailEmbedder

    @pytest.fixture
    def plugin_config(self):
        return {"GREYTHUMB_SIDE": 4}


def test_a_thumbnail_is_the_grey_level_of_each_region():
    image = Image.new("RGB", (80, 40), (255, 255, 255))
    image.paste((0, 0, 0), (0, 0, 40, 40))  # left half black
    (vector,) = GreyThumbnailEmbedder({"GREYTHUMB_SIDE": 2}).embed_batch([image])
    np.testing.assert_allclose(vector, [0.0, 1.0, 0.0, 1.0])


def test_a_side_below_one_is_refused():
    with pytest.raises(ValueError, match="GREYTHUMB_SIDE"):
        GreyThumbnailEmbedder({"GREYTHUMB_SIDE": -2})
