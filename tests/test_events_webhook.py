"""Webhook delivery, against a real HTTP server on a free local port.

How: a receiver (``http.server`` in a thread, started by each test) checks
every request's signature with the secret, as the README tells receivers
to, remembers every id it was sent and every id it *processed*, and can be
told to fail: answer 500 after processing (a receiver that crashed after
its work, so spendgate sends the event again), answer 500 without
processing, or answer too late. Facts go through ``BudgetManager`` on both
backends and other events are appended to the events stream with the
protocol's fields; an ``EventDispatcher`` with a ``WebhookSink`` delivers
them. The CLI and the SIGKILL tests run ``spendgate events run`` on the
real Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from conftest import REDIS_URL, MakeBudget, real_redis_available, service_missing
from spendgate import BudgetConfig, BudgetManager
from spendgate.cli import main
from spendgate.core.keys import Keys
from spendgate.errors import ConfigurationError, WebhookError
from spendgate.events import Event, EventDispatcher
from spendgate.events.webhook import WebhookSink, sign, verify_signature
from test_events import FAST, add_event, config_of, until

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


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(fail_first=3) as r:
        yield r


async def facts_and_events(
    budget: BudgetManager, redis: aioredis.Redis, n: int = 6
) -> list[str]:
    """``n`` charges and credits, and two cap events; their event ids."""
    ids = []
    for i in range(n):
        if i % 3 == 0:
            record = await budget.add_credits("ada", "2")
        else:
            record = await budget.record_spend("ada", "0.5", model="gpt-4o")
        ids.append(record.entry_id)
    ids.append(await add_event(redis, budget.keys))
    ids.append(await add_event(redis, budget.keys, "credits.cap_warning"))
    return ids


def sink(url: str, **options: Any) -> WebhookSink:
    return WebhookSink(url, SECRET, **options)


# -- delivery --------------------------------------------------------------------------


async def test_a_receiver_failing_three_times_gets_every_event_once_processed(
    make_budget: MakeBudget, redis_client: aioredis.Redis, receiver: Receiver
) -> None:
    budget = make_budget()
    ids = await facts_and_events(budget, redis_client)
    dispatcher = EventDispatcher(
        config_of(budget), targets=[sink(receiver.url)], redis=redis_client
    )
    await dispatcher.drain()
    await dispatcher.aclose()
    assert receiver.bad_signatures == 0
    assert set(receiver.received) == set(ids)
    # the first event was sent 4 times (3 failures after processing): the
    # receiver got it again and again, and processed it once
    assert len(receiver.received) == len(ids) + 3
    assert receiver.processed == Counter(set(ids))
    assert dispatcher.delivered_total == len(ids)
    assert dispatcher.dead_lettered_total == 0


async def test_the_body_is_the_event_and_the_headers_name_it(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget()
    record = await budget.record_spend("ada", "0.125", project_id="p1")
    with Receiver() as receiver:
        dispatcher = EventDispatcher(
            config_of(budget), targets=[sink(receiver.url)], redis=redis_client
        )
        await dispatcher.drain()
        await dispatcher.aclose()
    body = receiver.bodies[record.entry_id]
    event = Event.from_dict(body)
    assert (event.id, event.type, event.occurred_at) == (
        record.entry_id,
        "credits.deducted",
        record.occurred_at,
    )
    assert body["data"]["amount"] == "0.125"  # exact, a string
    headers = receiver.headers[record.entry_id]
    assert headers["X-Spendgate-Event-Id"] == record.entry_id
    assert headers["X-Spendgate-Event-Type"] == "credits.deducted"
    assert headers["Content-Type"] == "application/json"


async def test_a_webhook_that_never_takes_an_event_dead_letters_it(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget()
    sid = await add_event(redis_client, budget.keys)
    with Receiver(fail_first=100, mode="before") as receiver:
        config = config_of(budget, events_max_attempts=4)
        dispatcher = EventDispatcher(
            config, targets=[sink(receiver.url)], redis=redis_client
        )
        await dispatcher.drain()
        await dispatcher.aclose()
    assert receiver.received == [sid] * 4
    [(_, letter)] = await redis_client.xrange(budget.keys.events_dead)
    assert letter[b"id"].decode() == sid
    assert letter[b"n"] == b"4"
    assert (
        letter[b"err"]
        == b"WebhookError: webhook http://127.0.0.1:%d/***: "
        % (receiver.server.server_address[1])
        + b"answered 500"
    )
    # the path (where a token would be) is not in the dead letter
    assert b"hooks/spendgate" not in b"".join(letter.values())


async def test_a_timeout_is_a_failed_attempt_retried(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget()
    sid = await add_event(redis_client, budget.keys)
    with Receiver(fail_first=1, mode="slow", delay=3) as receiver:
        target = sink(receiver.url, timeout_seconds=0.2)
        dispatcher = EventDispatcher(
            config_of(budget), targets=[target], redis=redis_client
        )
        await dispatcher.drain()
        await dispatcher.aclose()
    assert receiver.received == [sid, sid]
    assert dispatcher.delivered_total == 1


async def test_webhook_types_filter_what_is_sent(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget()
    await budget.record_spend("ada", "1")
    sid = await add_event(redis_client, budget.keys)
    with Receiver() as receiver:
        target = sink(receiver.url, types=["credits.cap_reached"])
        dispatcher = EventDispatcher(
            config_of(budget), targets=[target], redis=redis_client
        )
        assert not dispatcher.wants_facts
        await dispatcher.drain()
        await dispatcher.aclose()
    assert receiver.received == [sid]
    assert await redis_client.xinfo_groups(budget.keys.ledger) == []


# -- signatures and settings --------------------------------------------------------


def test_signatures_verify_only_the_same_secret_body_and_a_recent_time() -> None:
    body = b'{"id":"1"}'
    now = 1_800_000_000
    signature = sign(SECRET, str(now), body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify_signature(SECRET, body, str(now), signature, now=now + 299)
    assert not verify_signature("other", body, str(now), signature, now=now)
    assert not verify_signature(SECRET, body + b" ", str(now), signature, now=now)
    assert not verify_signature(SECRET, body, str(now + 1), signature, now=now)
    assert not verify_signature(SECRET, body, str(now), signature, now=now + 301)
    assert not verify_signature(SECRET, body, "soon", signature, now=now)


def test_webhook_settings_are_checked_and_kept_secret() -> None:
    config = BudgetConfig(
        events_webhook_url="https://hooks.example.com/T0/B0/tok3n, http://h:81/x",
        events_webhook_secret="s3cr3t-value",
        events_webhook_types="credits.cap_reached,credits.low_balance",
    )
    sinks = WebhookSink.from_config(config)
    assert [s.name for s in sinks] == [
        "webhook https://hooks.example.com/***",
        "webhook http://h:81/***",
    ]
    assert sinks[0].wants("credits.cap_reached") and not sinks[0].wants(
        "credits.deducted"
    )
    shown = json.dumps(config.describe()) + repr(config)
    assert "tok3n" not in shown and "s3cr3t" not in shown
    with pytest.raises(ConfigurationError, match="without events_webhook_secret"):
        WebhookSink.from_config(BudgetConfig(events_webhook_url="https://h/x"))
    for wrong in (
        {"events_webhook_url": "ftp://h/x"},
        {"events_webhook_types": "credits.spent"},
        {"events_group": "no spaces"},
    ):
        with pytest.raises(ValueError):
            BudgetConfig(**wrong)


async def test_an_unreachable_webhook_is_a_webhook_error() -> None:
    with Receiver() as receiver:
        url = receiver.url
    target = sink(url, timeout_seconds=1)  # its server is gone
    event = Event("e1", "credits.added", datetime.now(UTC))
    with pytest.raises(WebhookError) as caught:
        await target.deliver(event)
    await target.aclose()
    assert "hooks/spendgate" not in str(caught.value)


# -- the CLI ------------------------------------------------------------------------


@pytest.fixture
def real_prefix() -> Iterator[str]:
    """A key prefix on the real Redis, its keys deleted after."""
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield prefix

    async def clean() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()

    asyncio.run(clean())


def _facts_on_real_redis(prefix: str, n: int) -> list[str]:
    async def make() -> list[str]:
        config = BudgetConfig(
            redis_url=REDIS_URL, key_prefix=prefix, daily_user_limit=None
        )
        async with BudgetManager(config) as budget:
            return [
                (await budget.record_spend(f"u{i}", "0.1")).entry_id for i in range(n)
            ]

    return asyncio.run(make())


def _env(monkeypatch: pytest.MonkeyPatch, prefix: str, url: str | None) -> None:
    monkeypatch.setenv("SPENDGATE_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("SPENDGATE_KEY_PREFIX", prefix)
    if url is not None:
        monkeypatch.setenv("SPENDGATE_EVENTS_WEBHOOK_URL", url)
        monkeypatch.setenv("SPENDGATE_EVENTS_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("SPENDGATE_EVENTS_BACKOFF_SECONDS", "0.001")


def test_cli_events_run_once_delivers_and_tail_prints(
    real_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = _facts_on_real_redis(real_prefix, 3)
    with Receiver(fail_first=1) as receiver:
        _env(monkeypatch, real_prefix, receiver.url)
        assert main(["events", "tail", "--json"]) == 0
        tailed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [e["id"] for e in tailed] == ids
        assert main(["events", "tail"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 3 and "credits.deducted" in lines[0]
        assert ids[0] in lines[0] and '"amount":"0.1"' in lines[0]
        assert main(["events", "run", "--once"]) == 0
        assert "delivered 3, dead-lettered 0" in capsys.readouterr().out
    assert set(receiver.processed) == set(ids)


def test_cli_events_run_needs_a_webhook_and_its_secret(
    real_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _env(monkeypatch, real_prefix, None)
    assert main(["events", "run", "--once"]) == 2
    assert "no webhook configured" in capsys.readouterr().err
    monkeypatch.setenv("SPENDGATE_EVENTS_WEBHOOK_URL", "https://h/tok3n")
    assert main(["events", "run", "--once"]) == 2
    err = capsys.readouterr().err
    assert "events_webhook_secret" in err and "tok3n" not in err
    monkeypatch.delenv("SPENDGATE_REDIS_URL")
    assert main(["events", "tail"]) == 2


def test_cli_tail_dead_prints_the_dead_letters(
    real_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = _facts_on_real_redis(real_prefix, 1)
    with Receiver(fail_first=100, mode="before") as receiver:
        _env(monkeypatch, real_prefix, receiver.url)
        monkeypatch.setenv("SPENDGATE_EVENTS_MAX_ATTEMPTS", "2")
        assert main(["events", "run", "--once"]) == 0
        capsys.readouterr()
    assert main(["events", "tail", "--dead"]) == 0
    out = capsys.readouterr().out
    assert ids[0] in out and "after 2 attempts" in out and "answered 500" in out
    assert main(["events", "tail", "--dead", "--json"]) == 0
    [letter] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert letter["id"] == ids[0] and letter["src"] == "ledger"


# -- a killed dispatcher process ------------------------------------------------------


@pytest.fixture
async def real_client(real_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=10)
    yield client
    await client.aclose()


@pytest.mark.slow
async def test_a_sigkilled_events_run_process_leaves_its_events_to_another(
    real_prefix: str, real_client: aioredis.Redis
) -> None:
    config = BudgetConfig(
        redis_url=REDIS_URL, key_prefix=real_prefix, daily_user_limit=None, **FAST
    )
    async with BudgetManager(config) as budget:
        ids = [(await budget.record_spend("ada", "0.1")).entry_id for _ in range(5)]
    with Receiver(fail_first=1, mode="hang") as hanging, Receiver() as healthy:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
        env.update(
            SPENDGATE_REDIS_URL=REDIS_URL,
            SPENDGATE_KEY_PREFIX=real_prefix,
            SPENDGATE_EVENTS_WEBHOOK_URL=hanging.url,
            SPENDGATE_EVENTS_WEBHOOK_SECRET=SECRET,
            SPENDGATE_EVENTS_HEARTBEAT_SECONDS="0.5",
            SPENDGATE_EVENTS_WEBHOOK_TIMEOUT_SECONDS="60",
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "spendgate.cli", "events", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await until(lambda: hanging.requests >= 1, "the first request")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(30)
        keys = Keys(real_prefix)
        pending = await real_client.xpending(keys.ledger, "spendgate-webhooks")
        assert pending["pending"] >= 1  # it held events when it was killed
        survivor = EventDispatcher(
            config.model_copy(update={"events_heartbeat_seconds": 0.5}),
            targets=[sink(healthy.url)],
            group="spendgate-webhooks",
        )

        async def all_delivered() -> bool:
            await survivor.drain()
            return set(healthy.processed) == set(ids)

        await until(all_delivered, "every event delivered by the survivor")
        await survivor.aclose()
    assert hanging.received[0] == ids[0]  # the one it died on, delivered again
    pending = await real_client.xpending(keys.ledger, "spendgate-webhooks")
    assert pending["pending"] == 0


def test_the_readme_verification_snippet_verifies_a_real_request() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    [snippet] = [b for b in blocks if "def verify(secret: bytes" in b]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # the receiver's code, as documented
    event = Event("1773576000000-0", "credits.cap_reached", datetime.now(UTC))
    body, headers = sink("https://h/x").request(event)
    verify = namespace["verify"]
    assert verify(SECRET.encode(), body, headers)
    assert not verify(b"other", body, headers)
    assert not verify(SECRET.encode(), body.replace(b"cap", b"cop"), headers)
    old = dict(headers, **{"X-Spendgate-Timestamp": str(int(time.time()) - 3600)})
    assert not verify(SECRET.encode(), body, old)
