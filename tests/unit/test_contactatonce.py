"""The ContactAtOnce in-app adapter: request bodies, error classes, callbacks, listings, auth.

Transport tests run against real HTTP servers on 127.0.0.1 (port 0): the simulator for
behaviour it models (auth, refusals, injected faults) and a tiny canned-reply server for replies
it never gives (unreadable bodies, 429, dropped connections), so requests/urllib3 raise the
exceptions they raise in production.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from pydantic import SecretStr

from shared.providers.base import (
    AccountRefusal,
    AmbiguousError,
    CallbackError,
    OutboundMessage,
    PermanentError,
    RetryableError,
    SendContext,
)
from shared.providers.contactatonce import (
    ContactAtOnceService,
    listing_details,
    parse_callback,
    parse_datetime,
    parse_message,
    parse_status,
)
from shared.providers.sandbox.contactatonce import ContactAtOnceSimConfig, ContactAtOnceSimServer
from shared.schemas import SendRequest
from shared.settings import Settings

API_KEY, INBOUND_KEY = "cao-key-123", "inbound-key-456"
START = "/api/v1.0/AsyncConversation/Start"
SEND = "/api/v1.0/AsyncConversation/SendMessage"


def service(url: str, timeout: float = 2.0, inbound_key: str = INBOUND_KEY,
            api_key: str = API_KEY) -> ContactAtOnceService:
    session = requests.Session()
    session.trust_env = False  # never route the local test server through an env proxy
    return ContactAtOnceService(url, api_key, "adv-1", inbound_key, timeout=timeout,
                                session=session)


def message(text: str | None = "Do you offer financing?", attempt_id: str = "att-1",
            **content: Any) -> OutboundMessage:
    values: dict[str, Any] = {"advertiser_id": "12345", "consumer_id": "c-1",
                              "session_id": "abc1234", "visit_id": None}
    values.update(content)
    return OutboundMessage(attempt_id=attempt_id, channel="inapp", phones=(), text=text,
                           content=values)


# --------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------

@pytest.fixture
def sim() -> Iterator[ContactAtOnceSimServer]:
    with ContactAtOnceSimServer(ContactAtOnceSimConfig(api_key=API_KEY)) as server:
        yield server


Behaviour = Callable[[BaseHTTPRequestHandler], None]


class Stub:
    """Serves one canned behaviour; records (method, path, headers, body) of each request."""

    def __init__(self) -> None:
        self.behaviour: Behaviour = reply(200, {"Status": 0, "VisitId": 1})
        self.seen: list[tuple[str, str, dict[str, str], Any]] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw) if raw else None
                outer.seen.append((self.command, self.path, dict(self.headers), body))
                outer.behaviour(self)

            do_GET = do_POST = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Behaviour:
    """A canned answer; dicts and lists are sent as JSON, strings as they are."""
    data = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")

    def behaviour(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                            **(headers or {})}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
    return behaviour


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    yield server
    server.close()


# --------------------------------------------------------------------------------------
# Request building
# --------------------------------------------------------------------------------------

def test_start_body_in_doc_order_with_every_optional():
    msg = message(consumer={"first_name": "Bob", "last_name": "Johnson", "phone": "14045551212",
                            "device": "iPhone 6+", "os_version": "1.0"},
                  listing_details={"year": "2014", "make": "Ford", "model": "F150"})
    summary = service("http://cao.test").summarize(msg)
    assert summary["method"] == "POST" and summary["path"] == START
    assert summary["url"] == "http://cao.test" + START
    assert list(summary["body"].items()) == [
        ("AdvertiserId", "12345"), ("ConsumerId", "c-1"), ("SessionId", "abc1234"),
        ("ExternalMessageId", "att-1"), ("Message", "Do you offer financing?"),
        ("Device", "iPhone 6+"), ("OSVersion", "1.0"), ("ConsumerFirstName", "Bob"),
        ("ConsumerLastName", "Johnson"), ("ConsumerPhoneNumber", "14045551212"),
        ("ListingDetails", "year=2014\u00ffmake=Ford\u00ffmodel=F150"),
    ]


def test_summary_redacts_the_api_key():
    summary = service("http://cao.test/").summarize(message())
    assert summary["headers"] == {"Authorization": "Basic [redacted]",
                                  "Accept": "version=2;",
                                  "Content-Type": "application/json; charset=utf-8"}
    assert API_KEY not in json.dumps(summary)


def test_start_omits_absent_optionals_and_defaults_the_advertiser():
    msg = message(advertiser_id=None, consumer={"first_name": None, "phone": ""},
                  listing_details={})
    body = service("http://cao.test/").summarize(msg)["body"]
    assert body == {"AdvertiserId": "adv-1", "ConsumerId": "c-1", "SessionId": "abc1234",
                    "ExternalMessageId": "att-1", "Message": "Do you offer financing?"}


@pytest.mark.parametrize(("content", "message_id", "visit_id"), [
    ({"visit_id": "12272283", "reply_to": "998877"}, "998877", 12272283),
    ({"visit_id": "12272283"}, "", 12272283),
    ({"visit_id": 5125890558, "reply_to": None}, "", 5125890558),
    ({"visit_id": "V-77", "reply_to": ""}, "", "V-77"),
])
def test_send_message_body(content, message_id, visit_id):
    summary = service("http://cao.test/").summarize(message(**content))
    assert summary["path"] == SEND
    assert list(summary["body"].items()) == [
        ("VisitId", visit_id), ("MessageId", message_id), ("ExternalMessageId", "att-1"),
        ("Message", "Do you offer financing?"), ("SessionId", "abc1234"),
    ]


@pytest.mark.parametrize(("msg", "detail"), [
    (message(consumer_id=None), "consumer_id"),
    (message(session_id=""), "session_id"),
    (message(visit_id="1", session_id=None), "session_id"),
    (message(visit_id=""), "visit_id"),
    (message(text=None), "Message"),
    (message(text="  "), "Message"),
    (message(advertiser_id=7), "advertiser_id"),
    (message(consumer="Bob"), "consumer"),
    (message(consumer={"phone": 14045551212}), "phone"),
    (message(listing_details={"make": "Fo\u00ffrd"}), "separator"),
    (message(listing_details={"ma=ke": "Ford"}), "ma=ke"),
    (message(listing_details={"ma\u00ffke": "Ford"}), "listing_details name"),
    (message(listing_details={"": "Ford"}), "empty"),
    (message(listing_details={"year": 2014}), "strings"),
    (message(listing_details=["year=2014"]), "object"),
])
def test_unsendable_content_is_permanent(msg, detail):
    with pytest.raises(PermanentError) as info:
        service("http://cao.test/").summarize(msg)
    assert info.value.reason == "invalid_message"
    assert detail in info.value.detail


def test_other_channels_are_refused():
    msg = OutboundMessage(attempt_id="a", channel="sms", phones=("32470",), text="x")
    with pytest.raises(PermanentError, match="unsupported_channel"):
        service("http://cao.test/").send(msg)


def test_listing_details_helper():
    assert listing_details(None) is None and listing_details({}) is None
    assert listing_details({"a": "1=2", "b": ""}) == "a=1=2\u00ffb="


# --------------------------------------------------------------------------------------
# From a send request: recipient() and outbound()
# --------------------------------------------------------------------------------------

CONVERSATION = {"conversation_id": "conv-1", "advertiser_id": "12345", "consumer_id": "c-1",
                "session_id": "abc1234", "visit_id": "12272283", "reply_to": "998877",
                "consumer": {"first_name": "Bob"}, "listing_details": {"make": "Ford"}}


def send_request(**fields: Any) -> SendRequest:
    values: dict[str, Any] = {"conversation": {"consumer_id": "c-1"}, "route": ["inapp"],
                              "text": "Do you offer financing?"}
    values.update(fields)
    return SendRequest.model_validate(values)


def context(channel: str = "inapp", **fields: Any) -> SendContext:
    return SendContext(attempt_id="att-1", channel=channel, app_id="default", **fields)


def test_in_app_hops_join_conversations_and_name_the_consumer_to_the_consent_registry():
    assert ContactAtOnceService.uses_conversations is True
    recipient = service("http://cao.test/").recipient(send_request(), "inapp")
    assert (recipient.address, recipient.scope) == ("c-1", "adv-1")
    with pytest.raises(PermanentError, match="unsupported_channel"):
        service("http://cao.test/").recipient(send_request(), "sms")


def test_outbound_carries_the_text_and_the_resolved_conversation():
    request = send_request(texts={"inapp": "In-app wording"})
    msg = service("http://cao.test/").outbound(request, context(conversation=CONVERSATION))
    assert msg == OutboundMessage(attempt_id="att-1", channel="inapp", phones=(),
                                  text="In-app wording", content=CONVERSATION)
    summary = service("http://cao.test/").summarize(msg)  # it joins the known visit
    assert summary["path"] == SEND
    assert (summary["body"]["VisitId"], summary["body"]["MessageId"]) == (12272283, "998877")


def test_outbound_without_a_visit_opens_the_conversation():
    conversation = {**CONVERSATION, "visit_id": None, "reply_to": None}
    msg = service("http://cao.test/").outbound(send_request(),
                                               context(conversation=conversation))
    body = service("http://cao.test/").summarize(msg)["body"]
    assert (body["ConsumerId"], body["ConsumerFirstName"], body["ListingDetails"]) == (
        "c-1", "Bob", "make=Ford")


def test_outbound_without_the_conversation_is_a_clear_error():
    with pytest.raises(ValueError, match="conversation"):
        service("http://cao.test/").outbound(send_request(), context())


def test_outbound_refuses_another_providers_channel():
    with pytest.raises(PermanentError, match="unsupported_channel"):
        service("http://cao.test/").outbound(send_request(),
                                             context("viber", conversation=CONVERSATION))


# --------------------------------------------------------------------------------------
# Sending, against the simulator
# --------------------------------------------------------------------------------------

def test_start_against_the_simulator(sim):
    msg = message(consumer={"first_name": "Bob"}, listing_details={"make": "Ford", "y": "2014"})
    result = service(sim.url).send(msg)
    visit = sim.state.conversations()[0]
    assert result.provider_message_ids == {} and result.code == "0" and result.detail == ""
    assert result.conversation == {"visit_id": str(visit["visit_id"]), "consumer_id": "c-1",
                                   "session_id": "abc1234"}
    assert json.loads(result.raw)["VisitId"] == visit["visit_id"]
    assert visit["listing"] == {"make": "Ford", "y": "2014"}
    assert visit["messages"][0]["external_message_id"] == "att-1"
    (logged,) = sim.state.requests()
    assert logged["path"] == START
    assert logged["headers"]["Authorization"] == f"Basic {API_KEY}"
    assert logged["headers"]["Accept"] == "version=2;"


def test_follow_ups_name_only_the_providers_message_ids(sim):
    """MessageId is CAO's field: before any agent wrote it names nothing (our attempt id
    stays in ExternalMessageId), after that the agent's message; the simulator, which refuses
    a MessageId that is not one of the visit's, takes both."""
    adapter = service(sim.url)
    visit_id = adapter.send(message()).conversation["visit_id"]
    adapter.send(message("And a trade-in?", attempt_id="att-2", visit_id=visit_id))
    agent_id = sim.state.add_agent_message(int(visit_id), "Yes, bring it by")
    adapter.send(message("Saturday?", attempt_id="att-3", visit_id=visit_id,
                         reply_to=str(agent_id)))
    sends = [r["body"] for r in sim.state.requests() if r["path"] == SEND]
    assert [(b["MessageId"], b["ExternalMessageId"]) for b in sends] == [
        ("", "att-2"), (str(agent_id), "att-3")]
    consumer = [m for m in sim.state.visit(visit_id)["messages"]
                if m["speaker_role"] == "Consumer"]
    assert [(m["external_message_id"], m["reply_to"]) for m in consumer[1:]] == [
        ("att-2", None), ("att-3", str(agent_id))]


