"""``spendgate events`` with a webhook, on the real Redis.

How: facts are recorded on the real Redis under a key prefix of the test's
own (its keys deleted after), and a receiver on a free local port (see
tests/webhook_helpers.py) checks signatures and remembers what it was sent.
Checked here: ``events run --once`` delivers and ``events tail`` prints
(plain and ``--json``), ``events run`` refuses without a webhook or its
secret (exit 2, the URL's token not shown), ``events tail --dead`` prints
the dead letters, and a ``spendgate events run`` process SIGKILLed while a
request hangs leaves its events to another dispatcher, which delivers them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from conftest import REDIS_URL, real_redis_available, service_missing
from events_helpers import FAST, until
from spendgate import BudgetConfig, BudgetManager
from spendgate.cli import main
from spendgate.core.keys import Keys
from spendgate.events import EventDispatcher
from webhook_helpers import SECRET, Receiver, sink

# -- the CLI ---------------------------------------------------------------------------


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
    # -n 0 asks for none, as it does of the events (it printed the newest)
    assert main(["events", "tail", "--dead", "-n", "0"]) == 0
    assert capsys.readouterr().out == ""


# -- a killed dispatcher process -------------------------------------------------------


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
