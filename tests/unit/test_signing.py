"""Status webhook signatures: a round trip, and every way a forgery or replay is refused; the
Standard Webhooks headers checked with the reference library, not with our own code."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from shared.client import verify_signature
from shared.signing import (hmac_key, new_secret, sign, standard_headers, standard_signature,
                            webhook_id)

BODY = b'{"id": 1, "type": "status"}'


def test_round_trip() -> None:
    assert verify_signature("s3cret", BODY, "1700000000", sign("s3cret", "1700000000", BODY),
                            now=1700000010)


def test_known_vector() -> None:
    # echo -n "1.{}" | openssl dgst -sha256 -hmac key
    assert sign("key", "1", b"{}") == (
        "v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224")


def test_tampered_body_wrong_secret_and_old_timestamp_are_refused() -> None:
    good = sign("s3cret", "1700000000", BODY)
    assert not verify_signature("s3cret", BODY + b" ", "1700000000", good, now=1700000000)
    assert not verify_signature("other", BODY, "1700000000", good, now=1700000000)
    assert not verify_signature("s3cret", BODY, "1700000000", good, now=1700000000 + 301)
    assert not verify_signature("s3cret", BODY, "not-a-number", good, now=1700000000)


# --- Standard Webhooks: checked with the reference library (standardwebhooks on PyPI) ----------


def test_the_specifications_published_vector() -> None:
    # The example in the Standard Webhooks specification and its libraries' tests.
    assert standard_signature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                              "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
                              b'{"test": 2432232314}') == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")


def test_new_secrets_are_whsec_and_base64_of_32_random_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert first != second and first.startswith("whsec_")
    key = base64.b64decode(first.removeprefix("whsec_"), validate=True)
    assert len(key) == 32 and hmac_key(first) == key


def test_the_reference_library_verifies_our_headers_with_the_secret_as_printed() -> None:
    secret, now = new_secret(), str(int(time.time()))
    headers = standard_headers([secret], webhook_id(118), now, BODY)
    assert headers["webhook-id"] == "evt_118" and headers["webhook-timestamp"] == now
    assert Webhook(secret).verify(BODY, headers) == {"id": 1, "type": "status"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)


def test_during_an_overlap_either_secret_verifies_and_no_other() -> None:
    new, old, now = new_secret(), new_secret(), str(int(time.time()))
    headers = standard_headers([new, old], "evt_7", now, BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(BODY, headers)
    Webhook(old).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)


@pytest.mark.parametrize("legacy", [
    "whsec_Zx-9_qLr3b2c5d7e8f9g0h1i2j3k4l5m6n7o8p9q0r1",  # an older URL-safe token
    "whsec_abc",  # not padded base64
    "integration-signing-secret",  # an operator's own SWITCHBOARD_CALLBACK_SIGNING_SECRET
])
def test_a_legacy_secret_signs_with_its_utf8_bytes(legacy: str) -> None:
    assert hmac_key(legacy) == legacy.encode("utf-8")
    headers = standard_headers([legacy], "evt_1", str(int(time.time())), BODY)
    Webhook(legacy.encode("utf-8")).verify(BODY, headers)  # raw bytes: the key as is
