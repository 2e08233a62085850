"""``spendgate serve`` as a real process, driven over HTTP.

Starts ``python -m spendgate.cli serve`` on a free port against the real
Redis (db 9, a key prefix of its own, deleted afterwards), waits for
``/health``, then checks over a socket what a service owner relies on: bearer
auth, a 429 with ``Retry-After`` at the cap, an idempotent replay of
``/spend``, and the lease cycle (reserve, settle, replayed settle, 409 on an
illegal transition). Finally the process is stopped with SIGTERM and must
exit cleanly. A second check: with no API keys ``serve`` refuses to start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from redis import Redis as SyncRedis

from conftest import REDIS_URL, real_redis_available, service_missing

KEYS = "proc-key-1,proc-key-2"
AUTH = {"Authorization": "Bearer proc-key-2"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
    for name in list(os.environ):
        if name.startswith("SPENDGATE_TEST_"):
            env[name] = os.environ[name]
    env.update(settings)
    return env


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    prefix = f"proc{uuid.uuid4().hex[:10]}"
    port = _free_port()
    env = _env(
        SPENDGATE_REDIS_URL=REDIS_URL,
        SPENDGATE_KEY_PREFIX=prefix,
        SPENDGATE_API_KEYS=KEYS,
        SPENDGATE_DAILY_USER_LIMIT="1",
        SPENDGATE_DAILY_PROJECT_LIMIT="none",
        SPENDGATE_DAILY_GLOBAL_LIMIT="none",
        SPENDGATE_SPOOL_PATH=str(tmp_path / "spool"),
    )
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "spendgate.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"spendgate serve exited with {proc.returncode}:\n"
                    + (tmp_path / "serve.log").read_text()
                )
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("spendgate serve did not answer /health within 30 s")
            time.sleep(0.1)
        yield base, proc, tmp_path / "serve.log"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        client = SyncRedis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()


@pytest.mark.slow
def test_serve_over_http(server: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    base, proc, log = server
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/health").json() == {"status": "healthy", "redis": "connected"}

        # Auth: no key, a wrong key, an unsigned user header: all 401.
        assert http.post("/check", json={"user_id": "alice"}).status_code == 401
        wrong = {"Authorization": "Bearer nope", "X-User-Id": "alice"}
        assert (
            http.post("/check", json={"user_id": "alice"}, headers=wrong).status_code
            == 401
        )
        assert http.get("/metrics").status_code == 401

        # An idempotent replay: the same key returns the same entry, charged once.
        spend = {"user_id": "alice", "cost": "0.6", "idempotency_key": "call-1"}
        first = http.post("/spend", json=spend, headers=AUTH)
        assert first.status_code == 200
        assert first.json()["replayed"] is False
        again = http.post("/spend", json=spend, headers=AUTH)
        assert again.json()["entry_id"] == first.json()["entry_id"]
        assert again.json()["replayed"] is True
        usage = http.get("/v1/usage/alice", headers=AUTH).json()
        assert usage["scopes"]["user"]["daily"]["spent"] == "0.6"

        # At the cap: 429 with Retry-After (seconds until 00:00 UTC).
        refused = http.post(
            "/check", json={"user_id": "alice", "estimated_cost": 0.5}, headers=AUTH
        )
        assert refused.status_code == 429
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 86400
        body = refused.json()
        assert (body["scope"], body["window"]) == ("user", "daily")
        assert Decimal(body["limit"]) == 1
        assert Decimal(body["spent"]) == Decimal("0.6")
        assert body["resets_at"].endswith("T00:00:00+00:00")
        allowed = http.post(
            "/check", json={"user_id": "alice", "estimated_cost": "0.4"}, headers=AUTH
        )
        assert allowed.status_code == 200
        assert allowed.json()["remaining"] == "0.4"

        # The lease cycle.
        lease = http.post(
            "/v1/reserve", json={"user_id": "bob", "amount": "0.7"}, headers=AUTH
        ).json()
        held = http.post(
            "/v1/reserve", json={"user_id": "bob", "amount": "0.5"}, headers=AUTH
        )
        assert held.status_code == 429  # the first hold counts against the cap
        settle = {"lease_id": lease["lease_id"], "actual_cost": "0.25"}
        settled = http.post("/v1/settle", json=settle, headers=AUTH)
        assert settled.status_code == 200
        assert settled.json()["estimate"] == "0.7"
        replay = http.post("/v1/settle", json=settle, headers=AUTH)
        assert replay.json()["entry_id"] == settled.json()["entry_id"]
        assert replay.json()["replayed"] is True
        release = http.post(
            "/v1/release", json={"lease_id": lease["lease_id"]}, headers=AUTH
        )
        assert release.status_code == 409
        second = http.post(
            "/v1/reserve", json={"user_id": "bob", "amount": "0.5"}, headers=AUTH
        ).json()
        released = http.post(
            "/v1/release", json={"lease_id": second["lease_id"]}, headers=AUTH
        )
        assert released.json()["released"] is True
        late = http.post(
            "/v1/settle",
            json={"lease_id": second["lease_id"], "actual_cost": 1},
            headers=AUTH,
        )
        assert late.status_code == 409
        usage = http.get("/v1/usage/bob", headers=AUTH).json()["scopes"]["user"]
        assert (usage["daily"]["spent"], usage["held"]) == ("0.25", "0")

        # Malformed input is a 4xx, never a 5xx, over a real socket too.
        junk = http.post(
            "/spend",
            content=b"\x00\xff not json",
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert junk.status_code == 422
        metrics = http.get("/metrics", headers=AUTH)
        assert metrics.status_code == 200
        assert "spendgate_decisions_total" in metrics.text

    # SIGTERM shuts down gracefully (the lifespan closes the budget); uvicorn
    # then re-raises the signal, so the exit status may say "terminated".
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in log.read_text()


def test_serve_refuses_to_start_without_keys(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spendgate.cli", "serve", "--port", str(_free_port())],
        env=_env(SPENDGATE_REDIS_URL=REDIS_URL),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "SPENDGATE_API_KEYS" in result.stderr
    assert "--insecure-no-auth" in result.stderr
