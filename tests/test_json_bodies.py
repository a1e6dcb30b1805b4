"""JSON bodies: one strict parser for every API endpoint; no body can make the app fail."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.strict_json import MAX_DEPTH
from tests import samples

WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")


def deep(levels: int) -> bytes:
    return ("[" * levels + "]" * levels).encode()


BAD_BODIES = [
    (b'{"metadata": {"custom": {"ratio": NaN}}}', "NaN"),
    (b'{"metadata": {"custom": {"ratio": Infinity}}}', "Infinity"),
    (b'{"metadata": {"custom": {"ratio": -Infinity}}}', "-Infinity"),
    (b'{"metadata": {"custom": {"ratio": 1e400}}}', "finite"),
    (b'{"metadata": {"custom": {"n": 123456789012345678901234567890}}}', "beyond"),
    (b'{"metadata": {"custom": {"n": 1' + b"0" * 5000 + b"}}}", "beyond"),
    (deep(5000), "nested"),
    (b'{"metadata": {"custom": ' + deep(MAX_DEPTH) + b"}}", "nested"),
    ('{"filename": "caf\u00e9.jpg"}'.encode("latin-1"), "UTF-8"),
    ('{"filename": "a.jpg"}'.encode("utf-16"), "UTF-8"),
    (b'{"filename": "\\ud800.jpg"}', "surrogate"),
    (b'{"filename": "a\\u0000.jpg"}', "NUL"),
    (b'{"filename": "a.jpg", "filename": "b.jpg"}', "more than once"),
    (b'{"filename": ', "not valid JSON"),
]


@pytest.fixture
def make_ids(client, team_a, upload, person):
    """Real ids of the caller's team for the path parameters `names` (made only if needed)."""

    def make(names) -> dict[str, str]:
        ids = {}
        if "image_id" in names:
            image = upload(team_a, [(samples.jpeg(1, (64, 48)), "a.jpg")]).json["items"][0]
            ids["image_id"] = image["id"]
        if "key_id" in names:
            keys = client.get("/api/v1/keys", headers=team_a.headers()).json["items"]
            ids["key_id"] = next(k["id"] for k in keys if k["name"] == "read-only")
        if "user_id" in names:
            ids["user_id"] = str(person(team_a, "member").user_id)
        if "group_id" in names:  # well formed, of no group: bodies are read before it is looked up
            ids["group_id"] = f"near-10-{'0' * 32}-{'0' * 16}"
        if {"upload_id", "token"} & set(names):
            direct = client.post(
                "/api/v1/uploads",
                json={"filename": "d.jpg", "content_type": "image/jpeg", "size_bytes": 100},
                headers=team_a.headers(),
            ).json
            ids["upload_id"] = direct["image_id"]
            ids["token"] = direct["upload"]["url"].rsplit("/", 1)[-1]
        if "collection_id" in names:
            collection = client.post(
                "/api/v1/collections", json={"name": "Bodies"}, headers=team_a.headers()
            ).json
            ids["collection_id"] = collection["id"]
        return ids

    return make


ALL_IDS = ("image_id", "key_id", "user_id", "upload_id", "token", "group_id", "collection_id")


# Every API rule that can take a body; the first test checks it against app.url_map.
ENDPOINTS = [
    ("POST", "/api/v1/images"),
    ("PATCH", "/api/v1/images/<image_id>"),
    ("POST", "/api/v1/images/<image_id>/retry"),
    ("POST", "/api/v1/imports"),
    ("POST", "/api/v1/search"),
    ("POST", "/api/v1/duplicates/<group_id>/resolve"),
    ("POST", "/api/v1/keys"),
    ("POST", "/api/v1/keys/<key_id>/rotate"),
    ("POST", "/api/v1/members"),
    ("PATCH", "/api/v1/members/<user_id>"),
    ("POST", "/api/v1/uploads"),
    ("POST", "/api/v1/uploads/direct/<token>"),
    ("POST", "/api/v1/uploads/<upload_id>/complete"),
    ("POST", "/api/v1/collections"),
    ("PATCH", "/api/v1/collections/<collection_id>"),
    ("POST", "/api/v1/collections/<collection_id>/images"),
    # Deletions last: after them, the ids above are gone.
    ("DELETE", "/api/v1/collections/<collection_id>/images"),
    ("DELETE", "/api/v1/collections/<collection_id>"),
    ("DELETE", "/api/v1/images/<image_id>"),
    ("DELETE", "/api/v1/keys/<key_id>"),
    ("DELETE", "/api/v1/members/<user_id>"),
]


