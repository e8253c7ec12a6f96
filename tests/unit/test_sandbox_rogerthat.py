"""The Rogerthat service-API simulator speaks the JSON-RPC wire format and behaves like the server.

Requests are built by hand here (not with the production adapter), callbacks are received by a
small JSON-RPC endpoint in a thread, and every wait is on a condition with a timeout.
"""

from __future__ import annotations

import http
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request

from shared.providers.sandbox.rogerthat import RogerthatSimConfig, RogerthatSimServer

API_KEY, SERVICE_KEY = "sandbox-api-key", "sandbox-service-key"
JSONRPC = "application/json-rpc; charset=utf-8"
REPO = Path(__file__).resolve().parents[2]
YES_NO = [
    {"id": "yes", "caption": "Yes", "action": None, "ui_flags": 0, "type": "button"},
    {"id": "no", "caption": "No", "action": None, "ui_flags": 0, "type": "button"},
]


class Receiver:
    """A JSON-RPC callback endpoint: records every call, answers like a well-behaved service.

    ``test.test`` is echoed, ``friend.invited`` accepted, anything else answered null; methods
    in ``refused`` get a JSON-RPC error (HTTP 200). Queued ``statuses`` are answered first (a
    non-200 gets a plain-text body).
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.refused: set[str] = set()
        self.cond = threading.Condition()
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/rogerthat/callback"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        req = Request(environ)
        body = json.loads(req.get_data(as_text=True))
        with self.cond:
            status = self.statuses.pop(0) if self.statuses else 200
            self.calls.append({"headers": dict(req.headers), "body": body, "status": status})
            self.cond.notify_all()
        if status != 200:
            start_response(f"{status} {http.HTTPStatus(status).phrase}", [])
            return [b"not now"]
        result = {"test.test": body["params"].get("value"), "friend.invited": "accepted"}.get(
            body["method"]
        )
        error = None
        if body["method"] in self.refused:
            result, error = None, {"code": 1006, "message": "Method not found."}
        payload = json.dumps({"id": body["id"], "result": result, "error": error}).encode()
        start_response("200 OK", [("Content-Type", "application/json-rpc")])
        return [payload]

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 5.0):
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.calls), timeout), self.calls
            return list(self.calls)

    def bodies(self, method: str | None = None) -> list[dict[str, Any]]:
        with self.cond:
            return [c["body"] for c in self.calls if method in (None, c["body"]["method"])]

    def updates_for(self, key: str, count: int) -> list[dict[str, Any]]:
        """Wait for ``count`` messaging.update callbacks of message ``key``; their params."""

        def matching(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [
                c["body"]["params"]
                for c in calls
                if c["body"]["method"] == "messaging.update"
                and c["body"]["params"]["message_key"] == key
            ]

        self.wait_for(lambda calls: len(matching(calls)) >= count)
        with self.cond:
            return matching(self.calls)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.stop()


@pytest.fixture
def sim(receiver: Receiver) -> Iterator[RogerthatSimServer]:
    config = RogerthatSimConfig(callback_url=receiver.url, callback_delay=0.02, seed=3)
    with RogerthatSimServer(config) as server:
        yield server


def post(
    sim: RogerthatSimServer, body: Any, api_key: str | None = API_KEY, **headers: str
) -> requests.Response:
    """POST a raw JSON-RPC body (dicts are serialised) with the API key header."""
    hdrs = {"Content-Type": JSONRPC, **headers}
    if api_key is not None:
        hdrs["X-Nuntiuz-API-Key"] = api_key
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return requests.post(sim.url, data=data, headers=hdrs, timeout=10)


def rpc(sim: RogerthatSimServer, method: str, params: dict[str, Any], rpc_id: str | None = None):
    """One call; returns the parsed answer after checking the envelope."""
    rpc_id = rpc_id or str(uuid.uuid4())
    resp = post(sim, {"id": rpc_id, "method": method, "params": params})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == JSONRPC
    answer = resp.json()
    assert answer["id"] == rpc_id and set(answer) == {"id", "result", "error"}
    return answer


def send_params(member: Any = "friend1@example.com", **overrides: Any) -> dict[str, Any]:
    """Every key the SDK sends for messaging.send."""
    params = {
        "parent_message_key": None,
        "message": "Your order has shipped. OK?",
        "answers": [dict(a) for a in YES_NO],
        "flags": 0,
        "members": [member],
        "branding": None,
        "tag": "order-42",
        "service_identity": None,
        "alert_flags": 2,
        "dismiss_button_ui_flags": 0,
        "context": "ctx-1",
        "attachments": [],
    }
    params.update(overrides)
    return params


def error_code(answer: dict[str, Any]) -> int | None:
    return answer["error"]["code"] if answer["error"] else None


def sim_get(sim: RogerthatSimServer, path: str) -> Any:
    """GET a control endpoint; list endpoints wrap their list as {"<path>": [...]}."""
    resp = requests.get(f"{sim.base_url}/_sim/{path}", timeout=5)
    assert resp.status_code == 200
    body = resp.json()
    return body[path] if path in ("messages", "calls", "callbacks", "friends", "invites") else body


def sim_post(sim: RogerthatSimServer, path: str, body: Any = None) -> Any:
    resp = requests.post(f"{sim.base_url}/_sim/{path}", json=body or {}, timeout=5)
    assert resp.status_code in (200, 202), resp.text
    return resp.json()


# --------------------------------------------------------------------------- auth and envelope


def test_missing_or_wrong_api_key_is_401(sim: RogerthatSimServer) -> None:
    body = {"id": "a", "method": "friend.get_status", "params": {"email": "friend1@x.io"}}
    missing = post(sim, body, api_key=None)
    assert missing.status_code == 401 and missing.text == ""
    assert missing.reason == "Missing X-Nuntiuz-API-Key, cannot authenticate!"
    wrong = post(sim, body, api_key="not-the-key")
    assert wrong.status_code == 401 and wrong.text == ""
    assert "Could not match" in wrong.reason and "not-the-key" not in wrong.reason
    # header names are case-insensitive, and the key may come as a query parameter
    lower = post(sim, body, api_key=None, **{"x-nuntiuz-api-key": API_KEY})
    assert lower.status_code == 200 and lower.json()["result"]["is_friend"] is True
    query = requests.post(
        sim.url,
        params={"X-Nuntiuz-API-Key": API_KEY},
        data=json.dumps(body),
        headers={"Content-Type": JSONRPC},
        timeout=5,
    )
    assert query.status_code == 200 and query.json()["error"] is None
    assert sim.state.stats()["unauthorized"] == 2


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", '"a string"', ""])
def test_unparseable_body_gets_empty_200(sim: RogerthatSimServer, garbage: str) -> None:
    resp = post(sim, garbage)
    assert resp.status_code == 200 and resp.content == b""
    assert sim.state.calls()[-1]["outcome"] == "unparseable"


def test_form_field_data_when_not_json_rpc(sim: RogerthatSimServer) -> None:
    call = {"id": "f1", "method": "friend.get_status", "params": {"email": "friend9@x.io"}}
    resp = requests.post(
        sim.url,
        data={"data": json.dumps(call), "X-Nuntiuz-API-Key": API_KEY},
        timeout=5,
    )
    assert resp.status_code == 200 and resp.json()["result"]["is_friend"] is True
    # application/json is not json-rpc: the server looks for the form field and fails
    wrong_type = post(sim, call, **{"Content-Type": "application/json"})
    assert wrong_type.status_code == 500


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"method": "friend.get_status", "params": {}}, 1003),
        ({"id": "x", "params": {}}, 1003),
        ({"id": "x", "method": "friend.get_status"}, 1003),
        ({"id": "x", "method": "friend.get_status", "params": None}, 1003),
        ({"id": 7, "method": "friend.get_status", "params": {}}, 1004),
        ({"id": "x", "method": "friend.get_status", "params": ["a"]}, 1005),
        ({"id": "x", "method": "messaging.teleport", "params": {}}, 1006),
    ],
)
def test_envelope_errors(sim: RogerthatSimServer, body: dict[str, Any], code: int) -> None:
    resp = post(sim, body)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == JSONRPC
    answer = resp.json()
    assert answer["error"]["code"] == code and answer["result"] is None
    assert answer["id"] == body.get("id")
    assert sim.state.stats()["executed"] == 0


# --------------------------------------------------------------------------- messaging.send


def test_send_to_friend_is_received_then_acked_with_first_button(
    sim: RogerthatSimServer, receiver: Receiver
) -> None:
    answer = rpc(sim, "messaging.send", send_params())
    key = answer["result"]
    assert answer["error"] is None and uuid.UUID(key).version == 4

    received, acked = receiver.updates_for(key, 2)
    common = {
        "member": "friend1@example.com",
        "message_key": key,
        "parent_message_key": key,
        "tag": "order-42",
        "service_identity": "+default+",
    }
    assert received.items() >= common.items() and acked.items() >= common.items()
    assert received["status"] == 1 and received["answer_id"] is None
    assert received["acked_timestamp"] == 0 and "result_key" not in received
    assert set(received) == {
        "status",
        "answer_id",
        "received_timestamp",
        "acked_timestamp",
        "member",
        "message_key",
        "parent_message_key",
        "tag",
        "service_identity",
        "user_details",
    }
    assert acked["status"] == 7 and acked["answer_id"] == "yes"
    assert uuid.UUID(acked["result_key"]).version == 4
    for params in (received, acked):
        assert isinstance(params["received_timestamp"], int) and params["received_timestamp"] > 0
        (details,) = params["user_details"]
        assert set(details) == {"email", "name", "language", "avatar_url", "app_id"}
        assert details["email"] == "friend1@example.com" and details["app_id"] == "rogerthat"
    assert isinstance(acked["acked_timestamp"], int) and acked["acked_timestamp"] > 0

    for call in receiver.calls:
        assert call["headers"]["Content-Type"] == JSONRPC
        assert call["headers"]["X-Nuntiuz-Service-Key"] == SERVICE_KEY
        assert set(call["body"]) == {"method", "params", "id"}
        assert uuid.UUID(call["body"]["id"]).version == 1
    assert sim.state.wait_until(lambda s: s.stats()["callbacks_delivered"] == 2)

    (message,) = sim_get(sim, "messages")
    assert message["key"] == key and message["member"] == "friend1@example.com"
    assert message["app_id"] == "rogerthat" and message["context"] == "ctx-1"
    assert [a["id"] for a in message["answers"]] == ["yes", "no"]
    assert message["members"][0]["answer_id"] == "yes" and message["members"][0]["status"] == 7


def test_member_object_with_app_id_and_non_friend(sim: RogerthatSimServer) -> None:
    member = {"member": "friend2@example.com", "app_id": "city-app", "alert_flags": 4}
    assert rpc(sim, "messaging.send", send_params(member))["error"] is None
    answer = rpc(sim, "messaging.send", send_params("stranger@example.com"))
    assert answer["result"] is None
    assert answer["error"] == {
        "code": 30000,
        "message": "Member is not in your friends list.",
        "member": "stranger@example.com",
        "app_id": "rogerthat",
    }
    other_app = {"member": "stranger@example.com", "app_id": "city-app", "alert_flags": 2}
    sim_post(sim, "friends", {"add": [{"email": "stranger@example.com"}]})
    assert rpc(sim, "messaging.send", send_params("stranger@example.com"))["error"] is None
    assert error_code(rpc(sim, "messaging.send", send_params(other_app))) == 30000
    # an automatic friend stops being one once removed
    sim_post(sim, "friends", {"remove": [{"email": "friend2@example.com", "app_id": "city-app"}]})
    assert error_code(rpc(sim, "messaging.send", send_params(member))) == 30000


def _button(**overrides: Any) -> dict[str, Any]:
    return {
        "id": "ok",
        "caption": "OK",
        "action": None,
        "ui_flags": 0,
        "type": "button",
        **overrides,
    }


TWO_FRIENDS = ["friend1@example.com", "friend2@example.com"]


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"answers": [_button(type="text_line")]}, 30005),
        ({"answers": [{k: v for k, v in _button().items() if k != "type"}]}, 30005),
        ({"answers": [_button(id="")]}, 30008),
        ({"answers": [_button(caption="")]}, 30008),
        ({"answers": [_button(), _button(caption="Again")]}, 30014),
        ({"answers": [_button(action="ftp://files.example.com/x")]}, 30006),
        ({"answers": [_button(ui_flags=4)]}, 30035),
        ({"answers": []}, 30012),
        ({"flags": 1 << 17}, 30003),
        ({"flags": 64, "members": TWO_FRIENDS}, 30011),
        ({"alert_flags": 4 | 8}, 30018),
        ({"alert_flags": 64 | 128}, 30019),
        ({"tag": "x" * 501}, 30004),
        ({"tag": "__rt__.mine"}, 30044),
        ({"members": ["friend1@example.com", "FRIEND1@example.com"]}, 30013),
        ({"flags": None}, 1000),
        ({"answers": [{k: v for k, v in _button().items() if k != "action"}]}, 1000),
    ],
)
def test_send_validation_errors(
    sim: RogerthatSimServer, overrides: dict[str, Any], code: int
) -> None:
    answer = rpc(sim, "messaging.send", send_params(**overrides))
    assert error_code(answer) == code, answer
    assert answer["result"] is None
    assert sim.state.messages() == []


@pytest.mark.parametrize("missing", ["flags", "alert_flags"])
def test_send_without_flags_key_is_unknown_error(sim: RogerthatSimServer, missing: str) -> None:
    params = send_params()
    del params[missing]
    answer = rpc(sim, "messaging.send", params)
    assert error_code(answer) == 1000 and "error id" in answer["error"]["message"]


def test_send_accepts_dismiss_only_and_good_actions(
    sim: RogerthatSimServer, receiver: Receiver
) -> None:
    answers = [
        _button(id="web", action="https://example.com/x"),
        _button(id="call", action="tel:+3212345678"),
        _button(id="mail", action="mailto:shop@example.com"),
        _button(id="sure", action="confirm://Really?"),
    ]
    assert rpc(sim, "messaging.send", send_params(answers=answers, flags=64))["error"] is None
    assert rpc(sim, "messaging.send", send_params(answers=[], flags=1))["error"] is None
    first, dismiss_only = sim.state.messages()
    assert first["answers"][2]["action"] == "mailto://shop@example.com"
    (_, acked) = receiver.updates_for(dismiss_only["key"], 2)
    assert acked["answer_id"] is None  # no buttons: the default scenario dismisses


def test_replay_by_id_returns_identical_bytes_and_executes_once(
    sim: RogerthatSimServer, receiver: Receiver
) -> None:
    call = {"id": "attempt-0001", "method": "messaging.send", "params": send_params()}
    first, second = post(sim, call), post(sim, call)
    assert first.content == second.content and first.json()["error"] is None
    assert len(sim.state.messages()) == 1
    failed = {"id": "attempt-0002", "method": "messaging.send", "params": send_params("x@y.z")}
    assert post(sim, failed).content == post(sim, failed).content  # errors are replayed too
    stats = sim.state.stats()
    assert stats["executed"] == 2 and stats["replayed"] == 2 and stats["messages"] == 1
    outcomes = [(c["id"], c["outcome"]) for c in sim_get(sim, "calls")]
    assert outcomes == [
        ("attempt-0001", "executed"),
        ("attempt-0001", "replayed"),
        ("attempt-0002", "executed"),
        ("attempt-0002", "replayed"),
    ]
    receiver.updates_for(first.json()["result"], 2)
    assert len(receiver.bodies("messaging.update")) == 2  # callbacks were not doubled either


def test_same_id_while_first_call_runs_is_1009(sim: RogerthatSimServer) -> None:
    sim_post(sim, "config", {"latency": 0.3})
    call = {"id": "slowpoke", "method": "messaging.send", "params": send_params()}
    results: list[requests.Response] = []
    first = threading.Thread(target=lambda: results.append(post(sim, call)))
    first.start()
    try:
        assert sim.state.wait_until(lambda s: s.in_flight() == 1)
        busy = post(sim, call).json()
        assert busy["error"]["code"] == 1009 and busy["id"] == "slowpoke"
        assert busy["error"]["message"] == "Previous request attempt still running"
    finally:
        first.join(5)
    (done,) = results
    assert done.json()["error"] is None
    assert post(sim, call).content == done.content  # 1009 was not cached; the result is
    assert len(sim.state.messages()) == 1


def test_injected_provider_error_is_cached_like_the_server_does(sim: RogerthatSimServer) -> None:
    """The server caches the 1000 of a method that raised: the same id only replays it."""
    sim_post(sim, "config", {"fail_rate": 1.0, "fail_kinds": ["provider_error"]})
    call = {"id": "flaky", "method": "messaging.send", "params": send_params()}
    first = post(sim, call)
    assert first.json()["error"]["code"] == 1000
    sim_post(sim, "config", {"fail_rate": 0.0})
    again = post(sim, call)
    assert again.content == first.content  # the same error id: a replay, not a new failure
    assert sim.state.messages() == []
    fresh = post(sim, {**call, "id": "flaky.r1"})
    assert fresh.json()["error"] is None and len(sim.state.messages()) == 1
    assert [c["outcome"] for c in sim.state.calls()] == ["injected", "replayed", "executed"]
    assert sim.state.stats()["injected"]["provider_error"] == 1


def test_injected_provider_error_does_not_hide_a_cached_answer(sim: RogerthatSimServer) -> None:
    call = {"id": "done", "method": "messaging.send", "params": send_params()}
    ok = post(sim, call)
    sim_post(sim, "config", {"fail_rate": 1.0, "fail_kinds": ["provider_error"]})
    assert post(sim, call).content == ok.content  # the cache answers before the method runs


# --------------------------------------------------------------------------- scenarios


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        ("dismiss.friend1@example.com", [(1, None), (7, None)]),
        ("answer-no.friend1@example.com", [(1, None), (7, "no")]),
        ("silent.friend1@example.com", [(1, None)]),
    ],
)
def test_member_scenarios(
    sim: RogerthatSimServer, receiver: Receiver, member: str, expected: list[Any]
) -> None:
    key = rpc(sim, "messaging.send", send_params(member))["result"]
    updates = receiver.updates_for(key, len(expected))
    assert [(u["status"], u["answer_id"]) for u in updates] == expected
    # nothing more comes: callbacks go out in due order, so once a later message is acked,
    # anything still owed for the first one would have arrived
    marker = rpc(sim, "messaging.send", send_params("friend2@example.com"))["result"]
    receiver.updates_for(marker, 2)
    assert len(receiver.updates_for(key, len(expected))) == len(expected)


def test_noreport_member_gets_no_callbacks(sim: RogerthatSimServer, receiver: Receiver) -> None:
    rpc(sim, "messaging.send", send_params("noreport.friend1@example.com"))
    key = rpc(sim, "messaging.send", send_params("friend2@example.com"))["result"]
    receiver.updates_for(key, 2)  # the later message's callbacks came (in due order) ...
    assert {b["params"]["message_key"] for b in receiver.bodies()} == {key}  # ... the first's not


# --------------------------------------------------------------------------- messaging.seal


def test_seal_then_seal_again_and_bad_dirty_behavior(
    sim: RogerthatSimServer, receiver: Receiver
) -> None:
    key = rpc(sim, "messaging.send", send_params("silent.friend1@example.com"))["result"]
    seal = {"message_key": key, "parent_message_key": None, "dirty_behavior": 3}
    assert error_code(rpc(sim, "messaging.seal", {**seal, "dirty_behavior": 5})) == 30016
    sealed = rpc(sim, "messaging.seal", seal)
    assert sealed["result"] is None and sealed["error"] is None
    assert error_code(rpc(sim, "messaging.seal", seal)) == 30010
    assert error_code(rpc(sim, "messaging.seal", {**seal, "message_key": "nope"})) == 30009
    (message,) = sim.state.messages()
    assert message["sealed"] and message["flags"] & 32 and message["dirty_behavior"] == 3


def test_sealed_message_is_not_acked(sim: RogerthatSimServer, receiver: Receiver) -> None:
    sim_post(sim, "config", {"callback_delay": 0.3})
    key = rpc(sim, "messaging.send", send_params())["result"]
    seal = {"message_key": key, "parent_message_key": key, "dirty_behavior": 1}
    assert rpc(sim, "messaging.seal", seal)["error"] is None
    receiver.updates_for(key, 1)
    assert sim.state.wait_until(lambda s: s.stats()["callbacks_suppressed"] == 1)
    assert len(receiver.updates_for(key, 1)) == 1


# --------------------------------------------------------------------------- friendship


def test_friend_invite_accepted_and_declined(sim: RogerthatSimServer, receiver: Receiver) -> None:
    invite = {
        "email": "new.customer@example.com",
        "name": "New Customer",
        "message": "Connect?",
        "language": "nl",
        "tag": "inv-1",
        "service_identity": None,
        "app_id": "rogerthat",
    }
    status = {"email": invite["email"], "service_identity": None, "app_id": "rogerthat"}
    assert rpc(sim, "friend.get_status", status)["result"]["is_friend"] is False
    assert rpc(sim, "friend.invite", invite) == {
        "id": sim.state.calls()[-1]["id"],
        "result": None,
        "error": None,
    }
    rpc(sim, "friend.invite", {**invite, "email": "decline-me@example.com", "tag": "inv-2"})
    calls = receiver.wait_for(lambda c: len(c) == 2)
    results = {c["body"]["params"]["tag"]: c["body"]["params"] for c in calls}
    accepted, declined = results["inv-1"], results["inv-2"]
    assert accepted["result"] == "accepted" and accepted["email"] == invite["email"]
    assert accepted["origin"] == "service_invite" and accepted["service_identity"] == "+default+"
    assert accepted["user_details"][0]["name"] == "New Customer"
    assert declined["result"] == "decline" and declined["email"] is None
    assert {c["body"]["method"] for c in calls} == {"friend.invite_result"}

    assert rpc(sim, "friend.get_status", status)["result"]["is_friend"] is True
    assert error_code(rpc(sim, "friend.invite", invite)) == 20007
    assert rpc(sim, "friend.break_up", status)["error"] is None
    assert rpc(sim, "friend.get_status", status)["result"]["is_friend"] is False
    assert sim.state.stats()["by_method"]["friend.get_status"] == 3  # never replayed


def test_user_invited_accepted_then_established(
    sim: RogerthatSimServer, receiver: Receiver
) -> None:
    email = "walk.in@example.com"
    assert not sim.state.is_friend(email)
    sent = sim_post(sim, "invited", {"email": email, "name": "Walk In", "origin": "user_poke"})
    calls = receiver.wait_for(lambda c: len(c) == 2)
    invited, established = (c["body"] for c in calls)
    assert invited["method"] == "friend.invited" and invited["id"] == sent["callback_id"]
    assert invited["params"]["email"] == email and invited["params"]["origin"] == "user_poke"
    assert set(invited["params"]) == {
        "email",
        "name",
        "message",
        "language",
        "tag",
        "origin",
        "service_identity",
        "user_details",
    }
    assert established["method"] == "friend.invite_result"
    assert established["params"]["result"] == "established"
    assert established["params"]["email"] == email
    assert sim.state.is_friend(email)
    assert {"email": email, "app_id": "rogerthat"}.items() <= sim_get(sim, "friends")[0].items()
    assert sim.state.wait_until(lambda s: len(s.callbacks()) == 2)
    first = sim.state.callbacks()[0]
    assert first["response"]["result"] == "accepted" and first["accepted"] is True


# --------------------------------------------------------------------------- callback delivery


def test_callback_retried_with_same_id_until_200(
    sim: RogerthatSimServer, receiver: Receiver
) -> None:
    receiver.statuses = [500, 503]
    sent = sim_post(sim, "test")
    calls = receiver.wait_for(lambda c: len(c) == 3)
    assert [c["status"] for c in calls] == [500, 503, 200]
    assert {c["body"]["id"] for c in calls} == {sent["callback_id"]}
    assert {c["body"]["params"]["value"] for c in calls} == {sent["value"]}
    assert sim.state.wait_until(lambda s: len(s.callbacks()) == 3)
    entries = sim_get(sim, "callbacks")
    assert [(e["attempt"], e["outcome"]) for e in entries] == [
        (1, "retry"),
        (2, "retry"),
        (3, "delivered"),
    ]
    assert entries[-1]["echo_ok"] is True and entries[-1]["response"]["result"] == sent["value"]
    assert sim_get(sim, "stats")["tests_passed"] == 1


def test_retries_are_counted_per_callback_and_in_stats(
    sim: RogerthatSimServer, receiver: Receiver
) -> None:
    receiver.statuses = [500, 503]
    sent = sim_post(sim, "test")
    assert sim.state.wait_until(lambda s: any(
        d["outcome"] == "delivered" for d in s.deliveries()))
    deliveries = requests.get(f"{sim.base_url}/_sim/deliveries", timeout=5).json()["deliveries"]
    assert deliveries == [{
        "callback_id": sent["callback_id"], "method": "test.test", "attempts": 3, "retries": 2,
        "status_codes": [500, 503, 200], "outcome": "delivered", "admin_warned": False}]
    assert sim_get(sim, "stats")["callbacks_retried"] == 2


def test_a_json_rpc_error_ends_the_retries(sim: RogerthatSimServer, receiver: Receiver) -> None:
    receiver.refused = {"messaging.form_update"}
    sim_post(sim, "callback", {"method": "messaging.form_update"})
    assert sim.state.wait_until(lambda s: [d["outcome"] for d in s.deliveries()] == ["rpc_error"])
    (delivery,) = sim.state.deliveries()
    assert (delivery["attempts"], delivery["retries"]) == (1, 0)
    assert sim_get(sim, "stats")["callbacks_retried"] == 0


def test_callbacks_failing_past_the_threshold_mail_the_admins_once_an_hour(
    sim: RogerthatSimServer, receiver: Receiver
) -> None:
    sim_post(sim, "config", {"warn_after_retries": 2, "callback_retries": 3})
    receiver.statuses = [500] * 8  # two callbacks, four sends each, all refused
    first, second = sim_post(sim, "test"), sim_post(sim, "test")
    assert sim.state.wait_until(
        lambda s: [d["outcome"] for d in s.deliveries()] == ["abandoned", "abandoned"]
    )
    warnings = requests.get(f"{sim.base_url}/_sim/warnings", timeout=5).json()["warnings"]
    assert len(warnings) == 1  # at most one an hour, as the real server
    assert warnings[0]["callback_id"] == first["callback_id"]
    assert warnings[0]["retries"] == 2 and "will soon be disabled" in warnings[0]["text"]
    by_id = {d["callback_id"]: d for d in sim.state.deliveries()}
    assert by_id[first["callback_id"]]["admin_warned"] is True
    assert by_id[second["callback_id"]]["retries"] == 3
    assert sim_get(sim, "stats")["admin_warnings"] == 1


def test_every_documented_callback_method_goes_out_with_its_params(
    sim: RogerthatSimServer, receiver: Receiver
) -> None:
    """The guide's §1.8 table and §1.5 list, unhandled methods included, each once."""
    from shared.providers.sandbox.rogerthat import DOCUMENTED_CALLBACKS

    sent = sim_post(sim, "every-callback", {"email": "friend.ann@example.com"})["callbacks"]
    assert [c["method"] for c in sent] == list(DOCUMENTED_CALLBACKS)
    calls = receiver.wait_for(lambda c: len(c) == len(DOCUMENTED_CALLBACKS))
    bodies = {c["body"]["method"]: c["body"] for c in calls}
    for method in ("messaging.form_update", "system.api_call", "friend.in_reach",
                   "messaging.new_chat_message", "friend.register", "system.brandings_updated"):
        assert method in bodies
    for method, names in DOCUMENTED_CALLBACKS.items():
        assert list(bodies[method]["params"]) == list(names), method
    assert bodies["friend.update"]["params"]["user_details"]["email"] == "friend.ann@example.com"
    assert bodies["messaging.form_update"]["params"]["answer_id"] == "positive"
    listed = requests.get(f"{sim.base_url}/_sim/callback-methods", timeout=5).json()
    assert [m["method"] for m in listed["callback-methods"]] == list(DOCUMENTED_CALLBACKS)


