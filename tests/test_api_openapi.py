"""The OpenAPI document: valid OpenAPI 3, served without a key, holding every endpoint of
API.md with its scope, its error responses and a multipart upload generated clients can send;
and the docs page, served from this server alone."""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

# API.md's tables, copied: (method, path, scope).
API_MD = [
    ("GET", "/images", "read"),
    ("POST", "/images", "write"),
    ("GET", "/images/{id}", "read"),
    ("PATCH", "/images/{id}", "write"),
    ("DELETE", "/images/{id}", "write"),
    ("GET", "/images/{id}/file", "read"),
    ("POST", "/images/{id}/retry", "write"),
    ("GET", "/images/{id}/similar", "read"),
    ("POST", "/uploads", "write"),
    ("POST", "/uploads/{image_id}/complete", "write"),
    ("POST", "/search", "read"),
    ("GET", "/search", "read"),
    ("GET", "/duplicates", "read"),
    ("POST", "/duplicates/{group_id}/resolve", "write"),
    ("GET", "/collections", "read"),
    ("POST", "/collections", "write"),
    ("GET", "/collections/{id}", "read"),
    ("PATCH", "/collections/{id}", "write"),
    ("DELETE", "/collections/{id}", "write"),
    ("POST", "/collections/{id}/images", "write"),
    ("DELETE", "/collections/{id}/images", "write"),
    ("POST", "/imports", "write"),
    ("GET", "/imports/{id}", "read"),
    ("GET", "/imports/{id}/report.csv", "read"),
    ("GET", "/team", "read"),
    ("GET", "/keys", "admin"),
    ("POST", "/keys", "admin"),
    ("DELETE", "/keys/{id}", "admin"),
    ("GET", "/audit", "admin"),
]

METHODS = ("get", "put", "post", "patch", "delete")


@pytest.fixture
def document(client):
    response = client.get("/api/v1/openapi.json")  # no key
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.json


def operations(document):
    """{(METHOD, path with every parameter written {id}): operation}."""
    found = {}
    for path, item in document["paths"].items():
        generic = re.sub(r"\{[^}]+\}", "{id}", path.removeprefix("/api/v1"))
        for method in METHODS:
            if method in item:
                found[(method.upper(), generic)] = item[method]
    return found


def test_the_document_is_valid_openapi_3(document):
    validate(document)
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "Likeness"


def test_every_endpoint_of_api_md_is_in_the_document_with_its_scope(document):
    found = operations(document)
    for method, path, scope in API_MD:
        operation = found.get((method, re.sub(r"\{[^}]+\}", "{id}", path)))
        assert operation is not None, (method, path)
        assert operation["x-scopes"] == [scope], (method, path)
        assert "security" not in operation  # the document's: a key, in a header or as Bearer


def test_keys_are_the_security_schemes_and_only_upload_urls_go_without(document):
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["Bearer"]["type"] == "http" and schemes["Bearer"]["scheme"] == "bearer"
    assert document["security"] == [{"ApiKey": []}, {"Bearer": []}]
    public = [key for key, op in operations(document).items() if op.get("security") == []]
    assert public == [("POST", "/uploads/direct/{id}")]


def test_every_operation_documents_its_errors_in_the_envelope(document):
    responses = document["components"]["responses"]
    for (method, path), operation in operations(document).items():
        answers = operation["responses"]
        assert "default" in answers, (method, path)
        if "x-scopes" in operation:
            assert {"401", "403"} <= set(answers), (method, path)
        if "{" in path:
            assert "404" in answers, (method, path)
        if operation.get("parameters") or "requestBody" in operation:
            assert "400" in answers, (method, path)
        for status, answer in answers.items():
            if status.startswith(("4", "5")) or status == "default":
                name = answer["$ref"].rsplit("/", 1)[-1]
                content = responses[name]["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/Error"}
    error = document["components"]["schemas"]["ErrorDetail"]
    assert set(error["properties"]) == {"code", "message", "fields"}
    assert set(error["required"]) == {"code", "message"}
    assert responses["NOT_FOUND"]["content"]["application/json"]["example"] == {
        "error": {"code": "not_found", "message": "not found"}
    }


def test_the_upload_is_multipart_with_binary_files(document):
    body = document["paths"]["/api/v1/images"]["post"]["requestBody"]
    schema_ref = body["content"]["multipart/form-data"]["schema"]["$ref"]
    schema = document["components"]["schemas"][schema_ref.rsplit("/", 1)[-1]]
    assert schema["properties"]["file"] == {
        "type": "array",
        "items": {"type": "string", "format": "binary"},
        "minItems": 1,
        "description": "One or more image files.",
    }
    assert schema["required"] == ["file"]
    assert set(schema["properties"]) == {"file", "tags", "collection_id"}
    imports = document["paths"]["/api/v1/imports"]["post"]["requestBody"]["content"]
    assert set(imports) == {"application/json", "multipart/form-data"}


def test_lists_declare_limit_and_cursor(document):
    for path in ("/api/v1/images", "/api/v1/keys", "/api/v1/members", "/api/v1/audit"):
        parameters = {p["name"]: p for p in document["paths"][path]["get"]["parameters"]}
        assert parameters["limit"]["schema"] == {
            "type": "integer",
            "default": 50,
            "minimum": 1,
            "maximum": 200,
        }
        assert parameters["cursor"]["in"] == "query"
        page = document["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        name = page["schema"]["$ref"].rsplit("/", 1)[-1]
        assert set(document["components"]["schemas"][name]["properties"]) == {
            "items",
            "next_cursor",
        }


def test_requests_carry_examples(document):
    keys = document["paths"]["/api/v1/keys"]["post"]["requestBody"]["content"]["application/json"]
    assert keys["example"]["name"] == "ci"
    image = document["components"]["schemas"]["Image"]["properties"]
    assert image["filename"]["example"] == "beach.jpg"


def test_the_docs_page_and_its_assets_are_served_from_here(client):
    page = client.get("/api/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    references = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert len(references) == 4 and all(ref.startswith("/") for ref in references), references
    assert "http" not in html and "<script>" not in html  # nothing from elsewhere, no inline JS
    for reference in references:
        asset = client.get(reference)
        assert asset.status_code == 200, reference
        assert asset.data
    assert client.get("/api/docs/assets/swagger-ui-bundle.js").mimetype in (
        "application/javascript",
        "text/javascript",
    )
    assert 'data-spec-url="/api/v1/openapi.json"' in html
