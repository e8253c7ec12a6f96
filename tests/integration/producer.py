"""A local producer endpoint for integration tests: answers from a script (then 200) and
records every webhook it gets."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Producer:
    """A producer endpoint that answers from a script, then 200, and records every call."""

    def __init__(self, script: list[int]) -> None:
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        producer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with producer.lock:
                    code = producer.script.pop(0) if producer.script else 200
                    producer.calls.append({"body": body, "headers": dict(self.headers),
                                           "code": code})
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"

    def accepted(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(c["body"]) for c in self.calls if c["code"] == 200]

    def results(self, run_id: str) -> list[dict[str, Any]]:
        """Accepted ``flow_result`` webhooks of one flow run."""
        return [b for b in self.accepted()
                if b["type"] == "flow_result" and b["data"]["run_id"] == run_id]
