"""Scaffolding shared by the provider simulators (``messaggio.py``, ``rogerthat.py``).

Only the parts that do not depend on a provider's protocol live here: serving a Flask app on a
real socket from a daemon thread, the command-line loop that serves until SIGINT/SIGTERM, and the
single time-ordered thread that pushes reports / callbacks out. Wire formats, validation,
scenarios and retry policies stay in each simulator, which keeps them independent of each other
and of the production adapters.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Generic, Self, TypeVar

from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

log = logging.getLogger(__name__)

SHUTDOWN_POLL = 0.05  # how fast stop() returns; socketserver checks its flag this often

T = TypeVar("T")
S = TypeVar("S", bound="BackgroundServer")


class BackgroundServer:
    """A simulator app on a real socket, served from a daemon thread; usable as a context manager.

    Subclasses build their state and app, pass the app here, add their own URL properties and
    override ``_stop_background`` to stop whatever else they run (their delivery thread).
    """

    def __init__(self, app: Flask, host: str, port: int, *, thread_name: str) -> None:
        self.app = app
        self._host, self._port = host, port
        self._thread_name = thread_name
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind (port 0 picks a free one) and serve in the background."""
        self._server = make_server(self._host, self._port, self.app, threaded=True)
        self._port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL},
            name=self._thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the HTTP server down, then the subclass's own background work."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        self._stop_background()

    def refuse_connections(self, seconds: float) -> None:
        """Close the listening socket for ``seconds``, then listen again on the same port.

        New connections meanwhile are refused (ECONNREFUSED, as when the provider's host is
        down): a fault no handler can fake once a connection is accepted. Connections already
        open and the subclass's delivery thread carry on. Blocks for ``seconds``.
        """
        if self._server is None or self._thread is None:
            raise RuntimeError("the server is not running")
        self._server.shutdown()
        self._server.socket.close()  # not server_close(): that waits for requests in flight
        self._thread.join(5.0)
        time.sleep(seconds)
        self.start()  # same port: it was resolved by the first bind (SO_REUSEADDR is on)

    def _stop_background(self) -> None:
        """Hook: stop threads the subclass owns (runs after the HTTP server is down)."""

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        """e.g. ``http://127.0.0.1:8026`` (no trailing slash); the control API is under ``/_sim/``."""
        return f"http://{self._host}:{self._port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_until_signal(server: S, banner: Callable[[S], str]) -> int:
    """Start ``server``, print ``banner(server)``, serve until SIGINT/SIGTERM, stop, return 0.

    The handlers go in before the server starts, so a signal sent as soon as the banner shows
    (what ``switchboard up`` and the CLI tests do) always ends in a clean stop. The banner is
    built after ``start()`` because port 0 is only resolved by binding.
    """
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    print(banner(server), flush=True)
    stop.wait()
    server.stop()
    return 0


class DeliveryThread(Generic[T]):
    """One daemon thread handing items to ``deliver`` in due order from a heap.

    Why one thread and a heap: the items of one message keep their order (delivered before
    seen, received before acked) unless a retry intervenes, as at the real providers, and a
    timed ``Condition.wait`` wakes exactly when the next item is due (no polling). The thread
    starts with the first item. ``deliver`` never runs under the heap's lock, so it may take
    other locks and push retries. A ``deliver`` that raises is logged and the thread carries
    on: it is the only one delivering.
    """

    def __init__(self, deliver: Callable[[T], None], *, name: str) -> None:
        self._deliver_one = deliver
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count(1)  # ties on due keep push order
        self._thread: threading.Thread | None = None
        self._stopped = False

    def push(self, item: T, delay: float = 0.0) -> None:
        """Queue ``item`` for ``delay`` seconds from now; ignored once stopped."""
        with self._cond:
            if self._stopped:
                return
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), item))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def pending(self) -> int:
        """Items (retries included) still waiting to be delivered."""
        with self._cond:
            return len(self._heap)

    def clear(self) -> None:
        """Drop everything pending (used by reset)."""
        with self._cond:
            self._heap.clear()
            self._cond.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; an in-flight delivery finishes first (bounded by its HTTP timeout)."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while (item := self._next_due()) is not None:
            try:
                self._deliver_one(item)
            except Exception:
                log.exception("%s: a delivery failed; going on with the next", self._name)

    def _next_due(self) -> T | None:
        """Wait (timed, on the condition) for the earliest item to fall due."""
        with self._cond:
            while not self._stopped:
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait <= 0:
                    return heapq.heappop(self._heap)[2]
                self._cond.wait(wait)
            return None