def test_a_documented_callback_without_params_gets_example_params(
    sim: RogerthatSimServer, receiver: Receiver
) -> None:
    answer = sim_post(sim, "callback", {"method": "friend.broke_up", "email": "bo@example.com"})
    (call,) = receiver.wait_for(lambda c: len(c) == 1)
    assert call["body"]["params"] == answer["params"]
    assert answer["params"]["email"] == "bo@example.com"
    assert set(answer["params"]) == {"email", "service_identity", "user_details"}


def test_minimal_member_gets_the_getting_started_shape(
    sim: RogerthatSimServer, receiver: Receiver
) -> None:
    key = rpc(sim, "messaging.send", send_params("minimal.friend1@example.com"))["result"]
    (update,) = receiver.updates_for(key, 1)
    assert set(update) == {"received_timestamp", "member", "message_key"}
    assert update["member"] == "minimal.friend1@example.com" and update["received_timestamp"] > 0
    marker = rpc(sim, "messaging.send", send_params("friend2@example.com"))["result"]
    receiver.updates_for(marker, 2)
    assert len(receiver.updates_for(key, 1)) == 1  # nothing more for the minimal member


def test_arbitrary_callback_with_chosen_id(sim: RogerthatSimServer, receiver: Receiver) -> None:
    params = {"email": "friend1@example.com", "service_identity": "+default+"}
    for _ in range(2):
        sim_post(sim, "callback", {"method": "friend.broke_up", "params": params, "id": "dup-1"})
    calls = receiver.wait_for(lambda c: len(c) == 2)
    assert [c["body"] for c in calls] == [
        {"method": "friend.broke_up", "params": params, "id": "dup-1"}
    ] * 2


