"""Bad input on the producer API (``/v1``): fuzzed with hypothesis, it never gets a 5xx.

Without a valid API key every request is a 401 JSON refusal that stores and publishes
nothing. With one, malformed, oversized, wrongly encoded or oddly shaped bodies, queries and
paths get a JSON refusal that names the field. Adding an endpoint is one ``ENDPOINTS`` entry;
an entry whose route the app does not serve (yet) is skipped.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from shared.campaigns import CampaignRequest
from shared.flows.definition import FlowDefinition
from shared.flows.requests import FlowLinkRequest, FlowStartRequest
from shared.schemas import FriendRequest, ReplayRequest, SendRequest
from tests.reliability.conftest import (
    API_KEY,
    AUTH,
    CONTENT_TYPES,
    ENCODINGS,
    FUZZ,
    JSON_VALUES,
    LATIN1,
    MAX_BODY,
    RAW_BODIES,
    SECRETS,
    Edge,
    assert_edge_answer,
    json_body,
    row_counts,
)
from webhooks.openapi import CAMPAIGN_EXAMPLE, FLOW_EXAMPLE


@dataclass(frozen=True)
class Endpoint:
    """One route of the API; ``{id}`` in the path is filled in by the test."""

    method: str
    path: str
    model: type[BaseModel] | None = None  # the JSON body it reads
    query: tuple[str, ...] = ()  # the query parameters it reads
    valid: Any = None  # a body it accepts, for mutation

    def url(self, segment: str = "x") -> str:
        return self.path.replace("{id}", quote(segment, safe=""))

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


SEND = {"to": {"phone": "+32470123456"}, "route": ["viber", "sms"], "text": "Hi"}
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/messages", SendRequest, valid=SEND),
    Endpoint("GET", "/v1/messages/{id}"),
    Endpoint("POST", "/v1/messages/{id}/seal"),
    Endpoint("GET", "/v1/events", query=("after", "limit")),
    Endpoint("POST", "/v1/events/replay", ReplayRequest, valid={"message_id": "x"}),
    Endpoint("POST", "/v1/contacts/rogerthat/invite", FriendRequest,
             valid={"email": "a@example.com"}),
    Endpoint("POST", "/v1/contacts/rogerthat/break-up", FriendRequest,
             valid={"email": "a@example.com"}),
    Endpoint("GET", "/v1/contacts"),
    Endpoint("GET", "/v1/conversations", query=("consumer_id",)),
    Endpoint("GET", "/v1/conversations/{id}"),
    Endpoint("POST", "/v1/campaigns", CampaignRequest, valid=CAMPAIGN_EXAMPLE),
    Endpoint("GET", "/v1/campaigns/{id}"),
    Endpoint("POST", "/v1/flows", FlowDefinition, valid=FLOW_EXAMPLE),
    Endpoint("GET", "/v1/flows"),
    Endpoint("GET", "/v1/flows/{id}", query=("version",)),
    Endpoint("POST", "/v1/flows/{id}/start", FlowStartRequest,
             valid={"contacts": [{"to": {"phone": "+32470123456"}}]}),
    Endpoint("GET", "/v1/flows/{id}/stats"),
    Endpoint("POST", "/v1/flows/{id}/links", FlowLinkRequest,
             valid={"contact": {"to": {"phone": "+32470123456"}}}),
    Endpoint("GET", "/v1/flow-runs/{id}"),
)
WITH_BODY = tuple(e for e in ENDPOINTS if e.model is not None)
WITH_QUERY = tuple(e for e in ENDPOINTS if e.query)
WITH_ID = tuple(e for e in ENDPOINTS if "{id}" in e.path)


def routed(edge: Edge, endpoint: Endpoint) -> Endpoint:
    """The endpoint, or a skip when the app does not serve it in this checkout."""
    if not edge.routed(endpoint.method, endpoint.url()):
        pytest.skip(f"{endpoint} is not routed (yet)")
    return endpoint


def call(edge: Edge, endpoint: Endpoint, *, segment: str = "x", headers: dict | None = None,
         data: bytes | str | None = None, content_type: str | None = None,
         query: dict | None = None):  # type: ignore[no-untyped-def]
    return edge.client.open(endpoint.url(segment), method=endpoint.method, data=data,
                            content_type=content_type, headers=headers or {},
                            query_string=query)


# --------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------

def _accepted(headers: dict[str, str]) -> bool:
    scheme, _, presented = headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and presented.strip() == API_KEY


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


NEAR_KEYS = [API_KEY + "x", API_KEY[:-1], API_KEY.upper(), API_KEY + "," + API_KEY,
             *(v for k, v in SECRETS.items() if k != "SWITCHBOARD_API_KEYS")]
BAD_AUTH = st.one_of(
    st.just({}),
    LATIN1.map(lambda v: {"Authorization": v}),
    LATIN1.map(lambda v: {"Authorization": f"Bearer {v}"}),
    st.sampled_from(NEAR_KEYS).map(lambda k: {"Authorization": f"Bearer {k}"}),
    st.just({"Authorization": _basic("", API_KEY)}),
    st.just({"Authorization": API_KEY}),
    st.just({"X-API-Key": API_KEY}),
).filter(lambda h: not _accepted(h))


def mutated(valid: dict[str, Any], model: type[BaseModel]) -> st.SearchStrategy[dict]:
    """A valid body with one field (known, nested or unknown) set to any JSON value."""
    keys = st.sampled_from([*model.model_fields, "to.phone", "to.email", "unknown"])

    def apply(key: str, value: Any) -> dict[str, Any]:
        body = json.loads(json.dumps(valid))
        head, _, tail = key.partition(".")
        if tail and isinstance(body.get(head), dict):
            body[head][tail] = value
        else:
            body[head] = value
        return body

    return st.builds(apply, keys, JSON_VALUES)


# --------------------------------------------------------------------------------------
# Unauthenticated
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
@FUZZ
@given(headers=BAD_AUTH, body=RAW_BODIES, content_type=CONTENT_TYPES)
def test_without_a_valid_key_is_401_and_nothing_is_stored(
    edge: Edge, endpoint: Endpoint, headers: dict[str, str], body: bytes | str,
    content_type: str,
) -> None:
    routed(edge, endpoint)
    before, published = row_counts(), len(edge.published.calls)
    resp = call(edge, endpoint, headers=headers, data=body, content_type=content_type)
    assert resp.status_code == 401, resp.get_data()[:300]
    assert_edge_answer(resp)
    assert json_body(resp)["error"] == "unauthorized"
    assert row_counts() == before
    assert len(edge.published.calls) == published


# --------------------------------------------------------------------------------------
# Authenticated, bad bodies
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("endpoint", WITH_BODY, ids=str)
@FUZZ
@given(body=RAW_BODIES, content_type=CONTENT_TYPES)
def test_garbage_bodies_get_a_json_refusal(edge: Edge, endpoint: Endpoint, body: bytes | str,
                                           content_type: str) -> None:
    routed(edge, endpoint)
    assert_edge_answer(call(edge, endpoint, headers=AUTH, data=body,
                            content_type=content_type))


@pytest.mark.parametrize("endpoint", WITH_BODY, ids=str)
@FUZZ
@given(data=st.data())
def test_model_shaped_bodies_name_the_bad_field(edge: Edge, endpoint: Endpoint,
                                                data: st.DataObject) -> None:
    routed(edge, endpoint)
    assert endpoint.model is not None
    body = data.draw(mutated(endpoint.valid, endpoint.model))
    resp = call(edge, endpoint, headers=AUTH, data=json.dumps(body),
                content_type="application/json")
    assert_edge_answer(resp)


@pytest.mark.parametrize("endpoint", WITH_BODY, ids=str)
@pytest.mark.parametrize("case", sorted(ENCODINGS))
def test_wrongly_encoded_bodies_get_a_json_refusal(edge: Edge, endpoint: Endpoint,
                                                   case: str) -> None:
    routed(edge, endpoint)
    raw, content_type = ENCODINGS[case]
    resp = call(edge, endpoint, headers=AUTH, data=_with_valid_fields(endpoint, raw),
                content_type=content_type)
    assert_edge_answer(resp)


def _with_valid_fields(endpoint: Endpoint, raw: bytes) -> bytes:
    """A case that parses as a JSON object is merged into the endpoint's valid body, so the
    odd values travel past validation into storage; anything else is sent as it is."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return raw
    if not isinstance(value, dict) or endpoint.valid is None:
        return raw
    return json.dumps({**endpoint.valid, **value}).encode()