def test_a_message_id_from_another_conversation_is_refused(sim):
    adapter = service(sim.url)
    visit_id = adapter.send(message()).conversation["visit_id"]
    other = adapter.send(message(consumer_id="c-2", attempt_id="att-x")).conversation
    stranger = sim.state.add_agent_message(int(other["visit_id"]), "Hello from elsewhere")
    with pytest.raises(PermanentError) as info:
        adapter.send(message("Hi", attempt_id="att-2", visit_id=visit_id,
                             reply_to=str(stranger)))
    assert (info.value.reason, info.value.code) == ("provider_refused", "1")
    assert str(stranger) in info.value.detail
    assert len(sim.state.visit(visit_id)["messages"]) == 1


def test_send_message_falls_back_to_our_session_id(sim):
    adapter = service(sim.url)
    visit_id = adapter.send(message()).conversation["visit_id"]
    result = adapter.send(message("And a trade-in?", attempt_id="att-2", visit_id=visit_id,
                                  session_id="abc1234"))
    assert json.loads(result.raw)["SessionId"] is None
    assert result.conversation == {"visit_id": visit_id, "consumer_id": "c-1",
                                   "session_id": "abc1234"}
    assert [m["message"] for m in sim.state.visit(visit_id)["messages"]] == [
        "Do you offer financing?", "And a trade-in?"]


