"""The HTTP API as an OpenAPI 3.1 document, served without auth at ``GET /openapi.json``.

Request bodies are the pydantic models' own JSON schemas, so the document cannot disagree with
what the API validates. Each operation is one entry in ``OPERATIONS`` and is published only
while the app really routes it, so a removed route drops out; the reliability suite checks the
other direction (every ``/v1`` route is documented) and runs schemathesis against the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from werkzeug.exceptions import HTTPException

from shared.campaigns import CampaignRequest
from shared.flows.definition import FlowDefinition
from shared.flows.requests import FlowLinkRequest, FlowStartRequest
from shared.schemas import (
    AppSettingsUpdate,
    ConsentUpdate,
    FriendRequest,
    ReplayRequest,
    SendRequest,
)
from shared.templates import PreviewRequest, TemplateDocument

openapi = Blueprint("openapi", __name__)

REF = "#/components/schemas/{model}"
JSON = "application/json"
MODELS: tuple[type[BaseModel], ...] = (SendRequest, ReplayRequest, FriendRequest,
                                       CampaignRequest, FlowDefinition, FlowStartRequest,
                                       FlowLinkRequest, TemplateDocument, PreviewRequest,
                                       ConsentUpdate, AppSettingsUpdate)
_FLASK_PARAM = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")

ERROR_DESCRIPTIONS = {
    400: "The body is not what this endpoint reads (e.g. not a JSON object); `errors` names "
         "the field.",
    401: "Missing or unknown credentials.",
    404: "No such resource (or it belongs to another app).",
    409: "Conflicts with what exists; `errors` names the field (e.g. an `idempotency_key` "
         "first used with a different body).",
    413: "The body is larger than the server accepts (1 MiB).",
    422: "A field is invalid; `errors` names each one.",
    503: "The database is unavailable; try again later.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _nullable(type_: str) -> dict[str, Any]:
    return {"type": [type_, "null"]}


def _object(required: tuple[str, ...] = (), **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


STRING, INTEGER, OBJECT = {"type": "string"}, {"type": "integer"}, {"type": "object"}
FIELD_ERROR = _object(("field", "message"), field=STRING, message=STRING)
ERROR = _object(("error", "message"), error=STRING, message=STRING, field=STRING,
                errors={"type": "array", "items": _ref("FieldError")})
ATTEMPT = _object(("id", "channel", "status"), id=STRING, hop=INTEGER, channel=STRING,
                  provider=STRING, status=STRING, provider_message_id=_nullable("string"),
                  error=_nullable("object"), request=_nullable("object"),
                  response=_nullable("object"), retries=INTEGER)
TIMELINE_EVENT = _object(("type",), seq=_nullable("integer"), at=_nullable("string"),
                         type=STRING, attempt_id=_nullable("string"), detail=OBJECT)
MESSAGE_VIEW = _object(
    ("id", "status", "route", "attempts", "events"), id=STRING, status=STRING,
    reason=_nullable("string"), to=OBJECT, route={"type": "array", "items": STRING},
    current_channel=STRING, idempotency_key=_nullable("string"), metadata=OBJECT,
    priority={"enum": ["normal", "critical"]}, send_at=_nullable("string"),
    valid_until=_nullable("string"),
    quiet_hours={"anyOf": [{"type": "null"}, OBJECT],
                 "description": "start, end and the recipient's zone as resolved at accept"},
    template={"anyOf": [{"type": "null"}, OBJECT],
              "description": "the template name, version and locale it was rendered from"},
    created_at=_nullable("string"), updated_at=_nullable("string"),
    attempts={"type": "array", "items": _ref("Attempt")},
    deliveries={"type": "array", "items": OBJECT},
    events={"type": "array", "items": _ref("TimelineEvent")})
FEED_EVENT = _object(("id", "type", "data"), id=INTEGER, type=STRING,
                     message_id=_nullable("string"), seq=_nullable("integer"),
                     created_at=_nullable("string"), data=OBJECT)
CONTACT = _object(("channel", "address", "status"), channel=STRING, address=STRING,
                  app_id=STRING, status=STRING, name=_nullable("string"), updated_at=STRING)
CONSENT = _object(("channel", "account", "address", "status", "categories", "recorded"),
                  channel=STRING, account=STRING, address=STRING,
                  status={"enum": ["opted_out", "opted_in"]},
                  categories={"type": "array", "items": STRING}, recorded={"type": "boolean"},
                  source=STRING, updated_at=STRING, changed={"type": "boolean"},
                  history={"type": "array", "items": OBJECT})
APP_SETTINGS = _object(("id", "name", "quiet_hours"), id=STRING, name=STRING,
                       quiet_hours={"anyOf": [{"type": "null"}, _ref("QuietHours")]})
RPC_ENVELOPE = _object(("id", "method", "params"), id=STRING, method=STRING, params=OBJECT)
RPC_ANSWER = _object(("id", "result", "error"), id={}, result={},
                     error={"anyOf": [{"type": "null"}, _object(
                         ("code", "message"), code=INTEGER, message=STRING, name=STRING)]})
CAO_ANSWER = _object(("Status", "FailureDescription"), Status={"enum": [0, 1]},
                     FailureDescription=_nullable("string"), field=STRING)
MESSAGGIO_REPORT = _object((), **{name: STRING for name in (
    "msg_id", "p_transaction_id", "type", "status", "status_extended", "text")})

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": ERROR, "FieldError": FIELD_ERROR, "Attempt": ATTEMPT,
    "TimelineEvent": TIMELINE_EVENT, "MessageView": MESSAGE_VIEW, "FeedEvent": FEED_EVENT,
    "Contact": CONTACT, "Consent": CONSENT, "AppSettings": APP_SETTINGS, "RpcEnvelope": RPC_ENVELOPE, "RpcAnswer": RPC_ANSWER,
    "ContactAtOnceAnswer": CAO_ANSWER, "MessaggioReport": MESSAGGIO_REPORT,
}


def model_schemas() -> dict[str, dict[str, Any]]:
    """The pydantic request models and their nested models, under ``#/components/schemas``
    (generated together, so two nested models of one name get distinct names)."""
    _, schema = models_json_schema([(model, "validation") for model in MODELS],
                                   ref_template=REF)
    return schema.get("$defs", {})


# --------------------------------------------------------------------------------------
# Operations
# --------------------------------------------------------------------------------------

def _content(schema: dict[str, Any], media_type: str = JSON) -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _ok(description: str, schema: dict[str, Any], media_type: str = JSON) -> dict[str, Any]:
    return {"description": description, "content": _content(schema, media_type)}


def _errors(*codes: int, schema: str = "Error", media_type: str = JSON) -> dict[str, Any]:
    return {str(code): _ok(ERROR_DESCRIPTIONS[code], _ref(schema), media_type)
            for code in codes}


def _path_param(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1, **schema}}


def _query_param(name: str, description: str, schema: dict[str, Any],
                 required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema}


def _json_body(model: str, example: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": _ref(model), "example": example}}}


@dataclass(frozen=True)
class Operation:
    """One documented route: where it is, what it takes and what it answers."""

    method: str
    path: str  # OpenAPI template, e.g. /v1/messages/{message_id}
    operation_id: str
    summary: str
    responses: dict[str, Any]
    tag: str = "messages"
    parameters: tuple[dict[str, Any], ...] = ()
    body: dict[str, Any] | None = None
    security: tuple[dict[str, list[str]], ...] | None = None  # None: the API key
    example_path: str = ""  # a concrete path to look the route up by; default ``path``

    def as_dict(self) -> dict[str, Any]:
        op: dict[str, Any] = {"operationId": self.operation_id, "summary": self.summary,
                              "tags": [self.tag], "responses": self.responses}
        if self.parameters:
            op["parameters"] = list(self.parameters)
        if self.body is not None:
            op["requestBody"] = self.body
        if self.security is not None:
            op["security"] = list(self.security)
        return op


SEND_EXAMPLE = {"to": {"phone": "+32470123456"}, "route": ["viber", "sms"],
                "text": "Your parcel arrives today", "idempotency_key": "order-42-shipped"}
MESSAGE_ID = _path_param("message_id", "the id `POST /v1/messages` answered", maxLength=36)
NO_AUTH: tuple[dict[str, list[str]], ...] = ()

MESSAGE_OPERATIONS: tuple[Operation, ...] = (
    Operation("post", "/v1/messages", "sendMessage", "Send one message over a route",
              {"202": _ok("Queued.", _object(("id", "status"), id=STRING, status=STRING)),
               "200": _ok("Idempotent replay: this idempotency_key was used before.",
                          _object(("id", "status", "idempotent_replay"), id=STRING,
                                  status=STRING, idempotent_replay={"type": "boolean"})),
               **_errors(400, 401, 409, 413, 422)},
              body=_json_body("SendRequest", SEND_EXAMPLE)),
    Operation("get", "/v1/messages/{message_id}", "getMessage",
              "A message's status, attempts and timeline",
              {"200": _ok("The message.", _ref("MessageView")), **_errors(401, 404)},
              parameters=(MESSAGE_ID,), example_path="/v1/messages/x"),
    Operation("delete", "/v1/messages/{message_id}", "cancelMessage",
              "Cancel a message not yet sent on any hop (scheduled, waiting or queued)",
              {"200": _ok("Cancelled (again: the same answer).", _object(
                  ("id", "status"), id=STRING, status={"type": "string",
                                                       "enum": ["cancelled"]})),
               "409": _ok("Already sent on a hop: too late; names the hop.", _object(
                   ("error", "message", "status"), error=STRING, message=STRING,
                   status=STRING, hop={"type": ["object", "null"], "properties": {
                       "hop": INTEGER, "channel": STRING, "status": STRING}})),
               **_errors(401, 404)},
              parameters=(MESSAGE_ID,), example_path="/v1/messages/x"),
    Operation("get", "/v1/app", "getAppSettings", "The calling app's settings",
              {"200": _ok("Its name and default quiet hours.", _ref("AppSettings")),
               **_errors(401)},
              tag="apps"),
    Operation("patch", "/v1/app", "updateAppSettings",
              "Change the calling app's default quiet hours (null clears them)",
              {"200": _ok("The settings now.", _ref("AppSettings")),
               **_errors(400, 401, 413, 422)},
              tag="apps", body=_json_body("AppSettingsUpdate", {"quiet_hours": {
                  "start": "21:00", "end": "08:00", "timezone": "auto"}})),
    Operation("post", "/v1/messages/{message_id}/seal", "sealMessage",
              "Lock the messenger message so no more answers come",
              {"202": _ok("Sealing requested.", _object(("id", "status"), id=STRING,
                                                        status=STRING)),
               **_errors(401, 404)},
              parameters=(MESSAGE_ID,), example_path="/v1/messages/x/seal"),
    Operation("get", "/v1/events", "listEvents", "Public events after a cursor, commit order",
              {"200": _ok("A page of events; poll again with after=next.", _object(
                  ("events", "next"), events={"type": "array", "items": _ref("FeedEvent")},
                  next=INTEGER)),
               **_errors(401, 422)},
              tag="events",
              parameters=(
                  _query_param("after", "the `next` of the previous page",
                               {"type": "integer", "minimum": 0, "format": "int64"}),
                  _query_param("limit", "page size", {"type": "integer", "minimum": 1,
                                                      "maximum": 1000}))),
    Operation("post", "/v1/events/replay", "replayEvents",
              "Deliver public events to the callback URL again",
              {"202": _ok("How many deliveries were queued.",
                          _object(("replayed",), replayed=INTEGER)),
               **_errors(400, 401, 413, 422)},
              tag="events", body=_json_body("ReplayRequest", {"since": "2024-01-01T00:00:00Z"})),
    Operation("post", "/v1/contacts/rogerthat/{action}", "messengerFriendship",
              "Invite someone to be the messenger service's friend, or end the friendship",
              {"202": _ok("Requested; the outcome arrives as a contact event.", _object(
                  ("email", "app_id", "status"), email=STRING, app_id=STRING, status=STRING)),
               **_errors(400, 401, 404, 413, 422)},
              tag="contacts", body=_json_body("FriendRequest", {"email": "ann@example.com"}),
              parameters=(_path_param("action", "invite or break-up",
                                      enum=["invite", "break-up"]),),
              example_path="/v1/contacts/rogerthat/invite"),
    Operation("get", "/v1/contacts", "listContacts",
              "The consent of each contact this app messaged or invited",
              {"200": _ok("Contacts, most recently changed first.", _object(
                  ("contacts",), contacts={"type": "array", "items": _ref("Contact")})),
               **_errors(401)},
              tag="contacts"),
    Operation("get", "/v1/conversations", "listConversations",
              "A consumer's in-app conversations",
              {"200": _ok("Ours merged with the provider's view.", _object(
                  ("conversations",), consumer_id=STRING,
                  conversations={"type": "array", "items": OBJECT},
                  provider_error={})),
               **_errors(401, 422)},
              tag="conversations",
              parameters=(_query_param("consumer_id", "the producer's id of the app user",
                                       {"type": "string", "minLength": 1, "maxLength": 100},
                                       required=True),)),
    Operation("get", "/v1/conversations/{key}", "getConversation",
              "One in-app conversation with its transcript",
              {"200": _ok("The conversation.", _object(
                  ("conversation", "messages"), conversation=OBJECT,
                  messages={"type": "array", "items": OBJECT}, provider_error={})),
               **_errors(401, 404)},
              tag="conversations",
              parameters=(_path_param("key", "our conversation id or the provider's VisitId"),),
              example_path="/v1/conversations/x"),
)

RUN_ID = _path_param("run_id", "the id `POST /v1/flows/{name}/start` answered")
FLOW_NAME = _path_param("name", "the flow's name")
CAMPAIGN_EXAMPLE = {"recipients": [{"phone": "+32470123456"}, {"phone": "+32470123457"}],
                    "route": ["sms"], "text": "Our sale starts today"}
FLOW_EXAMPLE = {"name": "survey", "route": ["sms"], "steps": [
    {"id": "ask", "type": "question", "text": "How was your visit?", "next": "done"},
    {"id": "done", "type": "end"}]}
BULK_AND_FLOW_OPERATIONS: tuple[Operation, ...] = (
    Operation("post", "/v1/campaigns", "sendCampaign", "One content to many phones",
              {"202": _ok("Queued.", _object(("id", "messages", "status"), id=STRING,
                                             messages=INTEGER, status=STRING,
                                             batches=INTEGER)),
               "200": _ok("Idempotent replay.", _object(
                   ("id", "messages", "idempotent_replay"), id=STRING, messages=INTEGER,
                   idempotent_replay={"type": "boolean"})),
               **_errors(400, 401, 409, 413, 422)},
              tag="campaigns", body=_json_body("CampaignRequest", CAMPAIGN_EXAMPLE)),
    Operation("delete", "/v1/campaigns/{campaign_id}", "cancelCampaign",
              "Cancel each of a campaign's messages not yet sent",
              {"200": _ok("How many were cancelled, how many go on.", _object(
                  ("id", "cancelled", "not_cancelled"), id=STRING, cancelled=INTEGER,
                  not_cancelled=INTEGER)),
               **_errors(401, 404)},
              tag="campaigns", parameters=(_path_param("campaign_id", "its id"),),
              example_path="/v1/campaigns/x"),
    Operation("get", "/v1/campaigns/{campaign_id}", "getCampaign",
              "A campaign and where its messages are",
              {"200": _ok("The campaign.", _object(("id", "messages"), id=STRING,
                                                   messages=INTEGER, counts=OBJECT)),
               **_errors(401, 404)},
              tag="campaigns", parameters=(_path_param("campaign_id", "its id"),),
              example_path="/v1/campaigns/x"),
    Operation("post", "/v1/flows", "saveFlow",
              "Save a flow definition (JSON, or YAML with a YAML content type) as its next "
              "version",
              {"201": _ok("Saved.", _object(("name", "version"), name=STRING,
                                            version=INTEGER)),
               **_errors(400, 401, 409, 413, 422)},  # 409: a trigger another app uses
              tag="flows", body={"required": True, "content": {
                  JSON: {"schema": _ref("FlowDefinition"), "example": FLOW_EXAMPLE},
                  "application/yaml": {"schema": STRING}}}),
    Operation("get", "/v1/flows", "listFlows", "The latest version of every flow",
              {"200": _ok("Flows.", _object(("flows",), flows={"type": "array",
                                                               "items": OBJECT})),
               **_errors(401)},
              tag="flows"),
    Operation("get", "/v1/flows/{name}", "getFlow", "A flow's definition",
              {"200": _ok("The flow.", _object(("name", "version", "definition"),
                                               name=STRING, version=INTEGER,
                                               definition=OBJECT)),
               **_errors(401, 404)},
              tag="flows", example_path="/v1/flows/x",
              parameters=(FLOW_NAME, _query_param("version", "default: the latest",
                                                  {"type": "integer", "minimum": 1}))),
    Operation("post", "/v1/flows/{name}/start", "startFlow",
              "Run a flow for the listed contacts, or for every consenting contact",
              {"202": _ok("Runs created.", _object(("flow", "runs"), flow=OBJECT,
                                                   runs={"type": "array", "items": OBJECT})),
               **_errors(400, 401, 404, 413, 422)},
              tag="flows", parameters=(FLOW_NAME,), example_path="/v1/flows/x/start",
              body=_json_body("FlowStartRequest", {"contacts": [
                  {"to": {"phone": "+32470123456"}}]})),
    Operation("get", "/v1/flows/{name}/stats", "flowStats", "Runs and answers per version",
              {"200": _ok("Statistics.", _object(("name", "versions"), name=STRING,
                                                 versions={"type": "array", "items": OBJECT})),
               **_errors(401, 404)},
              tag="flows", parameters=(FLOW_NAME,), example_path="/v1/flows/x/stats"),
    Operation("post", "/v1/flows/{name}/links", "flowLink",
              "An action link that starts the flow for one contact",
              {"201": _ok("The link.", _object(("url", "token"), url=STRING, token=STRING,
                                               single_use={"type": "boolean"},
                                               expires_at=_nullable("string"))),
               **_errors(400, 401, 404, 413, 422)},
              tag="flows", parameters=(FLOW_NAME,), example_path="/v1/flows/x/links",
              body=_json_body("FlowLinkRequest", {"contact": {"to": {"phone": "+32470123456"}}})),
    Operation("get", "/v1/flow-runs/{run_id}", "getFlowRun", "A flow run and its answers",
              {"200": _ok("The run.", OBJECT), **_errors(401, 404)},
              tag="flows", parameters=(RUN_ID,), example_path="/v1/flow-runs/x"),
)

COUNTS = {"type": "object", "additionalProperties": INTEGER}
STATS_OVERVIEW = _object(
    ("hours", "since", "until", "app_id", "messages", "fallback", "latency", "webhooks"),
    hours=INTEGER, since=STRING, until=STRING,
    app_id={**_nullable("string"), "description": "null: every app (a bootstrap key)"},
    messages=_object(("total", "by_status", "by_channel"), total=INTEGER, by_status=COUNTS,
                     by_channel={"type": "object", "additionalProperties": COUNTS,
                                 "description": "attempts per channel, by their status"}),
    fallback={"type": "array", "items": _object(
        ("route", "messages", "fell_back", "rate"), route=STRING, messages=INTEGER,
        fell_back=INTEGER, rate={"type": "number"})},
    latency={"type": "array", "description": "seconds from submission to delivery report",
             "items": _object(("provider", "reports", "p50", "p90", "p99"), provider=STRING,
                              reports=INTEGER, p50=_nullable("number"),
                              p90=_nullable("number"), p99=_nullable("number"))},
    webhooks=_object(("delivered", "pending", "retrying", "failed", "failing_urls"),
                     delivered=INTEGER, pending=INTEGER, retrying=INTEGER, failed=INTEGER,
                     failing_urls={"type": "array", "items": _object(
                         ("url", "failed", "retrying"), url=STRING, failed=INTEGER,
                         retrying=INTEGER)}))
STATS_OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "/v1/stats/overview", "statsOverview",
              "The last hours at a glance: messages by status and channel, fallback rate by "
              "route, delivery-report latency percentiles per provider, failing webhooks "
              "(the console's dashboard reads the same endpoint)",
              {"200": _ok("Counts for the app of the key (every app for a bootstrap key).",
                          STATS_OVERVIEW),
               **_errors(401, 422)},
              tag="stats",
              parameters=(_query_param("hours", "the window, default 24",
                                       {"type": "integer", "minimum": 1,
                                        "maximum": 720}),)),
)

TEMPLATE_NAME = _path_param("name", "the template's name", pattern=r"^[A-Za-z0-9_.-]+$",
                            maxLength=100)
TEMPLATE_EXAMPLE = {"name": "order_shipped", "default_locale": "en", "locales": {
    "en": {"text": "Order {{ order.id }} ships on {{ order.date | date('long') }}"},
    "nl-BE": {"text": "Bestelling {{ order.id }}: {{ order.total | currency('EUR') }}",
              "sms_text": "Bestelling {{ order.id }} is verzonden"}}}
TEMPLATE_SUMMARY = _object(("name", "version", "locales"), name=STRING, version=INTEGER,
                           default_locale=_nullable("string"),
                           locales={"type": "array", "items": STRING},
                           description=_nullable("string"), created_at=STRING)
SMS_COST = _object(
    ("encoding", "length", "segments"), text=STRING,
    encoding={"enum": ["GSM-7", "UCS-2"], "description": "3GPP TS 23.038"},
    characters={**INTEGER, "description": "code points"},
    length={**INTEGER, "description": "septets (GSM-7, extension characters twice) or UTF-16 "
                                      "code units (UCS-2, an emoji twice)"},
    segments={**INTEGER, "description": "160/153 per segment for GSM-7, 70/67 for UCS-2"},
    per_segment=INTEGER, remaining=INTEGER, not_gsm7={"type": "array", "items": STRING})
TEMPLATE_OPERATIONS: tuple[Operation, ...] = (
    Operation("post", "/v1/templates", "saveTemplate",
              "Save a template (JSON, or YAML with a YAML content type) as its next version; "
              "one that does not compile is a 422 naming the locale, field and line",
              {"201": _ok("Saved.", _object(("name", "version"), name=STRING,
                                            version=INTEGER)),
               **_errors(401, 413, 422)},
              tag="templates", body={"required": True, "content": {
                  JSON: {"schema": _ref("TemplateDocument"), "example": TEMPLATE_EXAMPLE},
                  "application/yaml": {"schema": STRING}}}),
    Operation("get", "/v1/templates", "listTemplates", "The latest version of every template",
              {"200": _ok("Templates.", _object(("templates",), templates={
                  "type": "array", "items": TEMPLATE_SUMMARY})), **_errors(401)},
              tag="templates"),
    Operation("get", "/v1/templates/{name}", "getTemplate",
              "A template's versions and the document of the latest (or of ?version=)",
              {"200": _ok("The template.", _object(
                  ("name", "version", "document", "versions"), name=STRING, version=INTEGER,
                  document=OBJECT, versions={"type": "array", "items": TEMPLATE_SUMMARY})),
               **_errors(401, 404, 422)},
              tag="templates", example_path="/v1/templates/x",
              parameters=(TEMPLATE_NAME, _query_param("version", "default: the latest",
                                                      {"type": "integer", "minimum": 1}))),
    Operation("post", "/v1/templates/{name}/preview", "previewTemplate",
              "Render with data and a locale: the content per channel and the SMS's encoding, "
              "length and segments (a `document` renders an unsaved draft)",
              {"200": _ok("Rendered.", _object(
                  ("name", "locale", "content", "channels"), name=STRING,
                  version=_nullable("integer"), locale=STRING,
                  requested_locale=_nullable("string"), content=OBJECT, channels=OBJECT,
                  sms={"anyOf": [{"type": "null"}, SMS_COST]})),
               **_errors(400, 401, 404, 413, 422)},
              tag="templates", parameters=(TEMPLATE_NAME,),
              example_path="/v1/templates/x/preview",
              body=_json_body("PreviewRequest", {  # an unsaved draft: no template needed
                  "locale": "nl-BE", "data": {"order": {"id": "A-17", "total": 12.5}},
                  "document": {"locales": {k: v for k, v in TEMPLATE_EXAMPLE["locales"].items()
                                           if k == "nl-BE"}}})),
)

CONSENT_PATH = (_path_param("channel", "viber, sms, rogerthat or inapp"),
                _path_param("address", "a phone (E.164, or its digits), an e-mail, an in-app "
                                       "consumer id"),
                _query_param("account", "the provider account (messenger app id, in-app "
                                        "advertiser); default: the channel's default",
                             {"type": "string", "maxLength": 100}))
CONSENT_OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "/v1/consent/{channel}/{address}", "getConsent",
              "An address's consent on a channel, with the history of the app's own changes",
              {"200": _ok("The record (opted in when never recorded).", _ref("Consent")),
               **_errors(401, 422)},
              tag="consent", parameters=CONSENT_PATH,
              example_path="/v1/consent/sms/32470123456"),
    Operation("put", "/v1/consent/{channel}/{address}", "setConsent",
              "Opt an address out (of everything, or of categories) or back in",
              {"200": _ok("The record after the change.", _ref("Consent")),
               **_errors(400, 401, 409, 413, 422)},  # 409: another app's opt-out
              tag="consent", parameters=CONSENT_PATH,
              example_path="/v1/consent/sms/32470123456",
              body=_json_body("ConsentUpdate", {"status": "opted_out",
                                                "categories": ["marketing"]})),
    Operation("get", "/v1/consent", "listConsent",
              "The records this app changed, by status, after a cursor",
              {"200": _ok("A page; ask again with after=next.", _object(
                  ("consents", "next"), consents={"type": "array", "items": _ref("Consent")},
                  next=_nullable("integer"))),
               **_errors(401, 422)},
              tag="consent",
              parameters=(
                  _query_param("status", "opted_out (default) or opted_in",
                               {"enum": ["opted_out", "opted_in"]}),
                  _query_param("after", "the `next` of the previous page",
                               {"type": "integer", "minimum": 0, "format": "int64"}),
                  _query_param("limit", "page size", {"type": "integer", "minimum": 1,
                                                      "maximum": 1000}))),
    Operation("post", "/v1/consent/import", "importConsent",
              "A CSV suppression list: columns channel, address and optionally status "
              "(default opted_out), categories (separated by ;) and account",
              {"200": _ok("Applied.", _object(("rows", "changed", "skipped"), rows=INTEGER,
                                              changed=INTEGER, skipped=INTEGER)),
               **_errors(400, 401, 413, 422)},
              tag="consent", body={"required": True, "content": {
                  "text/csv": {"schema": STRING,
                               "example": "channel,address\nsms,+32470123456\n"}}}),
)

API_OPERATIONS = (MESSAGE_OPERATIONS + BULK_AND_FLOW_OPERATIONS + TEMPLATE_OPERATIONS
                  + STATS_OPERATIONS + CONSENT_OPERATIONS)

CALLBACK_OPERATIONS: tuple[Operation, ...] = (
    *(Operation(method, "/callbacks/messaggio/{token}", f"messaggioReport{method.title()}",
                "A Viber/SMS delivery report (the secret path token authenticates it)",
                {"200": _ok("Stored (or a duplicate).",
                            _object(("status",), status={"enum": ["accepted", "duplicate"]})),
                 "400": _ok("The report is malformed; `field` names what.", _ref("Error")),
                 **_errors(404, 413, 503)},
                tag="callbacks", security=NO_AUTH, example_path="/callbacks/messaggio/x",
                parameters=(_path_param("token", "SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN"),
                            *(_query_param(name, "", STRING) for name in
                              MESSAGGIO_REPORT["properties"] if method == "get")),
                body=None if method == "get" else {"content": _content(
                    _ref("MessaggioReport"), "application/x-www-form-urlencoded")})
      for method in ("get", "post")),
    Operation("post", "/callbacks/rogerthat", "rogerthatCallback",
              "A messenger callback (JSON-RPC)",
              {"200": _ok("The JSON-RPC result.", _ref("RpcAnswer"), "application/json-rpc"),
               "400": _ok("A JSON-RPC error naming the field.", _ref("RpcAnswer"),
                          "application/json-rpc"),
               **_errors(401, 413, 503)},
              tag="callbacks", security=({"serviceKey": []},),
              body={"required": True, "content": _content(_ref("RpcEnvelope"))}),
    *(Operation("post", f"/callbacks/contactatonce/{kind}", f"contactAtOnce{kind.title()}",
                summary, {"200": _ok("Accepted.", _ref("ContactAtOnceAnswer")),
                          **_errors(400, 401, 503, schema="ContactAtOnceAnswer"),
                          **_errors(413)},
                tag="callbacks", security=({"contactAtOnceBasic": []},),
                body={"required": True, "content": _content(OBJECT)})
      for kind, summary in (("messages", "An in-app agent wrote to a consumer"),
                            ("status", "A delivery/read receipt for an in-app message"))),
)

OTHER_OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "/openapi.json", "openapi", "This document",
              {"200": _ok("OpenAPI 3.1.", OBJECT)}, tag="meta", security=NO_AUTH),
    Operation("get", "/healthz", "health", "Liveness plus a database round trip",
              {"200": _ok("Healthy.", OBJECT), "503": _ok("The database is down.", OBJECT)},
              tag="meta", security=NO_AUTH),
)

OPERATIONS = API_OPERATIONS + CALLBACK_OPERATIONS + OTHER_OPERATIONS

SECURITY_SCHEMES = {
    "apiKey": {"type": "http", "scheme": "bearer",
               "description": "an API key: SWITCHBOARD_API_KEYS or `switchboard apps create`"},
    "serviceKey": {"type": "apiKey", "in": "header", "name": "X-Nuntiuz-Service-Key",
                   "description": "SWITCHBOARD_ROGERTHAT_SERVICE_KEY"},
    "contactAtOnceBasic": {"type": "http", "scheme": "basic",
                           "description": "the in-app API key (SWITCHBOARD_CONTACTATONCE_API_KEY), "
                                          "or SWITCHBOARD_CONTACTATONCE_INBOUND_KEY when set"},
}


# --------------------------------------------------------------------------------------
# The document
# --------------------------------------------------------------------------------------

def openapi_path(flask_rule: str) -> str:
    """``/v1/messages/<message_id>`` -> ``/v1/messages/{message_id}``."""
    return _FLASK_PARAM.sub(r"{\1}", flask_rule)


def is_routed(app: Flask, operation: Operation) -> bool:
    """Whether the app serves this operation (looked up by a concrete example path)."""
    adapter = app.url_map.bind("localhost")
    try:
        adapter.match(operation.example_path or operation.path, method=operation.method.upper())
    except HTTPException:
        return False
    return True


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document for the routes ``app`` really serves."""
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        if is_routed(app, operation):
            paths.setdefault(operation.path, {})[operation.method] = operation.as_dict()
    return {
        "openapi": "3.1.0",
        "info": {"title": "Switchboard", "version": "1",
                 "description": "Multichannel message dispatcher: the producer API and the "
                                "provider callbacks. Every error is JSON."},
        "security": [{"apiKey": []}],
        "paths": paths,
        "components": {"schemas": {**model_schemas(), **SCHEMAS},
                       "securitySchemes": SECURITY_SCHEMES},
    }


@openapi.get("/openapi.json")
def document():  # type: ignore[no-untyped-def]
    """No auth: the contract is public, like a client library's documentation."""
    return jsonify(build_document(current_app))