def test_reset_forgets_messages_and_cache(sim: RogerthatSimServer) -> None:
    call = {"id": "again", "method": "messaging.send", "params": send_params("noreport@x.io")}
    sim_post(sim, "friends", {"add": ["noreport@x.io"]})
    first = post(sim, call).json()
    sim_post(sim, "reset")
    assert sim_get(sim, "messages") == [] and sim_get(sim, "stats")["requests"] == 0
    assert error_code(post(sim, call).json()) == 30000  # friends re-seeded, id executed afresh
    assert first["error"] is None


def test_cli_serves_until_sigterm(receiver: Receiver) -> None:
    env = {
        **os.environ,
        "SWITCHBOARD_ROGERTHAT_API_KEY": "cli-key",
        "SWITCHBOARD_ROGERTHAT_SERVICE_KEY": "cli-sik",
        "SWITCHBOARD_SIMULATOR_ROGERTHAT_CALLBACK_URL": receiver.url,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.providers.sandbox.rogerthat", "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split("listening on ", 1)[1].split()[0]
        body = {"id": "c1", "method": "messaging.send", "params": send_params()}
        headers = {"Content-Type": JSONRPC, "X-Nuntiuz-API-Key": "cli-key"}
        resp = requests.post(url, data=json.dumps(body), headers=headers, timeout=5)
        assert resp.json()["error"] is None
        calls = receiver.wait_for(lambda c: len(c) == 2)
        assert {c["headers"]["X-Nuntiuz-Service-Key"] for c in calls} == {"cli-sik"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- local flows

FLOW_NS = "https://rogerth.at/api/1/MessageFlow.xsd"
FLOW_XML = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    f'<messageFlowDefinition xmlns="{FLOW_NS}" name="order" language="en" '
    'startReference="message_ask"><end id="end_done"/>'
    '<message id="message_ask" allowDismiss="false" autoLock="true" vibrate="true" '
    'alertType="BEEP" alertIntervalType="NONE"><content>Arrived?</content>'
    '<answer id="button_yes" caption="Yes" action="" reference="end_done"/>'
    '<answer id="button_no" caption="No" action="" reference="flush_f"/></message>'
    '<resultsFlush id="flush_f" reference="end_done"/></messageFlowDefinition>'
)


def flow_params(member: Any = "friend1@example.com", **overrides: Any) -> dict[str, Any]:
    """Every key the 2019 SDK sends for messaging.start_local_flow."""
    params = {
        "xml": FLOW_XML,
        "members": [member],
        "service_identity": None,
        "tag": "flow-1",
        "parent_message_key": None,
        "context": None,
        "force_language": None,
        "download_attachments_upfront": False,
        "push_message": None,
        "flow": None,
        "flow_params": None,
    }
    params.update(overrides)
    return params


def test_start_local_flow_records_the_run_and_replays_by_id(sim: RogerthatSimServer) -> None:
    member = {"member": "friend2@example.com", "app_id": "city-app", "alert_flags": 2}
    call = {
        "id": "flow-0001",
        "method": "messaging.start_local_flow",
        "params": flow_params(member, force_language="en"),
    }
    first, second = post(sim, call), post(sim, call)
    assert first.content == second.content and first.json()["error"] is None
    run_id = first.json()["result"]
    assert uuid.UUID(run_id).version == 4
    flows = requests.get(f"{sim.base_url}/_sim/flows", timeout=5).json()["flows"]
    assert flows == sim.state.flows() and len(flows) == 1
    flow = flows[0]
    assert (flow["run_id"], flow["rpc_id"], flow["name"], flow["languages"]) == (
        run_id,
        "flow-0001",
        "order",
        ["en"],
    )
    assert flow["start_reference"] == "message_ask" and flow["tag"] == "flow-1"
    assert flow["members"] == [member] and flow["xml"] == FLOW_XML
    stats = sim.state.stats()
    assert stats["flows"] == 1 and stats["executed"] == 1 and stats["replayed"] == 1
    sim_post(sim, "reset")
    assert sim.state.flows() == []


def test_start_local_flow_accepts_a_definition_set(sim: RogerthatSimServer) -> None:
    inner = FLOW_XML.split("?>\n", 1)[1].replace("messageFlowDefinition", "definition")
    inner = inner.replace(f' xmlns="{FLOW_NS}"', "")
    nl = inner.replace('language="en"', 'language="nl"')
    xml = f'<messageFlowDefinitionSet xmlns="{FLOW_NS}">{inner}{nl}</messageFlowDefinitionSet>'
    answer = rpc(sim, "messaging.start_local_flow", flow_params(xml=xml, force_language="nl"))
    assert answer["error"] is None
    assert sim.state.flows()[0]["languages"] == ["en", "nl"]


def _broken(old: str, new: str) -> str:
    assert old in FLOW_XML
    return FLOW_XML.replace(old, new)


@pytest.mark.parametrize(
    ("xml", "detail"),
    [
        ("<messageFlowDefinition", "not well-formed"),
        (FLOW_XML.replace(f' xmlns="{FLOW_NS}"', ""), "root"),
        (f'<messageFlowRun xmlns="{FLOW_NS}"/>', "root"),
        (f'<messageFlowDefinitionSet xmlns="{FLOW_NS}"/>', "at least one definition"),
        (_broken('startReference="message_ask"', 'startReference="nowhere"'), "startReference"),
        (_broken('reference="flush_f"', 'reference="nowhere"'), "message/answer@reference"),
        (
            _broken(
                '<resultsFlush id="flush_f" reference="end_done"/>',
                '<resultsFlush id="flush_f" reference="gone"/>',
            ),
            "resultsFlush@reference",
        ),
        (_broken('<end id="end_done"/>', ""), "missing"),
        (_broken('<end id="end_done"/>', '<end id="end_done"/><end id="end_done"/>'), "duplicate"),
        (_broken('name="order" ', ""), "name"),
    ],
)
def test_start_local_flow_invalid_xml_is_40003(
    sim: RogerthatSimServer, xml: str, detail: str
) -> None:
    answer = rpc(sim, "messaging.start_local_flow", flow_params(xml=xml))
    assert error_code(answer) == 40003
    assert detail in answer["error"]["error"]
    assert sim.state.flows() == []


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"members": []}, 40005),
        (
            {"members": ["friend1@example.com", "friend2@example.com"], "parent_message_key": "pk"},
            40004,
        ),
        ({"tag": "__rt__mine"}, 30044),
        ({"force_language": "fr"}, 40009),
        ({"service_identity": "other"}, 60000),
        ({"xml": None}, 1000),
        ({"members": "friend1@example.com"}, 1000),
    ],
)
def test_start_local_flow_refusals(
    sim: RogerthatSimServer, overrides: dict[str, Any], code: int
) -> None:
    assert error_code(rpc(sim, "messaging.start_local_flow", flow_params(**overrides))) == code


def test_start_local_flow_needs_friends(sim: RogerthatSimServer) -> None:
    stranger = {"member": "stranger@example.com", "app_id": "city-app", "alert_flags": 2}
    params = flow_params(members=["friend1@example.com", stranger])
    answer = rpc(sim, "messaging.start_local_flow", params)
    assert answer["error"] == {
        "code": 40002,
        "message": "Non-friend members supplied!",
        "non_members": [{"member": "stranger@example.com", "app_id": "city-app"}],
    }
    sim_post(sim, "friends", {"add": [{"email": "stranger@example.com", "app_id": "city-app"}]})
    assert rpc(sim, "messaging.start_local_flow", params)["error"] is None