def test_wrong_api_key_is_auth_error(sim):
    with pytest.raises(AccountRefusal) as info:  # every message would be refused alike
        service(sim.url, api_key="wrong").send(message())
    assert (info.value.reason, info.value.code) == ("auth_error", "http_401")
    assert "denied" in info.value.detail


def test_status_1_is_permanent(sim):
    with pytest.raises(PermanentError) as info:
        service(sim.url).send(message(consumer_id="c-9-refuse"))
    assert (info.value.reason, info.value.code) == ("provider_refused", "1")
    assert "c-9-refuse" in info.value.detail


def test_unknown_visit_is_permanent(sim):
    with pytest.raises(PermanentError, match="not found"):
        service(sim.url).send(message(visit_id="999"))


@pytest.mark.parametrize("description", [
    "Service temporarily unavailable", "Please TRY AGAIN later", "Database timeout",
    "Server busy",
])
def test_status_1_that_says_temporary_is_retryable(sim, description):
    sim.state.add_faults({"kind": "refuse", "description": description})
    with pytest.raises(RetryableError) as info:
        service(sim.url).send(message())
    assert (info.value.reason, info.value.detail, info.value.code) == (
        "temporary_error", description, "1")


def test_http_503_is_retryable_with_retry_after(sim):
    sim.state.add_faults({"kind": "http503", "retry_after": 7})
    with pytest.raises(RetryableError) as info:
        service(sim.url).send(message())
    assert (info.value.reason, info.value.retry_after) == ("http_503", 7.0)
    assert sim.state.conversations() == []


