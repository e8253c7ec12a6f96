"""Status webhook signatures: a round trip, and every way a forgery or replay is refused."""

from __future__ import annotations

from shared.client import verify_signature
from shared.signing import sign

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
