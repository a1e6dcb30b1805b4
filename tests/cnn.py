"""For tests of the cnn embedder: skip them where the cnn extra is missing, unless required.

CI installs the extra and sets LIKENESS_REQUIRE_CNN=1, so there a missing dependency fails
the run instead of skipping the tests quietly. The photographs are scikit-image's samples,
shipped in its wheel.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from app.plugins import builtin_classes

CNN = builtin_classes("embedders")["cnn"]
MISSING = CNN.unavailable()

if MISSING and os.environ.get("LIKENESS_REQUIRE_CNN"):
    raise RuntimeError(f"the cnn tests are required (LIKENESS_REQUIRE_CNN) but {MISSING}")

requires_cnn = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))

# The ImageNet classes a tabby like skimage's "chelsea" may be taken for.
CAT_LABELS = {"tabby cat", "a cat having a striped coat", "Egyptian Mau", "Persian cat"}


def photograph(name: str) -> Image.Image:
    """One of scikit-image's sample photographs ("coffee", "chelsea", "rocket", ...), RGB."""
    from skimage import data

    return Image.fromarray(np.asarray(getattr(data, name)()), "RGB")


def jpeg_of(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()