@pytest.mark.parametrize("endpoint", WITH_BODY, ids=str)
@pytest.mark.parametrize("authorized", [True, False], ids=["key", "no-key"])
def test_oversized_bodies_are_refused_and_nothing_is_stored(edge: Edge, endpoint: Endpoint,
                                                            authorized: bool) -> None:
    routed(edge, endpoint)
    body = json.dumps({**(endpoint.valid or {}), "metadata": {"pad": "x" * MAX_BODY}})
    before = row_counts()
    resp = call(edge, endpoint, headers=AUTH if authorized else {}, data=body,
                content_type="application/json")
    assert resp.status_code == (413 if authorized else 401)
    assert_edge_answer(resp)
    assert row_counts() == before


# --------------------------------------------------------------------------------------
# Authenticated, bad queries and paths
# --------------------------------------------------------------------------------------

QUERY_VALUES = st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
                         st.integers().map(str), st.just(str(2**64)), st.just("-1"))


@pytest.mark.parametrize("endpoint", WITH_QUERY, ids=str)
@FUZZ
@given(data=st.data())
def test_query_parameters_get_a_json_refusal(edge: Edge, endpoint: Endpoint,
                                             data: st.DataObject) -> None:
    routed(edge, endpoint)
    names = st.sampled_from([*endpoint.query, "other"])
    query = data.draw(st.dictionaries(names, QUERY_VALUES, max_size=3))
    assert_edge_answer(call(edge, endpoint, headers=AUTH, query=query))