def test_http_500_is_ambiguous(sim):
    sim.state.add_faults({"kind": "http500"})
    with pytest.raises(AmbiguousError) as info:
        service(sim.url).send(message())
    assert info.value.reason == "http_500"
    assert len(sim.state.conversations()) == 1  # it did take effect


def test_read_timeout_is_ambiguous(sim):
    sim.state.add_faults({"kind": "slow", "seconds": 1.0})
    with pytest.raises(AmbiguousError) as info:
        service(sim.url, timeout=0.2).send(message())
    assert info.value.reason == "timeout_after_send"


def test_closed_port_is_retryable():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(RetryableError) as info:
        service(f"http://127.0.0.1:{port}/").send(message())
    assert info.value.reason == "connection_failed"


# --------------------------------------------------------------------------------------
# Replies the simulator never gives, from the stub
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "cls", "reason"), [
    (429, RetryableError, "http_429"), (502, RetryableError, "http_502"),
    (504, RetryableError, "http_504"), (403, AccountRefusal, "auth_error"),
    (404, PermanentError, "http_404"), (400, PermanentError, "http_400"),
    (301, PermanentError, "http_301"), (501, AmbiguousError, "http_501"),
])
def test_http_status_classes(stub, status, cls, reason):
    stub.behaviour = reply(status, {"Status": 1, "FailureDescription": "ConsumerId is required"},
                           {"Retry-After": "3"})
    with pytest.raises(cls) as info:
        service(stub.url).send(message())
    assert type(info.value) is cls
    assert (info.value.reason, info.value.code) == (reason, f"http_{status}")
    assert info.value.detail == "ConsumerId is required"
    if cls is RetryableError:
        assert info.value.retry_after == 3.0


def test_http_error_without_json_keeps_the_text(stub):
    stub.behaviour = reply(404, "<html>Not Found</html>")
    with pytest.raises(PermanentError) as info:
        service(stub.url).send(message())
    assert info.value.detail == "<html>Not Found</html>"


@pytest.mark.parametrize("body", [
    "not json", "", "[1, 2]", {"VisitId": 1}, {"Status": "ok", "VisitId": 1},
    {"Status": 7, "VisitId": 1}, {"Status": True, "VisitId": 1},
])
def test_unreadable_2xx_is_ambiguous(stub, body):
    stub.behaviour = reply(200, body)
    with pytest.raises(AmbiguousError) as info:
        service(stub.url).send(message())
    assert info.value.reason == "unreadable_response"


@pytest.mark.parametrize("body", [
    {"Status": 0}, {"Status": "0", "VisitId": None, "FailureDescription": ""},
    {"Status": 0, "VisitId": ""},
])
def test_start_without_visit_id_is_ambiguous(stub, body):
    stub.behaviour = reply(200, body)
    with pytest.raises(AmbiguousError) as info:
        service(stub.url).send(message())
    assert info.value.reason == "no_visit_id"


@pytest.mark.parametrize(("status", "visit_id"), [
    ("0", "5125890558"), (0, 5125890558), (" 0 ", " 5125890558 ")])
def test_status_and_visit_id_as_strings_or_ints(stub, status, visit_id):
    stub.behaviour = reply(200, {"VisitId": visit_id, "ConsumerId": 12345, "SessionId": None,
                                 "Status": status, "FailureDescription": None})
    result = service(stub.url).send(message())
    assert result.conversation == {"visit_id": "5125890558", "consumer_id": "12345",
                                   "session_id": "abc1234"}
    assert result.detail == ""


