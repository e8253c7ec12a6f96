"""The ContactAtOnce in-app simulator speaks the documented REST format and calls us back.

Requests are built by hand here (not with the production adapter), callbacks are received by a
small HTTP endpoint in a thread, and every wait is on a condition with a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request

from shared.providers.sandbox.contactatonce import (
    FIRST_VISIT_ID,
    ContactAtOnceSimConfig,
    ContactAtOnceSimServer,
    parse_listing,
    scenario,
    us_time,
)

API_KEY, INBOUND_KEY = "sim-api-key", "sim-inbound-key"
API = "/api/v1.0/AsyncConversation"
REPO = Path(__file__).resolve().parents[2]


class Receiver:
    """Our side of the callbacks: records every POST; answers queued statuses first, else 200."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.cond = threading.Condition()
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        req = Request(environ)
        with self.cond:
            status = self.statuses.pop(0) if self.statuses else 200
            self.calls.append({"path": req.path, "headers": dict(req.headers),
                               "body": json.loads(req.get_data(as_text=True)),
                               "status": status})
            self.cond.notify_all()
        start_response(f"{status} X", [("Content-Type", "application/json")])
        return [json.dumps({"Status": 0 if status == 200 else 1,
                            "FailureDescription": None}).encode()]

    def wait_for(self, count: int, path: str | None = None,
                 timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until ``count`` calls (to ``path``, when given) arrived; all such calls."""
        def matching() -> list[dict[str, Any]]:
            return [c for c in self.calls if path in (None, c["path"])]
        with self.cond:
            assert self.cond.wait_for(lambda: len(matching()) >= count, timeout), self.calls
            return matching()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


STATUS_PATH = "/callbacks/contactatonce/status"
MESSAGES_PATH = "/callbacks/contactatonce/messages"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.stop()


@pytest.fixture
def sim(receiver: Receiver) -> Iterator[ContactAtOnceSimServer]:
    config = ContactAtOnceSimConfig(api_key=API_KEY, callback_base_url=receiver.base_url + "/",
                                    callback_delay=0.02)
    with ContactAtOnceSimServer(config) as server:
        yield server


def call(sim: ContactAtOnceSimServer, method: str, path: str, body: Any = None,
         auth: str | None = f"Basic {API_KEY}") -> requests.Response:
    headers = {"Accept": "version=2;", "Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    data = body if isinstance(body, str | None) else json.dumps(body)
    return requests.request(method, sim.base_url + path, data=data, headers=headers, timeout=10)


def start_body(consumer_id: str = "c-1", **fields: Any) -> dict[str, Any]:
    body = {"AdvertiserId": "12345", "ConsumerId": consumer_id, "SessionId": "abc1234",
            "ExternalMessageId": "ext-1", "Message": "Do you offer special financing?"}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


def start(sim: ContactAtOnceSimServer, consumer_id: str = "c-1", **fields: Any) -> int:
    resp = call(sim, "POST", f"{API}/Start", start_body(consumer_id, **fields))
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["Status"] == 0, answer
    return answer["VisitId"]


def sim_post(sim: ContactAtOnceSimServer, name: str, body: Any) -> requests.Response:
    return requests.post(f"{sim.base_url}/_sim/{name}", json=body, timeout=10)


def sim_get(sim: ContactAtOnceSimServer, name: str) -> Any:
    return requests.get(f"{sim.base_url}/_sim/{name}", timeout=10).json()


# --------------------------------------------------------------------------------------
# Auth and validation
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("auth", [None, "Basic wrong", f"Bearer {API_KEY}", API_KEY, "Basic"])
def test_unauthorized_calls_get_401_status_1(sim, auth):
    resp = call(sim, "POST", f"{API}/Start", start_body(), auth=auth)
    assert resp.status_code == 401
    assert resp.json()["Status"] == 1 and resp.json()["FailureDescription"]
    assert sim.state.conversations() == []
    assert sim_get(sim, "requests")["requests"][0]["http_status"] == 401


@pytest.mark.parametrize("missing", ["AdvertiserId", "ConsumerId", "SessionId",
                                     "ExternalMessageId", "Message"])
def test_start_requires_each_field(sim, missing):
    for value in (..., "", None, "  "):
        resp = call(sim, "POST", f"{API}/Start", start_body(**{missing: value}))
        assert resp.status_code == 400
        assert resp.json() == {"Status": 1, "FailureDescription": f"{missing} is required"}


@pytest.mark.parametrize(("body", "field"), [
    (start_body(Device=5.5), "Device"), (start_body(ListingDetails=["a"]), "ListingDetails"),
    (start_body(Message={"text": "x"}), "Message"),
])
def test_start_refuses_wrong_types(sim, body, field):
    resp = call(sim, "POST", f"{API}/Start", body)
    assert resp.status_code == 400 and resp.json()["FailureDescription"].startswith(field)


@pytest.mark.parametrize("body", ["not json", "[1]", ""])
def test_body_must_be_a_json_object(sim, body):
    resp = call(sim, "POST", f"{API}/Start", body)
    assert resp.status_code == 400 and resp.json()["Status"] == 1


@pytest.mark.parametrize(("change", "description"), [
    ({"VisitId": None}, "VisitId is required"),
    ({"VisitId": "12x"}, "VisitId must be an integer"),
    ({"VisitId": True}, "VisitId must be an integer"),
    ({"MessageId": None}, "MessageId is required"),
    ({"MessageId": 5.5}, "MessageId must be a string"),
    ({"ExternalMessageId": None}, "ExternalMessageId is required"),
    ({"Message": ""}, "Message is required"),
    ({"SessionId": None}, "SessionId is required"),
])
def test_send_message_validation(sim, change, description):
    visit_id = start(sim)
    body = {"VisitId": visit_id, "MessageId": "1", "ExternalMessageId": "ext-2",
            "Message": "Hi", "SessionId": "abc1234", **change}
    resp = call(sim, "POST", f"{API}/SendMessage", body)
    assert resp.status_code == 400
    assert resp.json() == {"Status": 1, "FailureDescription": description}


def test_unknown_operation_is_404(sim):
    assert call(sim, "GET", f"{API}/Start").status_code == 404
    assert call(sim, "POST", f"{API}/Nope", {}).status_code == 404
    assert call(sim, "GET", "/api/v2/Other/GetTranscript/1").status_code == 404


# --------------------------------------------------------------------------------------
# Conversations
# --------------------------------------------------------------------------------------

def test_start_assigns_numeric_visit_ids_and_records_everything(sim):
    body = start_body(ConsumerFirstName="Bob", ConsumerLastName="Johnson", Device="iPhone 6+",
                      ListingDetails="year=2014\u00ffmake=Ford\u00ffmodel=F150")
    resp = call(sim, "POST", f"{API}/Start", body)
    assert resp.json() == {"VisitId": FIRST_VISIT_ID, "ConsumerId": "c-1",
                           "SessionId": "abc1234", "Status": 0, "FailureDescription": ""}
    assert start(sim, "c-2", AdvertiserId=12345) == FIRST_VISIT_ID + 1
    visit = sim.state.visit(FIRST_VISIT_ID)
    assert visit["listing"] == {"year": "2014", "make": "Ford", "model": "F150"}
    assert visit["consumer"]["Device"] == "iPhone 6+"
    assert visit["messages"][0]["speaker_name"] == "Bob Johnson"
    assert isinstance(visit["messages"][0]["message_id"], int)
    assert sim.state.visit(FIRST_VISIT_ID + 1)["advertiser_id"] == "12345"


def test_send_message_into_a_visit(sim):
    visit_id = start(sim)
    first_id = sim.state.visit(visit_id)["messages"][0]["message_id"]
    body = {"VisitId": str(visit_id), "MessageId": str(first_id), "ExternalMessageId": "ext-2",
            "Message": "Any 3 bedroom apartments?", "SessionId": "abc1234"}
    resp = call(sim, "POST", f"{API}/SendMessage", body)
    assert resp.json() == {"VisitId": visit_id, "ConsumerId": "c-1", "SessionId": None,
                           "Status": 0, "FailureDescription": ""}
    messages = sim.state.visit(visit_id)["messages"]
    assert [m["external_message_id"] for m in messages] == ["ext-1", "ext-2"]
    assert messages[1]["reply_to"] == str(first_id)
    assert messages[1]["message_id"] == messages[0]["message_id"] + 1


def _send_body(visit_id: int, message_id: Any, external: str = "ext-2") -> dict[str, Any]:
    return {"VisitId": visit_id, "MessageId": message_id, "ExternalMessageId": external,
            "Message": "Any news?", "SessionId": "abc1234"}


def test_send_message_names_an_agent_message_or_none(sim, receiver):
    visit_id = start(sim, "c-1-silent")
    agent_id = sim.state.add_agent_message(visit_id, "Which model?")
    for message_id, external in (("", "ext-2"), (agent_id, "ext-3"), (f" {agent_id} ", "ext-4")):
        resp = call(sim, "POST", f"{API}/SendMessage", _send_body(visit_id, message_id, external))
        assert (resp.status_code, resp.json()["Status"]) == (200, 0), resp.text
    consumer = [m for m in sim.state.visit(visit_id)["messages"]
                if m["speaker_role"] == "Consumer"]
    assert [m["reply_to"] for m in consumer[1:]] == [None, str(agent_id), str(agent_id)]


@pytest.mark.parametrize("foreign", ["other-visit", "ours", 99999999])
def test_send_message_with_a_message_id_not_of_the_visit_is_refused(sim, receiver, foreign):
    """The document's failure shape (Status 1 and a description), like an unknown VisitId;
    nothing is stored and no receipt goes out. "ours" is what the adapter used to send: its
    own ExternalMessageId in CAO's field."""
    visit_id = start(sim, "c-1-silent")
    other = start(sim, "c-2-silent", ExternalMessageId="ext-9")
    message_id = {"other-visit": sim.state.visit(other)["messages"][0]["message_id"],
                  "ours": "ext-1"}.get(foreign, foreign)
    resp = call(sim, "POST", f"{API}/SendMessage", _send_body(visit_id, message_id))
    assert resp.status_code == 200
    assert resp.json() == {"Status": 1, "FailureDescription":
                           f"MessageId {message_id} is not a message of VisitId {visit_id}"}
    assert len(sim.state.visit(visit_id)["messages"]) == 1
    assert sim.state.dispatcher.pending() == 0


def test_send_message_to_unknown_visit_is_status_1(sim):
    body = {"VisitId": 4, "MessageId": "1", "ExternalMessageId": "e", "Message": "m",
            "SessionId": "s"}
    resp = call(sim, "POST", f"{API}/SendMessage", body)
    assert resp.status_code == 200
    assert resp.json() == {"Status": 1, "FailureDescription": "VisitId 4 not found"}


def test_repeated_external_message_id_is_flagged(sim):
    first, second = start(sim), start(sim)
    assert first != second
    assert sim.state.visit(second)["messages"][0]["duplicate_external_id"] is True
    assert sim.state.visit(first)["messages"][0]["duplicate_external_id"] is False


def test_get_conversations_like_the_sample(sim):
    visit_id = start(sim, "c/1 x")
    start(sim, "other")
    resp = call(sim, "GET", f"{API}/GetConversations/c%2F1%20x")
    answer = resp.json()
    assert (answer["Status"], answer["FailureDescription"], answer["ConsumerId"]) == (
        0, None, "c/1 x")
    (item,) = answer["Conversations"]
    assert item == {"AdvertiserId": "12345", "AdvertiserName": "Sandbox Motors", "AgentName": "",
                    "SessionId": "abc1234", "VisitId": str(visit_id),
                    "LastMessageDateTime": item["LastMessageDateTime"],
                    "LastMessage": "Do you offer special financing?", "Status": "0"}
    assert item["LastMessageDateTime"].endswith(("AM", "PM"))
    assert call(sim, "GET", f"{API}/GetConversations/nobody").json()["Conversations"] == []


def test_get_transcript(sim, receiver):
    visit_id = start(sim, "c-1-read")
    receiver.wait_for(2, STATUS_PATH)
    resp = call(sim, "get", f"/api/V1.0/asyncconversation/gettranscript/{visit_id}")
    answer = resp.json()
    assert answer["VisitId"] == visit_id and answer["NumMessages"] == 1
    assert answer["TotalUnreadConsumerMessages"] == 0
    (message,) = answer["Messages"]
    assert set(message) == {"TimeStamp", "SpeakerName", "SpeakerRole", "Message", "MediaURL",
                            "MessageId", "ExternalMessageId", "Status"}
    assert (message["SpeakerRole"], message["ExternalMessageId"], message["Status"]) == (
        "Consumer", "ext-1", 2)
    assert call(sim, "GET", f"{API}/GetTranscript/999").json()["Status"] == 1
    assert call(sim, "GET", f"{API}/GetTranscript/abc").status_code == 400


# --------------------------------------------------------------------------------------
# Scenarios and callbacks
# --------------------------------------------------------------------------------------

def _receipt(call_entry: dict[str, Any]) -> str:
    return call_entry["body"]["MessageStatus"]


def test_default_scenario_posts_one_delivered_receipt(sim, receiver):
    visit_id = start(sim)
    (receipt,) = receiver.wait_for(1, STATUS_PATH)
    message_id = sim.state.visit(visit_id)["messages"][0]["message_id"]
    assert receipt["body"] == {"VisitId": str(visit_id), "SessionId": "abc1234",
                               "ConsumerId": "c-1", "ExternalMessageId": "ext-1",
                               "MessageId": str(message_id), "MessageStatus": "1"}
    assert receipt["headers"]["Authorization"] == f"Basic {API_KEY}"  # as the doc shows
    assert receipt["headers"]["Accept"] == "version=2;"
    assert receipt["headers"]["Content-Type"].startswith("application/json")
    assert sim.state.wait_until(lambda s: len(s.delivered("status")) == 1)
    assert sim.state.visit(visit_id)["messages"][0]["status"] == 1


def test_read_scenario_posts_delivered_then_read(sim, receiver):
    start(sim, "c-1-READ")
    receipts = receiver.wait_for(2, STATUS_PATH)
    assert [_receipt(r) for r in receipts] == ["1", "2"]


def test_agent_scenario_replies_after_the_receipts(sim, receiver):
    visit_id = start(sim, "c-1-agent", ConsumerFirstName="Bob")
    calls = receiver.wait_for(3)
    assert [c["path"] for c in calls] == [STATUS_PATH, STATUS_PATH, MESSAGES_PATH]
    reply = calls[2]["body"]
    agent = sim.state.visit(visit_id)["messages"][1]
    assert reply == {"VisitId": str(visit_id), "SessionId": "abc1234", "ConsumerId": "c-1-agent",
                     "DateTime": reply["DateTime"], "MessageId": str(agent["message_id"]),
                     "Message": 'Thanks, Bob! About "Do...": an agent will follow up shortly.',
                     "MediaURL": "", "AgentName": "Sam Simulator",
                     "AgentImageURL": "https://media.contactatonce.invalid/agents/sam.png"}
    assert len(reply["DateTime"]) == 19 and reply["DateTime"][10] == "T"
    assert calls[2]["headers"]["Authorization"] == f"Basic {API_KEY}"
    assert agent["speaker_role"] == "Agent"
    conversations = call(sim, "GET", f"{API}/GetConversations/c-1-agent").json()
    assert conversations["Conversations"][0]["AgentName"] == "Sam Simulator"


def test_silent_scenario_posts_nothing(sim, receiver):
    start(sim, "c-1-silent")
    start(sim, "c-2", ExternalMessageId="ext-2")  # due at the same time, queued after
    (receipt,) = receiver.wait_for(1)
    assert receipt["body"]["ExternalMessageId"] == "ext-2"
    assert sim.state.wait_until(lambda s: len(s.callbacks()) == 1)
    assert sim.state.dispatcher.pending() == 0


def test_refuse_scenario_is_status_1_and_stores_nothing(sim):
    resp = call(sim, "POST", f"{API}/Start", start_body("c-1-refuse"))
    assert resp.status_code == 200
    assert resp.json()["Status"] == 1 and "c-1-refuse" in resp.json()["FailureDescription"]
    assert sim.state.conversations() == []


def test_failed_callbacks_are_retried(sim, receiver):
    receiver.statuses = [500, 503]
    start(sim)
    calls = receiver.wait_for(3)
    assert [c["status"] for c in calls] == [500, 503, 200]
    assert sim.state.wait_until(lambda s: len(s.callbacks()) == 3)
    assert [c["outcome"] for c in sim.state.callbacks()] == ["retry", "retry", "delivered"]
    assert [c["attempt"] for c in sim.state.callbacks()] == [1, 2, 3]


def test_a_separate_inbound_key_replaces_the_api_key_on_callbacks(receiver):
    config = ContactAtOnceSimConfig(api_key=API_KEY, inbound_key=INBOUND_KEY,
                                    callback_base_url=receiver.base_url, callback_delay=0.0)
    with ContactAtOnceSimServer(config) as server:
        start(server)
        (receipt,) = receiver.wait_for(1, STATUS_PATH)
        assert receipt["headers"]["Authorization"] == f"Basic {INBOUND_KEY}"
        assert sim_post(server, "config", {"inbound_key": None}).status_code == 200
        start(server, ExternalMessageId="ext-2")
        receipts = receiver.wait_for(2, STATUS_PATH)
        assert receipts[1]["headers"]["Authorization"] == f"Basic {API_KEY}"
    with pytest.raises(TypeError, match="inbound_key"):
        ContactAtOnceSimConfig(inbound_key=5)  # type: ignore[arg-type]


def test_callbacks_without_a_base_url_are_recorded_only():
    config = ContactAtOnceSimConfig(api_key=API_KEY, callback_delay=0.0)
    with ContactAtOnceSimServer(config) as server:
        start(server)
        assert server.state.wait_until(lambda s: len(s.callbacks()) == 1)
        (entry,) = server.state.callbacks()
        assert (entry["outcome"], entry["url"]) == ("unsent", None)


# --------------------------------------------------------------------------------------
# Control API
# --------------------------------------------------------------------------------------

def test_agent_reply_control(sim, receiver):
    visit_id = start(sim, "c-1-silent")
    resp = sim_post(sim, "agent-reply", {"visit_id": str(visit_id), "message": "Here you go",
                                         "agent_name": "Joe Lewis",
                                         "media_url": "https://m/car.png"})
    assert resp.status_code == 202
    (posted,) = receiver.wait_for(1, MESSAGES_PATH)
    body = posted["body"]
    assert (body["Message"], body["AgentName"], body["MediaURL"], body["MessageId"]) == (
        "Here you go", "Joe Lewis", "https://m/car.png", str(resp.json()["message_id"]))
    transcript = call(sim, "GET", f"{API}/GetTranscript/{visit_id}").json()
    assert [m["SpeakerName"] for m in transcript["Messages"]][1] == "Joe Lewis"
    assert sim_post(sim, "agent-reply", {"visit_id": 1, "message": "x"}).status_code == 404
    assert sim_post(sim, "agent-reply", {"visit_id": visit_id}).status_code == 400
    assert sim_post(sim, "agent-reply", {"visit_id": "x", "message": "m"}).status_code == 400


def test_receipt_control(sim, receiver):
    visit_id = start(sim, "c-1-silent", ExternalMessageId="att-9")
    resp = sim_post(sim, "receipt", {"external_message_id": "att-9", "status": "2"})
    assert resp.status_code == 202
    (posted,) = receiver.wait_for(1, STATUS_PATH)
    assert (posted["body"]["MessageStatus"], posted["body"]["VisitId"]) == ("2", str(visit_id))
    assert sim_post(sim, "receipt", {"external_message_id": "nope", "status": 1}).status_code == 404
    assert sim_post(sim, "receipt", {"external_message_id": "att-9", "status": 3}).status_code == 400
    assert sim_post(sim, "receipt", {"status": 1}).status_code == 400


def test_faults_apply_to_the_next_calls_in_order(sim):
    sim_post(sim, "faults", {"kind": "http503", "retry_after": 4})
    resp = sim_post(sim, "faults", {"kind": "refuse", "description": "Busy, try again",
                                    "count": 2})
    assert [f["kind"] for f in resp.json()["faults"]] == ["http503", "refuse", "refuse"]
    first = call(sim, "POST", f"{API}/Start", start_body())
    assert (first.status_code, first.headers["Retry-After"]) == (503, "4")
    for _ in range(2):
        answer = call(sim, "POST", f"{API}/Start", start_body()).json()
        assert answer == {"Status": 1, "FailureDescription": "Busy, try again"}
    assert sim.state.conversations() == []
    assert start(sim) == FIRST_VISIT_ID
    assert [r["fault"] and r["fault"]["kind"] for r in sim_get(sim, "requests")["requests"]] == [
        "http503", "refuse", "refuse", None]


def test_http500_and_slow_faults_execute(sim):
    sim_post(sim, "faults", {"kind": "http500"})
    sim_post(sim, "faults", {"kind": "slow", "seconds": 0.05})
    assert call(sim, "POST", f"{API}/Start", start_body()).status_code == 500
    assert call(sim, "POST", f"{API}/Start", start_body()).json()["Status"] == 0
    assert len(sim.state.conversations()) == 2
    assert sim_get(sim, "faults") == {"faults": []}


@pytest.mark.parametrize("body", [{"kind": "boom"}, {"kind": "slow", "seconds": -1},
                                  {"kind": "refuse", "description": 5}, [1]])
def test_bad_faults_are_refused(sim, body):
    assert sim_post(sim, "faults", body).status_code == 400


def test_config_and_reset(sim, receiver):
    assert sim_get(sim, "config")["callback_base_url"] == receiver.base_url
    assert sim_post(sim, "config", {"agent_name": "Ann"}).json()["agent_name"] == "Ann"
    assert sim_post(sim, "config", {"nope": 1}).status_code == 400
    assert sim_post(sim, "config", {"callback_delay": -1}).status_code == 400
    first = start(sim)
    receiver.wait_for(1)
    assert sim.state.wait_until(lambda s: len(s.callbacks()) == 1)
    sim_post(sim, "faults", {"kind": "http500"})
    assert sim_post(sim, "reset", {}).json() == {"ok": True}
    assert sim_get(sim, "conversations") == {"conversations": []}
    assert sim_get(sim, "callbacks") == {"callbacks": []}
    assert sim_get(sim, "requests") == {"requests": []}
    assert sim_get(sim, "faults") == {"faults": []}
    assert start(sim) == first + 1  # ids are never reused


def test_helpers():
    assert scenario("abc-Agent") == "agent" and scenario("agent") == "default"
    assert scenario("x-silent") == "silent" and scenario("x-refuse") == "refuse"
    assert parse_listing("a=1\u00ffb\u00ffc=x=y") == {"a": "1", "b": "", "c": "x=y"}
    assert us_time(1434384780) == "6/15/2015 4:13 PM"
    assert us_time(1434326400) == "6/15/2015 12:00 AM"


@pytest.mark.parametrize(("inbound", "presented"), [(None, "cli-key"), ("", "cli-key"),
                                                  ("cli-inbound", "cli-inbound")])
def test_cli_callback_key_follows_the_settings(monkeypatch, inbound, presented):
    """Without an inbound key the simulator's callbacks present the API key, as documented."""
    from shared.providers.sandbox.contactatonce import _parse_args
    from shared.settings import get_settings

    monkeypatch.setenv("SWITCHBOARD_CONTACTATONCE_API_KEY", "cli-key")
    monkeypatch.delenv("SWITCHBOARD_CONTACTATONCE_INBOUND_KEY", raising=False)
    if inbound is not None:
        monkeypatch.setenv("SWITCHBOARD_CONTACTATONCE_INBOUND_KEY", inbound)
    get_settings.cache_clear()
    try:
        assert _parse_args([]).inbound_key == presented
    finally:
        get_settings.cache_clear()


def test_cli_serves_until_sigterm(receiver: Receiver) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_CONTACTATONCE_INBOUND_KEY"}
    env["SWITCHBOARD_CONTACTATONCE_API_KEY"] = "cli-key"
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.providers.sandbox.contactatonce", "--port", "0",
         "--callback-base-url", receiver.base_url, "--callback-delay", "0"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split("listening on ", 1)[1].split()[0]
        resp = requests.post(url + "api/v1.0/AsyncConversation/Start", json=start_body(),
                             headers={"Authorization": "Basic cli-key"}, timeout=5)
        assert resp.json()["Status"] == 0
        (receipt,) = receiver.wait_for(1)
        assert receipt["headers"]["Authorization"] == "Basic cli-key"  # the doc's callbacks
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