@pytest.mark.parametrize("endpoint", WITH_ID, ids=str)
@FUZZ
@given(segment=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40))
def test_path_ids_get_a_json_refusal(edge: Edge, endpoint: Endpoint, segment: str) -> None:
    routed(edge, endpoint)
    assert_edge_answer(call(edge, endpoint, segment=segment, headers=AUTH))


# --------------------------------------------------------------------------------------
# Authenticated, values at the edge of what the models allow
# --------------------------------------------------------------------------------------

LONG_EMAIL = "a" * 64 + "@" + ".".join(["b" * 63, "c" * 63, "d" * 57]) + ".com"  # 254
LONGEST = {
    "email": {"to": {"email": LONG_EMAIL}, "route": ["rogerthat"], "text": "Hi",
              "allow_dismiss": True},
    "consumer": {"route": ["inapp"], "text": "Hi", "conversation": {"consumer_id": "c" * 100}},
    "callback-url": {**SEND, "callback_url": "https://example.com/" + "p" * 2060},
    "keys": {**SEND, "idempotency_key": "k" * 200, "text": "t" * 2048, "sender": "S" * 11,
             "metadata": {"m" * 1000: "v" * 100_000}},
}


@pytest.mark.parametrize("case", sorted(LONGEST))
def test_the_longest_values_the_model_allows_are_stored(edge: Edge, case: str) -> None:
    """What validation lets through must fit the columns (SQLite does not check lengths;
    PostgreSQL does, so run this with SWITCHBOARD_TEST_DATABASE_URL too)."""
    resp = call(edge, ENDPOINTS[0], headers=AUTH, data=json.dumps(LONGEST[case]),
                content_type="application/json")
    assert_edge_answer(resp)