@pytest.mark.parametrize("status", ["1", 1])
def test_status_1_as_string_or_int(stub, status):
    stub.behaviour = reply(200, {"Status": status, "FailureDescription": "Invalid AdvertiserId"})
    with pytest.raises(PermanentError) as info:
        service(stub.url).send(message())
    assert (info.value.reason, info.value.detail, info.value.code) == (
        "provider_refused", "Invalid AdvertiserId", "1")


def test_connection_dropped_is_ambiguous(stub):
    stub.behaviour = lambda handler: None  # read the request, then hang up without a reply
    with pytest.raises(AmbiguousError) as info:
        service(stub.url).send(message())
    assert info.value.reason == "connection_dropped"


def test_request_on_the_wire(stub):
    stub.behaviour = reply(200, {"VisitId": 42, "Status": 0})
    service(stub.url.rstrip("/")).send(message(listing_details={"make": "Ford"}))
    method, path, headers, body = stub.seen[0]
    assert (method, path) == ("POST", START)
    assert headers["Authorization"] == f"Basic {API_KEY}"
    assert headers["Accept"] == "version=2;"
    assert headers["Content-Type"].startswith("application/json")
    assert body["ListingDetails"] == "make=Ford"


# --------------------------------------------------------------------------------------
# Reads
# --------------------------------------------------------------------------------------

CONVERSATIONS_SAMPLE = {
    "Conversations": [
        {"AdvertiserId": "Marc", "AdvertiserName": "Nalley Lexus", "AgentName": "Jesse James",
         "SessionId": "abc123", "VisitId": "12272283", "LastMessageDateTime": "6/15/2015 4:13 PM",
         "LastMessage": "see you at 4:00", "Status": "0"},
        {"AdvertiserId": 77, "AdvertiserName": "B", "AgentName": None, "SessionId": 5,
         "VisitId": 12272284, "LastMessageDateTime": "yesterday", "LastMessage": "",
         "Status": 3},
    ],
    "Status": 0, "FailureDescription": None,
}


def test_get_conversations_normalises_the_doc_sample(stub):
    stub.behaviour = reply(200, CONVERSATIONS_SAMPLE)
    items = service(stub.url).get_conversations("a b/c?")
    assert stub.seen[0][:2] == ("GET", "/api/v1.0/AsyncConversation/GetConversations/a%20b%2Fc%3F")
    assert items == [
        {"advertiser_id": "Marc", "advertiser_name": "Nalley Lexus", "agent_name": "Jesse James",
         "session_id": "abc123", "visit_id": "12272283", "last_message_at": "2015-06-15T16:13:00",
         "last_message": "see you at 4:00", "status": 0, "status_name": "active"},
        {"advertiser_id": "77", "advertiser_name": "B", "agent_name": None, "session_id": "5",
         "visit_id": "12272284", "last_message_at": "yesterday", "last_message": "",
         "status": 3, "status_name": "awaiting_department_selection"},
    ]


TRANSCRIPT_MESSAGES = [
    {"TimeStamp": "6/12/2015 10:58 PM", "SpeakerName": "Joe Lewis", "SpeakerRole": "Agent",
     "Message": "Do you like ice cream?", "MediaURL": ""},
    {"TimeStamp": "2015-06-12T22:59:00Z", "SpeakerName": "Customer", "SpeakerRole": "Consumer",
     "Message": "Yes", "MediaURL": "https://m/x.png", "MessageId": 52369887,
     "ExternalMessageId": "att-1", "Status": "2"},
]


@pytest.mark.parametrize("key", ["Messages", "Message"])
def test_get_transcript_accepts_messages_or_message(stub, key):
    stub.behaviour = reply(200, {key: TRANSCRIPT_MESSAGES, "VisitId": 12272283,
                                 "ConsumerId": "1234", "SessionId": "abc123", "NumMessages": "2",
                                 "TotalUnreadConsumerMessages": 0, "Status": 0,
                                 "FailureDescription": None})
    transcript = service(stub.url).get_transcript(12272283)
    assert stub.seen[0][:2] == ("GET", "/api/v1.0/AsyncConversation/GetTranscript/12272283")
    assert transcript == {
        "visit_id": "12272283", "consumer_id": "1234", "session_id": "abc123",
        "num_messages": 2, "total_unread": 0,
        "messages": [
            {"timestamp": "2015-06-12T22:58:00", "speaker_name": "Joe Lewis",
             "speaker_role": "Agent", "message": "Do you like ice cream?", "media_url": None,
             "message_id": None, "external_message_id": None, "status": None},
            {"timestamp": "2015-06-12T22:59:00", "speaker_name": "Customer",
             "speaker_role": "Consumer", "message": "Yes", "media_url": "https://m/x.png",
             "message_id": "52369887", "external_message_id": "att-1", "status": 2},
        ],
    }


