"""The producer-side API: ``send(...)`` returns a message id at once; workers do the rest.

A producer needs only the broker URL (``SWITCHBOARD_BROKER_URL``, or ``SWITCHBOARD_REDIS_URL``)
and this package: the request is validated here, so a bad field fails in the caller's code,
and it travels to the workers by task name, so producers never import the worker code.

    from shared.client import send
    message_id = send(to={"phone": "+32470123456"}, route=["viber", "sms"], text="Hi")
"""

from __future__ import annotations

import uuid
from functools import lru_cache
from typing import Any

from celery import Celery

from shared import broker, tasknames
from shared.messages import new_message_id
from shared.models import DEFAULT_APP
from shared.schemas import EGRESS_CHECK, FriendRequest, SendRequest
from shared.settings import get_settings
from shared.signing import verify_signature
from shared.uow import FollowUps

__all__ = ["break_up", "conversation", "conversations", "invite", "list_templates",
           "load_template", "preview_template", "seal", "send", "send_campaign", "send_task",
           "show_template", "verify_signature"]


def producer_app(broker_url: str | None = None) -> Celery:
    """A Celery app that only publishes (no result backend, nothing imported from workers)."""
    return _producer_app(broker_url or get_settings().effective_broker_url)


@lru_cache(maxsize=4)
def _producer_app(broker_url: str) -> Celery:
    app = Celery("switchboard-producer", broker=broker_url)
    app.conf.update(
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options=broker.transport_options(get_settings()),  # as the workers
    )
    return app


def send_task(name: str, *args: Any, broker_url: str | None = None, queue: str | None = None,
              **kwargs: Any) -> None:
    """Publish task ``name`` on its queue (or ``queue``); the one place producers talk to
    the broker."""
    producer_app(broker_url).send_task(
        name, args=args, kwargs=kwargs or None, queue=queue or tasknames.QUEUE_OF[name]
    )


def publish_followups(followups: FollowUps) -> None:
    """The producer side's publisher for ``shared.uow`` (the web app, the CLI): committed
    tasks go out by name on their queues; the deadline index is the worker's alone."""
    if followups.index or followups.unindex:
        raise RuntimeError("only the worker keeps the deadline index")
    app = producer_app()
    for task in followups.tasks:
        app.send_task(task.name, args=task.args, countdown=task.countdown,
                      queue=task.destination)


def send(*, broker_url: str | None = None, app_id: str = DEFAULT_APP, **fields: Any) -> str:
    """Validate a send request and enqueue it; returns the message id immediately.

    The same ``idempotency_key`` always yields the same id, and the worker inserts each id
    once, so calling ``send`` twice with one key sends one message; with another body the
    first message stands (nobody can be answered 409 here: the worker logs a WARNING naming
    the key and adds an ``idempotency_conflict`` event to it). ``app_id`` is the producer
    app the message belongs to (its events and callback URL); ``default`` is the bootstrap app.
    Raises ``pydantic.ValidationError`` naming the bad field.

    ``template={"name": ..., "version": ..., "locale": ..., "data": {...}}`` instead of
    ``text`` renders a saved template of ``app_id`` when the worker accepts the message; one
    that cannot be rendered there (a placeholder missing from ``data``) leaves the message
    ``failed`` with reason ``template_error``, nothing sent. Check with
    ``preview_template`` first to be told at once.
    """
    request = SendRequest.model_validate(fields, context=EGRESS_CHECK)
    message_id = new_message_id(request.idempotency_key, app_id)
    send_task(tasknames.ACCEPT, message_id, request.model_dump(mode="json"), app_id,
              broker_url=broker_url, queue=tasknames.send_queue(request.priority))
    return message_id


def send_campaign(*, broker_url: str | None = None, app_id: str = DEFAULT_APP,
                  **fields: Any) -> str:
    """One content to many phones (``recipients=[{"phone": ..., "metadata": ...}]``, at most
    10,000): each phone gets its own message, sent in batches through the gateway's
    multi-phone request. Returns the campaign id at once; with an ``idempotency_key`` the id
    (and each message's, keyed ``<key>:<phone>``) is derived from it, so a retry is safe.
    Raises ``pydantic.ValidationError`` naming the bad field (e.g. ``recipients.17.phone``).
    """
    from shared.campaigns import CampaignRequest, new_campaign_id

    request = CampaignRequest.model_validate(fields, context=EGRESS_CHECK)
    campaign_id = new_campaign_id(request.idempotency_key, app_id)
    send_task(tasknames.ACCEPT_CAMPAIGN, campaign_id, request.model_dump(mode="json",
              exclude_unset=True), app_id, broker_url=broker_url)
    return campaign_id


def seal(message_id: str, *, broker_url: str | None = None) -> None:
    """Lock a message's messenger message (no more answers), e.g. once you have the answer."""
    send_task(tasknames.SEAL, message_id, str(uuid.uuid4()), broker_url=broker_url)


def invite(email: str, *, app_id: str = "rogerthat", name: str | None = None,
           message: str | None = None, language: str | None = None,
           broker_url: str | None = None, producer_app: str = DEFAULT_APP) -> None:
    """Invite someone to be the messenger service's friend (the outcome becomes an event of
    ``producer_app``, which lists the contact; ``app_id`` is the messenger app)."""
    req = FriendRequest(email=email, app_id=app_id, name=name, message=message,
                        language=language)
    send_task(tasknames.FRIEND_INVITE, str(req.email), req.app_id, str(uuid.uuid4()),
              req.name, req.message, req.language, producer_app, broker_url=broker_url)


