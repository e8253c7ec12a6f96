"""The Messaggio gateway simulator speaks the wire format and behaves like the real gateway.

Signatures are computed here with hashlib, independently of the simulator's own helpers, so a
mistake in either shows up. Reports are received by a small HTTP server in a thread; every wait
is on a condition with a timeout.
"""

from __future__ import annotations

import hashlib
import http
import os
import signal
import subprocess
import sys
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request

from shared.providers.sandbox.messaggio import (
    STATUS_EXTENDED,
    SimulatorConfig,
    SimulatorServer,
    expiry_delay,
    report_plan,
)

USER, SECRET, SENDER = "sandbox", "sandbox-secret", "Switchboard"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
REPO = Path(__file__).resolve().parents[2]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sign(phones: list[str], txt: str | None, user: str = USER, secret: str = SECRET) -> str:
    return md5((user + SENDER + "".join(phones) + (txt or "") + secret).encode("utf-8"))


class Receiver:
    """A tiny report endpoint: records every call and answers queued statuses (then 200)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.cond = threading.Condition()
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/dlr?token=t0k"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        req = Request(environ)
        call = {"method": req.method, "args": req.args.to_dict(), "form": req.form.to_dict()}
        with self.cond:
            status = self.statuses.pop(0) if self.statuses else 200
            self.calls.append(call)
            self.cond.notify_all()
        start_response(
            f"{status} {http.HTTPStatus(status).phrase}", [("Content-Type", "text/plain")]
        )
        return [b"ok"]

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 5.0
    ) -> list:
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.calls), timeout), self.calls
            return list(self.calls)

    def reports_for(self, msg_id: str) -> list[dict[str, str]]:
        with self.cond:
            return [c["form"] for c in self.calls if c["form"].get("msg_id") == msg_id]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.stop()


@pytest.fixture
def sim(receiver: Receiver) -> Iterator[SimulatorServer]:
    config = SimulatorConfig(dlr_url=receiver.url, report_delay=0.05, seed=7)
    with SimulatorServer(config) as server:
        yield server


def send(sim: SimulatorServer, phones: list[str], txt: str | None = "Hello", **extra: Any):
    """POST a signed send request; returns (code, tech_message, {phone: msg_id})."""
    data: dict[str, Any] = {"user": USER, "from": SENDER, "phone": phones, "dlr": "1"}
    if txt is not None:
        data["txt"] = txt
    data["sign"] = sign(phones, txt)
    data.update(extra)
    resp = requests.post(sim.url, data=data, timeout=5)
    return parse(resp)


def parse(resp: requests.Response) -> tuple[int, str, dict[str, str]]:
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/xml")
    root = ET.fromstring(resp.text)
    assert root.tag == "response"
    ids = {el.attrib["phone"]: el.text or "" for el in root.findall("msg_id")}
    return int(root.findtext("code") or ""), root.findtext("tech_message") or "", ids


def upload(sim: SimulatorServer, data: bytes, sign_value: str | None = None, **form: str) -> dict:
    fields = {"login": USER, "sign": sign_value or md5((USER + md5(data) + SECRET).encode())}
    fields.update(form)
    files = {"image": ("pic.png", data, "image/png")}
    return requests.post(sim.media_url, data=fields, files=files, timeout=10).json()


def test_documented_sign_vector_is_accepted(receiver: Receiver) -> None:
    # providers.md 2.2 vector: login/FROM/79031234567/hello/5eCrET
    config = SimulatorConfig(user="login", secret="5eCrET", dlr_url=receiver.url)
    with SimulatorServer(config) as server:
        data = {"user": "login", "from": "FROM", "phone": "79031234567", "txt": "hello"}
        data["sign"] = "b5c0d2b33bb1293006d803bd7c6461f1"
        code, message, ids = parse(requests.get(server.url, params=data, timeout=5))
    assert (code, message, ids) == (0, "OK", {})  # no dlr=1: no msg_id elements


def test_viber_text_accepted_and_reports_delivered_then_seen(
    sim: SimulatorServer, receiver: Receiver
) -> None:
    phones = ["79031234567", "79165557755"]
    code, message, ids = send(sim, phones, "Привет", sending_method="viber", p_transaction_id="a-1")
    assert (code, message) == (0, "OK")
    assert set(ids) == set(phones)
    assert all(uuid.UUID(m).version == 4 for m in ids.values())

    receiver.wait_for(lambda calls: len(calls) == 4)
    for phone in phones:
        reports = receiver.reports_for(ids[phone])
        assert reports == [
            {
                "msg_id": ids[phone],
                "p_transaction_id": "a-1",
                "type": "delivery",
                "status": "delivered",
            },
            {"msg_id": ids[phone], "p_transaction_id": "a-1", "type": "seen"},
        ]
    assert all(c["method"] == "POST" and c["args"] == {"token": "t0k"} for c in receiver.calls)
    messages = sim.state.messages()
    assert [(m["phone"], m["channel"], m["txt"]) for m in messages] == [
        (p, "viber", "Привет") for p in phones
    ]
    stats = sim.state.stats()
    assert stats["accepted"] == 1 and stats["by_channel"] == {"viber": 2, "sms": 0}
    assert sim.state.wait_until(lambda s: s.stats()["reports_sent"] == 4)


def test_wrong_sign_and_unknown_user_are_auth_errors(sim: SimulatorServer) -> None:
    assert send(sim, ["79031234567"], sign="0" * 32)[:2] == (-2, "AUTHENTICATION ERROR")
    assert send(sim, ["79031234567"], sign=sign(["79031234567"], "Hello").upper())[0] == -2
    assert send(sim, ["79031234567"], user="someone")[0] == -2
    # phones are signed in request order
    assert (
        send(
            sim, ["79031234567", "79165557755"], sign=sign(["79165557755", "79031234567"], "Hello")
        )[0]
        == -2
    )
    assert sim.state.messages() == []
    assert sim.state.stats()["rejected"] == 4


def test_missing_fields_are_param_errors(sim: SimulatorServer) -> None:
    assert send(sim, ["79031234567"], txt=None, sending_method="viber")[:2] == (
        -1,
        "PARAM ERROR (txt)",
    )
    resp = requests.post(
        sim.url, data={"user": USER, "from": SENDER, "txt": "x", "sign": "a"}, timeout=5
    )
    assert parse(resp)[:2] == (-1, "PARAM ERROR (phone)")
    assert send(sim, ["+79031234567"])[:2] == (-1, "PARAM ERROR (phone)")
    assert send(sim, ["79031234567"], sending_method="whatsapp")[:2] == (
        -1,
        "PARAM ERROR (sending_method)",
    )
    assert send(sim, ["79031234567"], image_id="f" * 64, sending_method="viber")[:2] == (
        -1,
        "PARAM ERROR (image_id)",
    )


@pytest.mark.parametrize("value", ["59", "86401", "abc", "120.5", "-60"])
def test_bad_dlr_timeout_is_rejected(sim: SimulatorServer, value: str) -> None:
    assert send(sim, ["79031234567"], dlr_timeout=value)[:2] == (-1, "PARAM ERROR (dlr_timeout)")


def test_dlr_timeout_bounds_are_accepted(sim: SimulatorServer) -> None:
    assert send(sim, ["79031234567"], dlr_timeout="60", sending_method="viber")[0] == 0
    assert send(sim, ["79031234567"], dlr_timeout="86400", sending_method="viber")[0] == 0
    assert [m["dlr_timeout"] for m in sim.state.messages()] == [60, 86400]


def test_image_only_viber_after_real_upload(sim: SimulatorServer) -> None:
    result = upload(sim, PNG)
    assert result["status"] == 0 and len(result["image_id"]) == 64
    phones = ["79031234567"]
    code, _, ids = send(sim, phones, txt=None, sending_method="viber", image_id=result["image_id"])
    assert code == 0 and len(ids) == 1
    (message,) = sim.state.messages()
    assert (message["image_id"], message["txt"]) == (result["image_id"], None)
    # an image-only SMS makes no sense: txt is still required there
    assert send(sim, phones, txt=None, sending_method="sms", image_id=result["image_id"])[:2] == (
        -1,
        "PARAM ERROR (txt)",
    )


def test_upload_errors(sim: SimulatorServer) -> None:
    assert upload(sim, PNG, sign_value="0" * 32) == {"status": 2, "error": "Invalid sign"}
    assert upload(sim, b"%PDF-1.4 not an image")["status"] == 4
    assert upload(sim, b"GIF89a" + b"\x00" * 10)["status"] == 0
    missing = requests.post(sim.media_url, data={"login": USER, "sign": "x"}, timeout=5).json()
    assert missing["status"] == 1 and "image" in missing["error"]
    big = b"\xff\xd8\xff" + b"\x00" * (10 * 1024 * 1024)
    assert upload(sim, big)["status"] == 3
    assert sim.state.stats()["uploads"] == 1 and sim.state.stats()["uploads_rejected"] == 4


def test_scenario_0001_viber_user_not_found(sim: SimulatorServer, receiver: Receiver) -> None:
    _, _, ids = send(sim, ["79030000001"], sending_method="viber", p_transaction_id="p-1")
    receiver.wait_for(lambda calls: len(calls) >= 1)
    assert receiver.reports_for(ids["79030000001"]) == [
        {
            "msg_id": ids["79030000001"],
            "p_transaction_id": "p-1",
            "type": "delivery",
            "status": "undelivered",
            "status_extended": "VIBER_USER_NOT_FOUND",
        }
    ]
    assert sim.state.dispatcher.pending() == 0  # nothing else will follow


UNDELIVERED_AT_ONCE = [r for r in STATUS_EXTENDED if r != "VIBER_EXPIRED"]


def test_every_status_extended_value_of_the_table_has_its_phone(
    sim: SimulatorServer, receiver: Receiver
) -> None:
    """Phones ...0101 to ...0112 get the table's values in its order; all but the expiry
    come at once."""
    assert len(STATUS_EXTENDED) == 12 and STATUS_EXTENDED[3] == "VIBER_EXPIRED"
    phones = [f"790300{n:04d}" for n in range(101, 113) if n != 104]
    _, _, ids = send(sim, phones, sending_method="viber", p_transaction_id="x-1")
    receiver.wait_for(lambda calls: len(calls) == len(UNDELIVERED_AT_ONCE))
    got = {phone: receiver.reports_for(ids[phone]) for phone in phones}
    assert got == {
        phone: [{"msg_id": ids[phone], "p_transaction_id": "x-1", "type": "delivery",
                 "status": "undelivered", "status_extended": reason}]
        for phone, reason in zip(phones, UNDELIVERED_AT_ONCE, strict=True)
    }


def test_expiry_comes_when_the_dlr_timeout_passes_in_whole_minutes() -> None:
    assert expiry_delay(60, 60) == expiry_delay(90, 60) == expiry_delay(119, 60) == 60
    assert expiry_delay(120, 60) == 120 and expiry_delay(90, 0.5) == 0.5
    assert expiry_delay(None, 60) == 14 * 86400  # absent: the gateway's 14 days
    buffered = {"phone": "79030000006", "channel": "viber", "dlr_timeout": 90}
    assert report_plan(buffered, 0.2, 60) == [
        (0.2, {"type": "delivery", "status": "buffered"}),
        (60, {"type": "delivery", "status": "undelivered", "status_extended": "VIBER_EXPIRED"}),
    ]
    soon = report_plan({**buffered, "phone": "79030000104", "dlr_timeout": 60}, 0.2, 0.001)
    assert [due for due, _ in soon] == [0.001]  # one minute, 1 ms long


def test_an_expired_viber_message_is_reported_after_its_other_reports(receiver: Receiver) -> None:
    config = SimulatorConfig(dlr_url=receiver.url, report_delay=0.02, minute_seconds=0.05)
    with SimulatorServer(config) as server:
        _, _, ids = send(server, ["79030000006", "79030000104"], sending_method="viber",
                         dlr_timeout="119")
        receiver.wait_for(lambda calls: len(calls) == 3)
    assert [(r["status"], r.get("status_extended")) for r in
            receiver.reports_for(ids["79030000006"])] == [
        ("buffered", None), ("undelivered", "VIBER_EXPIRED")]
    assert [r.get("status_extended") for r in receiver.reports_for(ids["79030000104"])] == [
        "VIBER_EXPIRED"]


def test_the_accounts_sms_fallback_sends_expiry_txt_and_reports_it(receiver: Receiver) -> None:
    """The option the manager switches on: an undelivered Viber message (any reason, expiry
    included) goes out by SMS from the gateway itself, reported under the same ids."""
    config = SimulatorConfig(dlr_url=receiver.url, report_delay=0.02, minute_seconds=0.05,
                             sms_fallback=True)
    phones = ["79030000001", "79030000004", "79030000104", "79031234567"]
    with SimulatorServer(config) as server:
        _, _, ids = send(server, phones, sending_method="viber", p_transaction_id="f-1",
                         expiry_txt="Order ready (SMS)", dlr_timeout="60")
        receiver.wait_for(lambda calls: len(calls) == 8)  # 3 undelivered + 3 SMS + 2 delivered
        messages, stats = server.state.messages(), server.state.stats()
    sms = [(m["phone"], m["msg_id"], m["txt"], m["by_gateway"]) for m in messages
           if m["channel"] == "sms"]
    assert sorted(sms) == [(p, ids[p], "Order ready (SMS)", True) for p in phones[:3]]
    assert stats["gateway_sms"] == 3 and stats["by_channel"] == {"viber": 4, "sms": 3}
    assert stats["requests"] == stats["accepted"] == 1  # nobody asked for these SMS
    for phone, status in (("79030000001", "0"), ("79030000004", "-1"), ("79030000104", "0")):
        viber, by_sms = receiver.reports_for(ids[phone])
        assert viber["status"] == "undelivered"
        assert by_sms == {"msg_id": ids[phone], "p_transaction_id": "f-1", "status": status}
    assert len(receiver.reports_for(ids["79031234567"])) == 2  # delivered, seen: no SMS


def test_the_accounts_sms_fallback_sends_txt_without_expiry_txt(receiver: Receiver) -> None:
    config = SimulatorConfig(dlr_url=receiver.url, report_delay=0.02, sms_fallback=True)
    with SimulatorServer(config) as server:
        send(server, ["79030000001"], "Your order is ready", sending_method="viber")
        receiver.wait_for(lambda calls: len(calls) == 2)
        (sms,) = [m for m in server.state.messages() if m["channel"] == "sms"]
    assert sms["txt"] == "Your order is ready" and sms["expiry_txt"] is None


def test_reports_without_p_transaction_id(receiver: Receiver) -> None:
    config = SimulatorConfig(dlr_url=receiver.url, report_delay=0.02, echo_transaction_id=False)
    with SimulatorServer(config) as server:
        _, _, ids = send(server, ["79031234567"], sending_method="viber", p_transaction_id="e-1")
        receiver.wait_for(lambda calls: len(calls) == 2)
    msg_id = ids["79031234567"]
    assert receiver.reports_for(msg_id) == [
        {"msg_id": msg_id, "type": "delivery", "status": "delivered"},
        {"msg_id": msg_id, "type": "seen"},
    ]


def test_a_report_can_arrive_before_the_sends_answer(receiver: Receiver) -> None:
    config = SimulatorConfig(dlr_url=receiver.url, report_delay=0.02, report_before_answer=True)
    with SimulatorServer(config) as server:
        _, _, ids = send(server, ["79031234567", "79030000002"], sending_method="viber",
                         p_transaction_id="r-1")
        with receiver.cond:  # already there when the answer came: no waiting
            first = [c["form"] for c in receiver.calls]
        report = next(r for r in server.state.reports() if r["msg_id"] == ids["79031234567"])
        answered = {m["phone"]: m["answered_at"] for m in server.state.messages()}
    assert first[0] == {"msg_id": ids["79031234567"], "p_transaction_id": "r-1",
                        "type": "delivery", "status": "delivered"}
    assert report["at"] < answered["79031234567"]  # 0002 gets no report: not waited for


@pytest.mark.parametrize("field", ["sms_fallback", "echo_transaction_id",
                                   "report_before_answer"])
def test_switches_must_be_booleans(sim: SimulatorServer, field: str) -> None:
    resp = requests.post(sim.url + "_sim/config", json={field: "yes"}, timeout=5)
    assert resp.status_code == 400 and field in resp.json()["error"]
    assert requests.post(sim.url + "_sim/config", json={field: True}, timeout=5).ok


def test_sms_gets_standard_numeric_reports(sim: SimulatorServer, receiver: Receiver) -> None:
    _, _, ok = send(sim, ["79031234567"], sending_method="sms", p_transaction_id="s-1")
    _, _, bad = send(sim, ["79030000004"], p_transaction_id="s-2")  # no sending_method: sms
    receiver.wait_for(lambda calls: len(calls) == 2)
    assert receiver.reports_for(ok["79031234567"]) == [
        {"msg_id": ok["79031234567"], "p_transaction_id": "s-1", "status": "0"}
    ]
    assert receiver.reports_for(bad["79030000004"]) == [
        {"msg_id": bad["79030000004"], "p_transaction_id": "s-2", "status": "-1"}
    ]
    assert sim.state.stats()["by_channel"] == {"viber": 0, "sms": 2}


def test_no_dedupe_on_p_transaction_id(sim: SimulatorServer) -> None:
    first = send(sim, ["79031234567"], sending_method="viber", p_transaction_id="same")
    second = send(sim, ["79031234567"], sending_method="viber", p_transaction_id="same")
    assert first[0] == second[0] == 0
    assert first[2]["79031234567"] != second[2]["79031234567"]
    stats = sim.state.stats()
    assert (stats["requests"], stats["accepted"], stats["rejected"]) == (2, 2, 0)
    assert [m["p_transaction_id"] for m in sim.state.messages()] == ["same", "same"]


def test_injected_temporary_error_is_not_accepted(sim: SimulatorServer) -> None:
    resp = requests.post(
        f"{sim.url}_sim/config", json={"fail_rate": 1, "fail_kinds": ["temporary"]}, timeout=5
    )
    assert resp.status_code == 200 and resp.json()["fail_rate"] == 1.0
    assert send(sim, ["79031234567"])[:2] == (-4, "TEMPORARY ERROR")
    stats = requests.get(f"{sim.url}_sim/stats", timeout=5).json()
    assert (stats["accepted"], stats["rejected"], stats["injected"]["temporary"]) == (0, 1, 1)
    assert requests.get(f"{sim.url}_sim/messages", timeout=5).json() == []
    assert sim.state.dispatcher.pending() == 0


def test_injected_http_faults(sim: SimulatorServer) -> None:
    phones = ["79031234567"]
    data = {"user": USER, "from": SENDER, "phone": phones, "txt": "Hi", "sign": sign(phones, "Hi")}
    sim.state.update_config({"fail_rate": 1.0, "fail_kinds": ["http503"]})
    resp = requests.post(sim.url, data=data, timeout=5)
    assert (resp.status_code, resp.headers["Retry-After"]) == (503, "1")
    sim.state.update_config({"fail_kinds": ["drop"]})
    with pytest.raises(requests.ConnectionError):
        requests.post(sim.url, data=data, timeout=5)
    sim.state.update_config({"fail_kinds": ["slow"], "slow_seconds": 1.0})
    with pytest.raises(requests.ReadTimeout):
        requests.post(sim.url, data=data, timeout=0.3)
    # the slow answer still went out: the message is accepted, the ambiguity is real
    assert sim.state.wait_until(lambda s: len(s.messages()) == 1)
    assert [m["phone"] for m in sim.state.messages()] == phones
    stats = sim.state.stats()
    assert (stats["requests"], stats["accepted"], stats["rejected"]) == (3, 1, 2)


def test_report_is_retried_after_500_until_200(sim: SimulatorServer, receiver: Receiver) -> None:
    receiver.statuses = [500]
    _, _, ids = send(sim, ["79031234567"], sending_method="sms")
    receiver.wait_for(lambda calls: len(calls) == 2)
    expected = {"msg_id": ids["79031234567"], "p_transaction_id": "", "status": "0"}
    assert receiver.reports_for(ids["79031234567"]) == [expected, expected]
    assert sim.state.wait_until(lambda s: len(s.reports()) == 2)
    log = sim.state.reports()
    assert [(r["attempt"], r["status_code"], r["outcome"]) for r in log] == [
        (1, 500, "retry"),
        (2, 200, "done"),
    ]
    assert log[0]["report_id"] == log[1]["report_id"]
    stats = sim.state.stats()
    assert (stats["reports_sent"], stats["reports_failed"]) == (1, 1)


def test_404_stops_redelivery(sim: SimulatorServer, receiver: Receiver) -> None:
    receiver.statuses = [404]
    send(sim, ["79031234567"], sending_method="sms")
    assert sim.state.wait_until(lambda s: len(s.reports()) == 1)
    assert sim.state.reports()[0]["outcome"] == "done"
    assert sim.state.dispatcher.pending() == 0


def test_get_reports_and_control_api(sim: SimulatorServer, receiver: Receiver) -> None:
    base = sim.url + "_sim/"
    assert (
        requests.post(base + "config", json={"dlr_method": "get"}, timeout=5).json()["dlr_method"]
        == "GET"
    )
    assert requests.post(base + "config", json={"bogus": 1}, timeout=5).status_code == 400
    assert (
        requests.post(base + "config", json={"fail_kinds": ["nope"]}, timeout=5).status_code == 400
    )
    _, _, ids = send(sim, ["79030000002"], sending_method="viber", p_transaction_id="g-1")
    msg_id = ids["79030000002"]
    assert sim.state.dispatcher.pending() == 0  # scenario 0002: Viber stays silent
    pushed = requests.post(
        base + "report",
        json={"msg_id": msg_id, "params": {"type": "delivery", "status": "delivered"}},
        timeout=5,
    )
    assert pushed.status_code == 202
    calls = receiver.wait_for(lambda calls: len(calls) == 1)
    assert calls[0]["method"] == "GET"
    assert calls[0]["args"] == {
        "token": "t0k",
        "msg_id": msg_id,
        "p_transaction_id": "g-1",
        "type": "delivery",
        "status": "delivered",
    }
    sim.state.wait_until(lambda s: len(s.reports()) == 1)
    assert requests.get(base + "reports", timeout=5).json()[0]["status_code"] == 200
    (message,) = requests.get(base + "messages", timeout=5).json()
    assert message["msg_id"] == msg_id and message["from"] == SENDER and message["received_at"] > 0
    assert requests.post(base + "reset", timeout=5).json() == {"ok": True}
    assert sim.state.messages() == [] and sim.state.reports() == []
    assert requests.get(base + "stats", timeout=5).json()["requests"] == 0
    assert sim.state.config.dlr_method == "GET"  # reset keeps the config


def test_reports_recorded_but_not_sent_without_dlr_url() -> None:
    with SimulatorServer(SimulatorConfig(report_delay=0.01)) as server:
        send(server, ["79031234567"], sending_method="sms")
        assert server.state.wait_until(lambda s: len(s.reports()) == 1)
        (entry,) = server.state.reports()
        assert (entry["outcome"], entry["status_code"], entry["params"]["status"]) == (
            "unsent",
            None,
            "0",
        )


def test_cli_serves_until_sigterm() -> None:
    env = {
        **os.environ,
        "SWITCHBOARD_MESSAGGIO_USER": "cli-user",
        "SWITCHBOARD_MESSAGGIO_SECRET": "s3",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.providers.sandbox.messaggio", "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split("listening on ", 1)[1].split()[0]
        phones = ["79031234567"]
        digest = md5(("cli-user" + SENDER + "79031234567" + "hi" + "s3").encode())
        data = {"user": "cli-user", "from": SENDER, "phone": phones, "txt": "hi", "sign": digest}
        assert parse(requests.post(url, data=data, timeout=5))[0] == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
