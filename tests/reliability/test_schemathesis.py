"""The published OpenAPI document (``GET /openapi.json``): complete, valid, and true.

Complete: every ``/v1`` and ``/callbacks`` route the app serves is documented, so the document
cannot fall behind the code. Valid: it passes ``openapi-spec-validator`` as OpenAPI 3.1. True:
schemathesis, in-process over WSGI, generates requests from it (valid and invalid ones) with
the API key supplied, and every answer is no server error and matches its documented schema.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import given, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.reliability.conftest import AUTH, EXAMPLES, FUZZ, Edge
from webhooks.openapi import API_OPERATIONS, FLOW_EXAMPLE, SEND_EXAMPLE, openapi_path

DOCUMENTED_PREFIXES = ("/v1", "/callbacks")
CHECKS = [not_a_server_error, response_schema_conformance]


@pytest.fixture(scope="module")
def document(edge: Edge) -> dict[str, Any]:
    resp = edge.client.get("/openapi.json")  # no credentials: the contract is public
    assert resp.status_code == 200
    return resp.get_json()


@pytest.fixture(scope="module")
def api_schema(edge: Edge) -> Any:
    return schemathesis.openapi.from_wsgi("/openapi.json", edge.app)


def served_operations(app: Flask) -> list[tuple[str, str]]:
    """(method, OpenAPI path) of every route under the documented prefixes."""
    return sorted({(method.lower(), openapi_path(rule.rule))
                   for rule in app.url_map.iter_rules()
                   if rule.rule.startswith(DOCUMENTED_PREFIXES)
                   for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}})


def test_every_served_route_is_documented(edge: Edge, document: dict[str, Any]) -> None:
    missing = [f"{method.upper()} {path}" for method, path in served_operations(edge.app)
               if method not in document["paths"].get(path, {})]
    assert not missing, f"add these to webhooks/openapi.py OPERATIONS: {missing}"


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_api_operations_use_the_api_key_and_document_errors(document: dict[str, Any]) -> None:
    """Every /v1 operation is behind the bearer key and documents its 401 as the JSON error."""
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/v1"):
                assert "security" not in operation, f"{method} {path} is not behind the key"
                error = operation["responses"]["401"]["content"]["application/json"]
                assert error["schema"] == {"$ref": "#/components/schemas/Error"}


def documented_example(operation: Any) -> Any:
    """The request body example an operation documents, or None."""
    body = operation.body or {}
    return body.get("content", {}).get("application/json", {}).get("example")


@pytest.fixture(scope="module")
def message_id(edge: Edge) -> str:
    """A message that exists, so reads of one are checked against the MessageView schema."""
    resp = edge.client.post("/v1/messages", json=SEND_EXAMPLE, headers=AUTH)
    assert resp.status_code in (200, 202)
    return resp.get_json()["id"]


@pytest.fixture(scope="module")
def flow_name(edge: Edge) -> str:
    """A saved flow, for the examples of the operations on one flow."""
    resp = edge.client.post("/v1/flows", json=FLOW_EXAMPLE, headers=AUTH)
    assert resp.status_code in (201, 404), resp.get_json()  # 404: no flows in this checkout
    return FLOW_EXAMPLE["name"]


@pytest.mark.parametrize("operation", [o for o in API_OPERATIONS if documented_example(o)],
                         ids=lambda o: f"{o.method} {o.path}")
def test_documented_examples_are_accepted(api_schema: Any, operation: Any,
                                          flow_name: str) -> None:
    """The examples in the document are real requests: each gets a 2xx that matches."""
    if operation.path not in api_schema:
        pytest.skip(f"{operation.path} is not routed (yet)")
    api_operation = api_schema[operation.path][operation.method.upper()]
    known = {"action": "invite", "name": flow_name, "channel": "sms", "address": "32470123456"}
    path_parameters = {k: v for k, v in known.items() if f"{{{k}}}" in operation.path}
    case = api_operation.Case(body=documented_example(operation), media_type="application/json",
                              path_parameters=path_parameters or None)
    response = case.call_and_validate(headers=AUTH, checks=CHECKS)
    assert 200 <= response.status_code < 300, response.text


@pytest.mark.parametrize("operation", [o for o in API_OPERATIONS if "{message_id}" in o.path],
                         ids=lambda o: f"{o.method} {o.path}")
def test_an_existing_message_reads_as_documented(api_schema: Any, operation: Any,
                                                 message_id: str) -> None:
    case = api_schema[operation.path][operation.method.upper()].Case(
        path_parameters={"message_id": message_id})
    response = case.call_and_validate(headers=AUTH, checks=CHECKS)
    assert 200 <= response.status_code < 300, response.text


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=lambda m: m.value)
@pytest.mark.parametrize("operation", API_OPERATIONS, ids=lambda o: f"{o.method} {o.path}")
def test_api_answers_match_the_document(api_schema: Any, operation: Any,
                                        mode: GenerationMode) -> None:
    if operation.path not in api_schema:
        pytest.skip(f"{operation.path} is not routed (yet)")
    strategy = api_schema[operation.path][operation.method.upper()].as_strategy(
        generation_mode=mode)

    @settings(FUZZ, max_examples=max(EXAMPLES // 2, 5))
    @given(case=strategy)
    def run(case: Any) -> None:
        case.call_and_validate(headers=AUTH, checks=CHECKS)

    run()
