"""Sample pictures for trying the API (the README's walkthrough): a photo-like JPEG, a smaller
re-compressed copy of it, which `/similar` finds as its nearest match, and an unrelated one.

    .venv/bin/python bench/sample_images.py [FOLDER]      # default: samples

Made on the spot (numpy gradients, shapes and grain), the same bytes every time; prints the
paths it wrote.
"""

from __future__ import annotations

import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PIL import Image  # noqa: E402

from bench._photos import photo_jpeg  # noqa: E402

SIZE = (1600, 1200)


def smaller_copy(data: bytes, factor: float = 0.5, quality: int = 60) -> bytes:
    """The same picture at `factor` of its size, compressed harder: a near-duplicate."""
    image = Image.open(io.BytesIO(data))
    small = image.resize((int(image.width * factor), int(image.height * factor)), Image.LANCZOS)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=quality)
    return out.getvalue()


def main() -> int:
    folder = sys.argv[1] if len(sys.argv) > 1 else "samples"
    os.makedirs(folder, exist_ok=True)
    photo = photo_jpeg(1, SIZE)
    pictures = {
        "photo.jpg": photo,
        "photo-small.jpg": smaller_copy(photo),
        "other.jpg": photo_jpeg(2, SIZE),
    }
    for name, data in pictures.items():
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(data)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