def test_reads_against_the_simulator(sim):
    adapter = service(sim.url)
    visit_id = adapter.send(message(consumer_id="c-2")).conversation["visit_id"]
    (item,) = adapter.get_conversations("c-2")
    assert (item["visit_id"], item["status_name"], item["last_message"]) == (
        visit_id, "active", "Do you offer financing?")
    transcript = adapter.get_transcript(visit_id)
    assert transcript["num_messages"] == 1
    assert transcript["messages"][0]["external_message_id"] == "att-1"
    assert adapter.get_conversations("nobody") == []
    with pytest.raises(PermanentError, match="not found"):
        adapter.get_transcript("4")


@pytest.mark.parametrize("behaviour", [
    reply(200, "garbage"), reply(200, {"Status": 0, "Conversations": "x"}),
    reply(200, {"Status": 0, "Conversations": [1]}), reply(500, "boom"),
    lambda handler: None,
])
def test_failed_reads_are_retryable(stub, behaviour):
    stub.behaviour = behaviour
    with pytest.raises(RetryableError):
        service(stub.url).get_conversations("c-1")


def test_read_refusal_and_auth_are_permanent(stub):
    stub.behaviour = reply(200, {"Status": 1, "FailureDescription": "Unknown consumer"})
    with pytest.raises(PermanentError, match="Unknown consumer"):
        service(stub.url).get_conversations("c-1")
    stub.behaviour = reply(401, {"Status": 1, "FailureDescription": "denied"})
    with pytest.raises(PermanentError, match="auth_error"):
        service(stub.url).get_transcript("1")


def test_read_timeout_is_retryable(stub):
    stub.behaviour = lambda handler: stub.release.wait(3)
    with pytest.raises(RetryableError) as info:
        service(stub.url, timeout=0.2).get_transcript("1")
    assert info.value.reason == "timeout_after_send"


# --------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------

MESSAGE_SAMPLE = {  # the doc's ReceiveMessage sample, commas restored
    "VisitId": "12617187", "SessionId": "abc123456", "ConsumerId": "128740954930930",
    "DateTime": "2015-01-01T00:00:00 ", "MessageId": "12345678",
    "Message": "that was a long message", "MediaURL": "https://media.cao.com/images/sbc.png",
    "AgentName": "Sally Salesperson", "AgentImageURL": "https://media.cao.com/images/sally.png",
}
STATUS_SAMPLE = {"VisitId": "12617187", "SessionId": "abc123456",
                 "ConsumerId": "128740954930930", "ExternalMessageId": "29393892",
                 "MessageId": "987654322", "MessageStatus": "2"}


def test_parse_message_sample():
    event = parse_message(MESSAGE_SAMPLE)
    assert (event.kind, event.dedupe_key, event.provider_message_id) == (
        "inbound", "contactatonce:message:12345678", "12345678")
    assert event.text == "that was a long message" and event.attempt_ref is None
    assert event.occurred_at == datetime(2015, 1, 1)
    assert event.raw == MESSAGE_SAMPLE
    assert event.data == {
        "visit_id": "12617187", "session_id": "abc123456", "consumer_id": "128740954930930",
        "message_id": "12345678", "media_url": "https://media.cao.com/images/sbc.png",
        "agent_name": "Sally Salesperson", "agent_image_url": "https://media.cao.com/images/sally.png",
    }


def test_parse_message_with_integers_and_minimal_fields():
    event = parse_message({"VisitId": 12617187, "MessageId": 12345678, "SessionId": 99,
                           "Message": "hi", "DateTime": "6/15/2015 4:13 PM",
                           "AgentImageUrl": "https://a/b.png", "MediaURL": ""})
    assert event.provider_message_id == "12345678"
    assert event.occurred_at == datetime(2015, 6, 15, 16, 13)
    assert event.data == {"visit_id": "12617187", "session_id": "99", "consumer_id": None,
                          "message_id": "12345678", "media_url": None, "agent_name": None,
                          "agent_image_url": "https://a/b.png"}


def test_media_only_message_is_accepted():
    event = parse_message({"VisitId": 1, "MessageId": 2, "Message": "", "MediaURL": "https://x"})
    assert event.text == "" and event.data["media_url"] == "https://x"


