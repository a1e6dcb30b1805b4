"""Schemathesis against the API's own OpenAPI document (/api/v1/openapi.json), with a valid key
of a seeded team: every operation, with inputs the document allows and inputs it forbids.

Checked on every answer: no 5xx, the status is one the operation documents, the body conforms
to the documented schema for that status (errors included), the content type is the one
documented; input the document forbids is refused (4xx), input it allows is not refused as
malformed (400).

Bounded for `make test` (FUZZ_API_EXAMPLES, default 8 per operation: about a minute);
`make fuzz-api` runs it with many more. Deterministic, and with no example database, so a run
is repeatable.
"""

from __future__ import annotations

import os
import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app import create_app
from app.extensions import db
from app.models import ApiKey
from app.services import collections
from app.services.audit import Actor
from tests import samples
from tests.conftest import make_config

MAX_EXAMPLES = int(os.environ.get("FUZZ_API_EXAMPLES", "8"))
# 422 is the contract's answer for well-formed input that a rule of the domain refuses (a name
# that is only spaces once folded, an unknown scope in a list of strings, an image that is not
# one): the document cannot say those, so positive data may meet them.
POSITIVE_EXPECTED = ["2xx", "401", "403", "404", "409", "413", "415", "422", "429"]


@pytest.fixture
def seeded(app, team_a, upload):
    """Real objects of the team, so that operations on ids sometimes reach one."""
    image = upload(team_a, [(samples.jpeg(1, size=(64, 48)), "seed.jpg")]).json["items"][0]
    with app.app_context():
        collection = collections.create_collection(
            team_a.id, "Seeded", None, actor=Actor.system()
        ).collection
        read_key_id = db.session.query(ApiKey.id).filter_by(name="read-only").scalar()
        return {
            "image_id": image["id"],
            "upload_id": image["id"],
            "collection_id": str(collection.id),
            # The read-only key, never the one the tests send: revoking or rotating that one
            # would leave every later case a 401.
            "key_id": str(read_key_id),
        }


def _document() -> dict:
    """The OpenAPI document as the application serves it (it needs no database or Redis)."""
    with tempfile.TemporaryDirectory() as folder:
        env = {
            "SECRET_KEY": "fuzz",
            "LIKENESS_INSTANCE_PATH": folder,
            "DATABASE_URL": f"sqlite:///{folder}/unused.db",
            "REDIS_URL": f"unix://{folder}/unused.sock",
            "QUEUE_NAME": "unused",
            "STORAGE_ROOT": folder,
            "EMBEDDERS": "phash,color",
            "INDEX_QUIET_SECONDS": "0",
        }
        response = create_app(make_config(env)).test_client().get("/api/v1/openapi.json")
        assert response.status_code == 200, response.data
        return response.json


CONFIG = SchemathesisConfig.from_dict(
    {
        "base-url": "http://localhost",  # requests go to the test's app, not over the network
        "generation": {
            "mode": "all",  # inputs the document allows, and inputs it forbids
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
            # The strict JSON parser refuses NUL in any string of any body (README, API): a
            # rule of the whole API that the document does not repeat on every field.
            "allow-x00": False,
        },
        "checks": {"positive_data_acceptance": {"expected-statuses": POSITIVE_EXPECTED}},
    }
)
# Loaded when the tests are collected, so that each operation is a test of its own (pytest 9
# has no place for schemathesis's fixture-loaded schemas); requests go to each test's own app.
schema = schemathesis.openapi.from_dict(_document(), config=CONFIG)


# Operations with rules the document cannot state, where well-formed input may still be a 400
# naming the problem: the enabled embedders are configuration, a threshold's meaning depends on
# the tier, `quality` on the format, a CSV's bytes must be UTF-8 text, and an edit must name
# something to change.
RULES_BEYOND_THE_DOCUMENT = {
    "GET /api/v1/duplicates",
    "GET /api/v1/images/{image_id}/file",
    "GET /api/v1/images/{image_id}/similar",
    "POST /api/v1/search",
    "GET /api/v1/search",
    "POST /api/v1/imports",
    "PATCH /api/v1/images/{image_id}",
}


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_api_keeps_its_documented_contract(case, app, team_a, seeded):
    positive = case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE
    if positive and case.query:
        # A cursor is opaque: one the API did not give out is 400 by contract, however well
        # formed, so generated ones are sent only as input that must be refused.
        case.query.pop("cursor", None)
    for name in case.path_parameters or {}:
        # Half the cases address a real object of the team; the rest random ids.
        if name in seeded and hash(case.path_parameters[name]) % 2 == 0:
            case.path_parameters[name] = seeded[name]
    case.operation.schema.app = app  # this test's app (the probes of some checks use it too)
    label = f"{case.operation.method.upper()} {case.operation.path}"
    excluded = [positive_data_acceptance] if label in RULES_BEYOND_THE_DOCUMENT else []
    case.call_and_validate(app=app, headers=team_a.headers(), excluded_checks=excluded)
