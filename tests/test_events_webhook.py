"""Webhook delivery, against a real HTTP server on a free local port.

How: a receiver (``http.server`` in a thread, started by each test; see
tests/webhook_helpers.py) checks every request's signature with the secret,
as the README tells receivers to, remembers every id it was sent and every
id it *processed*, and can be told to fail: answer 500 after processing (a
receiver that crashed after its work, so spendgate sends the event again),
answer 500 without processing, or answer too late. Facts go through
``BudgetManager`` on both backends and other events are appended to the
events stream with the protocol's fields; an ``EventDispatcher`` with a
``WebhookSink`` delivers them. Checked here: retries until processed, the
body and headers, dead letters, timeouts, type filters, signatures, the
webhook settings (checked, kept secret), an unreachable webhook, and the
README's verification snippet. The CLI and the SIGKILL tests are in
tests/test_events_webhook_cli.py.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from conftest import MakeBudget
from events_helpers import add_event, config_of
from spendgate import BudgetConfig, BudgetManager
from spendgate.errors import ConfigurationError, WebhookError
from spendgate.events import Event, EventDispatcher
from spendgate.events.webhook import WebhookSink, sign, verify_signature
from webhook_helpers import SECRET, Receiver, sink


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


# -- signatures and settings -----------------------------------------------------------


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


def test_a_hostile_request_is_not_verified_and_raises_nothing() -> None:
    # A receiver passes the headers it got: whatever a caller put there is
    # an unverified request, never an exception (a 500 in the receiver).
    body = b'{"id":"1"}'
    now = 1_800_000_000
    signature = sign(SECRET, str(now), body)
    assert not verify_signature(SECRET, body, "1" + "0" * 400, signature)
    assert not verify_signature(SECRET, body, "1" + "0" * 400, signature, now=now)
    assert not verify_signature(SECRET, body, str(now), "sha256=\u00e9", now=now)
    assert not verify_signature(SECRET, body, "\u0661" * 10, signature, now=now)


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
    for hostile in (
        {"X-Spendgate-Timestamp": "1" + "0" * 400},
        {"X-Spendgate-Signature": "sha256=\u00e9"},
    ):
        assert not verify(SECRET.encode(), body, dict(headers, **hostile))
