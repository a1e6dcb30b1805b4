"""The plugins Likeness ships: local storage, the phash and colour embedders, two indexes."""
