"""Text search finds a word typed as the filename or tag has it, whatever the case: each
database folds the query as it folds the documents, and Python's lower case (which tags are
stored in) is tried too: 'İ' lowers to an 'i' and a mark, and SQLite's Unicode 6.1 folds neither
Cherokee nor Georgian Mtavruli capitals."""

from __future__ import annotations

import pytest

from tests import samples


@pytest.mark.parametrize(
    "name",
    [
        "İstanbul.jpg",  # Turkish dotted capital I: Python lowers it to two characters
        "ᏣᎳᎩ.jpg",  # Cherokee capitals: Python lowers them to the small letters of Unicode 8
        "ᲡᲐᲥᲐᲠᲗᲕᲔᲚᲝ.jpg",  # Georgian Mtavruli (Unicode 11)
    ],
)
def test_a_filename_is_found_by_its_own_words_whatever_their_case(app, team_a, upload, name):
    """Each database folds the query's words as it folds the documents' own: a word typed
    exactly as the filename has it finds the image."""
    response = upload(team_a, [(samples.jpeg(1, size=(64, 48)), name)])
    assert response.status_code == 201, response.json
    stem = name.rsplit(".", 1)[0]
    found = app.test_client().get(
        "/api/v1/search", query_string={"q": stem}, headers=team_a.headers()
    )
    assert found.status_code == 200, found.json
    assert [item["filename"] for item in found.json["items"]] == [name]


@pytest.mark.parametrize("q", ["İstanbul", "İstan", "ᲡᲐᲥᲐᲠᲗᲕᲔᲚᲝ", "საქართველო"])
def test_a_tag_is_found_by_its_words_as_typed_or_folded(app, team_a, upload, q):
    """Tags are stored case-folded by Python ('İ' becomes an 'i' and a mark): a query typed
    as the tag was still finds it."""
    response = upload(team_a, [(samples.jpeg(1, size=(64, 48)), "one.jpg")])
    image = response.json["items"][0]["id"]
    tagged = app.test_client().patch(
        f"/api/v1/images/{image}",
        json={"tags": ["İstanbul", "ᲡᲐᲥᲐᲠᲗᲕᲔᲚᲝ"]},
        headers=team_a.headers(),
    )
    assert tagged.status_code == 200, tagged.json
    found = app.test_client().get("/api/v1/search", query_string={"q": q}, headers=team_a.headers())
    assert found.status_code == 200, found.json
    assert [item["id"] for item in found.json["items"]] == [image], q