def with_ids(rule: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        rule = rule.replace(f"<{name}>", value)
    return rule


def assert_error_shape(response, status: int | None = None) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    if status is not None:
        assert response.status_code == status, response.json
    if response.status_code >= 400:
        error = response.json["error"]
        assert set(error) - {"fields"} == {"code", "message"} and error["message"]
        # A refusal may name each invalid field (API.md): names mapped to reasons, nothing else.
        fields = error.get("fields", {})
        assert isinstance(fields, dict) and all(
            isinstance(name, str) and isinstance(reason, str) and reason
            for name, reason in fields.items()
        )


def test_every_endpoint_that_takes_a_body_is_covered(app):
    in_app = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
        for method in WRITE_METHODS
        if method in rule.methods
    }
    assert in_app == set(ENDPOINTS)


def test_a_body_that_is_not_strict_json_is_400_naming_the_problem(client, team_a, make_ids):
    ids = make_ids(ALL_IDS)
    for body, word in BAD_BODIES:
        for method, rule in ENDPOINTS:
            if method == "DELETE" or rule.endswith(("/images", "/direct/<token>", "/search")):
                continue  # these take no JSON: nothing is parsed
            path = with_ids(rule, ids)
            response = client.open(
                path,
                method=method,
                data=body,
                content_type="application/json",
                headers=team_a.headers(),
            )
            assert_error_shape(response, 400)
            error = response.json["error"]
            assert error["code"] == "bad_request" and word in error["message"], (path, word)


def test_custom_metadata_with_not_a_number_is_400_and_changes_nothing(client, team_a, make_ids):
    ids = make_ids(["image_id"])
    path = f"/api/v1/images/{ids['image_id']}"
    for literal in ("NaN", "Infinity", "-Infinity"):
        response = client.patch(
            path,
            data=f'{{"metadata": {{"custom": {{"x": {literal}}}}}}}',
            content_type="application/json",
            headers=team_a.headers(),
        )
        assert_error_shape(response, 400)
    assert client.get(path, headers=team_a.headers()).json["metadata"]["custom"] == {}


def test_strict_json_still_reads_ordinary_bodies(client, team_a, make_ids):
    ids = make_ids(["image_id"])
    path = f"/api/v1/images/{ids['image_id']}"
    body = {"metadata": {"custom": {"ratio": 1.5, "n": 2**53 - 1, "deep": [[[{"a": "é"}]]]}}}
    response = client.patch(path, json=body, headers=team_a.headers())
    assert (
        response.status_code == 200
        and response.json["metadata"]["custom"] == body["metadata"]["custom"]
    )


# --- generated bodies --------------------------------------------------------------------------

# Names the endpoints read, so generated objects get past "unsupported field" to the services.
FIELDS = [
    "filename", "tags", "metadata", "custom", "collection_id", "urls", "name", "scopes",
    "expires_in_days", "email", "role", "password", "invite", "content_type", "size_bytes",
    "description", "image_ids",
]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["NaN", "Infinity", "read", "admin", "viewer", "image/jpeg", "a@b.example",
                      "http://127.0.0.1/x.jpg", "\ud800", "\x00", "é" * 300, "9" * 400])
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
objects = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5)


def as_body(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


raw_bodies = st.one_of(
    objects.map(as_body),
    json_values.map(as_body),
    st.integers(min_value=1, max_value=20_000).map(deep),
    st.binary(max_size=64),
    st.just(b'{"metadata": {"custom": {"x": NaN}}}'),
)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=raw_bodies)
def _send_generated_bodies(client, team_a, method: str, path: str, body: bytes) -> None:
    response = client.open(
        path, method=method, data=body, content_type="application/json", headers=team_a.headers()
    )
    assert_error_shape(response)


@pytest.mark.parametrize(("method", "rule"), ENDPOINTS, ids=[f"{m} {r}" for m, r in ENDPOINTS])
def test_no_json_body_makes_an_endpoint_fail(client, team_a, make_ids, method, rule):
    ids = make_ids([name for name in ALL_IDS if f"<{name}>" in rule])
    _send_generated_bodies(client, team_a, method, with_ids(rule, ids))
