"""What ``switchboard up`` prints and logs (shared/terminal.py), fed the lines our processes
really write (Celery, gunicorn, Flower, the simulators, honcho's own)."""

from __future__ import annotations

import io
import threading
import time
from datetime import datetime
from pathlib import Path

from honcho.printer import Message

from shared import terminal

AT = datetime(2026, 12, 4, 18, 34, 22)
SUPERUSER_BLOCK = [
    "/venv/lib/python3.11/site-packages/celery/platforms.py:893: SecurityWarning: You're "
    "running the worker with superuser privileges: this is",
    "absolutely not recommended!",
    "",
    "Please specify a different user using the --uid option.",
    "",
    "User information: uid=0 euid=0 gid=0 egid=0",
    "",
    "  _warn_or_raise_security_error(egid, euid, gid, uid,",
]
CELERY_BANNER = [" ", " -------------- switchboard@vm v5.7.0 (collider)", "--- ***** ----- ",
                 "[tasks]", "  . switchboard.accept", ""]


def feed(console: terminal.Console, name: str, *lines: str) -> None:
    for line in lines:
        console.write(Message("line", (line + "\n").encode(), AT, name, None))


def system(console: terminal.Console, line: str) -> None:
    console.write(Message("line", line + "\n", AT, terminal.SYSTEM, None))


def make(tmp_path: Path, verbose: bool = False,
         expected: tuple[str, ...] = ()) -> tuple[terminal.Console, io.StringIO]:
    out = io.StringIO()
    return terminal.Console(tmp_path, verbose=verbose, output=out, expected=expected), out


def test_info_and_banners_stay_in_the_log_and_ready_is_one_line(tmp_path: Path) -> None:
    console, out = make(tmp_path, expected=("worker", "web"))
    system(console, "worker started (pid=11)")
    feed(console, "worker", *CELERY_BANNER,
         "[2026-12-04 18:34:23,993: INFO/MainProcess] switchboard@vm ready.",
         "[2026-12-04 18:34:24,101: INFO/MainProcess] Task switchboard.accept[1] received")
    feed(console, "web", "[2026-12-04 18:34:20 +0000] [11756] [INFO] Listening at: "
         "http://127.0.0.1:8000 (11756)", '127.0.0.1 - - "GET /healthz HTTP/1.1" 200 16')
    console.close()
    shown = out.getvalue().splitlines()
    assert len(shown) == 3, shown
    assert shown[0].endswith("ready") is False and "worker" in shown[0] and "ready (" in shown[0]
    assert "web" in shown[1] and "ready at http://127.0.0.1:8000" in shown[1]
    assert shown[2].startswith("18:34:22 all 2 processes are ready")
    logged = (tmp_path / "worker.log").read_text().splitlines()
    assert logged[-1].endswith("Task switchboard.accept[1] received")
    assert len(logged) == len(CELERY_BANNER) + 2
    assert "GET /healthz" in (tmp_path / "web.log").read_text()


def test_warnings_and_errors_are_shown_with_their_traceback(tmp_path: Path) -> None:
    console, out = make(tmp_path)
    feed(console, "worker",
         "[2026-12-04 18:35:00,000: INFO/MainProcess] Task switchboard.accept[1] received",
         "[2026-12-04 18:35:01,000: WARNING/ForkPoolWorker-1] idempotency key reused",
         "[2026-12-04 18:35:02,000: ERROR/ForkPoolWorker-2] Task switchboard.dispatch[2] raised",
         "Traceback (most recent call last):",
         '  File "worker/engine.py", line 1, in send',
         "RuntimeError: boom",
         "[2026-12-04 18:35:03,000: INFO/MainProcess] Task switchboard.accept[3] received")
    feed(console, "web", "[2026-12-04 18:35:04 +0000] [11] [ERROR] Worker timeout")
    feed(console, "flower", "[E 261204 18:35:05 web:1] Uncaught exception GET /")
    shown = out.getvalue()
    assert "idempotency key reused" in shown and "RuntimeError: boom" in shown
    assert 'File "worker/engine.py"' in shown and "Worker timeout" in shown
    assert "Uncaught exception" in shown and "received" not in shown