@pytest.mark.parametrize(("value", "expected"), [
    ("2015-01-01T00:00:00 ", datetime(2015, 1, 1)),
    ("2015-01-01T02:30:00+02:00", datetime(2015, 1, 1, 0, 30)),
    ("2015-01-01T00:00:00Z", datetime(2015, 1, 1)),
    ("2015-01-01T00:00:00.123", datetime(2015, 1, 1, 0, 0, 0, 123000)),
    ("6/15/2015 4:13 PM", datetime(2015, 6, 15, 16, 13)),
    ("6/15/2015 12:05:09 AM", datetime(2015, 6, 15, 0, 5, 9)),
])
def test_parse_datetime(value, expected):
    parsed = parse_datetime(value)
    assert parsed == expected and parsed.tzinfo is None


@pytest.mark.parametrize(("status", "kind"), [
    ("1", "delivered"), (1, "delivered"), ("2", "seen"), (2, "seen"), ("0", "interim"),
    (0, "interim"), (" 1 ", "delivered"),
])
def test_parse_status(status, kind):
    event = parse_status({**STATUS_SAMPLE, "MessageStatus": status})
    code = str(int(status))
    assert (event.kind, event.status, event.dedupe_key) == (kind, code, f"contactatonce:status:987654322:{code}")
    assert (event.provider_message_id, event.attempt_ref) == ("987654322", "29393892")
    assert event.data == {"visit_id": "12617187", "session_id": "abc123456",
                          "consumer_id": "128740954930930"}


def test_parse_status_with_integers():
    event = parse_status({"VisitId": 12617187, "ExternalMessageId": "att-1", "MessageId": 98765,
                          "MessageStatus": 1, "ConsumerId": 128740954930930})
    assert (event.provider_message_id, event.attempt_ref) == ("98765", "att-1")
    assert event.data == {"visit_id": "12617187", "session_id": None,
                          "consumer_id": "128740954930930"}


def test_parse_callback_dispatches():
    assert parse_callback(STATUS_SAMPLE).kind == "seen"
    assert parse_callback(MESSAGE_SAMPLE).kind == "inbound"
    adapter = service("http://cao.test/")
    assert adapter.parse_callback(STATUS_SAMPLE) == parse_status(STATUS_SAMPLE)
    assert adapter.parse_message(MESSAGE_SAMPLE) == parse_message(MESSAGE_SAMPLE)
    assert adapter.parse_status(STATUS_SAMPLE).kind == "seen"


def _without(params: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != key}


@pytest.mark.parametrize(("params", "field"), [
    (_without(MESSAGE_SAMPLE, "VisitId"), "VisitId"),
    ({**MESSAGE_SAMPLE, "VisitId": "12a"}, "VisitId"),
    ({**MESSAGE_SAMPLE, "VisitId": ""}, "VisitId"),
    ({**MESSAGE_SAMPLE, "VisitId": -5}, "VisitId"),
    ({**MESSAGE_SAMPLE, "VisitId": True}, "VisitId"),
    ({**MESSAGE_SAMPLE, "VisitId": 12.5}, "VisitId"),
    ({**MESSAGE_SAMPLE, "VisitId": [1]}, "VisitId"),
    (_without(MESSAGE_SAMPLE, "MessageId"), "MessageId"),
    ({**MESSAGE_SAMPLE, "MessageId": "  "}, "MessageId"),
    ({**MESSAGE_SAMPLE, "MessageId": False}, "MessageId"),
    (_without(MESSAGE_SAMPLE, "Message"), "Message"),
    ({**MESSAGE_SAMPLE, "Message": 5}, "Message"),
    ({**_without(MESSAGE_SAMPLE, "MediaURL"), "Message": " "}, "Message"),
    ({**MESSAGE_SAMPLE, "SessionId": ""}, "SessionId"),
    ({**MESSAGE_SAMPLE, "ConsumerId": 1.5}, "ConsumerId"),
    ({**MESSAGE_SAMPLE, "DateTime": "soon"}, "DateTime"),
    ({**MESSAGE_SAMPLE, "DateTime": 1420070400}, "DateTime"),
    ({**MESSAGE_SAMPLE, "MediaURL": 3}, "MediaURL"),
    ({**MESSAGE_SAMPLE, "AgentName": {"n": 1}}, "AgentName"),
    ({**_without(MESSAGE_SAMPLE, "AgentImageURL"), "AgentImageUrl": 1}, "AgentImageUrl"),
    (_without(STATUS_SAMPLE, "VisitId"), "VisitId"),
    ({**STATUS_SAMPLE, "VisitId": "x"}, "VisitId"),
    (_without(STATUS_SAMPLE, "ExternalMessageId"), "ExternalMessageId"),
    ({**STATUS_SAMPLE, "ExternalMessageId": ""}, "ExternalMessageId"),
    (_without(STATUS_SAMPLE, "MessageId"), "MessageId"),
    ({**STATUS_SAMPLE, "MessageStatus": None}, "MessageStatus"),
    ({**STATUS_SAMPLE, "MessageStatus": "3"}, "MessageStatus"),
    ({**STATUS_SAMPLE, "MessageStatus": "read"}, "MessageStatus"),
    ({**STATUS_SAMPLE, "MessageStatus": True}, "MessageStatus"),
    ({**STATUS_SAMPLE, "MessageStatus": 1.0}, "MessageStatus"),
    ({**STATUS_SAMPLE, "SessionId": True}, "SessionId"),
    ({**STATUS_SAMPLE, "ConsumerId": ""}, "ConsumerId"),
    (["not", "a", "dict"], "body"),
    ("VisitId=1", "body"),
])
def test_callback_refusals_name_the_field(params, field):
    with pytest.raises(CallbackError) as info:
        parse_callback(params)
    assert info.value.field == field


