"""A real HTTP server on loopback that receives webhooks, answering each message's first attempts with an
error so that retries happen."""

from __future__ import annotations

import base64
import contextlib
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ALERT_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()  # fake: made per run
ALERT_RULES = """
[[rules]]
name = "system-down"
kind = "system_down"
for_minutes = 0.05

[[rules]]
name = "wait-over-target"
kind = "wait_over_target"
for_minutes = 1

[[rules]]
name = "failures-piling-up"
kind = "failure_rate"
per_minute = 0.5
window_minutes = 2

[[rules]]
name = "drift-open"
kind = "drift_open"
for_minutes = 0
"""


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    url: str
    fail_first: int
    fail_only: str = ""  # fail only the messages whose webhook-id holds this
    delay_s: float = 0.0  # each answer comes this late
    requests: list[Received] = field(default_factory=list)
    _attempts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            message = headers.get("webhook-id", "")
            self._attempts[message] += 1
            failing = self._attempts[message] <= self.fail_first and self.fail_only in message
            status = 503 if failing else 204
            self.requests.append(Received(headers, body, status))
            return status

    def delivered(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.answered < 300]


@contextlib.contextmanager
def webhook_receiver(fail_first: int = 0, fail_only: str = "", delay_s: float = 0.0) -> Iterator[Receiver]:
    receiver: Receiver | None = None

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            assert receiver is not None
            time.sleep(receiver.delay_s)
            self.send_response(receiver.answer({k.lower(): v for k, v in self.headers.items()}, body))
            self.end_headers()

        def log_message(self, *_: object) -> None:
            """Quiet: a test reads what the receiver got, not its access log."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hooks", fail_first=fail_first,
                        fail_only=fail_only, delay_s=delay_s)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
