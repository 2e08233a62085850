"""What the webhook tests share (tests/test_events_webhook.py,
tests/test_events_webhook_cli.py): the secret, ``Receiver`` (a webhook
receiver on a free local port that checks every request's signature, is
idempotent by event id, and can be told to fail), and ``sink`` (a
``WebhookSink`` with that secret)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from spendgate.events.webhook import WebhookSink, verify_signature

SECRET = "whsec-test-0123456789"


class Receiver:
    """A webhook receiver on a free local port, idempotent by event id.

    :param fail_first: the first N requests fail
    :param mode: how a failing request fails: ``"after"`` (processed, then
        500), ``"before"`` (500, not processed), ``"slow"`` (answers after
        ``delay`` seconds), ``"hang"`` (never answers until stopped)
    """

    def __init__(self, fail_first: int = 0, mode: str = "after", delay: float = 0):
        self.fail_first = fail_first
        self.mode = mode
        self.delay = delay
        self.lock = threading.Lock()
        self.requests = 0
        self.received: list[str] = []
        self.processed: Counter[str] = Counter()
        self.bad_signatures = 0
        self.bodies: dict[str, dict[str, Any]] = {}
        self.headers: dict[str, dict[str, str]] = {}
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/spendgate"

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers["Content-Length"]))
        ok = verify_signature(
            SECRET,
            body,
            request.headers["X-Spendgate-Timestamp"],
            request.headers["X-Spendgate-Signature"],
        )
        if not ok:
            with self.lock:
                self.bad_signatures += 1
            self.answer(request, 401)
            return
        event = json.loads(body)
        with self.lock:
            self.requests += 1
            failing = self.requests <= self.fail_first
            self.received.append(event["id"])
            self.bodies[event["id"]] = event
            self.headers[event["id"]] = dict(request.headers)
        if failing and self.mode == "hang":
            self.release.wait(60)
            return
        if failing and self.mode == "slow":
            time.sleep(self.delay)
        if failing and self.mode == "before":
            self.answer(request, 500)
            return
        with self.lock:
            if self.processed[event["id"]] == 0:  # idempotent: once per id
                self.processed[event["id"]] += 1
        self.answer(request, 500 if failing and self.mode == "after" else 204)

    @staticmethod
    def answer(request: BaseHTTPRequestHandler, status: int) -> None:
        try:
            request.send_response(status)
            request.send_header("Content-Length", "0")
            request.end_headers()
        except OSError:
            pass  # the client gave up (a timeout)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def sink(url: str, **options: Any) -> WebhookSink:
    return WebhookSink(url, SECRET, **options)