def test_each_parser_refuses_a_non_object():
    for parser in (parse_message, parse_status):
        with pytest.raises(CallbackError) as info:
            parser(None)  # type: ignore[arg-type]
        assert info.value.field == "body"


def test_float_without_fraction_is_an_id():
    assert parse_status({**STATUS_SAMPLE, "VisitId": 12617187.0}).data["visit_id"] == "12617187"


# --------------------------------------------------------------------------------------
# Inbound key, settings
# --------------------------------------------------------------------------------------

def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(("header", "ok"), [
    (f"Basic {INBOUND_KEY}", True),
    (f"basic   {INBOUND_KEY} ", True),
    (f"Basic {_b64(INBOUND_KEY)}", True),
    (f"Basic {_b64('cao:' + INBOUND_KEY)}", True),
    (f"Basic {_b64(':' + INBOUND_KEY)}", True),
    (f"Basic {_b64(INBOUND_KEY + ':')}", True),
    (f"Basic {_b64('anyone:' + INBOUND_KEY)}", True),
    (f"Basic {_b64(INBOUND_KEY + ':x')}", False),
    (f"Bearer {INBOUND_KEY}", False),
    (f"Basic {INBOUND_KEY}x", False),
    (f"Basic {INBOUND_KEY[:-1]}", False),
    ("Basic", False), ("Basic ", False), ("", False), (None, False),
    (INBOUND_KEY, False),
    ("Basic !!!not-base64", False),
])
def test_verify_inbound_key(header, ok):
    assert service("http://cao.test/").verify_inbound_key(header) is ok


def test_empty_inbound_key_refuses_everything():
    adapter = service("http://cao.test/", inbound_key="")
    assert not adapter.verify_inbound_key("Basic ")
    assert not adapter.verify_inbound_key("Basic " + _b64(":"))
    assert not adapter.verify_inbound_key(None)


def test_from_settings():
    settings = SimpleNamespace(
        effective_contactatonce_url="https://api.contactatonce.co.uk/",
        contactatonce_api_key=SecretStr("k"), contactatonce_advertiser_id="adv",
        effective_contactatonce_inbound_key=SecretStr("in"), contactatonce_timeout_seconds=4.0)
    adapter = ContactAtOnceService.from_settings(settings)  # type: ignore[arg-type]
    assert (adapter.url, adapter.api_key, adapter.advertiser_id, adapter.inbound_key,
            adapter.timeout) == ("https://api.contactatonce.co.uk/", "k", "adv", "in", 4.0)
    assert (adapter.name, adapter.channels) == ("contactatonce", ("inapp",))
    assert adapter.summarize(message())["url"] == "https://api.contactatonce.co.uk" + START


@pytest.mark.parametrize(("env", "expected"), [
    ({}, API_KEY),  # the document's callbacks carry the API key
    ({"SWITCHBOARD_CONTACTATONCE_INBOUND_KEY": ""}, API_KEY),
    ({"SWITCHBOARD_CONTACTATONCE_INBOUND_KEY": INBOUND_KEY}, INBOUND_KEY),
])
def test_inbound_key_defaults_to_the_api_key(monkeypatch, env, expected):
    monkeypatch.delenv("SWITCHBOARD_CONTACTATONCE_INBOUND_KEY", raising=False)
    monkeypatch.setenv("SWITCHBOARD_CONTACTATONCE_API_KEY", API_KEY)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    adapter = ContactAtOnceService.from_settings(Settings())
    assert adapter.inbound_key == expected
    assert adapter.verify_inbound_key(f"Basic {expected}")
    assert adapter.verify_inbound_key(f"Basic {_b64(expected + ':')}")
    other = INBOUND_KEY if expected == API_KEY else API_KEY
    assert not adapter.verify_inbound_key(f"Basic {other}")
