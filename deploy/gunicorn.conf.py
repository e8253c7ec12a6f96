"""gunicorn settings for the API/webhook app, read from the environment.

Webhook handlers do one insert and one publish, so a few sync workers with threads cover a lot
of callbacks; raise GUNICORN_WORKERS with cores.
"""

import multiprocessing
import os

from gunicorn.arbiter import Arbiter as _Arbiter
from gunicorn.workers.base import Worker as _Worker

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", min(4, multiprocessing.cpu_count() * 2)))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
accesslog = "-"
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def on_starting(server: _Arbiter) -> None:
    """Prometheus multiprocess mode (shared/metrics.py): every web worker, and the Celery
    workers of this host, count in one directory that /metrics adds up. Set in the master
    before any worker is forked, so each inherits it."""
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(
        os.environ.get("SWITCHBOARD_DATA_DIR", "var"), "metrics"))


def child_exit(server: _Arbiter, worker: _Worker) -> None:
    """A dead web worker's live gauges leave the sum (its counters stay: they are totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