def break_up(email: str, *, app_id: str = "rogerthat", broker_url: str | None = None,
             producer_app: str = DEFAULT_APP) -> None:
    """End the messenger friendship; later messages to them skip the messenger hop."""
    req = FriendRequest(email=email, app_id=app_id)
    send_task(tasknames.FRIEND_BREAK_UP, str(req.email), req.app_id, str(uuid.uuid4()),
              producer_app, broker_url=broker_url)


# --- reads: these need the HTTP API (the broker carries no answers) ----------------------

def conversations(consumer_id: str, *, api_url: str | None = None,
                  api_key: str | None = None) -> dict[str, Any]:
    """A consumer's in-app conversations, ours merged with the provider's (GetConversations)."""
    return _api_get("/v1/conversations", {"consumer_id": consumer_id}, api_url, api_key)


def conversation(key: str, *, api_url: str | None = None,
                 api_key: str | None = None) -> dict[str, Any]:
    """One conversation (our id, or the provider's VisitId) with its merged transcript."""
    return _api_get(f"/v1/conversations/{_quote(key)}", None, api_url, api_key)


def load_template(document: str, *, content_type: str = "application/yaml",
                  api_url: str | None = None, api_key: str | None = None) -> dict[str, Any]:
    """Save a template document (YAML or JSON text) as its next version: ``{"name",
    "version"}``. A template that does not compile is a ``requests.HTTPError`` whose JSON
    names the locale, field and line."""
    return _api("POST", "/v1/templates", api_url, api_key, data=document.encode(),
                headers={"Content-Type": content_type})


def list_templates(*, api_url: str | None = None,
                   api_key: str | None = None) -> dict[str, Any]:
    """The latest version of each of the app's templates: ``{"templates": [...]}``."""
    return _api_get("/v1/templates", None, api_url, api_key)


def show_template(name: str, *, version: int | None = None, api_url: str | None = None,
                  api_key: str | None = None) -> dict[str, Any]:
    """A template's versions and the document of the latest (or of ``version``)."""
    params = {"version": str(version)} if version is not None else None
    return _api_get(f"/v1/templates/{_quote(name)}", params, api_url, api_key)


def preview_template(name: str, data: dict[str, Any] | None = None, *,
                     locale: str | None = None, version: int | None = None,
                     api_url: str | None = None, api_key: str | None = None) -> dict[str, Any]:
    """Render a saved template: the content per channel and, for SMS, its encoding, length
    and segments. Send it with ``send(..., template={"name": ..., "data": ...})``."""
    body: dict[str, Any] = {"data": data or {}}
    if locale is not None:
        body["locale"] = locale
    if version is not None:
        body["version"] = version
    return _api("POST", f"/v1/templates/{_quote(name)}/preview", api_url, api_key, json=body)


def cancel(message_id: str, *, api_url: str | None = None,
           api_key: str | None = None) -> dict[str, Any]:
    """Cancel a message not yet sent on any hop: ``{"id", "status": "cancelled"}``. One
    already sent on a hop raises ``requests.HTTPError`` (409) whose JSON names that hop."""
    return _api("DELETE", f"/v1/messages/{_quote(message_id)}", api_url, api_key)


def cancel_campaign(campaign_id: str, *, api_url: str | None = None,
                    api_key: str | None = None) -> dict[str, Any]:
    """Cancel each of a campaign's messages not yet sent: ``{"cancelled", "not_cancelled"}``."""
    return _api("DELETE", f"/v1/campaigns/{_quote(campaign_id)}", api_url, api_key)


def load_flow(document: str, *, content_type: str = "application/yaml",
              api_url: str | None = None, api_key: str | None = None) -> dict[str, Any]:
    """Save a flow definition (YAML or JSON text) as its next version: ``{"name", "version"}``."""
    return _api("POST", "/v1/flows", api_url, api_key, data=document.encode(),
                headers={"Content-Type": content_type})


def start_flow(name: str, contacts: list[dict[str, Any]] | None = None, *, all: bool = False,
               version: int | None = None, api_url: str | None = None,
               api_key: str | None = None) -> dict[str, Any]:
    """Launch a flow for contacts (``[{"to": {"phone": ...}}, ...]``) or ``all`` consenting
    ones; returns the runs' ids at once (each run then proceeds on its own)."""
    body: dict[str, Any] = {"contacts": contacts or [], "all": all}
    if version is not None:
        body["version"] = version
    return _api("POST", f"/v1/flows/{_quote(name)}/start", api_url, api_key, json=body)


def flow_run(run_id: str, *, api_url: str | None = None,
             api_key: str | None = None) -> dict[str, Any]:
    """A run's result so far: each step's message, answer and outcome, and its end."""
    return _api_get(f"/v1/flow-runs/{_quote(run_id)}", None, api_url, api_key)


def flow_stats(name: str, *, api_url: str | None = None,
               api_key: str | None = None) -> dict[str, Any]:
    """Per version: runs started/finished/timed out and the answer counts of every step."""
    return _api_get(f"/v1/flows/{_quote(name)}/stats", None, api_url, api_key)


def _quote(part: str) -> str:
    from urllib.parse import quote

    return quote(part, safe="")


def _api_get(path: str, params: dict[str, str] | None, api_url: str | None,
             api_key: str | None) -> dict[str, Any]:
    return _api("GET", path, api_url, api_key, params=params)


def _api(method: str, path: str, api_url: str | None, api_key: str | None,
         **kwargs: Any) -> dict[str, Any]:
    """Call the API with the app's key (default: the first bootstrap key); raises
    ``requests.HTTPError`` carrying the JSON error on a 4xx/5xx."""
    import requests

    settings = get_settings()
    key = api_key or next(iter(settings.api_key_list), "")
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    response = requests.request(method, (api_url or settings.api_url).rstrip("/") + path,
                                headers=headers, timeout=30, **kwargs)
    response.raise_for_status()
    return response.json()