def test_the_superuser_warning_is_said_once_for_every_worker(tmp_path: Path) -> None:
    console, out = make(tmp_path)
    for name in ("worker", "sweeper", "notifier"):
        feed(console, name, *SUPERUSER_BLOCK, *CELERY_BANNER)
    shown = out.getvalue()
    assert shown.count("superuser") == 1 and "ordinary user" in shown
    assert "uid=0" not in shown and "switchboard@vm" not in shown  # nor the banner after it
    for name in ("worker", "sweeper", "notifier"):  # each log keeps its own copy
        assert "superuser privileges" in (tmp_path / f"{name}.log").read_text()


def test_a_python_warning_other_than_that_is_shown(tmp_path: Path) -> None:
    console, out = make(tmp_path)
    feed(console, "beat", "/venv/x.py:3: DeprecationWarning: old_call is deprecated",
         "  old_call()", *CELERY_BANNER)
    assert out.getvalue().count("\n") == 2 and "old_call()" in out.getvalue()


def test_a_process_that_exits_before_ready_is_named_with_its_last_lines(tmp_path: Path) -> None:
    console, out = make(tmp_path)
    system(console, "beat started (pid=12)")
    feed(console, "beat", "Error: Invalid value for '-A': module 'worker' has no attribute 'app'")
    system(console, "beat stopped (rc=2)")
    system(console, "sending SIGTERM to worker (pid 11)")
    system(console, "worker stopped (rc=-15)")
    shown = out.getvalue().splitlines()
    assert "beat" in shown[0] and "exited with code 2 before it was ready" in shown[0]
    assert str(tmp_path / "beat.log") in shown[0]
    assert shown[1].strip().startswith("Error: Invalid value")
    assert shown[2].endswith("stopping every other process") and len(shown) == 3
    assert "sending SIGTERM" in (tmp_path / "switchboard.log").read_text()


def test_ctrl_c_is_one_line(tmp_path: Path) -> None:
    console, out = make(tmp_path)
    feed(console, "worker", "[2026-12-04 18:34:23,993: INFO/MainProcess] switchboard@vm ready.")
    system(console, "SIGINT received")
    system(console, "sending SIGTERM to worker (pid 11)")
    system(console, "worker stopped (rc=0)")
    assert out.getvalue().splitlines()[-1] == "18:34:22 stopping every process (SIGINT)"


def test_verbose_streams_every_line_as_honcho_did(tmp_path: Path) -> None:
    console, out = make(tmp_path, verbose=True)
    console.width = 8
    feed(console, "worker", *CELERY_BANNER)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(CELERY_BANNER)
    assert lines[1] == "18:34:22 worker   |  -------------- switchboard@vm v5.7.0 (collider)"


def test_rotate_keeps_the_previous_run(tmp_path: Path) -> None:
    (tmp_path / "worker.log").write_text("first run\n")
    terminal.rotate_logs(tmp_path)
    assert (tmp_path / "worker.log.1").read_text() == "first run\n"
    assert terminal.log_names(tmp_path) == []


def test_follow_prints_new_lines_of_every_log(tmp_path: Path) -> None:
    (tmp_path / "web.log").write_text("old\n")
    out = io.StringIO()
    ends = terminal.show(tmp_path, ["web"], None, io.StringIO())
    done = threading.Event()
    follower = threading.Thread(target=terminal.follow, args=(tmp_path, None, ends, out),
                                kwargs={"until": done.is_set, "interval": 0.02})
    follower.start()
    with open(tmp_path / "web.log", "a") as log:
        log.write("new line\npart")
    (tmp_path / "worker.log").write_text("a worker line\n")
    deadline = time.monotonic() + 5
    while out.getvalue().count("\n") < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    done.set()
    follower.join(5)
    # The name column widens once worker.log appears (it may come after web's line was
    # printed), so compare the lines without their padding.
    assert sorted(" ".join(line.split()) for line in out.getvalue().splitlines()) == [
        "web | new line", "worker | a worker line"]


def test_the_banner_with_its_credentials_is_shown_but_not_logged(tmp_path: Path) -> None:
    console, out = make(tmp_path)
    console.say("  API key (generated): dev-secret-key", log=False)
    console.say("demo: sent 4 messages")
    console.close()
    assert "dev-secret-key" in out.getvalue()
    logged = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert "dev-secret-key" not in logged and "demo: sent 4 messages" in logged
