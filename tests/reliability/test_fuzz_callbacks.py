"""Bad input on every provider callback endpoint: fuzzed with hypothesis, never a 5xx.

A caller without the right credential (the path token, the service key, the Basic key) gets
the endpoint's refusal and nothing is stored or published. With the credential, malformed,
oversized and wrongly encoded bodies get a JSON refusal in the provider's own error shape
(invalid ones are kept for audit where the endpoint does so). Adding an endpoint is one
``ENDPOINTS`` entry; an entry whose route the app does not serve (yet) is skipped.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.reliability.conftest import (
    ANY_TEXT,
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
    row_counts,
)


@dataclass(frozen=True)
class CallbackEndpoint:
    """One callback route and how its caller proves who it is."""

    name: str
    method: str
    path: str  # "{token}" is replaced by the credential when ``credential_in`` is "path"
    secret: str  # the SWITCHBOARD_* variable holding the credential
    credential_in: str  # "path", "basic", or a header name
    refusal: int  # the status a wrong credential gets
    body: str  # "query", "form" or "json"
    valid: dict[str, Any]

    @property
    def key(self) -> str:
        return SECRETS[self.secret]

    def request(self, credential: str | None) -> tuple[str, dict[str, str]]:
        """(path, headers) presenting ``credential`` (None: present nothing)."""
        if self.credential_in == "path":
            return self.path.replace("{token}", quote(credential or "", safe="")), {}
        if credential is None:
            return self.path, {}
        if self.credential_in == "basic":
            encoded = base64.b64encode(f"switchboard:{credential}".encode()).decode()
            return self.path, {"Authorization": f"Basic {encoded}"}
        return self.path, {self.credential_in: credential}

    def __str__(self) -> str:
        return self.name


REPORT = {"msg_id": "aaaaaaaa-0000-0000-0000-000000000001",
          "p_transaction_id": "11111111-2222-3333-4444-555555555555",
          "type": "delivery", "status": "delivered"}
ENDPOINTS: tuple[CallbackEndpoint, ...] = (
    CallbackEndpoint("messaggio-get", "GET", "/callbacks/messaggio/{token}",
                     "SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN", "path", 404, "query", REPORT),
    CallbackEndpoint("messaggio-post", "POST", "/callbacks/messaggio/{token}",
                     "SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN", "path", 404, "form", REPORT),
    CallbackEndpoint("rogerthat", "POST", "/callbacks/rogerthat",
                     "SWITCHBOARD_ROGERTHAT_SERVICE_KEY", "X-Nuntiuz-Service-Key", 401, "json",
                     {"id": "env-1", "method": "messaging.update",
                      "params": {"message_key": "mk-1", "status": 1,
                                 "member": "a@example.com"}}),
    CallbackEndpoint("contactatonce-messages", "POST", "/callbacks/contactatonce/messages",
                     "SWITCHBOARD_CONTACTATONCE_INBOUND_KEY", "basic", 401, "json",
                     {"VisitId": 123, "MessageId": "m-1", "Message": "Hello"}),
    CallbackEndpoint("contactatonce-status", "POST", "/callbacks/contactatonce/status",
                     "SWITCHBOARD_CONTACTATONCE_INBOUND_KEY", "basic", 401, "json",
                     {"VisitId": 123, "ExternalMessageId": "att-1", "MessageId": "m-2",
                      "MessageStatus": 1}),
)
WITH_JSON = tuple(e for e in ENDPOINTS if e.body == "json")


def routed(edge: Edge, endpoint: CallbackEndpoint) -> CallbackEndpoint:
    """The endpoint, or a skip when the app does not serve it in this checkout."""
    if not edge.routed(endpoint.method, endpoint.request(endpoint.key)[0]):
        pytest.skip(f"{endpoint} is not routed (yet)")
    return endpoint


def send(edge: Edge, endpoint: CallbackEndpoint, credential: str | None, *,
         fields: dict[str, Any] | None = None, data: bytes | str | None = None,
         content_type: str | None = None):  # type: ignore[no-untyped-def]
    """One request in the endpoint's own style: query string, form, or a JSON body."""
    path, headers = endpoint.request(credential)
    query = None
    if fields is not None and endpoint.body == "query":
        query = {_text(k): _text(v) for k, v in fields.items()}
    elif fields is not None and endpoint.body == "form":
        data = {_text(k): _text(v) for k, v in fields.items()}  # type: ignore[assignment]
    elif fields is not None:
        data, content_type = json.dumps(fields), "application/json"
    return edge.client.open(path, method=endpoint.method, headers=headers, data=data,
                            content_type=content_type, query_string=query)


def _text(value: Any) -> str:
    """A form or query value: strings as they are, anything else as its JSON. Lone
    surrogates cannot travel in a URL or a form, so they are replaced."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text.encode("utf-8", "replace").decode("utf-8")


def bad_credentials(endpoint: CallbackEndpoint) -> st.SearchStrategy[str | None]:
    """Nothing, noise, near misses and the other secrets: never the endpoint's own key."""
    key = endpoint.key
    near = [key + "x", key[:-1], key.upper(), f"{key} {key}",
            *(v for v in SECRETS.values() if v != key)]
    return st.one_of(st.none(), LATIN1, st.sampled_from(near)).filter(
        lambda c: c is None or key not in c)


# --------------------------------------------------------------------------------------
# Unauthenticated
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
@FUZZ
@given(data=st.data(), body=RAW_BODIES, content_type=CONTENT_TYPES)
def test_wrong_credentials_are_refused_and_nothing_is_stored(
    edge: Edge, endpoint: CallbackEndpoint, data: st.DataObject, body: bytes | str,
    content_type: str,
) -> None:
    routed(edge, endpoint)
    credential = data.draw(bad_credentials(endpoint), label="credential")
    before, published = row_counts(), len(edge.published.calls)
    resp = send(edge, endpoint, credential, data=body, content_type=content_type)
    if resp.status_code == 308:  # "//" in a path token: Werkzeug's merge_slashes redirect
        assert urlsplit(resp.location).path.startswith("/callbacks/"), resp.location
    else:
        assert resp.status_code == endpoint.refusal, resp.get_data()[:300]
    assert_edge_answer(resp)
    assert row_counts() == before
    assert len(edge.published.calls) == published


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
@FUZZ
@given(fields=st.dictionaries(ANY_TEXT, JSON_VALUES, max_size=4))
def test_wrong_credentials_with_a_plausible_callback_store_nothing(
    edge: Edge, endpoint: CallbackEndpoint, fields: dict[str, Any],
) -> None:
    routed(edge, endpoint)
    before = row_counts()
    resp = send(edge, endpoint, endpoint.key + "-not", fields={**endpoint.valid, **fields})
    assert resp.status_code == endpoint.refusal
    assert_edge_answer(resp)
    assert row_counts() == before


# --------------------------------------------------------------------------------------
# Authenticated, bad input
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
@FUZZ
@given(body=RAW_BODIES, content_type=CONTENT_TYPES)
def test_garbage_bodies_get_a_json_refusal(edge: Edge, endpoint: CallbackEndpoint,
                                           body: bytes | str, content_type: str) -> None:
    routed(edge, endpoint)
    assert_edge_answer(send(edge, endpoint, endpoint.key, data=body,
                            content_type=content_type))


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
@FUZZ
@given(data=st.data())
def test_mutated_callbacks_get_a_json_answer(edge: Edge, endpoint: CallbackEndpoint,
                                             data: st.DataObject) -> None:
    """A valid callback with one field (known, under params, or new) set to anything."""
    routed(edge, endpoint)
    body = json.loads(json.dumps(endpoint.valid))
    key = data.draw(st.sampled_from([*body, *(f"params.{k}" for k in body.get("params", {})),
                                     "extra"]), label="key")
    value = data.draw(JSON_VALUES, label="value")
    head, _, tail = key.partition(".")
    (body[head] if tail else body)[tail or head] = value
    assert_edge_answer(send(edge, endpoint, endpoint.key, fields=body))


@pytest.mark.parametrize("endpoint", WITH_JSON, ids=str)
@pytest.mark.parametrize("case", sorted(ENCODINGS))
def test_wrongly_encoded_bodies_get_a_json_answer(edge: Edge, endpoint: CallbackEndpoint,
                                                  case: str) -> None:
    routed(edge, endpoint)
    raw, content_type = ENCODINGS[case]
    assert_edge_answer(send(edge, endpoint, endpoint.key, data=raw, content_type=content_type))


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
@pytest.mark.parametrize("authorized", [True, False], ids=["key", "no-key"])
def test_oversized_bodies_are_refused(edge: Edge, endpoint: CallbackEndpoint,
                                      authorized: bool) -> None:
    routed(edge, endpoint)
    before = row_counts()
    pad = "x" * MAX_BODY
    data, content_type = (json.dumps({**endpoint.valid, "pad": pad}), "application/json") \
        if endpoint.body == "json" else (f"msg_id=1&pad={pad}", "application/x-www-form-urlencoded")
    resp = send(edge, endpoint, endpoint.key if authorized else None, data=data,
                content_type=content_type)
    assert resp.status_code == (413 if authorized else endpoint.refusal)
    assert_edge_answer(resp)
    assert row_counts() == before
